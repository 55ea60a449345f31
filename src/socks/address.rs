//! The destination a SOCKS client asks for: an IPv4 or IPv6 address, or a domain name that
//! sluice resolves itself (RFC 1928 §5; SOCKS4a for SOCKS4), so the destination guard judges the
//! address actually connected to, as for HTTP.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::uri::Authority;

/// The longest domain name SOCKS can carry: its length is one byte (RFC 1928 §5).
pub const MAX_NAME_BYTES: usize = 255;

/// Where the client wants a tunnel to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An address given as an IPv4 or IPv6 literal.
    Address(SocketAddr),
    /// A name for sluice to resolve.
    Name {
        /// The host name, lower-cased, without a trailing dot.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Destination {
    /// The host to dial: the name, or the address as text (what the connector takes).
    pub fn host(&self) -> String {
        match self {
            Destination::Address(addr) => addr.ip().to_string(),
            Destination::Name { host, .. } => host.clone(),
        }
    }

    /// The port to dial.
    pub fn port(&self) -> u16 {
        match self {
            Destination::Address(addr) => addr.port(),
            Destination::Name { port, .. } => *port,
        }
    }

    /// `host:port`, with an IPv6 address in brackets, as errors and the access log show a
    /// target. Names are validated when read, so this only fails on a value built by hand.
    pub fn authority(&self) -> Option<Authority> {
        self.to_string().parse().ok()
    }

    /// A destination from a name sent by a client, when it is a plausible host: an IP literal
    /// (some clients send addresses as names) or a DNS name of letters, digits, `-`, `_` and
    /// dots. Anything else (spaces, `/`, `@`, control bytes) could never be a host and is
    /// refused before it reaches the resolver or a log line.
    pub fn from_name(name: &[u8], port: u16) -> Option<Destination> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return None;
        }
        let text = std::str::from_utf8(name).ok()?;
        if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Some(Destination::Address(SocketAddr::new(ip, port)));
        }
        let host = text.strip_suffix('.').unwrap_or(text);
        let plausible = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        plausible.then(|| Destination::Name { host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Address(addr) => write!(f, "{addr}"),
            Destination::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalised() {
        let cases: [(&[u8], Option<&str>); 12] = [
            (b"example.com", Some("example.com:443")),
            (b"Example.COM.", Some("example.com:443")),
            (b"_srv.my-host.internal", Some("_srv.my-host.internal:443")),
            (b"127.0.0.1", Some("127.0.0.1:443")),
            (b"::1", Some("[::1]:443")),
            (b"[2001:db8::1]", Some("[2001:db8::1]:443")),
            (b"", None),
            (b".", None),
            (b"a..b", None),
            (b"evil.com/path", None),
            (b"user@host", None),
            (b"bad\0name", None),
        ];
        for (name, expected) in cases {
            let got = Destination::from_name(name, 443).map(|d| d.to_string());
            assert_eq!(got.as_deref(), expected, "{:?}", String::from_utf8_lossy(name));
        }
        assert!(Destination::from_name(&[b'a'; 256], 1).is_none());
        assert!(Destination::from_name(&[b'a'; 255], 1).is_some());
    }

    #[test]
    fn host_port_and_authority() {
        let v6 = Destination::Address("[2001:db8::1]:8443".parse().unwrap());
        assert_eq!((v6.host().as_str(), v6.port()), ("2001:db8::1", 8443));
        assert_eq!(v6.authority().unwrap().as_str(), "[2001:db8::1]:8443");
        let name = Destination::from_name(b"example.org", 80).unwrap();
        assert_eq!((name.host().as_str(), name.port()), ("example.org", 80));
        assert_eq!(name.authority().unwrap().as_str(), "example.org:80");
    }
}
