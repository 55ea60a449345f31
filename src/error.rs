//! [`ProxyError`]: everything that can stop a request, and the one place it becomes a response.
//!
//! Each error knows its [`ErrorKind`] (named after the RFC 9209 Proxy-Status error types) and its
//! status code. [`render`] writes a short plain-text body saying what failed, adds a
//! `Proxy-Status` header and logs the full cause chain. Timeouts are found anywhere in the cause
//! chain, so a connect timeout inside the pooled client still becomes a 504.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, BodyTooLarge};
use crate::gateway::budget::BudgetSpent;
use crate::gateway::gate::GateFailure;
use crate::gateway::refusal::Refusal;
use crate::policy::auth::AuthError;
use crate::policy::framing::FramingError;
use crate::policy::{CredentialsRequired, Denied, HostError, RateLimited, RequestLineTooLong};
use crate::upstream::client::UpstreamError;
use crate::upstream::connect::ConnectError;
use crate::upstream::egress::EgressError;
use crate::upstream::group::Unavailable;
use crate::upstream::h1::ExchangeFailure;
use crate::upstream::parent::ParentError;
use crate::uri::path::RewriteError;
use crate::uri::target::TargetError;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request target is not something this proxy can forward.
    #[error("bad request target")]
    BadTarget(#[from] TargetError),
    /// The `Host` header is missing, repeated or invalid.
    #[error("bad request target")]
    BadHost(#[from] HostError),
    /// The request path cannot be routed safely.
    #[error("bad request path")]
    BadPath(#[from] RewriteError),
    /// The upstream answered 101 to a request that asked for no upgrade.
    #[error("{target} switched protocols without being asked")]
    UnexpectedUpgrade {
        /// `host:port` of the upstream.
        target: Authority,
    },
    /// Refused by configuration.
    #[error("{0}")]
    Denied(Denied),
    /// Forward-proxy credentials missing or wrong.
    #[error("{reason}")]
    AuthRequired {
        /// What was wrong with the credentials.
        reason: AuthError,
        /// The `Proxy-Authenticate` challenge to send.
        challenge: HeaderValue,
    },
    /// Ambiguous message framing (request smuggling defence).
    #[error("ambiguous message framing")]
    Framing(#[from] FramingError),
    /// The request line is longer than allowed.
    #[error("the request line is longer than {limit} bytes")]
    UriTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// The request body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// Too many requests from this client or on this route.
    #[error("too many requests; retry in {} s", retry_after_seconds(*retry_after))]
    RateLimited {
        /// When a request would be admitted again.
        retry_after: Duration,
    },
    /// The listener does not serve this kind of request.
    #[error("{0}")]
    NotServed(NotServed),
    /// sluice is at a limit that protects everyone else's share (503).
    #[error("{0}")]
    Overloaded(Overload),
    /// Reaching or hearing from the upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// No target of the route could take the request (all down, or all at their caps).
    #[error("{}", match .0 {
        Unavailable::NoHealthyTarget => "no target of this route is healthy",
        Unavailable::AtCapacity => "every healthy target of this route is at its limit of requests in flight or connections",
    })]
    NoUpstream(Unavailable),
    /// The request carries this instance's own `Via` entry: it went round in a loop.
    #[error("this request has already passed through this proxy ({pseudonym}): a forwarding loop")]
    Loop {
        /// The pseudonym found in `Via`.
        pseudonym: String,
    },
    /// The AI gateway refused the request (key, model, budget, body) or every provider failed
    /// before its first event.
    #[error(transparent)]
    Gateway(#[from] Refusal),
}

impl From<Denied> for ProxyError {
    fn from(denied: Denied) -> ProxyError {
        ProxyError::Denied(denied)
    }
}

impl From<CredentialsRequired> for ProxyError {
    fn from(refused: CredentialsRequired) -> ProxyError {
        ProxyError::AuthRequired { reason: refused.reason, challenge: refused.challenge }
    }
}

impl From<RequestLineTooLong> for ProxyError {
    fn from(refused: RequestLineTooLong) -> ProxyError {
        ProxyError::UriTooLong { limit: refused.limit }
    }
}

impl From<RateLimited> for ProxyError {
    fn from(refused: RateLimited) -> ProxyError {
        ProxyError::RateLimited { retry_after: refused.retry_after }
    }
}

impl From<BodyTooLarge> for ProxyError {
    fn from(refused: BodyTooLarge) -> ProxyError {
        ProxyError::BodyTooLarge { limit: refused.0 }
    }
}

/// Which protective limit turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// The client's address already holds the listener's `max_connections_per_ip`.
    ConnectionsFromAddress,
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::ConnectionsFromAddress => "too many connections from your address",
        })
    }
}

/// Whole seconds to wait, rounded up and at least 1, as `Retry-After` and the body both say.
fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A request that reached a listener not configured for its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServed {
    /// Absolute-form or CONNECT on a listener without `forward`.
    ForwardDisabled,
    /// Origin-form on a listener without `reverse`.
    ReverseDisabled,
    /// Origin-form with no matching route.
    NoRoute,
}

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotServed::ForwardDisabled => "this listener does not serve as a forward proxy",
            NotServed::ReverseDisabled => {
                "this listener is a forward proxy: send requests in absolute-form \
                 (http://host/path) or use CONNECT"
            }
            NotServed::NoRoute => "no route matches this path",
        })
    }
}

/// The fixed set of failure kinds, used in `Proxy-Status`, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself was malformed or unsupported.
    HttpRequestError,
    /// The request was refused by configuration.
    HttpRequestDenied,
    /// No route or mode serves the request.
    DestinationNotFound,
    /// DNS resolution failed.
    DnsError,
    /// The upstream refused the TCP connection.
    ConnectionRefused,
    /// Connecting to the upstream timed out.
    ConnectionTimeout,
    /// The upstream closed the connection before a complete response.
    ConnectionTerminated,
    /// The upstream did not send a response head in time.
    HttpResponseTimeout,
    /// The upstream sent something that is not valid HTTP.
    HttpProtocolError,
    /// The upstream's certificate did not verify.
    TlsCertificateError,
    /// The TLS handshake with the upstream failed for another reason.
    TlsProtocolError,
    /// The upstream could not be reached for another reason.
    DestinationUnavailable,
    /// The destination's address is refused by policy (private, denied network).
    DestinationIpProhibited,
    /// Proxy credentials missing or wrong.
    ProxyAuthRequired,
    /// The request line is too long.
    UriTooLong,
    /// The request body is too large.
    BodyTooLarge,
    /// The client or route exceeded its request rate.
    RateLimited,
    /// sluice turned the client away at a protective limit.
    Overloaded,
    /// Every target of the route is down, ejected, cooling or already tried.
    NoHealthyUpstream,
    /// The route's healthy targets are all at their caps (circuit breaking), or the upstream
    /// address already has `limits.max_upstream_connections` connections open.
    UpstreamAtCapacity,
    /// The request already passed through this instance: forwarding it would feed a loop.
    LoopDetected,
    /// An AI route's client sent no virtual key, or an unknown one.
    ApiKeyInvalid,
}

impl ErrorKind {
    /// Every kind, for metrics that list them all from the start.
    pub const ALL: [ErrorKind; 22] = [
        ErrorKind::HttpRequestError,
        ErrorKind::HttpRequestDenied,
        ErrorKind::DestinationNotFound,
        ErrorKind::DnsError,
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionTimeout,
        ErrorKind::ConnectionTerminated,
        ErrorKind::HttpResponseTimeout,
        ErrorKind::HttpProtocolError,
        ErrorKind::TlsCertificateError,
        ErrorKind::TlsProtocolError,
        ErrorKind::DestinationUnavailable,
        ErrorKind::DestinationIpProhibited,
        ErrorKind::ProxyAuthRequired,
        ErrorKind::UriTooLong,
        ErrorKind::BodyTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::Overloaded,
        ErrorKind::NoHealthyUpstream,
        ErrorKind::UpstreamAtCapacity,
        ErrorKind::LoopDetected,
        ErrorKind::ApiKeyInvalid,
    ];

    /// The RFC 9209 error type name, also used as the log field and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::HttpRequestError => "http_request_error",
            ErrorKind::HttpRequestDenied => "http_request_denied",
            ErrorKind::DestinationNotFound => "destination_not_found",
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::ConnectionTimeout => "connection_timeout",
            ErrorKind::ConnectionTerminated => "connection_terminated",
            ErrorKind::HttpResponseTimeout => "http_response_timeout",
            ErrorKind::HttpProtocolError => "http_protocol_error",
            ErrorKind::TlsCertificateError => "tls_certificate_error",
            ErrorKind::TlsProtocolError => "tls_protocol_error",
            ErrorKind::DestinationUnavailable => "destination_unavailable",
            ErrorKind::DestinationIpProhibited => "destination_ip_prohibited",
            ErrorKind::ProxyAuthRequired => "proxy_auth_required",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            ErrorKind::UpstreamAtCapacity => "upstream_at_capacity",
            ErrorKind::LoopDetected => "loop_detected",
            ErrorKind::ApiKeyInvalid => "api_key_invalid",
        }
    }

    /// True for failures on the upstream side (reaching it or hearing from it), as opposed to
    /// requests refused or found malformed by sluice itself.
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            ErrorKind::DnsError
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionTimeout
                | ErrorKind::ConnectionTerminated
                | ErrorKind::HttpResponseTimeout
                | ErrorKind::HttpProtocolError
                | ErrorKind::TlsCertificateError
                | ErrorKind::TlsProtocolError
                | ErrorKind::DestinationUnavailable
                | ErrorKind::NoHealthyUpstream
        )
    }

    /// The status code a client receives for this kind of failure.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::HttpRequestError => StatusCode::BAD_REQUEST,
            ErrorKind::HttpRequestDenied | ErrorKind::DestinationIpProhibited => {
                StatusCode::FORBIDDEN
            }
            ErrorKind::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ErrorKind::ApiKeyInvalid => StatusCode::UNAUTHORIZED,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded
            | ErrorKind::NoHealthyUpstream
            | ErrorKind::UpstreamAtCapacity => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::LoopDetected => StatusCode::LOOP_DETECTED,
            ErrorKind::DestinationNotFound => StatusCode::NOT_FOUND,
            ErrorKind::ConnectionTimeout | ErrorKind::HttpResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::DnsError
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionTerminated
            | ErrorKind::HttpProtocolError
            | ErrorKind::TlsCertificateError
            | ErrorKind::TlsProtocolError
            | ErrorKind::DestinationUnavailable => StatusCode::BAD_GATEWAY,
        }
    }
}

impl ProxyError {
    /// Classifies this error, looking through the cause chain where the variant alone cannot say.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::BadTarget(_)
            | ProxyError::BadHost(_)
            | ProxyError::BadPath(_)
            | ProxyError::Framing(_) => ErrorKind::HttpRequestError,
            ProxyError::Denied(_) => ErrorKind::HttpRequestDenied,
            ProxyError::AuthRequired { .. } => ErrorKind::ProxyAuthRequired,
            ProxyError::UriTooLong { .. } => ErrorKind::UriTooLong,
            ProxyError::BodyTooLarge { .. } => ErrorKind::BodyTooLarge,
            ProxyError::RateLimited { .. } => ErrorKind::RateLimited,
            ProxyError::Overloaded(_) => ErrorKind::Overloaded,
            ProxyError::UnexpectedUpgrade { .. } => ErrorKind::HttpProtocolError,
            ProxyError::NotServed(NotServed::ForwardDisabled) => ErrorKind::HttpRequestDenied,
            ProxyError::NotServed(NotServed::ReverseDisabled) => ErrorKind::HttpRequestError,
            ProxyError::NotServed(NotServed::NoRoute) => ErrorKind::DestinationNotFound,
            ProxyError::Upstream(failure) => upstream_failure_kind(failure),
            ProxyError::NoUpstream(Unavailable::NoHealthyTarget) => ErrorKind::NoHealthyUpstream,
            ProxyError::NoUpstream(Unavailable::AtCapacity) => ErrorKind::UpstreamAtCapacity,
            ProxyError::Loop { .. } => ErrorKind::LoopDetected,
            ProxyError::Gateway(refusal) => refusal_kind(refusal),
        }
    }

    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }
}

/// The kind of a gateway refusal.
fn refusal_kind(refusal: &Refusal) -> ErrorKind {
    match refusal {
        Refusal::MissingKey | Refusal::UnknownKey => ErrorKind::ApiKeyInvalid,
        Refusal::RouteNotAllowed { .. } | Refusal::ModelNotAllowed { .. } => {
            ErrorKind::HttpRequestDenied
        }
        Refusal::Budget(_) => ErrorKind::RateLimited,
        Refusal::Body(_) => ErrorKind::HttpRequestError,
        Refusal::State(_) => ErrorKind::Overloaded,
        Refusal::FirstEvent(GateFailure::Timeout) => ErrorKind::HttpResponseTimeout,
        Refusal::FirstEvent(_) => ErrorKind::ConnectionTerminated,
    }
}

/// The kind of a failed exchange with an upstream.
fn upstream_failure_kind(failure: &UpstreamError) -> ErrorKind {
    match failure {
        UpstreamError::Connect { source, .. } => connect_kind(source),
        UpstreamError::ResponseTimeout { .. } => ErrorKind::HttpResponseTimeout,
        UpstreamError::Tls { reason: rustls::Error::InvalidCertificate(_), .. } => {
            ErrorKind::TlsCertificateError
        }
        UpstreamError::Tls { .. } => ErrorKind::TlsProtocolError,
        UpstreamError::Exchange { source, .. } => upstream_kind(&**source),
        UpstreamError::Parent { source, .. } => match source {
            EgressError::Direct(connect) => connect_kind(connect),
            EgressError::Parent { source, .. } => parent_kind(source),
        },
    }
}

/// The failure kind of a parent proxy's failure.
pub fn parent_kind(err: &ParentError) -> ErrorKind {
    match err {
        ParentError::Connect(connect) => connect_kind(connect),
        ParentError::Timeout { .. } => ErrorKind::ConnectionTimeout,
        ParentError::Io(_) | ParentError::Closed => ErrorKind::ConnectionTerminated,
        // rustls reports a handshake failure as an io::Error wrapping its own error.
        ParentError::Tls(io) => {
            match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(_)) => ErrorKind::TlsCertificateError,
                _ => ErrorKind::TlsProtocolError,
            }
        }
        ParentError::Status { status } => match status.as_u16() {
            403 => ErrorKind::HttpRequestDenied,
            504 => ErrorKind::ConnectionTimeout,
            _ => ErrorKind::DestinationUnavailable,
        },
        ParentError::HeadTooLarge | ParentError::Malformed(_) => ErrorKind::HttpProtocolError,
        ParentError::TooLong(_) => ErrorKind::HttpRequestError,
        ParentError::NoAcceptableMethod | ParentError::Credentials => {
            ErrorKind::DestinationUnavailable
        }
        ParentError::SocksReply { code } => match code {
            0x02 => ErrorKind::HttpRequestDenied,
            0x05 => ErrorKind::ConnectionRefused,
            0x06 => ErrorKind::ConnectionTimeout,
            _ => ErrorKind::DestinationUnavailable,
        },
    }
}

/// The failure kind a connect error represents.
pub fn connect_kind(err: &ConnectError) -> ErrorKind {
    match err {
        ConnectError::Dns { .. } | ConnectError::NoAddresses { .. } => ErrorKind::DnsError,
        ConnectError::Refused { .. } => ErrorKind::ConnectionRefused,
        ConnectError::Timeout { .. } => ErrorKind::ConnectionTimeout,
        ConnectError::Io { .. } | ConnectError::MissingHost => ErrorKind::DestinationUnavailable,
        ConnectError::Prohibited { .. } => ErrorKind::DestinationIpProhibited,
        ConnectError::AtCapacity { .. } | ConnectError::TargetAtCapacity { .. } => {
            ErrorKind::UpstreamAtCapacity
        }
    }
}

/// Finds the most specific kind in an upstream client error's cause chain.
fn upstream_kind(err: &(dyn StdError + 'static)) -> ErrorKind {
    // Our own body limit sits below hyper's "user body" error: look for it first.
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if current.downcast_ref::<BodyTooLarge>().is_some() {
            return ErrorKind::BodyTooLarge;
        }
        cause = current.source();
    }
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(connect) = current.downcast_ref::<ConnectError>() {
            return connect_kind(connect);
        }
        if current.downcast_ref::<BodyTooLarge>().is_some() {
            return ErrorKind::BodyTooLarge;
        }
        // The HTTP/1 fast path's own exchange, as hyper's errors below.
        match current.downcast_ref::<ExchangeFailure>() {
            Some(ExchangeFailure::Closed) => return ErrorKind::ConnectionTerminated,
            Some(ExchangeFailure::Protocol(_)) => return ErrorKind::HttpProtocolError,
            Some(ExchangeFailure::Io(_)) | None => {}
        }
        if let Some(hyper_err) = current.downcast_ref::<hyper::Error>() {
            // The request body we were streaming failed: the client sent a broken body.
            if hyper_err.is_user() {
                return ErrorKind::HttpRequestError;
            }
            if hyper_err.is_incomplete_message() || hyper_err.is_canceled() {
                return ErrorKind::ConnectionTerminated;
            }
            if hyper_err.is_parse() || hyper_err.is_parse_status() {
                return ErrorKind::HttpProtocolError;
            }
            if hyper_err.is_timeout() {
                return ErrorKind::HttpResponseTimeout;
            }
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            // rustls reports handshake failures as an io::Error wrapping its own error, which
            // `source()` skips over, so look inside.
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return match tls {
                    rustls::Error::InvalidCertificate(_) => ErrorKind::TlsCertificateError,
                    _ => ErrorKind::TlsProtocolError,
                };
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ErrorKind::ConnectionTimeout;
            }
        }
        cause = current.source();
    }
    ErrorKind::DestinationUnavailable
}

/// The error and its causes as one line, skipping wrapper levels that add no information.
pub fn describe(err: &ProxyError) -> String {
    let mut text = err.to_string();
    let mut cause: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(current) = cause {
        // The pooled client's own message only names its internal stage ("client error
        // (Connect)"); its cause is what a person needs to read.
        if current.downcast_ref::<hyper_util::client::legacy::Error>().is_none() {
            let _ = write!(text, ": {current}");
        }
        cause = current.source();
    }
    text
}

/// Renders an error as the response the client receives, and logs it.
pub fn render(err: &ProxyError) -> Response<Body> {
    let (status, headers, body) = rendered(err);
    let mut response = Response::new(Body::message(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Renders an error as [`render`] does (status, `Proxy-Status`, `Retry-After`, the log line),
/// with a JSON body made by `body` from the error's one-line description: an AI route answers
/// in its provider's error shape.
pub fn render_json(err: &ProxyError, body: impl FnOnce(&str) -> bytes::Bytes) -> Response<Body> {
    let (status, mut headers, _) = rendered(err);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = Response::new(Body::message(body(&describe(err))));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Renders an error as a complete HTTP/1.1 response with `Connection: close`, for a refusal
/// written straight to a socket before any request was read (a client over its per-address
/// connection cap), where there is no HTTP connection to hand a [`Response`] to.
pub fn render_http1(err: &ProxyError) -> Vec<u8> {
    let (status, headers, body) = rendered(err);
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        if name == header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The status, header fields and body text of [`render`]'s response, for a response written
/// without hyper (the HTTP/1 fast path writes it itself); logs the error as [`render`] does.
pub fn render_parts(err: &ProxyError) -> (StatusCode, http::HeaderMap, String) {
    rendered(err)
}

/// The status, header fields and body text an error becomes; logs it on the way.
fn rendered(err: &ProxyError) -> (StatusCode, http::HeaderMap, String) {
    let kind = err.kind();
    let status = kind.status();
    let details = describe(err);
    if status.is_server_error() {
        tracing::info!(error.kind = kind.as_str(), status = status.as_u16(), "{details}");
    } else {
        tracing::debug!(error.kind = kind.as_str(), status = status.as_u16(), "{details}");
    }
    let body = format!(
        "{} {}: {details}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&proxy_status(kind, &details)) {
        headers.insert("proxy-status", value);
    }
    match err {
        ProxyError::AuthRequired { challenge, .. } => {
            headers.insert(header::PROXY_AUTHENTICATE, challenge.clone());
        }
        ProxyError::RateLimited { retry_after }
        | ProxyError::Gateway(Refusal::Budget(BudgetSpent { retry_after, .. })) => {
            headers
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*retry_after)));
        }
        // A protective limit, every target (or the upstream address, or a target's
        // connections) at its cap, or the budget store unreachable.
        _ if matches!(kind, ErrorKind::Overloaded | ErrorKind::UpstreamAtCapacity)
            || matches!(err, ProxyError::Gateway(Refusal::State(_))) =>
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // After a framing error the rest of the connection cannot be trusted (RFC 9112 §6.3).
        ProxyError::Framing(_) | ProxyError::BadTarget(_) | ProxyError::BadHost(_) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    (status, headers, body)
}

/// A `Proxy-Status` field value (RFC 9209 §2): `sluice; error=<type>; details="<text>"`, with
/// sluice's own kinds mapped onto the registered error types.
fn proxy_status(kind: ErrorKind, details: &str) -> String {
    let error_type = match kind {
        // RFC 9209 registers no loop type; refusing to forward is a denial.
        ErrorKind::ProxyAuthRequired
        | ErrorKind::ApiKeyInvalid
        | ErrorKind::RateLimited
        | ErrorKind::Overloaded
        | ErrorKind::LoopDetected => "http_request_denied",
        ErrorKind::UriTooLong | ErrorKind::BodyTooLarge => "http_request_error",
        // RFC 9209 §2.3.3: "a health check may indicate that it is down".
        ErrorKind::NoHealthyUpstream => "destination_unavailable",
        // RFC 9209 §2.3.12: the limit on connections (here, requests) to the next hop.
        ErrorKind::UpstreamAtCapacity => "connection_limit_reached",
        other => other.as_str(),
    };
    let mut value = format!("sluice; error={error_type}; details=\"");
    // details is an RFC 8941 sf-string: printable ASCII with `"` and `\` escaped.
    for c in details.chars() {
        match c {
            '"' | '\\' => {
                value.push('\\');
                value.push(c);
            }
            ' '..='~' => value.push(c),
            _ => value.push('?'),
        }
    }
    value.push('"');
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_escapes_details() {
        assert_eq!(
            proxy_status(ErrorKind::DnsError, "a \"b\" \\ é"),
            "sluice; error=dns_error; details=\"a \\\"b\\\" \\\\ ?\""
        );
    }

    #[test]
    fn kinds_map_to_the_documented_statuses() {
        assert_eq!(ErrorKind::ConnectionTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ErrorKind::HttpResponseTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ErrorKind::ConnectionRefused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ErrorKind::DnsError.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ErrorKind::DestinationNotFound.status(), StatusCode::NOT_FOUND);
    }
}
