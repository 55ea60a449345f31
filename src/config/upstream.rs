//! Where a route sends its requests: the upstream URL, the HTTP version spoken to it and the
//! TLS towards it (`[route.tls]`), as written in the file and as validated.

use http::uri::{Authority, Scheme};
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use crate::tls::client::UpstreamTls;

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

/// `text` with anything between `://` and the last `@` of the authority shown as `***`, so an
/// error about a URL that carries credentials does not repeat them (in the log, the
/// `POST /reload` answer and the status page).
fn without_credentials(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => text.to_owned(),
    }
}

/// Parses an upstream base URL: `http` or `https`, a host, an optional port and base path.
pub fn parse_upstream_url(text: &str) -> Result<UpstreamUrl, String> {
    let shown = without_credentials(text);
    let uri: http::Uri = text.parse().map_err(|err| format!("`{shown}` is not a URL ({err})"))?;
    let scheme = match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
        Some(scheme) => {
            return Err(format!("scheme `{scheme}` is not supported; use http or https"));
        }
        None => return Err(format!("`{shown}` needs a scheme: http://... or https://...")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("`{shown}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{shown}` must not contain credentials; use a header rule"));
    }
    // `Uri` accepts any port text and `port_u16` then says `None`, which would silently mean
    // the scheme's default port: `:99999` would send to port 80.
    let port = authority.as_str().get(authority.host().len()..).unwrap_or_default();
    if let Some(port) = port.strip_prefix(':') {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port != 0);
        if !valid {
            return Err(format!("`{text}` has port `{port}`; a port is a number from 1 to 65535"));
        }
    }
    // `Uri` parsing drops a fragment silently, so look at the text itself.
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("`{shown}` must not have a query string or fragment"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(UpstreamUrl { scheme, authority, base_path })
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

impl Checker<'_> {
    /// The TLS settings of the route at `key`; every file is read now, so a bad one stops
    /// start-up with its name.
    pub(super) fn upstream_tls(&mut self, key: &str, file: &FileRouteTls) -> UpstreamTls {
        let tls_key = format!("{key}.tls");
        let extra_roots = self.ca_files(&format!("{tls_key}.ca"), &file.ca);
        let client_certificate = match (&file.client_certificate, &file.client_key) {
            (Some(cert), Some(private_key)) => {
                self.certificate_files(&format!("{tls_key}.client_certificate"), cert, private_key)
            }
            (Some(one), None) | (None, Some(one)) => {
                self.report(
                    one.span(),
                    &tls_key,
                    "client_certificate and client_key must be given together".to_owned(),
                );
                None
            }
            (None, None) => None,
        };
        UpstreamTls {
            extra_roots,
            client_certificate,
            server_name: file.server_name.as_ref().and_then(|name| {
                let text = name.get_ref().trim().to_owned();
                let valid = rustls::pki_types::ServerName::try_from(text.clone()).is_ok();
                if !valid {
                    self.report(
                        name.span(),
                        &format!("{tls_key}.server_name"),
                        format!("`{text}` is not a DNS name or IP address"),
                    );
                }
                valid.then_some(text)
            }),
            insecure_skip_verify: file.insecure_skip_verify.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_parsed() {
        let url = parse_upstream_url("https://api.example.com/v1/").unwrap();
        assert_eq!(url.scheme, Scheme::HTTPS);
        assert_eq!(url.authority, "api.example.com");
        assert_eq!(url.base_path, "/v1");
        assert_eq!(parse_upstream_url("http://h:81").unwrap().base_path, "");
        assert_eq!(
            parse_upstream_url("http://[::1]:65535").unwrap().authority.port_u16(),
            Some(65535)
        );
        assert_eq!(url.to_string(), "https://api.example.com/v1");
        for bad in [
            "ftp://h/",
            "h:80",
            "http:///x",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://h/#f",
            "nope",
            // Ports `Uri` accepts but that would have become the default port, or odd text in
            // the Host header.
            "http://127.0.0.1:99999",
            "http://[::1]:65536/x",
            "http://h:0",
            "http://h:",
            "http://h:+80",
            "http://h:1x",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_never_repeat_credentials() {
        for (text, shown) in [
            ("http://u:p4ss@h/", "`http://***@h/` must not contain credentials"),
            ("https://user:s3cret@h:8443/v1?q", "`https://***@h:8443/v1?q`"),
            ("http://a@b@h/x", "`http://***@h/x`"),
        ] {
            let err = parse_upstream_url(text).unwrap_err();
            assert!(err.starts_with(shown), "{err}");
            assert!(!err.contains("p4ss") && !err.contains("s3cret") && !err.contains("a@b"));
        }
        assert_eq!(without_credentials("http://h/a@b"), "http://h/a@b");
        assert_eq!(without_credentials("nope"), "nope");
    }
}
