//! `[[route]]`: the reverse proxy's routes, as written in the file, as validated (each route
//! alone, then duplicates across routes), and as `sluice check` shows them. Where a route
//! sends its requests is in [`super::upstream`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::group::{FileGroupKeys, FileTarget, GroupConfig, TargetDefaults};
use super::headers::{Direction, FileHeaderRules, HeaderRules, write_rules};
use super::health::{FileHealthCheck, FilePassiveHealth};
use super::parent::{FileUpstreamProxy, ParentProxy, describe_via};
use super::retry::FileRetry;
use super::security::FileRate;
use super::upstream::{FileRouteTls, UpstreamProtocol, UpstreamUrl, parse_upstream_url};
use super::validate::{Checker, line_of};
use super::{
    ConfigIssue, Limits, MAX_BODY_IDLE_TIMEOUT, MAX_CONNECT_TIMEOUT, MAX_REQUEST_BODY_BYTES,
    MAX_RESPONSE_HEADER_TIMEOUT, Timeouts,
};
use crate::tls::client::UpstreamTls;

/// One validated `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Name used in logs (defaults to the prefix).
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/` unless it is exactly `/`.
    pub prefix: String,
    /// Lower-case host name this route is limited to, if any.
    pub host: Option<String>,
    /// Where requests go; for a route with targets, the first target's URL.
    pub upstream: UpstreamUrl,
    /// The targets, when the route lists several instead of one `upstream`.
    pub group: Option<GroupConfig>,
    /// Remove the prefix before joining with the upstream base path.
    pub strip_prefix: bool,
    /// Send the client's `Host` instead of the upstream's authority.
    pub preserve_host: bool,
    /// Lower-case `Upgrade` protocol names allowed through.
    pub allow_upgrades: Vec<String>,
    /// Upstream timeouts for this route.
    pub timeouts: RouteTimeouts,
    /// Rules applied to requests after the global ones.
    pub request_headers: HeaderRules,
    /// Rules applied to responses before the global ones.
    pub response_headers: HeaderRules,
    /// HTTP version spoken to the upstream.
    pub protocol: UpstreamProtocol,
    /// TLS settings for an https upstream.
    pub tls: UpstreamTls,
    /// The parent proxies the upstream is reached through, tried in order (`upstream_proxy`);
    /// empty: directly.
    pub upstream_proxy: Vec<ParentProxy>,
    /// Largest request body; more gets 413.
    pub max_body_bytes: u64,
    /// Request rate across all clients of this route.
    pub rate_limit: Option<super::RateLimit>,
    /// Whether and how the route's responses are cached.
    pub cache: super::RouteCache,
    /// The AI provider API the route serves, when it is an AI route (`[route.ai]`).
    pub ai: Option<super::AiRoute>,
}

/// Upstream timeouts of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Response head after the request was sent.
    pub response_header: Duration,
    /// Gap between two chunks of the response body.
    pub body_idle: Duration,
}

/// Normalises a route prefix: must start with `/`; a trailing `/` is dropped (except for `/`).
pub fn normalize_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with \"/\""));
    }
    if text.contains(['?', '#']) || text.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(format!("`{text}` must be a plain path (no query, fragment or spaces)"));
    }
    if text.split('/').any(is_dot_segment) {
        return Err(format!(
            "`{text}` has a `.` or `..` segment; request paths with one are refused (400), so \
             this prefix could never match"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
}

/// `.` or `..`, written plainly or percent-encoded (`%2e`, `.%2E`, ...): the segments the
/// request path check (`uri::path::has_dot_segment`) refuses, which config cannot import since
/// `uri` reads route configs.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

impl RouteConfig {
    /// Where the route sends requests, in a line: its upstream, or how many targets it has.
    pub fn upstream_label(&self) -> String {
        match &self.group {
            Some(group) if group.targets.len() > 1 => {
                format!("{} targets ({} first)", group.targets.len(), self.upstream)
            }
            _ => self.upstream.to_string(),
        }
    }

    /// A route from the command line (`PREFIX=URL`) with every other setting at its default.
    pub fn from_cli(spec: &str, timeouts: &Timeouts) -> Result<RouteConfig, String> {
        let (prefix, url) = spec.split_once('=').ok_or_else(|| {
            format!("`{spec}` is not PREFIX=URL (e.g. /api=http://127.0.0.1:9000)")
        })?;
        let prefix = normalize_prefix(prefix)?;
        Ok(RouteConfig {
            name: prefix.clone(),
            prefix,
            host: None,
            upstream: parse_upstream_url(url)?,
            group: None,
            strip_prefix: true,
            preserve_host: false,
            allow_upgrades: vec!["websocket".to_owned()],
            timeouts: RouteTimeouts {
                connect: timeouts.connect,
                response_header: timeouts.response_header,
                body_idle: timeouts.body_idle,
            },
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            protocol: UpstreamProtocol::Auto,
            tls: UpstreamTls::default(),
            upstream_proxy: Vec::new(),
            max_body_bytes: super::DEFAULT_MAX_REQUEST_BODY_BYTES,
            rate_limit: None,
            cache: super::RouteCache::default(),
            ai: None,
        })
    }
}

/// One `[[route]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Name for logs; defaults to the prefix.
    pub name: Option<Spanned<String>>,
    /// Path prefix matched on whole segments.
    pub prefix: Spanned<String>,
    /// Upstream base URL (the shorthand for one target).
    pub upstream: Option<Spanned<String>>,
    /// `[[route.target]]`: several targets instead of one `upstream`.
    #[serde(default, rename = "target")]
    pub targets: Vec<FileTarget>,
    /// How requests are spread over the targets.
    pub balance: Option<Spanned<String>>,
    /// What `balance = "hash"` keys on.
    pub hash_on: Option<Spanned<String>>,
    /// `[route.retry]`.
    pub retry: Option<FileRetry>,
    /// `[route.passive_health]`.
    pub passive_health: Option<FilePassiveHealth>,
    /// `[route.health_check]`.
    pub health_check: Option<FileHealthCheck>,
    /// Remove the prefix before joining with the upstream base path.
    pub strip_prefix: Option<bool>,
    /// Send the client's Host instead of the upstream's authority.
    pub preserve_host: Option<bool>,
    /// Only match requests for this host name.
    pub host: Option<Spanned<String>>,
    /// Upgrade protocols allowed through.
    pub allow_upgrades: Option<Vec<Spanned<String>>>,
    /// Per-route timeouts.
    #[serde(default)]
    pub timeouts: FileRouteTimeouts,
    /// Per-route header rules.
    #[serde(default)]
    pub headers: FileRouteHeaders,
    /// HTTP version to the upstream: auto, http1 or http2.
    pub protocol: Option<Spanned<String>>,
    /// TLS to an https upstream.
    #[serde(default)]
    pub tls: FileRouteTls,
    /// Parent proxies the upstream is reached through.
    pub upstream_proxy: Option<FileUpstreamProxy>,
    /// Request body limit for this route.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Request rate limit for this route, across all clients.
    pub rate_limit: Option<FileRate>,
    /// Cache this route's responses in the shared cache.
    pub cache: Option<bool>,
    /// How long past freshness a stored response may stand in for a down upstream.
    pub cache_stale_when_down: Option<Spanned<String>>,
    /// `[route.ai]`: the route serves an AI provider's API.
    pub ai: Option<super::gateway::FileAiRoute>,
}

/// `[route.timeouts]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteTimeouts {
    /// Upstream connect.
    pub connect: Option<Spanned<String>>,
    /// Upstream response head.
    pub response_header: Option<Spanned<String>>,
    /// Gap between response body chunks.
    pub body_idle: Option<Spanned<String>>,
}

/// `[route.headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteHeaders {
    /// Rules for requests sent upstream.
    #[serde(default)]
    pub request: FileHeaderRules,
    /// Rules for responses.
    #[serde(default)]
    pub response: FileHeaderRules,
}

impl Checker<'_> {
    /// Every route of the file, then the routes that duplicate an earlier one.
    pub(super) fn routes(
        &mut self,
        file: &[FileRoute],
        timeouts: &Timeouts,
        limits: &Limits,
    ) -> Vec<RouteConfig> {
        let routes: Vec<RouteConfig> = file
            .iter()
            .enumerate()
            .filter_map(|(i, route)| self.route(i, route, timeouts, limits))
            .collect();
        for issue in duplicate_routes(&routes) {
            // Point at the later duplicate's prefix line.
            let line = issue
                .key
                .strip_prefix("route[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|index| index.parse::<usize>().ok())
                .and_then(|index| file.get(index))
                .map(|route| line_of(self.source, route.prefix.span().start));
            self.issues.push(ConfigIssue { line, ..issue });
        }
        routes
    }

    fn route(
        &mut self,
        index: usize,
        file: &FileRoute,
        defaults: &Timeouts,
        limits: &Limits,
    ) -> Option<RouteConfig> {
        let key = format!("route[{index}]");
        let prefix = normalize_prefix(file.prefix.get_ref())
            .map_err(|message| self.report(file.prefix.span(), &format!("{key}.prefix"), message))
            .ok();
        let upstream = file.upstream.as_ref().and_then(|upstream| {
            parse_upstream_url(upstream.get_ref())
                .map_err(|message| {
                    self.report(upstream.span(), &format!("{key}.upstream"), message)
                })
                .ok()
        });
        let host = file.host.as_ref().and_then(|host| {
            let text = host.get_ref().trim().to_ascii_lowercase();
            let valid = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !text.is_empty()
                        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                }
            };
            if !valid {
                self.report(
                    host.span(),
                    &format!("{key}.host"),
                    format!(
                        "`{}` is not a host name (give it without a port: the port is ignored \
                         when matching)",
                        host.get_ref()
                    ),
                );
            }
            valid.then_some(text)
        });
        let allow_upgrades = match &file.allow_upgrades {
            None => vec!["websocket".to_owned()],
            Some(list) => list.iter().map(|p| p.get_ref().trim().to_ascii_lowercase()).collect(),
        };
        let timeouts = RouteTimeouts {
            connect: self.duration(
                &format!("{key}.timeouts.connect"),
                file.timeouts.connect.clone(),
                defaults.connect,
                MAX_CONNECT_TIMEOUT,
            ),
            response_header: self.duration(
                &format!("{key}.timeouts.response_header"),
                file.timeouts.response_header.clone(),
                defaults.response_header,
                MAX_RESPONSE_HEADER_TIMEOUT,
            ),
            body_idle: self.duration(
                &format!("{key}.timeouts.body_idle"),
                file.timeouts.body_idle.clone(),
                defaults.body_idle,
                MAX_BODY_IDLE_TIMEOUT,
            ),
        };
        let request_headers = self.rules(
            &format!("{key}.headers.request"),
            &file.headers.request,
            Direction::Request,
        );
        let response_headers = self.rules(
            &format!("{key}.headers.response"),
            &file.headers.response,
            Direction::Response,
        );
        let protocol = match &file.protocol {
            None => UpstreamProtocol::Auto,
            Some(text) => UpstreamProtocol::parse(text.get_ref()).unwrap_or_else(|| {
                self.report(
                    text.span(),
                    &format!("{key}.protocol"),
                    format!("`{}` is not one of \"auto\", \"http1\", \"http2\"", text.get_ref()),
                );
                UpstreamProtocol::Auto
            }),
        };
        let tls = self.upstream_tls(&key, &file.tls);
        let upstream_proxy = match &file.upstream_proxy {
            Some(proxy) => self.upstream_proxy(&format!("{key}.upstream_proxy"), proxy),
            None => Vec::new(),
        };
        let group_keys = FileGroupKeys {
            balance: file.balance.as_ref(),
            hash_on: file.hash_on.as_ref(),
            retry: file.retry.as_ref(),
            passive_health: file.passive_health.as_ref(),
            health_check: file.health_check.as_ref(),
        };
        let group = match (&file.upstream, file.targets.is_empty()) {
            (Some(_), true) if group_keys.any() => {
                self.report(
                    file.prefix.span(),
                    &key,
                    "balance, hash_on, retry, passive_health and health_check need \
                     [[route.target]] tables instead of `upstream`"
                        .to_owned(),
                );
                None
            }
            (Some(upstream), false) => {
                self.report(
                    upstream.span(),
                    &format!("{key}.upstream"),
                    "give either `upstream` or [[route.target]] tables, not both".to_owned(),
                );
                None
            }
            (None, true) => {
                self.report(
                    file.prefix.span(),
                    &key,
                    "needs an `upstream` or [[route.target]] tables".to_owned(),
                );
                None
            }
            (None, false) => {
                let route = TargetDefaults { protocol, tls: &tls, upstream_proxy: &upstream_proxy };
                self.group(&key, &file.targets, &group_keys, &route)
            }
            (Some(_), true) => None,
        };
        let upstream = match &group {
            Some(group) => group.targets.first().map(|target| target.url.clone()),
            None => upstream,
        };
        let max_body_bytes = self.count(
            &format!("{key}.max_body_bytes"),
            file.max_body_bytes.clone(),
            limits.max_request_body_bytes,
            1..=MAX_REQUEST_BODY_BYTES,
        );
        let rate_limit =
            file.rate_limit.as_ref().and_then(|r| self.rate(&format!("{key}.rate_limit"), r));
        let cache = self.route_cache(&key, file.cache, &file.cache_stale_when_down);
        let ai = file.ai.as_ref().and_then(|ai| self.ai_route(&key, ai));
        // Only an AI route's admission knows the client's virtual key.
        let by_virtual_key =
            group.as_ref().is_some_and(|g| g.hash_on == Some(super::group::HashOn::VirtualKey));
        if let (true, Some(text)) = (by_virtual_key, &file.hash_on)
            && !ai.as_ref().is_some_and(|ai| ai.virtual_keys)
        {
            let message = "hash_on = \"virtual_key\" needs [route.ai] with virtual keys".to_owned();
            self.report(text.span(), &format!("{key}.hash_on"), message);
        }
        let prefix = prefix?;
        Some(RouteConfig {
            cache,
            ai,
            protocol,
            tls,
            upstream_proxy,
            max_body_bytes,
            rate_limit,
            name: file.name.as_ref().map_or_else(|| prefix.clone(), |n| n.get_ref().clone()),
            prefix,
            host,
            upstream: upstream?,
            group,
            strip_prefix: file.strip_prefix.unwrap_or(true),
            preserve_host: file.preserve_host.unwrap_or(false),
            allow_upgrades,
            timeouts,
            request_headers,
            response_headers,
        })
    }
}

/// Every pair of routes with the same host and prefix, reported against the later one.
pub(super) fn duplicate_routes(routes: &[RouteConfig]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (i, later) in routes.iter().enumerate() {
        let earlier =
            routes.iter().take(i).position(|r| r.prefix == later.prefix && r.host == later.host);
        if let Some(first) = earlier {
            issues.push(ConfigIssue {
                line: None,
                key: format!("route[{i}].prefix"),
                message: format!(
                    "`{}`{} duplicates route[{first}]",
                    later.prefix,
                    later.host.as_ref().map_or(String::new(), |h| format!(" for host {h}"))
                ),
            });
        }
    }
    issues
}

/// The `routes:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, routes: &[RouteConfig]) {
    if !routes.is_empty() {
        let _ = writeln!(out, "\nroutes:");
    }
    for route in routes {
        let _ = writeln!(
            out,
            "  {:<20} {}{} -> {}  (strip_prefix={}, preserve_host={}, upgrades=[{}])",
            route.name,
            route.host.as_ref().map_or(String::new(), |h| format!("{h} ")),
            route.prefix,
            route.upstream_label(),
            route.strip_prefix,
            route.preserve_host,
            route.allow_upgrades.join(", "),
        );
        let _ = writeln!(
            out,
            "    protocol {}, max body {} bytes, rate {}",
            route.protocol.as_str(),
            route.max_body_bytes,
            route
                .rate_limit
                .map_or("unlimited".to_owned(), |r| format!("{}/s, burst {}", r.rate, r.burst)),
        );
        let tls = &route.tls;
        for ca in &tls.extra_roots {
            let _ = writeln!(out, "    tls ca {}", ca.display());
        }
        if let Some(client) = &tls.client_certificate {
            let _ = writeln!(out, "    tls client certificate {}", client.certificate.display());
        }
        if let Some(name) = &tls.server_name {
            let _ = writeln!(out, "    tls server name {name}");
        }
        if tls.insecure_skip_verify {
            let _ = writeln!(out, "    tls VERIFICATION DISABLED (insecure_skip_verify)");
        }
        if !route.upstream_proxy.is_empty() {
            let _ = writeln!(out, "    upstream proxy {}", describe_via(&route.upstream_proxy));
        }
        write_rules(out, "    request", &route.request_headers);
        write_rules(out, "    response", &route.response_headers);
        if let Some(group) = &route.group {
            super::group::write_summary(out, group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("/defm/").unwrap(), "/defm");
        assert_eq!(normalize_prefix("/").unwrap(), "/");
        assert_eq!(normalize_prefix("//").unwrap(), "/");
        assert_eq!(normalize_prefix("/a/b").unwrap(), "/a/b");
        assert!(normalize_prefix("api").is_err());
        assert!(normalize_prefix("/a?b").is_err());
        // A routed path with a dot segment is refused, so such a prefix could never match.
        for dotted in ["/a/../b", "/a/./b", "/..", "/a/.", "/a/%2e%2E/b", "/a/.%2e", "/%2E/"] {
            let err = normalize_prefix(dotted).unwrap_err();
            assert!(err.contains("`.` or `..` segment"), "{dotted}: {err}");
        }
        for plain in ["/a.b", "/.well-known", "/a/...", "/v1.2/x", "/%2e%2e%2e"] {
            assert!(normalize_prefix(plain).is_ok(), "{plain}");
        }
    }

    #[test]
    fn cli_routes() {
        let route =
            RouteConfig::from_cli("/defm/=https://api.example.com", &Default::default()).unwrap();
        assert_eq!(route.prefix, "/defm");
        assert_eq!(route.upstream.authority, "api.example.com");
        assert!(RouteConfig::from_cli("/defm", &Default::default()).is_err());
        let err = RouteConfig::from_cli("/a=http://127.0.0.1:99999", &Default::default());
        assert!(err.unwrap_err().contains("has port `99999`"));
    }

    use super::super::load::parse_and_validate;
    use crate::config::ForwardMode;

    fn env(name: &str) -> Option<String> {
        (name == "API_KEY").then(|| "sk-123".to_owned())
    }

    #[test]
    fn routes_and_rules_are_parsed_with_secrets_expanded() {
        let config = parse_and_validate(
            "[[route]]\nprefix = \"/defm/\"\nupstream = \"https://api.example.com/v1\"\n\
             host = \"GW.Example\"\nallow_upgrades = []\n\
             [route.timeouts]\nresponse_header = \"5m\"\n\
             [route.headers.request]\nset = { authorization = \"Bearer ${API_KEY}\" }\n\
             remove = [\"cookie\"]\n\
             [headers]\nx_forwarded_for = \"replace\"\n[headers.response]\nappend = { x-a = \"1\" }\n",
            &env,
        )
        .unwrap();
        let route = &config.routes[0];
        assert_eq!(route.prefix, "/defm");
        assert_eq!(route.name, "/defm");
        assert_eq!(route.host.as_deref(), Some("gw.example"));
        assert!(route.allow_upgrades.is_empty());
        assert_eq!(route.timeouts.response_header, Duration::from_secs(300));
        assert_eq!(route.timeouts.connect, Timeouts::default().connect);
        let rule = &route.request_headers.set[0];
        assert_eq!(rule.value, "Bearer sk-123");
        assert!(rule.value.is_sensitive());
        assert!(!format!("{rule:?} {rule}").contains("sk-123"));
        assert_eq!(route.request_headers.remove, ["cookie"]);
        assert_eq!(config.headers.x_forwarded_for, ForwardMode::Replace);
        assert_eq!(config.headers.response.append[0].value, "1");
        assert!(!config.headers.response.append[0].value.is_sensitive());
    }

    #[test]
    fn unset_variable_is_named() {
        let found = parse_and_validate(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\n\
             [route.headers.request]\nset = { authorization = \"Bearer ${MISSING_KEY}\" }\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(found[0].key, "route[0].headers.request.set.authorization");
        assert_eq!(found[0].line, Some(5));
        assert!(found[0].message.contains("MISSING_KEY is not set"), "{}", found[0].message);
    }

    #[test]
    fn duplicate_and_bad_routes_are_reported() {
        let found = parse_and_validate(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\n\
             [[route]]\nprefix = \"/a/\"\nupstream = \"http://h2\"\n\
             [[route]]\nprefix = \"b\"\nupstream = \"ftp://h\"\n\
             [[route]]\nprefix = \"/a\"\nhost = \"x.test\"\nupstream = \"http://h\"\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("route[2].prefix", Some(8)),
                ("route[2].upstream", Some(9)),
                ("route[1].prefix", Some(5)),
            ]
        );
    }
}
