//! The configuration file as written: serde types that mirror the TOML exactly.
//!
//! Nothing here is interpreted. Values that need checking keep their [`Spanned`] position so
//! `validate.rs` can point at the line that is wrong. Unknown keys are refused everywhere
//! (`deny_unknown_fields`): a typo must never be silently ignored.

use std::collections::BTreeMap;

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

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    /// Static name → addresses overrides, consulted before the system resolver.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<Spanned<String>>>,
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
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain listener.
    pub h2c: Option<bool>,
    /// Terminate TLS on this listener.
    pub tls: Option<FileListenerTls>,
    /// Require proxy authentication for forward requests.
    pub auth: Option<bool>,
    /// Allow a forward proxy on a non-loopback address with neither auth nor an allow list.
    pub open: Option<bool>,
    /// Ports CONNECT may reach (empty: any).
    pub connect_ports: Option<Vec<Spanned<i64>>>,
    /// Let the forward proxy reach loopback, private and link-local addresses.
    pub allow_private_destinations: Option<bool>,
    /// Most concurrent connections from one client address.
    pub max_connections_per_ip: Option<Spanned<i64>>,
}

/// `[listener.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListenerTls {
    /// PEM certificate chain served when no SNI entry matches.
    pub certificate: Spanned<String>,
    /// PEM private key of `certificate`.
    pub key: Spanned<String>,
    /// Further certificates chosen by SNI.
    #[serde(default)]
    pub sni: Vec<FileSniCertificate>,
    /// How often the files are checked for changes.
    pub reload_interval: Option<Spanned<String>>,
}

/// One `[[listener.tls.sni]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSniCertificate {
    /// Server names (`a.example`, `*.example`) that select this certificate.
    pub names: Vec<Spanned<String>>,
    /// PEM certificate chain.
    pub certificate: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
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
}

/// The `[headers]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    /// Add a `Via` header to forwarded messages.
    pub via: Option<bool>,
    /// `X-Forwarded-For` handling: append, replace or off.
    pub x_forwarded_for: Option<Spanned<String>>,
    /// `X-Forwarded-Proto` handling.
    pub x_forwarded_proto: Option<Spanned<String>>,
    /// `X-Forwarded-Host` handling.
    pub x_forwarded_host: Option<Spanned<String>>,
    /// RFC 7239 `Forwarded` handling.
    pub forwarded: Option<Spanned<String>>,
    /// Rules for requests sent upstream by reverse routes.
    #[serde(default)]
    pub request: FileHeaderRules,
    /// Rules for responses of reverse routes.
    #[serde(default)]
    pub response: FileHeaderRules,
}

/// `set` / `append` / `remove` header rules; values may contain `${ENV_VAR}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderRules {
    /// Replace every field of the name with this value.
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
    /// Add one more field line.
    #[serde(default)]
    pub append: BTreeMap<String, Spanned<String>>,
    /// Delete every field of the name.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// One `[[route]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Name for logs; defaults to the prefix.
    pub name: Option<Spanned<String>>,
    /// Path prefix matched on whole segments.
    pub prefix: Spanned<String>,
    /// Upstream base URL.
    pub upstream: Spanned<String>,
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
    /// Request body limit for this route.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Request rate limit for this route, across all clients.
    pub rate_limit: Option<FileRate>,
}

/// `[route.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteTls {
    /// Extra PEM CA files trusted besides the webpki roots.
    #[serde(default)]
    pub ca: Vec<Spanned<String>>,
    /// PEM client certificate chain for mutual TLS.
    pub client_certificate: Option<Spanned<String>>,
    /// PEM private key of `client_certificate`.
    pub client_key: Option<Spanned<String>>,
    /// Name sent in SNI and verified, instead of the upstream URL's host.
    pub server_name: Option<Spanned<String>>,
    /// Accept any upstream certificate (dangerous; logged at start).
    pub insecure_skip_verify: Option<bool>,
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
