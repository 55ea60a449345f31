//! Settings for operating sluice: the access log (`[access_log]`), the admin listener
//! (`[admin]`) and request ids (`[request_id]`), as written in the file, as validated, and as
//! `sluice check` shows them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::headers::{Direction, managed_field};
use super::listener::parse_address;
use super::validate::Checker;
use super::{Config, list};

/// Header carrying the request id when the config names none.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest incoming request id kept when `trust_incoming` is on; longer ones are replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Access-log lines queued for the writer before new ones are dropped (and counted).
pub const ACCESS_LOG_QUEUE_LINES: usize = 16 * 1024;
/// How much per-route traffic history the status page charts, by default.
pub const DEFAULT_ADMIN_HISTORY: Duration = Duration::from_secs(5 * 60);
/// The longest `[admin] history`: one sample a second per route is kept in memory.
pub const MAX_ADMIN_HISTORY: Duration = Duration::from_secs(60 * 60);

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

/// The admin listener: health, readiness, metrics, the status page, the effective config and
/// reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind; loopback unless `allow_remote` was set.
    pub address: SocketAddr,
    /// How far back the status page's per-route traffic charts reach (one sample a second).
    pub history: Duration,
}

impl AdminConfig {
    /// An admin listener on `address` with every other setting at its default.
    pub fn on(address: SocketAddr) -> AdminConfig {
        AdminConfig { address, history: DEFAULT_ADMIN_HISTORY }
    }
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

/// `[access_log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// Write access-log events at all (default true).
    pub enabled: Option<bool>,
    /// `text` or `json`.
    pub format: Option<Spanned<String>>,
    /// `-` for standard output, else a file appended to.
    pub path: Option<Spanned<String>>,
    /// Leave query strings out of logged targets.
    pub drop_query: Option<bool>,
    /// Request header fields to log.
    #[serde(default)]
    pub headers: Vec<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Address to bind.
    pub address: Spanned<String>,
    /// Allow a non-loopback address.
    pub allow_remote: Option<bool>,
    /// How far back the status page's traffic charts reach.
    pub history: Option<Spanned<String>>,
}

/// `[request_id]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequestId {
    /// Header name.
    pub header: Option<Spanned<String>>,
    /// Keep a client's id.
    pub trust_incoming: Option<bool>,
}

impl Checker<'_> {
    pub(super) fn access_log(&mut self, file: &FileAccessLog) -> AccessLogConfig {
        let defaults = AccessLogConfig::default();
        let format = match &file.format {
            None => defaults.format,
            Some(format) => match format.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.report(
                        format.span(),
                        "access_log.format",
                        format!("`{other}` is not a format; use \"text\" or \"json\""),
                    );
                    defaults.format
                }
            },
        };
        let destination = match &file.path {
            None => defaults.destination,
            Some(path) if path.get_ref() == "-" => LogDestination::Stdout,
            Some(path) if path.get_ref().is_empty() => {
                self.report(
                    path.span(),
                    "access_log.path",
                    "is empty; use \"-\" for standard output".to_owned(),
                );
                defaults.destination
            }
            Some(path) => LogDestination::File(self.path(path)),
        };
        let headers = file
            .headers
            .iter()
            .filter_map(|name| self.header_name("access_log.headers", name))
            .collect();
        AccessLogConfig {
            enabled: file.enabled.unwrap_or(defaults.enabled),
            format,
            destination,
            drop_query: file.drop_query.unwrap_or(defaults.drop_query),
            headers,
        }
    }

    pub(super) fn admin(&mut self, file: &FileAdmin) -> Option<AdminConfig> {
        let Some(address) = parse_address(file.address.get_ref()) else {
            self.report(
                file.address.span(),
                "admin.address",
                format!(
                    "`{}` is not an IP address and port such as \"127.0.0.1:9901\"",
                    file.address.get_ref()
                ),
            );
            return None;
        };
        if !address.ip().is_loopback() && !file.allow_remote.unwrap_or(false) {
            self.report(
                file.address.span(),
                "admin.address",
                format!(
                    "{address} is not a loopback address; the admin listener can reload the \
                     config and shows its routes, so expose it only with `allow_remote = true` \
                     behind a firewall"
                ),
            );
        }
        let history = self.duration(
            "admin.history",
            file.history.clone(),
            DEFAULT_ADMIN_HISTORY,
            MAX_ADMIN_HISTORY,
        );
        // One sample a second: a shorter history would hold none.
        let history = match &file.history {
            Some(value) if history < Duration::from_secs(1) => {
                let message = format!("must be at least 1s, got `{}`", value.get_ref());
                self.report(value.span(), "admin.history", message);
                DEFAULT_ADMIN_HISTORY
            }
            _ => history,
        };
        Some(AdminConfig { address, history })
    }

    pub(super) fn request_id(&mut self, file: &FileRequestId) -> RequestIdConfig {
        let defaults = RequestIdConfig::default();
        let header = file.header.as_ref().and_then(|name| {
            let parsed = self.header_name("request_id.header", name)?;
            // The id is written into requests sent upstream and into responses, so the field
            // must be one a header rule could edit in both.
            let why = managed_field(&parsed, Direction::Request)
                .or_else(|| managed_field(&parsed, Direction::Response));
            match why {
                Some(why) => {
                    self.report(
                        name.span(),
                        "request_id.header",
                        format!("`{parsed}` {why}; it cannot carry the request id"),
                    );
                    None
                }
                None => Some(parsed),
            }
        });
        RequestIdConfig {
            header: header.unwrap_or(defaults.header),
            trust_incoming: file.trust_incoming.unwrap_or(defaults.trust_incoming),
        }
    }
}

/// The `access_log:`, `admin:` and `request_id:` parts of the effective configuration.
pub(super) fn write_summary(out: &mut String, config: &Config) {
    let log = &config.access_log;
    let _ = writeln!(
        out,
        "\naccess_log:\n  {}",
        if log.enabled {
            format!(
                "{} to {}{}{}",
                log.format.as_str(),
                log.destination,
                if log.drop_query { ", query strings dropped" } else { "" },
                if log.headers.is_empty() {
                    String::new()
                } else {
                    format!(", headers {}", list(log.headers.iter()))
                },
            )
        } else {
            "off".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "\nadmin: {}\nrequest_id: header {}, {}",
        config.admin.map_or("off".to_owned(), |admin| format!(
            "{}, status history {}",
            admin.address,
            humantime::format_duration(admin.history)
        )),
        config.request_id.header,
        if config.request_id.trust_incoming { "client ids trusted" } else { "always generated" },
    );
}

#[cfg(test)]
mod tests {
    use super::super::load::{parse_and_validate, refused};

    #[test]
    fn the_request_id_may_not_ride_in_a_managed_field() {
        for name in ["content-length", "Transfer-Encoding", "host", "connection", "te"] {
            let toml = format!("[request_id]\nheader = {name:?}\n");
            let found = refused(&toml);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].key, "request_id.header");
            assert_eq!(found[0].line, Some(2));
            assert!(found[0].message.ends_with("it cannot carry the request id"), "{found:?}");
        }
        let config =
            parse_and_validate("[request_id]\nheader = \"x-trace-id\"\n", &|_| None).unwrap();
        assert_eq!(config.request_id.header, "x-trace-id");
    }
}
