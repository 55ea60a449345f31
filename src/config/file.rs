//! The configuration file as written: serde types that mirror the TOML exactly.
//!
//! Nothing here is interpreted. Values that need checking keep their [`Spanned`] position so
//! validation can point at the line that is wrong. Unknown keys are refused everywhere
//! (`deny_unknown_fields`): a typo must never be silently ignored. This module holds the whole
//! file and the small tables that belong to no section; each section's tables live beside its
//! runtime types and validation (`listener`, `route`, `upstream`, `group`, `retry`, `health`,
//! `headers`, `security`, `observe`) and are re-exported here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub use super::cache::FileCache;
pub use super::gateway::{FileAiRoute, FileAiTier, FileGateway, FileRedis};
pub use super::group::FileTarget;
pub use super::headers::{FileHeaderRules, FileHeaders};
pub use super::health::{FileHealthCheck, FilePassiveHealth};
pub use super::listener::{FileListener, FileListenerTls, FileSniCertificate};
pub use super::observe::{FileAccessLog, FileAdmin, FileRequestId};
pub use super::pac::FilePac;
pub use super::parent::FileParent;
pub use super::retry::FileRetry;
pub use super::route::{FileRoute, FileRouteHeaders, FileRouteTimeouts};
pub use super::security::{
    FileAccess, FileAuth, FileDestinations, FileRate, FileRateLimits, FileUser,
};
pub use super::upstream::FileRouteTls;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[[listener]]` tables, one per bound address.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<FileListener>,
    /// Runtime worker threads.
    pub workers: Option<Spanned<i64>>,
    /// Whether plain HTTP/1.1 requests that need nothing else are served by the fast path.
    pub http1_fast_path: Option<bool>,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// `[limits]`.
    #[serde(default)]
    pub limits: FileLimits,
    /// `[headers]`.
    #[serde(default)]
    pub headers: FileHeaders,
    /// `[[route]]` tables for the reverse proxy.
    #[serde(default, rename = "route")]
    pub routes: Vec<FileRoute>,
    /// `[auth]`: proxy users.
    #[serde(default)]
    pub auth: FileAuth,
    /// `[access]`: client address rules.
    #[serde(default)]
    pub access: FileAccess,
    /// `[destinations]`: where the forward proxy may connect.
    #[serde(default)]
    pub destinations: FileDestinations,
    /// `[rate_limit]`: per-client request rate.
    #[serde(default)]
    pub rate_limit: FileRateLimits,
    /// `[dns]`: static host overrides.
    #[serde(default)]
    pub dns: FileDns,
    /// `[access_log]`.
    #[serde(default)]
    pub access_log: FileAccessLog,
    /// `[admin]`: the admin listener, off when absent.
    pub admin: Option<FileAdmin>,
    /// `[request_id]`.
    #[serde(default)]
    pub request_id: FileRequestId,
    /// `[cache]`: the shared HTTP cache.
    #[serde(default)]
    pub cache: FileCache,
    /// `[pac]`: the proxy auto-configuration file, off when absent.
    pub pac: Option<FilePac>,
    /// `[[parent]]` rules: parent proxies by destination.
    #[serde(default, rename = "parent")]
    pub parents: Vec<FileParent>,
    /// `[gateway]`: the AI gateway's virtual keys and shared counters.
    #[serde(default)]
    pub gateway: FileGateway,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    /// Static name → addresses overrides, consulted before the system resolver.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<Spanned<String>>>,
}

/// The `[timeouts]` table; every value is a duration string such as `"10s"` or `"500ms"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// Upstream TCP connect, DNS included.
    pub connect: Option<Spanned<String>>,
    /// Upstream response head after the request was sent.
    pub response_header: Option<Spanned<String>>,
    /// Client request head.
    pub request_header: Option<Spanned<String>>,
    /// Tunnel with no bytes in either direction.
    pub tunnel_idle: Option<Spanned<String>>,
    /// Idle pooled upstream connection.
    pub upstream_idle: Option<Spanned<String>>,
    /// In-flight work at shutdown.
    pub shutdown_grace: Option<Spanned<String>>,
    /// Gap between two body chunks of an upstream response.
    pub body_idle: Option<Spanned<String>>,
    /// Upgraded (WebSocket) connection with no bytes either way.
    pub websocket_idle: Option<Spanned<String>>,
    /// Longest life of a CONNECT tunnel.
    pub tunnel_max_lifetime: Option<Spanned<String>>,
    /// Longest life of an upgraded (WebSocket) connection.
    pub websocket_max_lifetime: Option<Spanned<String>>,
    /// Longest a client may accept nothing of what sluice sends it.
    pub client_send: Option<Spanned<String>>,
    /// HTTP/2 client connection with no stream open.
    pub http2_idle: Option<Spanned<String>>,
}

/// The `[limits]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Bytes in a request head (request line plus header fields).
    pub max_request_head_bytes: Option<Spanned<i64>>,
    /// Header fields in a request head.
    pub max_request_headers: Option<Spanned<i64>>,
    /// Open client connections per listener.
    pub max_connections: Option<Spanned<i64>>,
    /// Idle pooled upstream connections kept per origin.
    pub max_idle_upstream_per_host: Option<Spanned<i64>>,
    /// Bytes in the request line (method, target, version).
    pub max_request_line_bytes: Option<Spanned<i64>>,
    /// Bytes in a request body.
    pub max_request_body_bytes: Option<Spanned<i64>>,
    /// Requests served on one client connection before it is closed.
    pub max_requests_per_connection: Option<Spanned<i64>>,
    /// Streams open at once on one HTTP/2 client connection.
    pub max_concurrent_streams: Option<Spanned<i64>>,
    /// Connections open at once to one upstream address.
    pub max_upstream_connections: Option<Spanned<i64>>,
    /// Bytes in an upstream response head.
    pub max_response_head_bytes: Option<Spanned<i64>>,
}
