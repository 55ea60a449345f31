//! Runtime settings for operating sluice: the access log, the admin listener and request ids.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::HeaderName;

/// Header carrying the request id when the config names none.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest incoming request id kept when `trust_incoming` is on; longer ones are replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Access-log lines queued for the writer before new ones are dropped (and counted).
pub const ACCESS_LOG_QUEUE_LINES: usize = 16 * 1024;

/// Where and how each request, tunnel and WebSocket session is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Whether access-log events are written at all.
    pub enabled: bool,
    /// Line format.
    pub format: LogFormat,
    /// Standard output or an appended file.
    pub destination: LogDestination,
    /// Write targets without their query string (`?...`), which may carry tokens.
    pub drop_query: bool,
    /// Request header fields copied into each event; secret ones are shown as `***`.
    pub headers: Vec<HeaderName>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Text,
            destination: LogDestination::Stdout,
            drop_query: false,
            headers: Vec::new(),
        }
    }
}

/// An access-log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Combined-log-like text with `key=value` fields appended.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    /// The process's standard output (`path = "-"`).
    Stdout,
    /// A file opened for appending; reopened on every reload, which is how logs are rotated.
    File(PathBuf),
}

impl std::fmt::Display for LogDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogDestination::Stdout => f.write_str("stdout"),
            LogDestination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The admin listener: health, readiness, metrics, the effective config and reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind; loopback unless `allow_remote` was set.
    pub address: SocketAddr,
}

/// How each request's id is chosen and passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdConfig {
    /// The header that carries it (upstream on reverse routes, and back to the client).
    pub header: HeaderName,
    /// Keep a well-formed id the client sent instead of generating one.
    pub trust_incoming: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: HeaderName::from_static(DEFAULT_REQUEST_ID_HEADER),
            trust_incoming: false,
        }
    }
}
