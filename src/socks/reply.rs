//! The reply codes a SOCKS server sends (RFC 1928 §6), each mapped from the failure that
//! caused it, so a client learns why its tunnel did not open (and `curl` prints it).

use std::io;

use crate::error::ErrorKind;
use crate::upstream::connect::ConnectError;

/// The outcome of a SOCKS request, as the `REP` field of the reply says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The tunnel is open.
    Succeeded,
    /// Anything not covered below: a malformed request, an internal failure.
    GeneralFailure,
    /// Refused by policy: a denied port, host or network, a private destination, a rate limit.
    NotAllowed,
    /// The destination's network cannot be reached (ENETUNREACH).
    NetworkUnreachable,
    /// The destination host cannot be reached, or its name does not resolve.
    HostUnreachable,
    /// The destination refused the connection.
    ConnectionRefused,
    /// No connection within the connect timeout (RFC 1928 names it "TTL expired").
    TtlExpired,
    /// A command other than `CONNECT`: `BIND` and `UDP ASSOCIATE` are not served.
    CommandNotSupported,
    /// An address type other than IPv4, IPv6 or a domain name.
    AddressTypeNotSupported,
}

impl Reply {
    /// Every reply, in code order.
    pub const ALL: [Reply; 9] = [
        Reply::Succeeded,
        Reply::GeneralFailure,
        Reply::NotAllowed,
        Reply::NetworkUnreachable,
        Reply::HostUnreachable,
        Reply::ConnectionRefused,
        Reply::TtlExpired,
        Reply::CommandNotSupported,
        Reply::AddressTypeNotSupported,
    ];

    /// The `REP` byte of a SOCKS5 reply (RFC 1928 §6).
    pub fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0x00,
            Reply::GeneralFailure => 0x01,
            Reply::NotAllowed => 0x02,
            Reply::NetworkUnreachable => 0x03,
            Reply::HostUnreachable => 0x04,
            Reply::ConnectionRefused => 0x05,
            Reply::TtlExpired => 0x06,
            Reply::CommandNotSupported => 0x07,
            Reply::AddressTypeNotSupported => 0x08,
        }
    }

    /// The `CD` byte of a SOCKS4 reply, which knows only granted (90) and rejected (91).
    pub fn socks4_code(self) -> u8 {
        match self {
            Reply::Succeeded => 0x5a,
            _ => 0x5b,
        }
    }

    /// The name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general_failure",
            Reply::NotAllowed => "not_allowed",
            Reply::NetworkUnreachable => "network_unreachable",
            Reply::HostUnreachable => "host_unreachable",
            Reply::ConnectionRefused => "connection_refused",
            Reply::TtlExpired => "ttl_expired",
            Reply::CommandNotSupported => "command_not_supported",
            Reply::AddressTypeNotSupported => "address_type_not_supported",
        }
    }

    /// The reply for a failed dial: the socket error's own kind decides between network and
    /// host unreachable, which the coarser [`ErrorKind`] does not keep apart.
    pub fn for_connect_error(err: &ConnectError) -> Reply {
        match err {
            ConnectError::Dns { .. } | ConnectError::NoAddresses { .. } => Reply::HostUnreachable,
            ConnectError::Refused { .. } => Reply::ConnectionRefused,
            ConnectError::Timeout { .. } => Reply::TtlExpired,
            ConnectError::Prohibited { .. } => Reply::NotAllowed,
            ConnectError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
                io::ErrorKind::TimedOut => Reply::TtlExpired,
                io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                _ => Reply::GeneralFailure,
            },
            // RFC 1928 has no "busy"; the connection caps are sluice's, not the host's.
            ConnectError::MissingHost
            | ConnectError::AtCapacity { .. }
            | ConnectError::TargetAtCapacity { .. } => Reply::GeneralFailure,
        }
    }

    /// The reply for any other failure, by its kind.
    pub fn for_kind(kind: ErrorKind) -> Reply {
        match kind {
            ErrorKind::HttpRequestDenied
            | ErrorKind::DestinationIpProhibited
            | ErrorKind::ProxyAuthRequired
            | ErrorKind::RateLimited => Reply::NotAllowed,
            ErrorKind::DnsError | ErrorKind::DestinationUnavailable => Reply::HostUnreachable,
            ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            ErrorKind::ConnectionTimeout | ErrorKind::HttpResponseTimeout => Reply::TtlExpired,
            _ => Reply::GeneralFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn codes_follow_rfc_1928_in_order() {
        for (code, reply) in Reply::ALL.iter().enumerate() {
            assert_eq!(usize::from(reply.code()), code, "{reply:?}");
        }
        assert_eq!(Reply::Succeeded.socks4_code(), 90);
        assert!(Reply::ALL.iter().skip(1).all(|reply| reply.socks4_code() == 91));
        let names: std::collections::HashSet<_> = Reply::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reply::ALL.len());
    }

    #[test]
    fn connect_errors_map_to_the_reply_that_names_them() {
        let addr: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let io = |kind: io::ErrorKind| ConnectError::Io { addr, source: Arc::new(kind.into()) };
        let dns = ConnectError::Dns {
            host: "nowhere.invalid".into(),
            source: Arc::new(io::Error::other("no such name")),
        };
        let cases = [
            (dns, Reply::HostUnreachable),
            (ConnectError::NoAddresses { host: "x".into() }, Reply::HostUnreachable),
            (ConnectError::Refused { addr }, Reply::ConnectionRefused),
            (ConnectError::Timeout { after: Duration::from_secs(1) }, Reply::TtlExpired),
            (ConnectError::Prohibited { addr }, Reply::NotAllowed),
            (io(io::ErrorKind::NetworkUnreachable), Reply::NetworkUnreachable),
            (io(io::ErrorKind::HostUnreachable), Reply::HostUnreachable),
            (io(io::ErrorKind::TimedOut), Reply::TtlExpired),
            (io(io::ErrorKind::PermissionDenied), Reply::GeneralFailure),
            (ConnectError::MissingHost, Reply::GeneralFailure),
        ];
        for (err, reply) in cases {
            assert_eq!(Reply::for_connect_error(&err), reply, "{err:?}");
        }
    }

    #[test]
    fn error_kinds_map_to_replies() {
        let cases = [
            (ErrorKind::HttpRequestDenied, Reply::NotAllowed),
            (ErrorKind::DestinationIpProhibited, Reply::NotAllowed),
            (ErrorKind::RateLimited, Reply::NotAllowed),
            (ErrorKind::DnsError, Reply::HostUnreachable),
            (ErrorKind::ConnectionRefused, Reply::ConnectionRefused),
            (ErrorKind::ConnectionTimeout, Reply::TtlExpired),
            (ErrorKind::TlsProtocolError, Reply::GeneralFailure),
        ];
        for (kind, reply) in cases {
            assert_eq!(Reply::for_kind(kind), reply, "{kind:?}");
        }
    }
}
