//! Where the forward proxy may connect: CONNECT ports, denied host patterns and networks, and
//! the private-destination guard (checked on the *resolved* address, so a public name that
//! resolves to a private address, as in DNS rebinding, is refused too). The proxy host's own
//! addresses ([`own_addresses`]) count as private: a public address of the host reaches its
//! services as surely as loopback does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{DestinationRules, ListenerPolicy, security::canonical};

/// The checks one listener's forward proxy applies to destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationGuard {
    /// Refuse loopback, private, link-local, unique-local, unspecified and similar addresses.
    pub block_private: bool,
    /// Networks always refused.
    pub deny_networks: Vec<IpNet>,
    /// Host patterns always refused.
    pub deny_hosts: Vec<String>,
    /// The proxy host's own addresses (canonical), refused with the private ones.
    pub own_addresses: Arc<[IpAddr]>,
}

impl DestinationGuard {
    /// The guard for a listener with `policy` under the global `rules` (knowing none of the
    /// host's own addresses until [`DestinationGuard::with_own_addresses`]).
    pub fn new(policy: &ListenerPolicy, rules: &DestinationRules) -> DestinationGuard {
        DestinationGuard {
            block_private: !policy.allow_private_destinations,
            deny_networks: rules.deny_networks.clone(),
            deny_hosts: rules.deny_hosts.clone(),
            own_addresses: Arc::from([]),
        }
    }

    /// This guard on a host whose own addresses are `own_addresses` (from
    /// [`own_addresses`]), refused wherever private ones are.
    pub fn with_own_addresses(mut self, own_addresses: &Arc<[IpAddr]>) -> DestinationGuard {
        self.own_addresses = own_addresses.clone();
        self
    }

    /// Whether `host` (a name, or an IP literal) is refused by name before resolving.
    pub fn host_denied(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        self.deny_hosts.iter().any(|pattern| host_matches(pattern, host))
    }

    /// Whether a resolved address may be connected to.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny_networks.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        !(self.block_private && (is_private(ip) || self.is_own(ip)))
    }

    /// Whether `ip` (canonical) is one of the host's own addresses, also when embedded in a
    /// NAT64 address.
    fn is_own(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => nat64_embedded(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.own_addresses.iter().any(|own| *own == ip || Some(*own) == embedded)
    }
}

/// The addresses of this host's network interfaces (canonical, without duplicates), read
/// from the system (getifaddrs(3)); empty, with a warning, if they cannot be read. Read when a
/// configuration is loaded (at start and on each reload), not per request.
pub fn own_addresses() -> Arc<[IpAddr]> {
    let interfaces = match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => interfaces,
        Err(err) => {
            tracing::warn!(
                "cannot list this host's addresses ({err}); only private ranges are refused"
            );
            return Arc::from([]);
        }
    };
    let mut addresses: Vec<IpAddr> = Vec::new();
    for interface in interfaces {
        let Some(address) = interface.address else { continue };
        let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        let ip = canonical(ip);
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Arc::from(addresses)
}

/// `name` matches itself (case-insensitive); `*.suffix` matches any name under `suffix`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
                && host.as_bytes().get(host.len() - suffix.len() - 1) == Some(&b'.')
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Addresses a proxy reachable from outside must not be steered to: loopback, RFC 1918
/// private, link-local (cloud metadata at 169.254.169.254 included), shared (CGNAT),
/// unspecified, broadcast, multicast, "this network", and the IPv6 equivalents (unique-local
/// fc00::/7, link-local fe80::/10); IPv4 embedded in IPv6 (mapped, NAT64) is judged as IPv4.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

/// The IPv4 address inside a NAT64 address (64:ff9b::/96, RFC 6052).
fn nat64_embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let nat64 = ip.segments().get(..6) == Some(&[0x64, 0xff9b, 0, 0, 0, 0][..]);
    let [.., a, b, c, d] = ip.octets();
    nat64.then(|| Ipv4Addr::new(a, b, c, d))
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments().first().copied().unwrap_or(0);
    if let Some(v4) = nat64_embedded(ip) {
        return is_private_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_table() {
        for (ip, private) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("255.255.255.255", true),
            ("224.0.0.1", true),
            ("8.8.8.8", false),
            ("203.0.113.7", false),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("fd00::1", true),
            ("fc00::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("64:ff9b::a9fe:a9fe", true),
            ("2001:4860:4860::8888", false),
        ] {
            assert_eq!(is_private(ip.parse().unwrap()), private, "{ip}");
        }
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("metadata.google.internal", "Metadata.Google.Internal"));
        assert!(host_matches("*.corp.example", "a.corp.example"));
        assert!(host_matches("*.corp.example", "a.b.corp.example"));
        assert!(!host_matches("*.corp.example", "corp.example"));
        assert!(!host_matches("*.corp.example", "evilcorp.example"));
    }

    #[test]
    fn guard_combines_rules() {
        let guard = DestinationGuard {
            block_private: true,
            deny_networks: vec!["203.0.113.0/24".parse().unwrap()],
            deny_hosts: vec!["*.internal".into()],
            own_addresses: Arc::from([]),
        };
        assert!(!guard.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(!guard.address_allowed("203.0.113.9".parse().unwrap()));
        assert!(guard.address_allowed("198.51.100.1".parse().unwrap()));
        assert!(guard.host_denied("db.internal."));
        assert!(!guard.host_denied("example.com"));
        let open = DestinationGuard::default();
        assert!(open.address_allowed("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_hosts_own_addresses_are_private_where_private_ones_are() {
        let own: Arc<[IpAddr]> =
            Arc::from(["198.51.100.7".parse().unwrap(), "2001:db8::7".parse().unwrap()]);
        let guarded = DestinationGuard {
            block_private: true,
            own_addresses: own.clone(),
            ..Default::default()
        };
        for (ip, allowed) in [
            ("198.51.100.7", false),
            ("::ffff:198.51.100.7", false),
            ("64:ff9b::c633:6407", false),
            ("2001:db8::7", false),
            ("198.51.100.8", true),
            ("2001:db8::8", true),
        ] {
            assert_eq!(guarded.address_allowed(ip.parse().unwrap()), allowed, "{ip}");
        }
        let trusted =
            DestinationGuard { block_private: false, own_addresses: own, ..Default::default() };
        assert!(trusted.address_allowed("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn own_addresses_include_loopback() {
        // Every host this runs on has a loopback interface.
        assert!(own_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}
