//! The forward proxy's prepare phase: an absolute-form request (`GET http://host/path`) made
//! ready for its origin. A WebSocket upgrade (`ws://` through the proxy) is kept and relayed.
//! The forward proxy adds no forwarding headers, no request id and applies no header rules.

use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::ProxyError;
use crate::headers::edit::Edits;
use crate::proxy::context::RequestContext;
use crate::proxy::exchange;
use crate::proxy::state::Proxy;
use crate::proxy::upgrade::{self, PendingUpgrade};
use crate::uri::target::{Target, TargetError};

/// Applies the global body limit, keeps an allowed upgrade and rewrites the head, with `Host`
/// set to the target's authority; returns the request to send and the upgrade kept.
pub fn prepare(
    mut request: Request<Incoming>,
    target: &Target,
    uri: Uri,
    ctx: &RequestContext,
    proxy: &Proxy,
) -> Result<(Request<Body>, Option<PendingUpgrade>), ProxyError> {
    let pending = upgrade::take(&mut request, upgrade::FORWARD_ALLOWED);
    let limit = proxy.config.limits.max_request_body_bytes;
    let request = Body::limit_request(request, limit, ctx.received.clone())?;
    let (mut parts, body) = request.into_parts();
    // RFC 9112 §3.2.2: a proxy receiving absolute-form replaces Host with the target's authority.
    let host = host_of(target)?;
    let mut edits = Edits::new();
    exchange::head_edits(&host, proxy.via(), parts.version, &mut edits);
    exchange::prepare_head(&mut parts, uri, pending.as_ref(), edits);
    Ok((Request::from_parts(parts, body), pending))
}

/// The `Host` a forwarded request carries: its target's authority (RFC 9112 §3.2.2).
pub fn host_of(target: &Target) -> Result<HeaderValue, TargetError> {
    HeaderValue::from_str(target.authority.as_str()).map_err(|_| TargetError::MissingHost)
}
