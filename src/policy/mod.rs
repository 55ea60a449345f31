//! Who may use sluice and for what, checked in one fixed order:
//!
//! 1. the client's address against `[access]` (403);
//! 2. the message framing against smuggling: on the wire before hyper parses it ([`wire`]:
//!    bare LF, CL with TE, repeated CL, bad chunk lines) and on the parsed head ([`framing`]:
//!    transfer codings), 400 and close;
//! 3. the request-line length (414);
//! 4. the client's request rate (429);
//! 5. for forward-proxy requests: proxy credentials ([`auth`], 407), then the destination by
//!    name and CONNECT port ([`destination`], 403); the resolved address is checked again when
//!    connecting, in [`crate::upstream::Connector`];
//! 6. for routed requests: the route's rate (429) and body size (413).

pub mod auth;
pub mod destination;
pub mod framing;
pub mod rate;
pub mod wire;

use std::net::IpAddr;

use http::{Method, Request};

use crate::config::{AccessRules, Config, ListenerPolicy};
use crate::context::RequestContext;
use crate::error::{Denied, ProxyError};
use auth::Authenticator;
use destination::DestinationGuard;
use rate::RateLimiter;

/// RFC 9112 §3.2: an HTTP/1.1 request in origin-form carries exactly one valid `Host`; no
/// HTTP/1 request carries two. Anything else is refused (400) rather than guessed at, since
/// the host chooses the route and is copied into forwarding headers.
fn check_host<B>(request: &Request<B>) -> Result<(), ProxyError> {
    use crate::forward::target::TargetError;
    if request.version() >= http::Version::HTTP_2 || request.method() == Method::CONNECT {
        return Ok(());
    }
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let valid = |value: &http::HeaderValue| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<http::uri::Authority>().ok())
            .is_some_and(|authority| !authority.as_str().contains('@'))
    };
    let ok = match (first, second) {
        (_, Some(_)) => false,
        (Some(host), None) => valid(host),
        // HTTP/1.0 and absolute-form requests may omit Host.
        (None, None) => {
            request.version() < http::Version::HTTP_11 || request.uri().authority().is_some()
        }
    };
    if ok { Ok(()) } else { Err(ProxyError::BadTarget(TargetError::InvalidHost)) }
}

/// The checks shared by every listener.
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

    /// Steps 1 to 4, for every request.
    pub fn admit<B>(&self, request: &Request<B>, ctx: &RequestContext) -> Result<(), ProxyError> {
        let client = ctx.peer.addr.ip();
        if !self.access.permits(client) {
            return Err(ProxyError::Denied(Denied::ClientAddress));
        }
        framing::check(request.headers()).map_err(ProxyError::Framing)?;
        check_host(request)?;
        // Method, target and version ("HTTP/1.1") with their two spaces.
        let uri = request.uri();
        let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        let line = request.method().as_str().len() + target + 10;
        if line > self.max_request_line_bytes {
            return Err(ProxyError::UriTooLong { limit: self.max_request_line_bytes });
        }
        if let Some(limiter) = &self.per_ip {
            limiter
                .acquire(client)
                .map_err(|retry_after| ProxyError::RateLimited { retry_after })?;
        }
        Ok(())
    }

    /// Step 5: credentials, then the destination's name and (for CONNECT) port.
    pub async fn admit_forward<B>(
        &self,
        request: &Request<B>,
        listener: &ListenerPolicy,
        guard: &DestinationGuard,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        if listener.auth_required {
            self.authenticator.check(request.headers()).await.map_err(|reason| {
                ProxyError::AuthRequired {
                    reason,
                    challenge: self.authenticator.challenge().clone(),
                }
            })?;
        }
        if request.method() == Method::CONNECT
            && !listener.connect_ports.is_empty()
            && !listener.connect_ports.contains(&port)
        {
            return Err(ProxyError::Denied(Denied::ConnectPort(port)));
        }
        if guard.host_denied(host) {
            return Err(ProxyError::Denied(Denied::Host));
        }
        Ok(())
    }
}
