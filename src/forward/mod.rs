//! The forward proxy: absolute-form requests ([`forward`]) and CONNECT tunnels ([`tunnel`]).

pub mod target;
pub mod tunnel;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::context::RequestContext;
use crate::dispatch::Proxy;
use crate::error::ProxyError;
use crate::headers::{forwarded, hop_by_hop};

/// Forwards an absolute-form request (`GET http://host/path`) to its origin and returns the
/// origin's response, both bodies streamed.
pub async fn forward(
    request: Request<Incoming>,
    _ctx: &RequestContext,
    proxy: &Proxy,
) -> Result<Response<Body>, ProxyError> {
    let (target, uri) = target::absolute(request.uri())?;
    let (mut parts, body) = request.into_parts();
    let received = parts.version;
    parts.uri = uri;
    // Upstream connections are pooled HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    hop_by_hop::strip(&mut parts.headers);
    // RFC 9112 §3.2.2: a proxy receiving absolute-form replaces Host with the target's authority.
    let host = HeaderValue::from_str(target.authority.as_str())
        .map_err(|_| ProxyError::BadTarget(target::TargetError::MissingHost))?;
    parts.headers.insert(HOST, host);
    if proxy.config.headers.via {
        forwarded::append_via(&mut parts.headers, received);
    }
    let response = proxy
        .upstream
        .send(
            Request::from_parts(parts, Body::from(body)),
            &target.authority,
        )
        .await?;
    Ok(downstream_response(response, proxy))
}

/// Prepares an upstream response for the client: hop-by-hop fields out, `Via` in, body streamed.
pub fn downstream_response(response: Response<Incoming>, proxy: &Proxy) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    hop_by_hop::strip(&mut parts.headers);
    if proxy.config.headers.via {
        forwarded::append_via(&mut parts.headers, parts.version);
    }
    // The status line is ours: an HTTP/1.0 origin must not downgrade the client's connection.
    parts.version = Version::default();
    Response::from_parts(parts, Body::from(body))
}
