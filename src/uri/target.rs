//! Request-target parsing for the forward proxy (RFC 9112 §3.2): pure functions, no I/O.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// Where a forward-proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as the client wrote it, userinfo removed; becomes the `Host` header.
    pub authority: Authority,
    /// The port to dial, defaulted from the scheme when absent.
    pub port: u16,
}

impl Target {
    /// The host to dial (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        self.authority.host()
    }
}

/// Why a request target cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Absolute-form with a scheme other than http or https.
    #[error("scheme `{0}` is not supported; use http:// or https://, or CONNECT")]
    UnsupportedScheme(String),
    /// No authority, or an empty host.
    #[error("the target has no host")]
    MissingHost,
    /// CONNECT needs an explicit port (RFC 9110 §9.3.6).
    #[error("CONNECT target must be host:port")]
    MissingPort,
    /// The port is 0.
    #[error("port 0 is not a valid destination")]
    ZeroPort,
    /// The port is not a number from 1 to 65535 (RFC 3986 §3.2.3 allows any digits; TCP
    /// does not).
    #[error("the port is not a number from 1 to 65535")]
    PortOutOfRange,
    /// A CONNECT target with userinfo: the authority-form is `host:port` and nothing else
    /// (RFC 9110 §9.3.6).
    #[error("CONNECT target must be host:port, without user information")]
    UserinfoInConnect,
    /// The `Host` header is missing, repeated or not a host.
    #[error("the Host header is missing, repeated or invalid")]
    InvalidHost,
}

/// Parses an absolute-form target such as `http://example.com:8080/p?q`.
///
/// Returns the target and the absolute URI to send upstream (userinfo removed, empty path made
/// `/`), which the pooled client turns into origin-form on the wire.
pub fn absolute(uri: &Uri) -> Result<(Target, Uri), TargetError> {
    let (scheme, default_port) = match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => (Scheme::HTTP, 80),
        // Some clients send `GET https://...` to a proxy and expect it to make the TLS
        // connection itself; the upstream client verifies the origin's certificate.
        Some(scheme) if *scheme == Scheme::HTTPS => (Scheme::HTTPS, 443),
        Some(scheme) => return Err(TargetError::UnsupportedScheme(scheme.as_str().to_owned())),
        None => return Err(TargetError::MissingHost),
    };
    let target = checked(uri.authority(), default_port)?;
    let path = uri
        .path_and_query()
        .filter(|pq| !pq.as_str().is_empty())
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let upstream = Uri::builder()
        .scheme(scheme)
        .authority(target.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| TargetError::MissingHost)?;
    Ok((target, upstream))
}

/// Parses a CONNECT authority-form target such as `example.com:443`.
pub fn connect(uri: &Uri) -> Result<Target, TargetError> {
    let authority = uri.authority().ok_or(TargetError::MissingHost)?;
    if authority.as_str().contains('@') {
        return Err(TargetError::UserinfoInConnect);
    }
    if port_text(authority).is_empty() {
        return Err(TargetError::MissingPort);
    }
    checked(Some(authority), 443)
}

fn checked(authority: Option<&Authority>, default_port: u16) -> Result<Target, TargetError> {
    let authority = authority.ok_or(TargetError::MissingHost)?;
    let host = authority.host();
    if host.is_empty() || host == "[]" {
        return Err(TargetError::MissingHost);
    }
    // `Authority::port_u16` is `None` both for no port and for one that does not fit in 16
    // bits; only the first may fall back to the scheme's default (an empty port too, RFC 3986
    // §3.2.3), or `http://h:99999/` would go to port 80.
    let port = match port_text(authority) {
        "" => default_port,
        text => text.parse::<u16>().map_err(|_| TargetError::PortOutOfRange)?,
    };
    if port == 0 {
        return Err(TargetError::ZeroPort);
    }
    // RFC 9110 §4.2.4: userinfo is deprecated and must not reach the Host header.
    let authority = match authority.as_str().rsplit_once('@') {
        Some((_, without_userinfo)) => {
            Authority::try_from(without_userinfo).map_err(|_| TargetError::MissingHost)?
        }
        None => authority.clone(),
    };
    Ok(Target { authority, port })
}

/// The port as written after the host (empty when there is none): what follows the last `:`
/// after the host, an IPv6 literal's brackets and any userinfo.
fn port_text(authority: &Authority) -> &str {
    let text = authority.as_str();
    let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    let after_host = match host_and_port.rfind(']') {
        Some(bracket) => host_and_port.get(bracket + 1..).unwrap_or_default(),
        None => host_and_port,
    };
    after_host.rsplit_once(':').map_or("", |(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(text: &str) -> Result<(String, u16, String), TargetError> {
        let (target, uri) = absolute(&text.parse().unwrap())?;
        Ok((target.authority.to_string(), target.port, uri.to_string()))
    }

    #[test]
    fn absolute_form_table() {
        let ok = |a: &str, p: u16, u: &str| Ok((a.to_owned(), p, u.to_owned()));
        assert_eq!(
            abs("http://example.com/p?q=1"),
            ok("example.com", 80, "http://example.com/p?q=1")
        );
        assert_eq!(abs("http://example.com"), ok("example.com", 80, "http://example.com/"));
        assert_eq!(abs("http://a:8080/x%2Fy"), ok("a:8080", 8080, "http://a:8080/x%2Fy"));
        assert_eq!(abs("http://[::1]:81/"), ok("[::1]:81", 81, "http://[::1]:81/"));
        assert_eq!(abs("http://u:p@h:1/"), ok("h:1", 1, "http://h:1/"));
        assert_eq!(abs("http://h?q"), ok("h", 80, "http://h/?q"));
        assert_eq!(abs("https://h/"), ok("h", 443, "https://h/"));
        assert_eq!(abs("ftp://h/"), Err(TargetError::UnsupportedScheme("ftp".into())));
        assert_eq!(abs("/origin/form"), Err(TargetError::MissingHost));
        assert_eq!(abs("http://h:0/"), Err(TargetError::ZeroPort));
        assert_eq!(abs("http://127.0.0.1:99999/"), Err(TargetError::PortOutOfRange));
        assert_eq!(abs("http://h:65536/"), Err(TargetError::PortOutOfRange));
        assert_eq!(abs("http://[::1]:70000/"), Err(TargetError::PortOutOfRange));
        assert_eq!(abs("http://u:p@h:123456/"), Err(TargetError::PortOutOfRange));
        assert_eq!(abs("http://h:65535/"), ok("h:65535", 65535, "http://h:65535/"));
        assert_eq!(abs("http://h:/"), ok("h:", 80, "http://h:/"));
        assert_eq!(abs("http://[::1]/"), ok("[::1]", 80, "http://[::1]/"));
    }

    #[test]
    fn connect_form_table() {
        let parse =
            |text: &str| connect(&text.parse().unwrap()).map(|t| (t.host().to_owned(), t.port));
        assert_eq!(parse("example.com:443"), Ok(("example.com".into(), 443)));
        assert_eq!(parse("[::1]:8443"), Ok(("[::1]".into(), 8443)));
        assert_eq!(parse("example.com"), Err(TargetError::MissingPort));
        assert_eq!(parse("example.com:0"), Err(TargetError::ZeroPort));
        assert_eq!(parse("example.com:"), Err(TargetError::MissingPort));
        assert_eq!(parse("example.com:99999"), Err(TargetError::PortOutOfRange));
        assert_eq!(parse("[::1]:65536"), Err(TargetError::PortOutOfRange));
        assert_eq!(parse("[::1]"), Err(TargetError::MissingPort));
        assert_eq!(parse("user:pw@example.com:443"), Err(TargetError::UserinfoInConnect));
        assert_eq!(parse("@example.com:443"), Err(TargetError::UserinfoInConnect));
    }
}
