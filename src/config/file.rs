//! The configuration file as written: serde types that mirror the TOML exactly.
//!
//! Nothing here is interpreted. Values that need checking keep their [`Spanned`] position so
//! `validate.rs` can point at the line that is wrong. Unknown keys are refused everywhere
//! (`deny_unknown_fields`): a typo must never be silently ignored.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[[listener]]` tables, one per bound address.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<FileListener>,
    /// Runtime worker threads.
    pub workers: Option<Spanned<i64>>,
    /// `[timeouts]`.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// `[limits]`.
    #[serde(default)]
    pub limits: FileLimits,
    /// `[headers]`.
    #[serde(default)]
    pub headers: FileHeaders,
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// `host:port` to bind.
    pub address: Spanned<String>,
    /// Serve absolute-form requests and CONNECT.
    pub forward: Option<bool>,
    /// Serve origin-form requests through the routes.
    pub reverse: Option<bool>,
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
}

/// The `[headers]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    /// Add a `Via` header to forwarded messages.
    pub via: Option<bool>,
}
