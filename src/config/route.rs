//! Runtime route configuration for the reverse proxy.

use std::time::Duration;

use http::uri::{Authority, Scheme};

use super::headers::HeaderRules;

/// One validated `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Name used in logs (defaults to the prefix).
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/` unless it is exactly `/`.
    pub prefix: String,
    /// Lower-case host name this route is limited to, if any.
    pub host: Option<String>,
    /// Where requests go.
    pub upstream: UpstreamUrl,
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
    /// Largest request body; more gets 413.
    pub max_body_bytes: u64,
    /// Request rate across all clients of this route.
    pub rate_limit: Option<super::RateLimit>,
}

/// Which HTTP version sluice speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 to http upstreams; for https, HTTP/2 when ALPN selects it, else HTTP/1.1.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2: ALPN `h2` for https, prior knowledge (h2c) for http.
    Http2,
}

impl UpstreamProtocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }

    /// Parses the config spelling.
    pub fn parse(text: &str) -> Option<UpstreamProtocol> {
        match text {
            "auto" => Some(UpstreamProtocol::Auto),
            "http1" => Some(UpstreamProtocol::Http1),
            "http2" => Some(UpstreamProtocol::Http2),
            _ => None,
        }
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub certificate: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

/// TLS towards one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA files trusted in addition to the webpki roots.
    pub extra_roots: Vec<std::path::PathBuf>,
    /// Client certificate for mutual TLS.
    pub client_certificate: Option<CertificateFiles>,
    /// SNI and verification name instead of the URL's host.
    pub server_name: Option<String>,
    /// Skip certificate verification entirely.
    pub insecure_skip_verify: bool,
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: Authority,
    /// Base path without a trailing `/` (empty for the root).
    pub base_path: String,
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
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
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
}

/// Parses an upstream base URL: `http` or `https`, a host, an optional port and base path.
pub fn parse_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let uri: http::Uri = text.parse().map_err(|err| format!("`{text}` is not a URL ({err})"))?;
    let scheme = match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
        Some(scheme) => {
            return Err(format!("scheme `{scheme}` is not supported; use http or https"));
        }
        None => return Err(format!("`{text}` needs a scheme: http://... or https://...")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("`{text}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{text}` must not contain credentials; use a header rule"));
    }
    // `Uri` parsing drops a fragment silently, so look at the text itself.
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("`{text}` must not have a query string or fragment"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(UpstreamUrl { scheme, authority, base_path })
}

impl RouteConfig {
    /// A route from the command line (`PREFIX=URL`) with every other setting at its default.
    pub fn from_cli(spec: &str, timeouts: &super::Timeouts) -> Result<RouteConfig, String> {
        let (prefix, url) = spec.split_once('=').ok_or_else(|| {
            format!("`{spec}` is not PREFIX=URL (e.g. /api=http://127.0.0.1:9000)")
        })?;
        let prefix = normalize_prefix(prefix)?;
        Ok(RouteConfig {
            name: prefix.clone(),
            prefix,
            host: None,
            upstream: parse_upstream_url(url)?,
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
            max_body_bytes: super::DEFAULT_MAX_REQUEST_BODY_BYTES,
            rate_limit: None,
        })
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
    }

    #[test]
    fn upstream_urls_are_parsed() {
        let url = parse_upstream_url("https://api.example.com/v1/").unwrap();
        assert_eq!(url.scheme, Scheme::HTTPS);
        assert_eq!(url.authority, "api.example.com");
        assert_eq!(url.base_path, "/v1");
        assert_eq!(parse_upstream_url("http://h:81").unwrap().base_path, "");
        assert_eq!(url.to_string(), "https://api.example.com/v1");
        for bad in [
            "ftp://h/",
            "h:80",
            "http:///x",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://h/#f",
            "nope",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_routes() {
        let route =
            RouteConfig::from_cli("/defm/=https://api.example.com", &Default::default()).unwrap();
        assert_eq!(route.prefix, "/defm");
        assert_eq!(route.upstream.authority, "api.example.com");
        assert!(RouteConfig::from_cli("/defm", &Default::default()).is_err());
    }
}
