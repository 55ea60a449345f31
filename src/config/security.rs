//! Runtime security settings: proxy users, client address rules, destination rules, rate
//! limits, and each listener's policy.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// A secret string (password, key): `Debug` and `Display` print `***`, so it can reach a
/// comparison or a header but never a log line, an error body or `sluice check`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a user's password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Compared in constant time with the password given (usually from the environment).
    Password(Secret),
    /// An Argon2 PHC string (`$argon2id$...`).
    Argon2(String),
    /// A bcrypt hash (`$2b$...`).
    Bcrypt(String),
}

/// One proxy user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// How the password is verified.
    pub credential: Credential,
}

/// `[auth]`: Basic proxy authentication (RFC 9110 §11.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Realm sent in `Proxy-Authenticate`.
    pub realm: String,
    /// Known users.
    pub users: Vec<User>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { realm: "sluice".to_owned(), users: Vec::new() }
    }
}

/// `[access]`: which client addresses may use sluice at all (both modes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Allowed networks; empty allows every address not denied.
    pub allow: Vec<IpNet>,
    /// Denied networks, checked before `allow`.
    pub deny: Vec<IpNet>,
}

impl AccessRules {
    /// Whether a client at `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `[destinations]`: where the forward proxy refuses to go, whatever the listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationRules {
    /// Lower-case host patterns: `name` or `*.suffix` (any depth).
    pub deny_hosts: Vec<String>,
    /// Networks never connected to.
    pub deny_networks: Vec<IpNet>,
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub rate: f64,
    /// Bucket capacity.
    pub burst: u32,
}

/// What a listener enforces on forward-proxy traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// Forward requests need valid proxy credentials.
    pub auth_required: bool,
    /// The operator accepted an open forward proxy on a non-loopback address.
    pub open: bool,
    /// Ports CONNECT may reach; empty means any.
    pub connect_ports: Vec<u16>,
    /// The forward proxy may reach loopback, private, link-local and similar addresses.
    pub allow_private_destinations: bool,
    /// Most concurrent connections from one client address.
    pub max_connections_per_ip: usize,
}

/// Most concurrent connections from one client address, by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

impl ListenerPolicy {
    /// The defaults for a listener on `address`: a loopback listener serves its local user,
    /// who is trusted (any CONNECT port, private destinations allowed); anything else gets the
    /// hardened defaults (CONNECT to 443 only, private destinations refused). Authentication is
    /// required whenever users are configured.
    pub fn defaults_for(address: SocketAddr, users_configured: bool) -> ListenerPolicy {
        let local = address.ip().is_loopback();
        ListenerPolicy {
            auth_required: users_configured,
            open: false,
            connect_ports: if local { Vec::new() } else { vec![443] },
            allow_private_destinations: local,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn access_rules_deny_first_then_allow() {
        let rules = AccessRules {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            deny: vec!["10.0.0.13/32".parse().unwrap()],
        };
        assert!(rules.permits("10.1.2.3".parse().unwrap()));
        assert!(!rules.permits("10.0.0.13".parse().unwrap()));
        assert!(!rules.permits("192.168.1.1".parse().unwrap()));
        assert!(rules.permits("::ffff:10.1.1.1".parse().unwrap()), "mapped v4 is v4");
        assert!(AccessRules::default().permits("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn loopback_listeners_are_trusted_others_hardened() {
        let local = ListenerPolicy::defaults_for("127.0.0.1:8080".parse().unwrap(), false);
        assert!(local.connect_ports.is_empty() && local.allow_private_destinations);
        let public = ListenerPolicy::defaults_for("0.0.0.0:3128".parse().unwrap(), true);
        assert_eq!(public.connect_ports, [443]);
        assert!(!public.allow_private_destinations && public.auth_required);
    }
}
