//! Runtime configuration: parsed, validated types the proxy uses without re-checking.
//!
//! Loading is two-stage (see `docs/CONFIG.md` for every key): the file types mirror the TOML
//! with `deny_unknown_fields`, then validation turns them into a [`Config`] of parsed values,
//! reporting *every* problem at once with its line and key path. The hot path never parses
//! config strings.
//!
//! Each section keeps its file types, runtime types, validation and `sluice check` view
//! together: [`listener`], [`route`] and [`upstream`] (a route with several targets adds
//! [`group`], [`retry`] and [`health`]), [`headers`], [`security`], [`observe`], [`cache`], [`gateway`]. What belongs to no section stays central: [`file`] (the whole file, `[timeouts]`,
//! `[limits]`, `[dns]`), `validate` (the checker and the readers every section uses), `load`
//! (parsing and the top-level assembly, above the sections), [`summary`] (the views, above
//! the sections too) and this module (the top-level types, bounds and errors). The files form
//! a DAG: the sections import `validate` and this module, never `load`, `file` or `summary`.
//! TLS types come from [`crate::tls`], which never imports this module.

pub mod cache;
pub mod file;
pub mod gateway;
pub mod group;
pub mod headers;
pub mod health;
mod hostname;
pub mod listener;
mod load;
pub mod observe;
pub mod pac;
pub mod parent;
pub mod retry;
pub mod route;
pub mod security;
pub mod source;
pub mod summary;
pub mod upstream;
mod validate;

pub use security::{
    AccessRules, AuthConfig, Credential, DestinationRules, ListenerPolicy, RateLimit, Secret, User,
};

pub use observe::{
    ACCESS_LOG_QUEUE_LINES, AccessLogConfig, AdminConfig, DEFAULT_ADMIN_HISTORY, LogDestination,
    LogFormat, MAX_ADMIN_HISTORY, MAX_REQUEST_ID_BYTES, RequestIdConfig,
};

pub use crate::tls::client::UpstreamTls;
pub use crate::tls::files::CertificateFiles;
pub use crate::tls::server::{ListenerTls, SniCertificate};
pub use cache::{CacheConfig, RouteCache};
pub use gateway::{AiRoute, AiTier, GatewayConfig, RedisConfig};
pub use headers::{ForwardMode, HeaderRule, HeaderRules, HeaderSettings};
pub use listener::{
    DEFAULT_LISTEN, DEFAULT_TLS_RELOAD_INTERVAL, ListenerConfig, MAX_TLS_RELOAD_INTERVAL, Modes,
};
pub use route::{RouteConfig, RouteTimeouts};
pub use upstream::{UpstreamProtocol, UpstreamUrl};

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

// Every timeout and limit has a default and an upper bound. The bounds are far above anything
// a deployment needs; they exist so that no value `sluice check` accepts can overflow a timer
// (`Instant + Duration` panics on overflow), a semaphore (tokio's `MAX_PERMITS`) or an
// allocation sized from the config (hyper allocates `max_request_headers` slots per parse).

/// A day, the unit of the longer bounds.
const DAY: Duration = Duration::from_secs(24 * 3600);
/// A year of 365.25 days, as durations are written (`"1y"`) and shown (`1year`).
const YEAR: Duration = Duration::from_secs(31_557_600);

/// Whether the HTTP/1 fast path serves the plain HTTP/1.1 requests it can (`http1_fast_path`).
pub const DEFAULT_HTTP1_FAST_PATH: bool = true;
/// Most runtime worker threads; more only add memory and contention.
pub const MAX_WORKERS: usize = 1024;
/// Upstream connect timeout, DNS resolution included.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `timeouts.connect` (and route `timeouts.connect`) accepted.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Time allowed for an upstream to send its response head; generous for slow model servers.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `timeouts.response_header` (and route `timeouts.response_header`) accepted.
pub const MAX_RESPONSE_HEADER_TIMEOUT: Duration = DAY;
/// Time a client has to send a complete request head (slowloris defence).
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `timeouts.request_header` accepted.
pub const MAX_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(3600);
/// A tunnel with no bytes in either direction for this long is closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest `timeouts.tunnel_idle` accepted.
pub const MAX_TUNNEL_IDLE_TIMEOUT: Duration = YEAR;
/// An idle pooled upstream connection is closed after this long.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest `timeouts.upstream_idle` accepted.
pub const MAX_UPSTREAM_IDLE_TIMEOUT: Duration = DAY;
/// How long in-flight requests and tunnels may run on after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest `timeouts.shutdown_grace` accepted.
pub const MAX_SHUTDOWN_GRACE: Duration = DAY;
/// Largest request head (request line and header fields) accepted; larger gets 431.
pub const DEFAULT_MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// Largest `limits.max_request_head_bytes` accepted.
pub const MAX_REQUEST_HEAD_BYTES: usize = 1024 * 1024;
/// Most header fields accepted in one request head; more gets 431.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Largest `limits.max_request_headers` accepted: the HTTP/1 parser allocates this many
/// slots each time it parses a head.
pub const MAX_REQUEST_HEADERS: usize = 10_000;
/// Most concurrent client connections per listener; further accepts wait for a free slot.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest `limits.max_connections` accepted (each connection needs a file descriptor).
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Most idle pooled connections kept per upstream origin.
pub const DEFAULT_MAX_IDLE_UPSTREAM_PER_HOST: usize = 64;
/// Largest `limits.max_idle_upstream_per_host` accepted.
pub const MAX_IDLE_UPSTREAM_PER_HOST: usize = 10_000;
/// Longest gap allowed between two chunks of an upstream response body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `timeouts.body_idle` (and route `timeouts.body_idle`) accepted.
pub const MAX_BODY_IDLE_TIMEOUT: Duration = DAY;
/// An upgraded (WebSocket) connection with no bytes either way for this long is closed.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest `timeouts.websocket_idle` accepted.
pub const MAX_WEBSOCKET_IDLE_TIMEOUT: Duration = YEAR;
/// Longest request line (method, target, version) accepted; longer gets 414.
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 16 * 1024;
/// Largest `limits.max_request_line_bytes` accepted.
pub const MAX_REQUEST_LINE_BYTES: usize = 1024 * 1024;
/// Largest request body accepted; larger gets 413 (checked while streaming).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest `limits.max_request_body_bytes` (and route `max_body_bytes`) accepted: 1 TiB.
pub const MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024 * 1024 * 1024;
/// Requests served on one client connection before sluice closes it.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;
/// Largest `limits.max_requests_per_connection` accepted.
pub const MAX_REQUESTS_PER_CONNECTION: u64 = 1_000_000_000;
/// Longest life of a CONNECT tunnel, however busy.
pub const DEFAULT_TUNNEL_MAX_LIFETIME: Duration = DAY;
/// Longest `timeouts.tunnel_max_lifetime` accepted.
pub const MAX_TUNNEL_MAX_LIFETIME: Duration = YEAR;
/// Longest life of an upgraded (WebSocket) connection, however busy.
pub const DEFAULT_WEBSOCKET_MAX_LIFETIME: Duration = DAY;
/// Longest `timeouts.websocket_max_lifetime` accepted.
pub const MAX_WEBSOCKET_MAX_LIFETIME: Duration = YEAR;
/// Smallest head limit the HTTP/1 parser supports.
pub const MIN_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// A client that has not accepted a byte of what sluice has to send it for this long is
/// disconnected (an HTTP/2 stream whose window stays closed is reset).
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `timeouts.client_send` accepted.
pub const MAX_CLIENT_SEND_TIMEOUT: Duration = DAY;
/// An HTTP/2 client connection with no stream open for this long is closed (GOAWAY).
pub const DEFAULT_HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `timeouts.http2_idle` accepted.
pub const MAX_HTTP2_IDLE_TIMEOUT: Duration = DAY;
/// Streams one HTTP/2 client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS,
/// RFC 9113 §6.5.2), as most servers advertise; further streams are refused (REFUSED_STREAM).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 100;
/// Largest `limits.max_concurrent_streams` accepted.
pub const MAX_CONCURRENT_STREAMS: usize = 10_000;
/// Connections open at once to one upstream address (a route's target, or an origin of the
/// forward proxy), in use and idle; a request that would need one more gets 503.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 1024;
/// Largest `limits.max_upstream_connections` accepted.
pub const MAX_UPSTREAM_CONNECTIONS: usize = 1_000_000;
/// Largest upstream response head (HTTP/1), which is also the most sluice reads from an
/// upstream connection at once, so what a slow client can pin per response stays small.
pub const DEFAULT_MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// Smallest `limits.max_response_head_bytes` the HTTP/1 parser supports.
pub const MIN_RESPONSE_HEAD_BYTES: usize = 8 * 1024;
/// Largest `limits.max_response_head_bytes` accepted.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 1024 * 1024;

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to bind and what each serves.
    pub listeners: Vec<ListenerConfig>,
    /// Runtime worker threads; `None` means one per CPU the process may use.
    pub workers: Option<NonZeroUsize>,
    /// Whether plain HTTP/1.1 requests that need nothing beyond it are served by sluice's own
    /// HTTP/1 codec (`proxy::fast`); `false` sends every request through the general path.
    pub http1_fast_path: bool,
    /// Every timeout, in one place.
    pub timeouts: Timeouts,
    /// Every size and count limit, in one place.
    pub limits: Limits,
    /// Headers the proxy adds or edits.
    pub headers: HeaderSettings,
    /// Reverse-proxy routes, in config order.
    pub routes: Vec<RouteConfig>,
    /// Proxy users.
    pub auth: AuthConfig,
    /// Client address rules, both modes.
    pub access: AccessRules,
    /// Where the forward proxy refuses to go.
    pub destinations: DestinationRules,
    /// Request rate per client address.
    pub rate_limit_per_ip: Option<RateLimit>,
    /// Static DNS overrides, consulted before the system resolver.
    pub dns_hosts: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// The access log.
    pub access_log: AccessLogConfig,
    /// The admin listener, when enabled.
    pub admin: Option<AdminConfig>,
    /// Request ids.
    pub request_id: RequestIdConfig,
    /// The shared HTTP cache's store and rules (used by routes and listeners that opt in).
    pub cache: CacheConfig,
    /// The PAC file forward listeners serve, when `[pac]` is present.
    pub pac: Option<crate::pac::PacRules>,
    /// Parent-proxy rules, in order.
    pub parents: Vec<parent::ParentRule>,
    /// The AI gateway: virtual keys and shared counters (used by routes with `[route.ai]`).
    pub gateway: GatewayConfig,
}

/// Every timeout the proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Upstream connect, DNS included; firing gives 504.
    pub connect: Duration,
    /// Upstream response head; firing gives 504.
    pub response_header: Duration,
    /// Client request head; firing closes the connection.
    pub request_header: Duration,
    /// Tunnel with no traffic either way.
    pub tunnel_idle: Duration,
    /// Idle pooled upstream connection.
    pub upstream_idle: Duration,
    /// Drain period at shutdown.
    pub shutdown_grace: Duration,
    /// Gap between two upstream response body chunks; firing aborts the response.
    pub body_idle: Duration,
    /// Upgraded connection with no traffic either way.
    pub websocket_idle: Duration,
    /// Longest life of a CONNECT tunnel.
    pub tunnel_max_lifetime: Duration,
    /// Longest life of an upgraded connection.
    pub websocket_max_lifetime: Duration,
    /// A client accepting none of what sluice sends it for this long is disconnected.
    pub client_send: Duration,
    /// An HTTP/2 client connection with no stream open for this long is closed.
    pub http2_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response_header: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            request_header: DEFAULT_REQUEST_HEADER_TIMEOUT,
            tunnel_idle: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            upstream_idle: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            body_idle: DEFAULT_BODY_IDLE_TIMEOUT,
            websocket_idle: DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
            tunnel_max_lifetime: DEFAULT_TUNNEL_MAX_LIFETIME,
            websocket_max_lifetime: DEFAULT_WEBSOCKET_MAX_LIFETIME,
            client_send: DEFAULT_CLIENT_SEND_TIMEOUT,
            http2_idle: DEFAULT_HTTP2_IDLE_TIMEOUT,
        }
    }
}

/// Every size and count limit the proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in a request head; more gets 431.
    pub max_request_head_bytes: usize,
    /// Header fields in a request head; more gets 431.
    pub max_request_headers: usize,
    /// Concurrent client connections per listener.
    pub max_connections: usize,
    /// Idle pooled upstream connections per origin.
    pub max_idle_upstream_per_host: usize,
    /// Bytes in the request line; more gets 414.
    pub max_request_line_bytes: usize,
    /// Bytes in a request body (routes may lower or raise it); more gets 413.
    pub max_request_body_bytes: u64,
    /// Requests per client connection before it is closed.
    pub max_requests_per_connection: u64,
    /// Streams open at once on one HTTP/2 client connection.
    pub max_concurrent_streams: usize,
    /// Connections open at once to one upstream address; more gets 503.
    pub max_upstream_connections: usize,
    /// Bytes in an upstream response head (HTTP/1), and in one read from an upstream.
    pub max_response_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_head_bytes: DEFAULT_MAX_REQUEST_HEAD_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_idle_upstream_per_host: DEFAULT_MAX_IDLE_UPSTREAM_PER_HOST,
            max_request_line_bytes: DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_upstream_connections: DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            max_response_head_bytes: DEFAULT_MAX_RESPONSE_HEAD_BYTES,
        }
    }
}

impl Default for Config {
    /// The configuration used with no file: a forward proxy on [`DEFAULT_LISTEN`].
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::plain(
                SocketAddr::from(([127, 0, 0, 1], 8080)),
                Modes::FORWARD,
                false,
            )],
            workers: None,
            http1_fast_path: DEFAULT_HTTP1_FAST_PATH,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            headers: HeaderSettings::default(),
            routes: Vec::new(),
            auth: AuthConfig::default(),
            access: AccessRules::default(),
            destinations: DestinationRules::default(),
            rate_limit_per_ip: None,
            dns_hosts: std::collections::BTreeMap::new(),
            access_log: AccessLogConfig::default(),
            admin: None,
            request_id: RequestIdConfig::default(),
            cache: CacheConfig::default(),
            pac: None,
            parents: Vec::new(),
            gateway: GatewayConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_toml(&source, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in error messages (usually the path).
    /// `${VAR}` references in header values are read from the process environment.
    pub fn from_toml(source: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(source, origin, &|name| std::env::var(name).ok())
    }

    /// As [`Config::from_toml`], with `env` answering `${VAR}` lookups.
    pub fn from_toml_with_env(
        source: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let base = Path::new(origin).parent().unwrap_or(Path::new(""));
        load::parse_and_validate_at(source, base, env)
            .map_err(|issues| ConfigError::Invalid { origin: origin.to_owned(), issues })
    }

    /// Checks a configuration assembled outside a file (CLI routes and listeners): duplicate
    /// prefixes and accidental open proxies.
    pub fn check_assembled(&self) -> Result<(), ConfigError> {
        let mut issues = route::duplicate_routes(&self.routes);
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(message) = listener.open_proxy_problem(&self.access) {
                issues.push(ConfigIssue { line: None, key: format!("listener[{i}]"), message });
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { origin: "command line".to_owned(), issues })
        }
    }
}

/// Parses a listen address as the config file does: `ip:port`, `[v6]:port` or
/// `localhost:port` (meaning 127.0.0.1).
pub fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    listener::parse_address(text)
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}")]
    Read {
        /// The path as given.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has one or more problems, all listed.
    #[error("{}", render_issues(origin, issues))]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// Every problem found, grouped by section.
        issues: Vec<ConfigIssue>,
    },
}

/// One problem in a config file, located by line and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path such as `timeouts.connect` or `listener[0].address`.
    pub key: String,
    /// What is wrong, and what is expected instead.
    pub message: String,
}

fn render_issues(origin: &str, issues: &[ConfigIssue]) -> String {
    let mut out = format!("invalid config {origin}:");
    for issue in issues {
        out.push_str("\n  ");
        out.push_str(origin);
        if let Some(line) = issue.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(&format!(": {}: {}", issue.key, issue.message));
    }
    out
}

/// Items joined with ", ", or "(none)": how the views show lists.
fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let joined = items.map(|item| item.to_string()).collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_owned() } else { joined }
}

#[cfg(test)]
mod tests {
    use super::load::{no_env, parse_and_validate};
    use super::*;

    #[test]
    fn values_at_their_bounds_are_accepted() {
        let config = parse_and_validate(
            &format!(
                "workers = {MAX_WORKERS}\n[timeouts]\nconnect = \"1h\"\nresponse_header = \"24h\"\n\
                 request_header = \"1h\"\ntunnel_idle = \"1y\"\nupstream_idle = \"24h\"\n\
                 shutdown_grace = \"24h\"\nbody_idle = \"24h\"\nwebsocket_idle = \"1y\"\n\
                 tunnel_max_lifetime = \"1y\"\nwebsocket_max_lifetime = \"1y\"\n[limits]\n\
                 max_request_head_bytes = {MAX_REQUEST_HEAD_BYTES}\n\
                 max_request_headers = {MAX_REQUEST_HEADERS}\nmax_connections = {MAX_CONNECTIONS}\n\
                 max_idle_upstream_per_host = {MAX_IDLE_UPSTREAM_PER_HOST}\n\
                 max_request_line_bytes = {MAX_REQUEST_LINE_BYTES}\n\
                 max_request_body_bytes = {MAX_REQUEST_BODY_BYTES}\n\
                 max_requests_per_connection = {MAX_REQUESTS_PER_CONNECTION}\n"
            ),
            &no_env,
        )
        .unwrap();
        let t = &config.timeouts;
        let most = [
            (t.connect, MAX_CONNECT_TIMEOUT),
            (t.response_header, MAX_RESPONSE_HEADER_TIMEOUT),
            (t.request_header, MAX_REQUEST_HEADER_TIMEOUT),
            (t.tunnel_idle, MAX_TUNNEL_IDLE_TIMEOUT),
            (t.upstream_idle, MAX_UPSTREAM_IDLE_TIMEOUT),
            (t.shutdown_grace, MAX_SHUTDOWN_GRACE),
            (t.body_idle, MAX_BODY_IDLE_TIMEOUT),
            (t.websocket_idle, MAX_WEBSOCKET_IDLE_TIMEOUT),
            (t.tunnel_max_lifetime, MAX_TUNNEL_MAX_LIFETIME),
            (t.websocket_max_lifetime, MAX_WEBSOCKET_MAX_LIFETIME),
        ];
        for (value, bound) in most {
            assert_eq!(value, bound);
        }
        assert_eq!(config.workers, NonZeroUsize::new(MAX_WORKERS));
        assert_eq!(config.limits.max_connections, MAX_CONNECTIONS);
        assert_eq!(config.limits.max_request_body_bytes, MAX_REQUEST_BODY_BYTES);
    }

    #[test]
    fn every_bound_fits_what_the_runtime_does_with_it() {
        // The listener's permit pool is a tokio semaphore, which panics above MAX_PERMITS.
        const { assert!(MAX_CONNECTIONS <= tokio::sync::Semaphore::MAX_PERMITS) };
        const { assert!(security::MAX_CONNECTIONS_PER_IP <= MAX_CONNECTIONS) };
        // HTTP/2 advertises the head limit as a u32 SETTINGS value.
        assert!(u32::try_from(MAX_REQUEST_HEAD_BYTES).is_ok());
        // Timers add durations to `Instant::now()`, which panics on overflow.
        let now = tokio::time::Instant::now();
        for bound in [
            MAX_CONNECT_TIMEOUT,
            MAX_RESPONSE_HEADER_TIMEOUT,
            MAX_REQUEST_HEADER_TIMEOUT,
            MAX_TUNNEL_IDLE_TIMEOUT,
            MAX_UPSTREAM_IDLE_TIMEOUT,
            MAX_SHUTDOWN_GRACE,
            MAX_BODY_IDLE_TIMEOUT,
            MAX_WEBSOCKET_IDLE_TIMEOUT,
            MAX_TUNNEL_MAX_LIFETIME,
            MAX_WEBSOCKET_MAX_LIFETIME,
            MAX_TLS_RELOAD_INTERVAL,
        ] {
            assert!(now.checked_add(bound.saturating_mul(2)).is_some(), "{bound:?}");
        }
    }
}
