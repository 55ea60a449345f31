//! Who may use sluice and for what. The checks, in the order a request meets them, and where
//! each one runs:
//!
//! 1. connection limits, at accept (`server::listener::accept_loop`): `limits.max_connections`
//!    (excess clients wait in the kernel backlog) and the listener's `max_connections_per_ip`
//!    (503);
//! 2. the message framing on the wire, before hyper parses a head
//!    (`downstream::wire::WireGuard`: bare LF, CL with TE, repeated CL, bad chunk lines; 400
//!    and close);
//! 3. then, for every request, the admit phase of the request path (`proxy::admit`), which
//!    calls the checks below in this order:
//!    1. the client's address against `[access]` ([`Policy::check_client`], 403);
//!    2. transfer codings on the parsed head ([`framing::check`], 400 and close);
//!    3. the `Host` header ([`check_host`], 400 and close);
//!    4. the request-line length ([`Policy::check_request_line`], 414);
//!    5. the client's request rate ([`Policy::check_client_rate`], 429);
//!    6. for forward-proxy requests: proxy credentials ([`Policy::check_credentials`], 407),
//!       the CONNECT port ([`check_connect_port`], 403) and the destination's name
//!       ([`destination::DestinationGuard::host_denied`], 403);
//! 4. for routed requests, once the route is known (`proxy::reverse::route`): the route's
//!    rate (429), its upgrades (403) and its body size (413, while streaming);
//! 5. the resolved destination address, when connecting (`upstream::connect::Connector`,
//!    [`destination::DestinationGuard::address_allowed`], 403).
//!
//! Each check returns its own error type; the request path turns them into one response.

pub mod auth;
pub mod destination;
pub mod framing;
pub mod rate;

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request};

use crate::config::{AccessRules, Config, ListenerPolicy};
use auth::{AuthError, Authenticator};
use rate::RateLimiter;

/// What configuration refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The client's address is not allowed by `[access]`.
    ClientAddress,
    /// CONNECT to a port not in the listener's `connect_ports`.
    ConnectPort(u16),
    /// The destination host matches `[destinations] deny_hosts`.
    Host,
    /// The requested protocol upgrade is not allowed on this route.
    Upgrade,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::ClientAddress => f.write_str("your address may not use this proxy"),
            Denied::ConnectPort(port) => write!(f, "CONNECT to port {port} is not allowed"),
            Denied::Host => f.write_str("this destination is not allowed"),
            Denied::Upgrade => f.write_str("this protocol upgrade is not allowed here"),
        }
    }
}

/// The `Host` header is missing, repeated or not a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Host header is missing, repeated or invalid")]
pub struct HostError;

/// The request line is longer than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request line is longer than {limit} bytes")]
pub struct RequestLineTooLong {
    /// The configured limit.
    pub limit: usize,
}

/// The client (or the route) has no request left in its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// When a request would be admitted again.
    pub retry_after: Duration,
}

/// Proxy credentials were missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsRequired {
    /// What was wrong with the credentials.
    pub reason: AuthError,
    /// The `Proxy-Authenticate` challenge to send.
    pub challenge: HeaderValue,
}

/// RFC 9112 §3.2: an HTTP/1.1 request in origin-form carries exactly one valid `Host`; no
/// HTTP/1 request carries two. Anything else is refused (400) rather than guessed at, since
/// the host chooses the route and is copied into forwarding headers.
pub fn check_host<B>(request: &Request<B>) -> Result<(), HostError> {
    let hosts = request.headers().get_all(http::header::HOST).iter().map(HeaderValue::as_bytes);
    check_host_fields(request.method(), request.uri(), request.version(), hosts)
}

/// [`check_host`] on what it reads: the method, target and version, and the values of the
/// `Host` lines.
pub fn check_host_fields<'a>(
    method: &Method,
    uri: &http::Uri,
    version: http::Version,
    mut hosts: impl Iterator<Item = &'a [u8]>,
) -> Result<(), HostError> {
    if version >= http::Version::HTTP_2 || method == Method::CONNECT {
        return Ok(());
    }
    let (first, second) = (hosts.next(), hosts.next());
    let ok = match (first, second) {
        (_, Some(_)) => false,
        (Some(host), None) => crate::headers::host::is_valid(host),
        // HTTP/1.0 and absolute-form requests may omit Host.
        (None, None) => version < http::Version::HTTP_11 || uri.authority().is_some(),
    };
    if ok { Ok(()) } else { Err(HostError) }
}

/// A CONNECT tunnel may only reach the listener's `connect_ports` (all ports when empty).
pub fn check_connect_port(listener: &ListenerPolicy, port: u16) -> Result<(), Denied> {
    if listener.connect_ports.is_empty() || listener.connect_ports.contains(&port) {
        Ok(())
    } else {
        Err(Denied::ConnectPort(port))
    }
}

/// The checks shared by every listener, with the state they keep (rate buckets, verified
/// credentials).
#[derive(Debug)]
pub struct Policy {
    access: AccessRules,
    authenticator: Authenticator,
    per_ip: Option<RateLimiter<IpAddr>>,
    max_request_line_bytes: usize,
}

impl Policy {
    /// Builds the policy of `config`.
    pub fn new(config: &Config) -> Policy {
        Policy {
            access: config.access.clone(),
            authenticator: Authenticator::new(&config.auth),
            per_ip: config.rate_limit_per_ip.map(RateLimiter::new),
            max_request_line_bytes: config.limits.max_request_line_bytes,
        }
    }

    /// Whether a client at `client` may use sluice at all (`[access]`).
    pub fn check_client(&self, client: IpAddr) -> Result<(), Denied> {
        if self.access.permits(client) { Ok(()) } else { Err(Denied::ClientAddress) }
    }

    /// The request line (method, target and version with their two spaces) within the limit.
    pub fn check_request_line<B>(&self, request: &Request<B>) -> Result<(), RequestLineTooLong> {
        self.check_request_line_of(request.method(), request.uri())
    }

    /// [`Policy::check_request_line`] on a request's method and target.
    pub fn check_request_line_of(
        &self,
        method: &Method,
        uri: &http::Uri,
    ) -> Result<(), RequestLineTooLong> {
        let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        let line = method.as_str().len() + target + 10;
        if line > self.max_request_line_bytes {
            return Err(RequestLineTooLong { limit: self.max_request_line_bytes });
        }
        Ok(())
    }

    /// Takes one request from the client's rate limit, when one is configured.
    pub fn check_client_rate(&self, client: IpAddr) -> Result<(), RateLimited> {
        match &self.per_ip {
            Some(limiter) => {
                limiter.acquire(client).map_err(|retry_after| RateLimited { retry_after })
            }
            None => Ok(()),
        }
    }

    /// The configured users, for protocols that carry credentials of their own (SOCKS5).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Verifies the request's `Proxy-Authorization` against the configured users.
    pub async fn check_credentials(&self, headers: &HeaderMap) -> Result<(), CredentialsRequired> {
        self.check_credentials_value(headers.get(http::header::PROXY_AUTHORIZATION)).await
    }

    /// [`Policy::check_credentials`] on the `Proxy-Authorization` value, when there is one.
    pub async fn check_credentials_value(
        &self,
        value: Option<&HeaderValue>,
    ) -> Result<(), CredentialsRequired> {
        match self.authenticator.check(value).await {
            Ok(_user) => Ok(()),
            Err(reason) => Err(CredentialsRequired {
                reason,
                challenge: self.authenticator.challenge().clone(),
            }),
        }
    }
}
