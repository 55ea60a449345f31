//! Stage two of loading, from the top: parse the TOML into a [`FileConfig`] and turn it,
//! section by section, into a runtime [`Config`], collecting every problem with its line and key
//! path. The tables of no section (`workers`, `[timeouts]`, `[limits]`, `[dns]`) are read here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;

use super::file::{FileConfig, FileDns, FileLimits, FileTimeouts};
use super::hostname::dns_name_problem;
use super::validate::{Checker, Env, line_of};
use super::{
    Config, ConfigIssue, DEFAULT_HTTP1_FAST_PATH, Limits, MAX_BODY_IDLE_TIMEOUT,
    MAX_CLIENT_SEND_TIMEOUT, MAX_CONCURRENT_STREAMS, MAX_CONNECT_TIMEOUT, MAX_CONNECTIONS,
    MAX_HTTP2_IDLE_TIMEOUT, MAX_IDLE_UPSTREAM_PER_HOST, MAX_REQUEST_BODY_BYTES,
    MAX_REQUEST_HEAD_BYTES, MAX_REQUEST_HEADER_TIMEOUT, MAX_REQUEST_HEADERS,
    MAX_REQUEST_LINE_BYTES, MAX_REQUESTS_PER_CONNECTION, MAX_RESPONSE_HEAD_BYTES,
    MAX_RESPONSE_HEADER_TIMEOUT, MAX_SHUTDOWN_GRACE, MAX_TUNNEL_IDLE_TIMEOUT,
    MAX_TUNNEL_MAX_LIFETIME, MAX_UPSTREAM_CONNECTIONS, MAX_UPSTREAM_IDLE_TIMEOUT,
    MAX_WEBSOCKET_IDLE_TIMEOUT, MAX_WEBSOCKET_MAX_LIFETIME, MAX_WORKERS, MIN_REQUEST_HEAD_BYTES,
    MIN_RESPONSE_HEAD_BYTES, Timeouts,
};

/// Parses TOML text and validates it, resolving relative file paths (certificates) against
/// `base`, the directory of the config file; on failure returns every issue found.
pub(super) fn parse_and_validate_at(
    source: &str,
    base: &Path,
    env: Env<'_>,
) -> Result<Config, Vec<ConfigIssue>> {
    let file = parse(source).map_err(|issue| vec![issue])?;
    let mut checker = Checker { source, base, env, issues: Vec::new() };
    let config = checker.config(file);
    if checker.issues.is_empty() { Ok(config) } else { Err(checker.issues) }
}

fn parse(source: &str) -> Result<FileConfig, ConfigIssue> {
    let deserializer = toml::de::Deserializer::parse(source).map_err(|err| ConfigIssue {
        line: err.span().map(|span| line_of(source, span.start)),
        key: "(syntax)".to_owned(),
        message: err.message().to_owned(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // `Spanned` values deserialize through a private struct whose field shows in the path.
        let path = err.path().to_string();
        let key = match path.split(".$__serde_spanned").next() {
            Some(".") | None => "(top level)".to_owned(),
            Some(key) => key.to_owned(),
        };
        let inner = err.into_inner();
        ConfigIssue {
            line: inner.span().map(|span| line_of(source, span.start)),
            key,
            message: inner.message().to_owned(),
        }
    })
}

impl Checker<'_> {
    /// The whole file, section by section; the order of the sections is the order in which
    /// their problems are listed.
    fn config(&mut self, file: FileConfig) -> Config {
        let auth = self.auth(&file.auth);
        let access = self.access(&file.access);
        let users = !auth.users.is_empty();
        let listeners = self.listeners(&file.listeners, &access, users);
        let workers = file.workers.and_then(|w| {
            let value = self.count("workers", Some(w), 0, 1..=MAX_WORKERS);
            NonZeroUsize::new(value)
        });
        let timeouts = self.timeouts(file.timeouts);
        let limits = self.limits(file.limits);
        let cache = self.cache(&file.cache);
        let gateway = self.gateway(&file.gateway);
        let routes = self.routes(&file.routes, &timeouts, &limits);
        let destinations = self.destinations(&file.destinations);
        let rate_limit_per_ip =
            file.rate_limit.per_ip.as_ref().and_then(|r| self.rate("rate_limit.per_ip", r));
        let dns_hosts = self.dns(&file.dns);
        Config {
            listeners,
            workers,
            http1_fast_path: file.http1_fast_path.unwrap_or(DEFAULT_HTTP1_FAST_PATH),
            timeouts,
            limits,
            headers: self.headers(file.headers),
            routes,
            auth,
            access,
            destinations,
            rate_limit_per_ip,
            dns_hosts,
            access_log: self.access_log(&file.access_log),
            admin: file.admin.as_ref().and_then(|admin| self.admin(admin)),
            request_id: self.request_id(&file.request_id),
            cache,
            pac: file.pac.as_ref().map(|pac| self.pac(pac)),
            parents: self.parents(&file.parents),
            gateway,
        }
    }

    /// `[dns] hosts`: names lower-cased without a trailing dot, each to its addresses.
    fn dns(&mut self, file: &FileDns) -> BTreeMap<String, Vec<IpAddr>> {
        let mut dns_hosts = BTreeMap::new();
        for (name, addresses) in &file.hosts {
            let parsed: Vec<IpAddr> = addresses
                .iter()
                .filter_map(|a| {
                    let ip = a.get_ref().parse().ok();
                    if ip.is_none() {
                        self.report(
                            a.span(),
                            &format!("dns.hosts.{name}"),
                            format!("`{}` is not an IP address", a.get_ref()),
                        );
                    }
                    ip
                })
                .collect();
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(problem) = dns_name_problem(&name) {
                // The table's keys carry no position; point at its first address, if any.
                let line = addresses.first().map(|a| line_of(self.source, a.span().start));
                self.issues.push(ConfigIssue {
                    line,
                    key: format!("dns.hosts.{name}"),
                    message: format!("`{name}` is not a host name: it {problem}"),
                });
                continue;
            }
            dns_hosts.insert(name, parsed);
        }
        dns_hosts
    }

    fn timeouts(&mut self, file: FileTimeouts) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: self.duration(
                "timeouts.connect",
                file.connect,
                d.connect,
                MAX_CONNECT_TIMEOUT,
            ),
            response_header: self.duration(
                "timeouts.response_header",
                file.response_header,
                d.response_header,
                MAX_RESPONSE_HEADER_TIMEOUT,
            ),
            request_header: self.duration(
                "timeouts.request_header",
                file.request_header,
                d.request_header,
                MAX_REQUEST_HEADER_TIMEOUT,
            ),
            tunnel_idle: self.duration(
                "timeouts.tunnel_idle",
                file.tunnel_idle,
                d.tunnel_idle,
                MAX_TUNNEL_IDLE_TIMEOUT,
            ),
            upstream_idle: self.duration(
                "timeouts.upstream_idle",
                file.upstream_idle,
                d.upstream_idle,
                MAX_UPSTREAM_IDLE_TIMEOUT,
            ),
            shutdown_grace: self.duration(
                "timeouts.shutdown_grace",
                file.shutdown_grace,
                d.shutdown_grace,
                MAX_SHUTDOWN_GRACE,
            ),
            body_idle: self.duration(
                "timeouts.body_idle",
                file.body_idle,
                d.body_idle,
                MAX_BODY_IDLE_TIMEOUT,
            ),
            websocket_idle: self.duration(
                "timeouts.websocket_idle",
                file.websocket_idle,
                d.websocket_idle,
                MAX_WEBSOCKET_IDLE_TIMEOUT,
            ),
            tunnel_max_lifetime: self.duration(
                "timeouts.tunnel_max_lifetime",
                file.tunnel_max_lifetime,
                d.tunnel_max_lifetime,
                MAX_TUNNEL_MAX_LIFETIME,
            ),
            websocket_max_lifetime: self.duration(
                "timeouts.websocket_max_lifetime",
                file.websocket_max_lifetime,
                d.websocket_max_lifetime,
                MAX_WEBSOCKET_MAX_LIFETIME,
            ),
            client_send: self.duration(
                "timeouts.client_send",
                file.client_send,
                d.client_send,
                MAX_CLIENT_SEND_TIMEOUT,
            ),
            http2_idle: self.duration(
                "timeouts.http2_idle",
                file.http2_idle,
                d.http2_idle,
                MAX_HTTP2_IDLE_TIMEOUT,
            ),
        }
    }

    fn limits(&mut self, file: FileLimits) -> Limits {
        let d = Limits::default();
        Limits {
            max_request_head_bytes: self.count(
                "limits.max_request_head_bytes",
                file.max_request_head_bytes,
                d.max_request_head_bytes,
                MIN_REQUEST_HEAD_BYTES..=MAX_REQUEST_HEAD_BYTES,
            ),
            max_request_headers: self.count(
                "limits.max_request_headers",
                file.max_request_headers,
                d.max_request_headers,
                1..=MAX_REQUEST_HEADERS,
            ),
            max_connections: self.count(
                "limits.max_connections",
                file.max_connections,
                d.max_connections,
                1..=MAX_CONNECTIONS,
            ),
            max_idle_upstream_per_host: self.count(
                "limits.max_idle_upstream_per_host",
                file.max_idle_upstream_per_host,
                d.max_idle_upstream_per_host,
                0..=MAX_IDLE_UPSTREAM_PER_HOST,
            ),
            max_request_line_bytes: self.count(
                "limits.max_request_line_bytes",
                file.max_request_line_bytes,
                d.max_request_line_bytes,
                64..=MAX_REQUEST_LINE_BYTES,
            ),
            max_request_body_bytes: self.count(
                "limits.max_request_body_bytes",
                file.max_request_body_bytes,
                d.max_request_body_bytes,
                1..=MAX_REQUEST_BODY_BYTES,
            ),
            max_requests_per_connection: self.count(
                "limits.max_requests_per_connection",
                file.max_requests_per_connection,
                d.max_requests_per_connection,
                1..=MAX_REQUESTS_PER_CONNECTION,
            ),
            max_concurrent_streams: self.count(
                "limits.max_concurrent_streams",
                file.max_concurrent_streams,
                d.max_concurrent_streams,
                1..=MAX_CONCURRENT_STREAMS,
            ),
            max_upstream_connections: self.count(
                "limits.max_upstream_connections",
                file.max_upstream_connections,
                d.max_upstream_connections,
                1..=MAX_UPSTREAM_CONNECTIONS,
            ),
            max_response_head_bytes: self.count(
                "limits.max_response_head_bytes",
                file.max_response_head_bytes,
                d.max_response_head_bytes,
                MIN_RESPONSE_HEAD_BYTES..=MAX_RESPONSE_HEAD_BYTES,
            ),
        }
    }
}

/// As [`parse_and_validate_at`], relative to the working directory.
#[cfg(test)]
pub(super) fn parse_and_validate(source: &str, env: Env<'_>) -> Result<Config, Vec<ConfigIssue>> {
    parse_and_validate_at(source, Path::new(""), env)
}

/// An empty environment, for the sections' tests.
#[cfg(test)]
pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

/// The issues of a config that must be refused (with an empty environment).
#[cfg(test)]
pub(super) fn refused(toml: &str) -> Vec<ConfigIssue> {
    parse_and_validate(toml, &no_env).expect_err("config should be refused")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Modes;
    use std::time::Duration;

    #[test]
    fn empty_file_is_the_default_forward_proxy() {
        let config = parse_and_validate("", &no_env).unwrap();
        assert_eq!(config.listeners, Config::default().listeners);
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.limits, Limits::default());
        assert!(config.headers.via);
    }

    #[test]
    fn values_are_parsed() {
        let config = parse_and_validate(
            "workers = 3\n[[listener]]\naddress = \"[::1]:9000\"\nreverse = true\n\
             [timeouts]\nconnect = \"250ms\"\ntunnel_idle = \"2m\"\n\
             [limits]\nmax_request_head_bytes = 16384\n[headers]\nvia = false\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(config.workers, NonZeroUsize::new(3));
        assert_eq!(config.listeners[0].address, "[::1]:9000".parse().unwrap());
        assert_eq!(config.listeners[0].modes, Modes { forward: true, reverse: true, socks: true });
        assert_eq!(config.timeouts.connect, Duration::from_millis(250));
        assert_eq!(config.timeouts.tunnel_idle, Duration::from_secs(120));
        assert_eq!(config.limits.max_request_head_bytes, 16384);
        assert!(!config.headers.via);
    }

    #[test]
    fn stream_connection_and_send_limits_are_bounded() {
        let config = parse_and_validate(
            "[timeouts]\nclient_send = \"5s\"\nhttp2_idle = \"2m\"\n\
             [limits]\nmax_concurrent_streams = 50\nmax_upstream_connections = 8\n\
             max_response_head_bytes = 32768\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(config.timeouts.client_send, Duration::from_secs(5));
        assert_eq!(config.timeouts.http2_idle, Duration::from_secs(120));
        assert_eq!(config.limits.max_concurrent_streams, 50);
        assert_eq!(config.limits.max_upstream_connections, 8);
        assert_eq!(config.limits.max_response_head_bytes, 32768);
        let found = refused(
            "[timeouts]\nclient_send = \"2d\"\nhttp2_idle = \"0s\"\n\
             [limits]\nmax_concurrent_streams = 0\nmax_upstream_connections = 2000000\n\
             max_response_head_bytes = 4096\n",
        );
        let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "timeouts.client_send",
                "timeouts.http2_idle",
                "limits.max_concurrent_streams",
                "limits.max_upstream_connections",
                "limits.max_response_head_bytes",
            ]
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let found = refused("[timeouts]\nconnect = \"1s\"\nconect = \"2s\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "timeouts.conect");
        assert!(found[0].message.contains("unknown field"), "{}", found[0].message);
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let found = refused("\n[limits]\nmax_connections = \"many\"\n");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "limits.max_connections");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let found = refused("[timeouts\nconnect = 1\n");
        assert_eq!(found[0].line, Some(1));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let found = refused(
            "[[listener]]\naddress = \"nowhere\"\n[timeouts]\nconnect = \"10 parsecs\"\n\
             shutdown_grace = \"0s\"\n[limits]\nmax_request_head_bytes = 100\n",
        );
        let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("listener[0].address", Some(2)),
                ("timeouts.connect", Some(4)),
                ("timeouts.shutdown_grace", Some(5)),
                ("limits.max_request_head_bytes", Some(7)),
            ]
        );
    }

    #[test]
    fn values_past_their_bounds_are_refused_naming_key_and_line() {
        // The first three crashed or exhausted the process before they had bounds: a tokio
        // semaphore larger than MAX_PERMITS, a header-slot allocation that overflowed, and a
        // hundred million threads.
        let cases = [
            (
                "[limits]\nmax_connections = 9223372036854775807\n",
                "limits.max_connections",
                "1000000",
            ),
            (
                "[limits]\nmax_request_headers = 4611686018427387904\n",
                "limits.max_request_headers",
                "10000",
            ),
            ("workers = 100000000\n", "workers", "1024"),
            (
                "[limits]\nmax_request_head_bytes = 1048577\n",
                "limits.max_request_head_bytes",
                "1048576",
            ),
            (
                "[limits]\nmax_idle_upstream_per_host = 10001\n",
                "limits.max_idle_upstream_per_host",
                "10000",
            ),
            (
                "[limits]\nmax_request_line_bytes = 1048577\n",
                "limits.max_request_line_bytes",
                "1048576",
            ),
            (
                "[limits]\nmax_request_body_bytes = 1099511627777\n",
                "limits.max_request_body_bytes",
                "1099511627776",
            ),
            (
                "[limits]\nmax_requests_per_connection = 1000000001\n",
                "limits.max_requests_per_connection",
                "1000000000",
            ),
            ("[timeouts]\nconnect = \"61m\"\n", "timeouts.connect", "1h"),
            ("[timeouts]\nresponse_header = \"25h\"\n", "timeouts.response_header", "1day"),
            ("[timeouts]\nrequest_header = \"2h\"\n", "timeouts.request_header", "1h"),
            ("[timeouts]\ntunnel_idle = \"366d\"\n", "timeouts.tunnel_idle", "1year"),
            ("[timeouts]\nupstream_idle = \"25h\"\n", "timeouts.upstream_idle", "1day"),
            ("[timeouts]\nshutdown_grace = \"25h\"\n", "timeouts.shutdown_grace", "1day"),
            ("[timeouts]\nbody_idle = \"25h\"\n", "timeouts.body_idle", "1day"),
            ("[timeouts]\nwebsocket_idle = \"366d\"\n", "timeouts.websocket_idle", "1year"),
            (
                "[timeouts]\ntunnel_max_lifetime = \"366d\"\n",
                "timeouts.tunnel_max_lifetime",
                "1year",
            ),
            (
                "[timeouts]\nwebsocket_max_lifetime = \"366d\"\n",
                "timeouts.websocket_max_lifetime",
                "1year",
            ),
        ];
        for (toml, key, bound) in cases {
            let found = refused(toml);
            assert_eq!(found.len(), 1, "{toml}: {found:?}");
            assert_eq!(found[0].key, key, "{toml}");
            assert_eq!(found[0].line, Some(toml.lines().count()), "{toml}");
            let expected = format!("must be at most {bound}, got ");
            assert!(found[0].message.starts_with(&expected), "{toml}: {}", found[0].message);
        }
    }
}
