//! `[[route.target]]`, `balance` and `hash_on`: a route that spreads its requests over
//! several targets (the single `upstream` is the shorthand for one). As written in the file,
//! as validated, and as `sluice check` shows it. How failed attempts are retried is in
//! [`super::retry`]; how failing targets are noticed, in [`super::health`].

use std::fmt::Write as _;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::headers::{Direction, FileHeaderRules, HeaderRules, write_rules};
use super::health::{FileHealthCheck, FilePassiveHealth, HealthCheck, OutlierSettings};
use super::parent::{FileUpstreamProxy, ParentProxy, describe_via};
use super::retry::{FileRetry, RetryPolicy};
use super::upstream::{FileRouteTls, UpstreamProtocol, UpstreamUrl, parse_upstream_url};
use super::validate::Checker;
use crate::tls::client::UpstreamTls;

/// Default weight of a target.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight (which also bounds the length of a tier's round-robin order).
pub const MAX_WEIGHT: u32 = 256;
/// Most targets in one route, the addresses of an expanded host name included.
pub const MAX_TARGETS: usize = 128;
/// Highest tier.
pub const MAX_TIER: u8 = 7;
/// Default cap on one target's requests in flight (circuit breaking; Envoy's default too).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;
/// Largest `max_in_flight`.
pub const MAX_MAX_IN_FLIGHT: u32 = 1_000_000;
/// Default cap on one target's open connections, idle pooled ones included: none (the
/// requests in flight are capped instead).
pub const DEFAULT_MAX_CONNECTIONS: Option<u32> = None;
/// Largest `max_connections`.
pub const MAX_MAX_CONNECTIONS: u32 = 1_000_000;
/// Default time between two lookups of an expanded host name.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Longest `dns_refresh`.
pub const MAX_DNS_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Shortest `dns_refresh`.
pub const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);

/// How a route spreads requests over the targets of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm): a heavier target is chosen more often,
    /// and its turns are spread out rather than bunched.
    #[default]
    RoundRobin,
    /// Power of two choices: two targets drawn by weight, the one with fewer requests in flight
    /// per unit of weight wins.
    LeastRequest,
    /// Power of two choices on a latency estimate that jumps up at once on a slow response and
    /// decays slowly (peak EWMA), times the requests in flight.
    PeakEwma,
    /// A target drawn at random by weight.
    Random,
    /// Consistent (rendezvous) hashing of a request key: the same key goes to the same target,
    /// and adding or removing one of N targets moves about 1/N of the keys.
    Hash,
}

impl Balance {
    /// The config spelling, also used in `sluice check` and `GET /upstreams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::PeakEwma => "peak_ewma",
            Balance::Random => "random",
            Balance::Hash => "hash",
        }
    }

    /// The policy spelled `text` in the config.
    pub fn parse(text: &str) -> Option<Balance> {
        [
            Balance::RoundRobin,
            Balance::LeastRequest,
            Balance::PeakEwma,
            Balance::Random,
            Balance::Hash,
        ]
        .into_iter()
        .find(|balance| balance.as_str() == text)
    }
}

/// What a hashing route keys its requests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The value of a request header (all its lines, in order).
    Header(HeaderName),
    /// The value of a cookie (RFC 6265 §4.2.1).
    Cookie(String),
    /// The client's IP address (the peer, not a forwarded-for header a client can set).
    ClientAddress,
    /// The virtual key the client authenticated with, on an AI route: each client stays on
    /// one provider key while it answers, which is what a provider's prompt cache rewards.
    VirtualKey,
}

impl HashOn {
    /// Parses the config spelling: `header:NAME`, `cookie:NAME`, `client_address` or
    /// `virtual_key`.
    pub fn parse(text: &str) -> Result<HashOn, String> {
        if text == "client_address" {
            return Ok(HashOn::ClientAddress);
        }
        if text == "virtual_key" {
            return Ok(HashOn::VirtualKey);
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("`{name}` is not a valid header name"));
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            // RFC 6265 §4.1.1: a cookie name is an RFC 2616 token.
            let separator = |b: u8| b"()<>@,;:\\\"/[]?={}".contains(&b);
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !separator(b));
            return if valid {
                Ok(HashOn::Cookie(name.to_owned()))
            } else {
                Err(format!("`{name}` is not a valid cookie name"))
            };
        }
        Err(format!(
            "`{text}` is not one of `header:NAME`, `cookie:NAME`, `client_address` or `virtual_key`"
        ))
    }
}

impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
            HashOn::ClientAddress => f.write_str("client_address"),
            HashOn::VirtualKey => f.write_str("virtual_key"),
        }
    }
}

/// One validated `[[route.target]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Unique within the route: logs, metrics and `GET /upstreams` name the target by it.
    pub name: String,
    /// Where its requests go.
    pub url: UpstreamUrl,
    /// Its share of its tier's requests, relative to the others'.
    pub weight: u32,
    /// Failover tier: tier 1 takes requests only when no tier-0 target can.
    pub tier: u8,
    /// HTTP version spoken to it.
    pub protocol: UpstreamProtocol,
    /// TLS towards it.
    pub tls: UpstreamTls,
    /// Request rules applied after the route's (an API key of a key pool).
    pub request_headers: HeaderRules,
    /// Response rules applied before the route's.
    pub response_headers: HeaderRules,
    /// Requests in flight to it at once; beyond, it is skipped.
    pub max_in_flight: u32,
    /// Connections open to it at once, idle pooled ones included; at the cap it takes a
    /// request only over a free connection.
    pub max_connections: Option<u32>,
    /// The parent proxies it is reached through (its own `upstream_proxy`, else the route's);
    /// empty: directly.
    pub upstream_proxy: Vec<ParentProxy>,
    /// When set, the host name is expanded into one target per address it resolves to, looked
    /// up again this often.
    pub dns_refresh: Option<Duration>,
}

/// The targets of a route and how it uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// The targets, in configured order.
    pub targets: Vec<TargetConfig>,
    /// How requests are spread over a tier.
    pub balance: Balance,
    /// What `balance = "hash"` keys on.
    pub hash_on: Option<HashOn>,
    /// Retries and the retry budget.
    pub retry: RetryPolicy,
    /// Ejection and cooling.
    pub passive_health: OutlierSettings,
    /// Active checks, if any.
    pub health_check: Option<HealthCheck>,
}

/// One `[[route.target]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTarget {
    /// Base URL.
    pub url: Spanned<String>,
    /// Name within the route; defaults to the URL.
    pub name: Option<Spanned<String>>,
    /// Share of the tier's requests.
    pub weight: Option<Spanned<i64>>,
    /// Failover tier.
    pub tier: Option<Spanned<i64>>,
    /// HTTP version; defaults to the route's.
    pub protocol: Option<Spanned<String>>,
    /// Header rules of this target.
    #[serde(default)]
    pub headers: FileTargetHeaders,
    /// TLS towards this target; defaults to the route's `[route.tls]`.
    pub tls: Option<FileRouteTls>,
    /// Requests in flight to it at once.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Connections open to it at once.
    pub max_connections: Option<Spanned<i64>>,
    /// Parent proxies it is reached through; defaults to the route's.
    pub upstream_proxy: Option<FileUpstreamProxy>,
    /// Expand the host name into every address it resolves to.
    pub expand_dns: Option<bool>,
    /// How often an expanded host name is looked up again.
    pub dns_refresh: Option<Spanned<String>>,
}

/// `[route.target.headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTargetHeaders {
    /// Rules for requests sent to this target, after the route's.
    #[serde(default)]
    pub request: FileHeaderRules,
    /// Rules for this target's responses, before the route's.
    #[serde(default)]
    pub response: FileHeaderRules,
}

/// The route keys that only a route with targets may have.
#[derive(Debug, Default)]
pub struct FileGroupKeys<'a> {
    /// `balance`.
    pub balance: Option<&'a Spanned<String>>,
    /// `hash_on`.
    pub hash_on: Option<&'a Spanned<String>>,
    /// `[route.retry]`.
    pub retry: Option<&'a FileRetry>,
    /// `[route.passive_health]`.
    pub passive_health: Option<&'a FilePassiveHealth>,
    /// `[route.health_check]`.
    pub health_check: Option<&'a FileHealthCheck>,
}

impl FileGroupKeys<'_> {
    /// Whether any of them is given.
    pub fn any(&self) -> bool {
        self.balance.is_some()
            || self.hash_on.is_some()
            || self.retry.is_some()
            || self.passive_health.is_some()
            || self.health_check.is_some()
    }
}

/// What a target without settings of its own takes from its route.
#[derive(Debug, Clone, Copy)]
pub struct TargetDefaults<'a> {
    /// The route's `protocol`.
    pub protocol: UpstreamProtocol,
    /// The route's `[route.tls]`.
    pub tls: &'a UpstreamTls,
    /// The route's `upstream_proxy`.
    pub upstream_proxy: &'a [ParentProxy],
}

impl Checker<'_> {
    /// The targets of the route at `key` and how it uses them; a target without its own
    /// protocol, TLS settings or upstream proxy takes the `route`'s.
    pub(super) fn group(
        &mut self,
        key: &str,
        targets: &[FileTarget],
        keys: &FileGroupKeys<'_>,
        route: &TargetDefaults<'_>,
    ) -> Option<GroupConfig> {
        let mut configs: Vec<TargetConfig> = Vec::with_capacity(targets.len());
        for (index, file) in targets.iter().enumerate() {
            let key = format!("{key}.target[{index}]");
            let Some(target) = self.target(&key, file, route) else { continue };
            if configs.iter().any(|earlier| earlier.name == target.name) {
                let span = file.name.as_ref().map_or(file.url.span(), Spanned::span);
                self.report(
                    span,
                    &format!("{key}.name"),
                    format!(
                        "`{}` names another target of this route too; give each a distinct \
                         `name` (two targets with the same URL need one)",
                        target.name
                    ),
                );
                continue;
            }
            configs.push(target);
        }
        if configs.len() > MAX_TARGETS
            && let Some(extra) = targets.get(MAX_TARGETS)
        {
            self.report(
                extra.url.span(),
                &format!("{key}.target"),
                format!("a route may have at most {MAX_TARGETS} targets"),
            );
        }
        let balance = match keys.balance {
            None => Balance::default(),
            Some(text) => Balance::parse(text.get_ref()).unwrap_or_else(|| {
                self.report(
                    text.span(),
                    &format!("{key}.balance"),
                    format!(
                        "`{}` is not one of \"round_robin\", \"least_request\", \"peak_ewma\", \
                         \"random\", \"hash\"",
                        text.get_ref()
                    ),
                );
                Balance::default()
            }),
        };
        let hash_on = keys.hash_on.and_then(|text| {
            HashOn::parse(text.get_ref())
                .map_err(|message| self.report(text.span(), &format!("{key}.hash_on"), message))
                .ok()
        });
        match (balance, keys.hash_on, keys.balance) {
            (Balance::Hash, None, Some(text)) => self.report(
                text.span(),
                &format!("{key}.hash_on"),
                "balance = \"hash\" needs hash_on (header:NAME, cookie:NAME or client_address)"
                    .to_owned(),
            ),
            (other, Some(text), _) if other != Balance::Hash => self.report(
                text.span(),
                &format!("{key}.hash_on"),
                "applies only with balance = \"hash\"".to_owned(),
            ),
            _ => {}
        }
        let retry = self.retry(&format!("{key}.retry"), keys.retry);
        let passive_health =
            self.passive_health(&format!("{key}.passive_health"), keys.passive_health);
        let health_check = self.health_check(&format!("{key}.health_check"), keys.health_check);
        (!configs.is_empty()).then_some(GroupConfig {
            targets: configs,
            balance,
            hash_on,
            retry,
            passive_health,
            health_check,
        })
    }

    fn target(
        &mut self,
        key: &str,
        file: &FileTarget,
        route: &TargetDefaults<'_>,
    ) -> Option<TargetConfig> {
        let (route_protocol, route_tls) = (route.protocol, route.tls);
        let upstream_proxy = match &file.upstream_proxy {
            Some(proxy) => self.upstream_proxy(&format!("{key}.upstream_proxy"), proxy),
            None => route.upstream_proxy.to_vec(),
        };
        let max_connections = file.max_connections.clone().map(|value| {
            let key = format!("{key}.max_connections");
            self.count(&key, Some(value), MAX_MAX_CONNECTIONS, 1..=MAX_MAX_CONNECTIONS)
        });
        let url = parse_upstream_url(file.url.get_ref())
            .map_err(|message| self.report(file.url.span(), &format!("{key}.url"), message))
            .ok();
        let protocol = match &file.protocol {
            None => route_protocol,
            Some(text) => UpstreamProtocol::parse(text.get_ref()).unwrap_or_else(|| {
                self.report(
                    text.span(),
                    &format!("{key}.protocol"),
                    format!("`{}` is not one of \"auto\", \"http1\", \"http2\"", text.get_ref()),
                );
                route_protocol
            }),
        };
        let tls = match &file.tls {
            None => route_tls.clone(),
            Some(tls) => self.upstream_tls(key, tls),
        };
        let dns_refresh = match (file.expand_dns.unwrap_or(false), &file.dns_refresh) {
            (false, None) => None,
            (false, Some(value)) => {
                self.report(
                    value.span(),
                    &format!("{key}.dns_refresh"),
                    "applies only with expand_dns = true".to_owned(),
                );
                None
            }
            (true, value) => {
                let every = self.duration(
                    &format!("{key}.dns_refresh"),
                    value.clone(),
                    DEFAULT_DNS_REFRESH,
                    MAX_DNS_REFRESH,
                );
                if every < MIN_DNS_REFRESH
                    && let Some(value) = value
                {
                    self.report(
                        value.span(),
                        &format!("{key}.dns_refresh"),
                        format!("must be at least {}", humantime::format_duration(MIN_DNS_REFRESH)),
                    );
                }
                Some(every.max(MIN_DNS_REFRESH))
            }
        };
        let url = url?;
        if dns_refresh.is_some()
            && url.authority.host().trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok()
        {
            self.report(
                file.url.span(),
                &format!("{key}.expand_dns"),
                "needs a host name, not an IP address".to_owned(),
            );
        }
        Some(TargetConfig {
            name: file.name.as_ref().map_or_else(|| url.to_string(), |n| n.get_ref().clone()),
            weight: self.count(
                &format!("{key}.weight"),
                file.weight.clone(),
                DEFAULT_WEIGHT,
                1..=MAX_WEIGHT,
            ),
            tier: self.count(&format!("{key}.tier"), file.tier.clone(), 0, 0..=MAX_TIER),
            protocol,
            tls,
            request_headers: self.rules(
                &format!("{key}.headers.request"),
                &file.headers.request,
                Direction::Request,
            ),
            response_headers: self.rules(
                &format!("{key}.headers.response"),
                &file.headers.response,
                Direction::Response,
            ),
            max_in_flight: self.count(
                &format!("{key}.max_in_flight"),
                file.max_in_flight.clone(),
                DEFAULT_MAX_IN_FLIGHT,
                1..=MAX_MAX_IN_FLIGHT,
            ),
            max_connections: max_connections.or(DEFAULT_MAX_CONNECTIONS),
            upstream_proxy,
            dns_refresh,
            url,
        })
    }
}

/// The targets of a route, for `sluice check`.
pub(super) fn write_summary(out: &mut String, group: &GroupConfig) {
    let _ = writeln!(
        out,
        "    balance {}{}",
        group.balance.as_str(),
        group.hash_on.as_ref().map_or(String::new(), |on| format!(" on {on}"))
    );
    for target in &group.targets {
        let _ = writeln!(
            out,
            "    target {:<20} {} weight {} tier {} protocol {}, max in flight {}{}{}",
            target.name,
            target.url,
            target.weight,
            target.tier,
            target.protocol.as_str(),
            target.max_in_flight,
            target.max_connections.map_or(String::new(), |max| format!(", max connections {max}")),
            target.dns_refresh.map_or(String::new(), |every| format!(
                ", every address, looked up every {}",
                humantime::format_duration(every)
            )),
        );
        if target.tls.insecure_skip_verify {
            let _ = writeln!(out, "      tls VERIFICATION DISABLED (insecure_skip_verify)");
        }
        if !target.upstream_proxy.is_empty() {
            let _ = writeln!(out, "      upstream proxy {}", describe_via(&target.upstream_proxy));
        }
        write_rules(out, "      request", &target.request_headers);
        write_rules(out, "      response", &target.response_headers);
    }
    super::retry::write_summary(out, &group.retry);
    super::health::write_summary(out, &group.passive_health, group.health_check.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_names_round_trip() {
        for name in ["round_robin", "least_request", "peak_ewma", "random", "hash"] {
            assert_eq!(Balance::parse(name).map(Balance::as_str), Some(name));
        }
        assert_eq!(Balance::parse("roundrobin"), None);
    }

    use super::super::load::parse_and_validate;
    use crate::config::summary::effective;

    fn env(name: &str) -> Option<String> {
        name.starts_with("KEY_").then(|| format!("sk-{name}"))
    }

    const POOL: &str = "[[route]]\nprefix = \"/v1\"\nname = \"chat\"\nbalance = \"hash\"\n\
        hash_on = \"cookie:session\"\n\
        [route.retry]\nmethods = [\"GET\", \"POST\"]\nstatuses = [429, 503]\nbuffer_bytes = 1024\n\
        [route.passive_health]\nconsecutive_failures = 2\nbase_ejection = \"10s\"\n\
        [route.health_check]\nkind = \"tcp\"\ninterval = \"5s\"\n\
        [[route.target]]\nname = \"a\"\nurl = \"https://api.test/v1\"\nweight = 3\n\
        [route.target.headers.request]\nset = { authorization = \"Bearer ${KEY_A}\" }\n\
        [[route.target]]\nname = \"b\"\nurl = \"https://api.test/v1\"\n\
        [[route.target]]\nurl = \"http://fallback.test:8080/openai\"\ntier = 1\n\
        expand_dns = true\ndns_refresh = \"1m\"\nmax_in_flight = 10\n";

    #[test]
    fn a_route_with_targets_is_parsed() {
        let config = parse_and_validate(POOL, &env).unwrap();
        let route = &config.routes[0];
        let group = route.group.as_ref().unwrap();
        assert_eq!(route.upstream.to_string(), "https://api.test/v1");
        assert_eq!(group.balance, Balance::Hash);
        assert_eq!(group.hash_on, Some(HashOn::Cookie("session".into())));
        let names: Vec<&str> = group.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "http://fallback.test:8080/openai"]);
        let (a, fallback) = (&group.targets[0], &group.targets[2]);
        assert_eq!((a.weight, a.tier, a.max_in_flight, a.dns_refresh), (3, 0, 1024, None));
        assert_eq!(a.request_headers.set[0].value, "Bearer sk-KEY_A");
        assert_eq!(fallback.tier, 1);
        assert_eq!(fallback.max_in_flight, 10);
        assert_eq!(fallback.dns_refresh, Some(Duration::from_secs(60)));
        assert!(group.retry.methods.contains(&http::Method::POST));
        assert_eq!(group.retry.statuses.codes().collect::<Vec<_>>(), [429, 503]);
        assert_eq!(group.retry.buffer_bytes, 1024);
        assert_eq!(group.passive_health.consecutive_failures, 2);
        assert_eq!(group.passive_health.base_ejection, Duration::from_secs(10));
        let check = group.health_check.as_ref().unwrap();
        assert_eq!(check.probe, super::super::health::ProbeKind::Tcp);
        assert_eq!(check.settings.interval, Duration::from_secs(5));
    }

    #[test]
    fn sluice_check_shows_each_target_without_secrets() {
        let config = parse_and_validate(POOL, &env).unwrap();
        let shown = effective(&config, "pool.toml");
        for line in [
            "3 targets (https://api.test/v1 first)",
            "balance hash on cookie:session",
            "target a                    https://api.test/v1 weight 3 tier 0",
            "request set    authorization = \"Bearer ${KEY_A}\"",
            "tier 1 protocol auto, max in flight 10, every address, looked up every 1m",
            "retry: 3 attempts on [429, 503] for [GET, POST]",
            "passive health: eject after 2 failures for 10s",
            "health check: TCP connect every 5s",
        ] {
            assert!(shown.contains(line), "{line:?} missing from\n{shown}");
        }
        assert!(!shown.contains("sk-KEY_A"), "{shown}");
    }

    #[test]
    fn bad_groups_are_reported_with_their_keys() {
        let found = parse_and_validate(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\nbalance = \"random\"\n\
             [[route]]\nprefix = \"/b\"\n\
             [[route]]\nprefix = \"/c\"\nupstream = \"http://h\"\n\
             [[route.target]]\nurl = \"http://x\"\n\
             [[route]]\nprefix = \"/d\"\nbalance = \"hash\"\n\
             [route.retry]\nattempts = 11\nstatuses = [200]\nmethods = [\"CONNECT\"]\n\
             [[route.target]]\nurl = \"http://x\"\nweight = 0\n\
             [[route.target]]\nurl = \"http://x\"\ntier = 8\n\
             [[route.target]]\nname = \"ip\"\nurl = \"http://10.0.0.1\"\nexpand_dns = true\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<&str> = found.iter().map(|issue| issue.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route[0]",
                "route[1]",
                "route[2].upstream",
                "route[3].target[0].weight",
                "route[3].target[1].tier",
                "route[3].target[1].name",
                "route[3].target[2].expand_dns",
                "route[3].hash_on",
                "route[3].retry.statuses",
                "route[3].retry.methods",
                "route[3].retry.attempts",
            ],
            "{found:?}"
        );
    }

    #[test]
    fn hash_on_table() {
        assert_eq!(HashOn::parse("client_address"), Ok(HashOn::ClientAddress));
        assert_eq!(HashOn::parse("virtual_key"), Ok(HashOn::VirtualKey));
        assert_eq!(
            HashOn::parse("header:X-User"),
            Ok(HashOn::Header(HeaderName::from_static("x-user")))
        );
        assert_eq!(HashOn::parse("cookie:session"), Ok(HashOn::Cookie("session".into())));
        for bad in ["header:", "header:a b", "cookie:", "cookie:a=b", "cookie:a;b", "ip", ""] {
            assert!(HashOn::parse(bad).is_err(), "{bad}");
        }
        for text in ["client_address", "header:x-user", "cookie:session"] {
            assert_eq!(HashOn::parse(text).unwrap().to_string(), text);
        }
    }
}
