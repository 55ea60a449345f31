//! Security settings: proxy users (`[auth]`), client address rules (`[access]`), destination
//! rules (`[destinations]`), rate limits (`[rate_limit]` and per route) and each listener's
//! policy, as written in the file, as validated, and as `sluice check` shows them.

use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::hostname::host_pattern_problem;
use super::validate::{Checker, expand_env};
use super::{Config, list};

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
    /// Most concurrent connections from one client address; `None` for no cap.
    pub max_connections_per_ip: Option<NonZeroUsize>,
}

/// Most concurrent connections from one client address on a forward-only listener on a
/// non-loopback address, by default. Browsers open at most 32 connections to a proxy, so 128
/// busy browsers behind one NAT fit, while one client still cannot take every slot of
/// `limits.max_connections`. Loopback listeners and listeners that serve routes have no cap by
/// default: their clients share one address (local tools, a load test, a load balancer).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: NonZeroUsize = match NonZeroUsize::new(4096) {
    Some(cap) => cap,
    None => NonZeroUsize::MIN,
};
/// Largest `max_connections_per_ip` accepted (no more than a listener's connections).
pub const MAX_CONNECTIONS_PER_IP: usize = super::MAX_CONNECTIONS;
/// Slowest rate a token bucket accepts: one request per 11.6 days.
pub const MIN_RATE: f64 = 0.000_001;
/// Fastest rate a token bucket accepts, in requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Largest bucket a token bucket accepts.
pub const MAX_BURST: u32 = 1_000_000;

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    /// Realm named in `Proxy-Authenticate`.
    pub realm: Option<Spanned<String>>,
    /// `[[auth.user]]` entries.
    #[serde(default, rename = "user")]
    pub users: Vec<FileUser>,
}

/// One `[[auth.user]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// User name.
    pub name: Spanned<String>,
    /// Plain password, usually `${ENV_VAR}`.
    pub password: Option<Spanned<String>>,
    /// Argon2 (PHC string) or bcrypt hash.
    pub password_hash: Option<Spanned<String>>,
}

/// `[access]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccess {
    /// Client networks allowed (empty: all).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Client networks refused (checked first).
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

/// `[destinations]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDestinations {
    /// Host name patterns the forward proxy refuses (`*.example` matches subdomains).
    #[serde(default)]
    pub deny_hosts: Vec<Spanned<String>>,
    /// Networks the forward proxy refuses to connect to.
    #[serde(default)]
    pub deny_networks: Vec<Spanned<String>>,
}

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRate {
    /// Sustained requests per second.
    pub rate: Spanned<f64>,
    /// Bucket size.
    pub burst: Spanned<i64>,
}

/// `[rate_limit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimits {
    /// Per client IP address, across all listeners.
    pub per_ip: Option<FileRate>,
}

/// The policy keys of one `[[listener]]` table, as written (the table itself is the
/// listener section's).
pub(super) struct WrittenPolicy<'a> {
    /// Where the table is, for problems of the table as a whole.
    pub(super) at: Range<usize>,
    /// `auth`.
    pub(super) auth: Option<bool>,
    /// `open`.
    pub(super) open: Option<bool>,
    /// `connect_ports`.
    pub(super) connect_ports: Option<&'a [Spanned<i64>]>,
    /// `allow_private_destinations`.
    pub(super) allow_private_destinations: Option<bool>,
    /// `max_connections_per_ip`.
    pub(super) max_connections_per_ip: Option<&'a Spanned<i64>>,
}

impl Checker<'_> {
    pub(super) fn auth(&mut self, file: &FileAuth) -> AuthConfig {
        let mut auth = AuthConfig::default();
        if let Some(realm) = &file.realm {
            if realm.get_ref().contains(['"', '\\'])
                || realm.get_ref().chars().any(|c| c.is_control())
            {
                self.report(
                    realm.span(),
                    "auth.realm",
                    "must not contain quotes, backslashes or control characters".to_owned(),
                );
            } else {
                auth.realm = realm.get_ref().clone();
            }
        }
        for (i, user) in file.users.iter().enumerate() {
            let key = format!("auth.user[{i}]");
            let name = user.name.get_ref();
            if name.is_empty() || name.contains(':') {
                self.report(
                    user.name.span(),
                    &format!("{key}.name"),
                    "must be non-empty and contain no `:`".to_owned(),
                );
                continue;
            }
            let credential = match (&user.password, &user.password_hash) {
                (Some(password), None) => match expand_env(password.get_ref(), self.env) {
                    Ok((value, _)) => Credential::Password(Secret::new(value)),
                    Err(message) => {
                        self.report(password.span(), &format!("{key}.password"), message);
                        continue;
                    }
                },
                (None, Some(hash)) => {
                    let text = hash.get_ref().trim();
                    if text.starts_with("$argon2") && argon2::PasswordHash::new(text).is_ok() {
                        Credential::Argon2(text.to_owned())
                    } else if text.starts_with("$2") && text.len() == 60 {
                        Credential::Bcrypt(text.to_owned())
                    } else {
                        self.report(hash.span(), &format!("{key}.password_hash"), "is neither an Argon2 PHC string ($argon2id$...) nor a bcrypt hash ($2b$...)".to_owned());
                        continue;
                    }
                }
                _ => {
                    self.report(
                        user.name.span(),
                        &key,
                        "needs exactly one of `password` or `password_hash`".to_owned(),
                    );
                    continue;
                }
            };
            if auth.users.iter().any(|u: &User| u.name == *name) {
                self.report(
                    user.name.span(),
                    &format!("{key}.name"),
                    format!("user `{name}` is defined twice"),
                );
                continue;
            }
            auth.users.push(User { name: name.clone(), credential });
        }
        auth
    }

    pub(super) fn access(&mut self, file: &FileAccess) -> AccessRules {
        AccessRules {
            allow: self.networks("access.allow", &file.allow),
            deny: self.networks("access.deny", &file.deny),
        }
    }

    pub(super) fn destinations(&mut self, file: &FileDestinations) -> DestinationRules {
        DestinationRules {
            deny_hosts: file
                .deny_hosts
                .iter()
                .filter_map(|pattern| {
                    let text = pattern.get_ref().trim().trim_end_matches('.').to_ascii_lowercase();
                    // Targets are matched without brackets, so `[::1]` means `::1`.
                    let text = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                        Some(v6) => v6.to_owned(),
                        None => text,
                    };
                    let problem = host_pattern_problem(&text);
                    if let Some(problem) = &problem {
                        self.report(
                            pattern.span(),
                            "destinations.deny_hosts",
                            format!("`{}` {problem}", pattern.get_ref()),
                        );
                    }
                    problem.is_none().then_some(text)
                })
                .collect(),
            deny_networks: self.networks("destinations.deny_networks", &file.deny_networks),
        }
    }

    fn networks(&mut self, key: &str, values: &[Spanned<String>]) -> Vec<IpNet> {
        values
            .iter()
            .filter_map(|value| {
                let text = value.get_ref().trim();
                // A bare address means just that address.
                let parsed = text
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                if parsed.is_none() {
                    self.report(
                        value.span(),
                        key,
                        format!("`{text}` is not a network (\"10.0.0.0/8\") or address"),
                    );
                }
                parsed
            })
            .collect()
    }

    pub(super) fn rate(&mut self, key: &str, file: &FileRate) -> Option<RateLimit> {
        let rate = *file.rate.get_ref();
        if !(rate.is_finite() && rate > 0.0) {
            self.report(
                file.rate.span(),
                &format!("{key}.rate"),
                "must be a positive number of requests per second".to_owned(),
            );
            return None;
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            self.report(
                file.rate.span(),
                &format!("{key}.rate"),
                format!("must be from {MIN_RATE} to {MAX_RATE} requests per second, got {rate:?}"),
            );
            return None;
        }
        let burst = self.count(&format!("{key}.burst"), Some(file.burst.clone()), 0, 1..=MAX_BURST);
        (burst >= 1).then_some(RateLimit { rate, burst })
    }

    /// The policy of the listener at `key`: what its table sets, over `defaults` (those of
    /// its address and modes).
    pub(super) fn listener_policy(
        &mut self,
        key: &str,
        written: WrittenPolicy<'_>,
        defaults: ListenerPolicy,
        users_configured: bool,
    ) -> ListenerPolicy {
        let connect_ports = match written.connect_ports {
            None => defaults.connect_ports,
            Some(ports) => ports
                .iter()
                .filter_map(|port| {
                    let parsed = u16::try_from(*port.get_ref()).ok().filter(|p| *p != 0);
                    if parsed.is_none() {
                        self.report(
                            port.span(),
                            &format!("{key}.connect_ports"),
                            format!("{} is not a port (1-65535)", port.get_ref()),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let policy = ListenerPolicy {
            auth_required: written.auth.unwrap_or(defaults.auth_required),
            open: written.open.unwrap_or(false),
            connect_ports,
            allow_private_destinations: written
                .allow_private_destinations
                .unwrap_or(defaults.allow_private_destinations),
            max_connections_per_ip: match written.max_connections_per_ip {
                None => defaults.max_connections_per_ip,
                // 0 means no cap, as `client_max_body_size 0` does in nginx.
                Some(cap) => NonZeroUsize::new(self.count(
                    &format!("{key}.max_connections_per_ip"),
                    Some(cap.clone()),
                    0,
                    0..=MAX_CONNECTIONS_PER_IP,
                )),
            },
        };
        if policy.auth_required && !users_configured {
            self.report(
                written.at,
                &format!("{key}.auth"),
                "requires authentication but [auth] has no users".to_owned(),
            );
        }
        policy
    }
}

/// The forward-proxy policy line of a listener in the effective configuration.
pub(super) fn write_forward_policy(out: &mut String, policy: &ListenerPolicy) {
    let ports = if policy.connect_ports.is_empty() {
        "any".to_owned()
    } else {
        policy.connect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        out,
        "    forward: auth {}, CONNECT ports {ports}, private destinations {}{}",
        if policy.auth_required { "required" } else { "off" },
        if policy.allow_private_destinations { "allowed" } else { "refused" },
        if policy.open { ", open = true" } else { "" },
    );
}

/// The per-address cap line of a listener in the effective configuration.
pub(super) fn write_connection_cap(out: &mut String, policy: &ListenerPolicy) {
    let _ = writeln!(
        out,
        "    max connections per client address {}",
        policy.max_connections_per_ip.map_or("unlimited".to_owned(), |cap| cap.to_string())
    );
}

/// The `access:` part of the effective configuration: users, client and destination rules,
/// and the rate per client.
pub(super) fn write_summary(out: &mut String, config: &Config) {
    let _ = writeln!(
        out,
        "\naccess:\n  realm    {}\n  users    {}\n  allow    {}\n  deny     {}\n  deny_hosts     {}\n  \
         deny_networks  {}\n  rate per client {}",
        config.auth.realm,
        if config.auth.users.is_empty() {
            "(none)".to_owned()
        } else {
            config.auth.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
        },
        list(config.access.allow.iter()),
        list(config.access.deny.iter()),
        list(config.destinations.deny_hosts.iter()),
        list(config.destinations.deny_networks.iter()),
        config
            .rate_limit_per_ip
            .map_or("unlimited".to_owned(), |r| format!("{}/s, burst {}", r.rate, r.burst)),
    );
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
    fn rates_outside_their_bounds_are_refused() {
        use super::super::load::refused;
        let cases = [
            // 1e-20 once aborted the process on the first request over the burst.
            ("1e-20", "1", "rate", "must be from 0.000001 to 1000000 requests per second"),
            ("2e6", "1", "rate", "must be from 0.000001 to 1000000 requests per second"),
            ("0", "1", "rate", "must be a positive number of requests per second"),
            ("nan", "1", "rate", "must be a positive number of requests per second"),
            ("1", "0", "burst", "must be at least 1, got 0"),
            ("1", "1000001", "burst", "must be at most 1000000, got 1000001"),
        ];
        for (rate, burst, field, message) in cases {
            let toml = format!("[rate_limit.per_ip]\nrate = {rate}\nburst = {burst}\n");
            let found = refused(&toml);
            assert_eq!(found.len(), 1, "{toml}: {found:?}");
            assert_eq!(found[0].key, format!("rate_limit.per_ip.{field}"), "{toml}");
            assert_eq!(found[0].line, Some(if field == "rate" { 2 } else { 3 }), "{toml}");
            assert!(found[0].message.starts_with(message), "{toml}: {}", found[0].message);
        }
        for (rate, burst) in [(MIN_RATE, MAX_BURST), (MAX_RATE, 1)] {
            let toml = format!("[rate_limit.per_ip]\nrate = {rate:?}\nburst = {burst}\n");
            let config = super::super::load::parse_and_validate(&toml, &|_| None).unwrap();
            assert_eq!(config.rate_limit_per_ip, Some(RateLimit { rate, burst }));
        }
    }

    #[test]
    fn per_address_caps_depend_on_the_listener_kind() {
        use super::super::load::{parse_and_validate, refused};
        let cap = |listener: &str| {
            let toml = format!("[[listener]]\n{listener}\n");
            let config = parse_and_validate(&toml, &|_| None).unwrap();
            config.listeners[0].policy.max_connections_per_ip.map(NonZeroUsize::get)
        };
        // Loopback: local tools and load tests share one address.
        assert_eq!(cap("address = \"127.0.0.1:0\""), None);
        assert_eq!(cap("address = \"[::1]:0\"\nforward = false\nreverse = true"), None);
        // Routes may sit behind a load balancer whose few addresses carry every client.
        assert_eq!(cap("address = \"0.0.0.0:0\"\nforward = false\nreverse = true"), None);
        assert_eq!(cap("address = \"0.0.0.0:0\"\nreverse = true\nopen = true"), None);
        // An exposed forward proxy alone keeps a cap.
        assert_eq!(cap("address = \"0.0.0.0:0\"\nopen = true"), Some(4096));
        // Explicit values win; 0 means no cap.
        assert_eq!(cap("address = \"0.0.0.0:0\"\nopen = true\nmax_connections_per_ip = 0"), None);
        assert_eq!(cap("address = \"127.0.0.1:0\"\nmax_connections_per_ip = 64"), Some(64));
        let found =
            refused("[[listener]]\naddress = \"127.0.0.1:0\"\nmax_connections_per_ip = 1000001\n");
        assert_eq!(found[0].key, "listener[0].max_connections_per_ip");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].message, "must be at most 1000000, got 1000001");
    }
}
