//! The forward proxy: absolute-form requests ([`forward`]) and CONNECT tunnels ([`tunnel`]).

pub mod target;
pub mod tunnel;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::context::RequestContext;
use crate::dispatch::{ListenerContext, Proxy};
use crate::error::ProxyError;
use crate::{exchange, upgrade};

/// Forwards an absolute-form request (`GET http://host/path`) to its origin and returns the
/// origin's response, both bodies streamed. A WebSocket upgrade (`ws://` through the proxy) is
/// passed on and relayed.
pub async fn forward(
    mut request: Request<Incoming>,
    target: target::Target,
    uri: http::Uri,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Response<Body>, ProxyError> {
    let pending = upgrade::take(&mut request, upgrade::FORWARD_ALLOWED);
    let request = Body::limit_request(
        request,
        proxy.config.limits.max_request_body_bytes,
        ctx.received.clone(),
    )?;
    let (mut parts, body) = request.into_parts();
    // RFC 9112 §3.2.2: a proxy receiving absolute-form replaces Host with the target's authority.
    let host = HeaderValue::from_str(target.authority.as_str())
        .map_err(|_| ProxyError::BadTarget(target::TargetError::MissingHost))?;
    exchange::prepare(&mut parts, uri, host, pending.as_ref(), proxy.config.headers.via);
    let request = Request::from_parts(parts, body);
    exchange::send(proxy, &listener.forward, request, &target.authority, pending, &[], ctx).await
}
