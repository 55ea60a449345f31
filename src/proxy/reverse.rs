//! The reverse proxy / API gateway's phases: route an origin-form request to a configured
//! route ([`route`]), then rewrite it for that route's upstream ([`prepare`]).

use http::header::HOST;
use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::{NotServed, ProxyError};
use crate::headers::forwarded::{self, Hop};
use crate::headers::{lookalike, rules};
use crate::policy::{Denied, RateLimited};
use crate::proxy::context::RequestContext;
use crate::proxy::exchange;
use crate::proxy::router::Route;
use crate::proxy::state::Proxy;
use crate::proxy::upgrade::{self, PendingUpgrade};
use crate::uri::path;

/// A request matched to its route, with what the route phase worked out for the next ones.
#[derive(Debug)]
pub struct Routed<'p> {
    /// The route.
    pub route: &'p Route,
    /// The absolute URI to send upstream.
    pub uri: Uri,
    /// The host the client asked for: the target's authority, else its `Host` header.
    pub client_host: Option<HeaderValue>,
    /// The upgrade the route lets through, when the client asked for one.
    pub upgrade: Option<PendingUpgrade>,
}

/// The route phase: finds the route for the request's host and path, records it in the
/// context, builds the upstream URI, and applies the route's own admission: its rate limit
/// (429) and which upgrades it allows (403).
pub fn route<'p>(
    request: &mut Request<Incoming>,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
) -> Result<Routed<'p>, ProxyError> {
    // RFC 9112 §3.2.2: for absolute-form the target's authority is the host; else `Host`.
    let client_host: Option<HeaderValue> = match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => request.headers().get(HOST).cloned(),
    };
    let host_name = client_host.as_ref().and_then(|h| h.to_str().ok()).map(without_port);
    let route = proxy
        .router
        .find(host_name, request.uri().path())
        .ok_or(ProxyError::NotServed(NotServed::NoRoute))?;
    ctx.series = Some(route.series.clone());
    let uri = path::upstream_uri(&route.config, request.uri())?;
    if let Some(limiter) = &route.limiter {
        limiter.acquire(()).map_err(|retry_after| RateLimited { retry_after })?;
    }
    let upgrade = upgrade::take(request, &route.config.allow_upgrades);
    if upgrade.is_none() && upgrade::is_extended_connect(request) {
        // An HTTP/2 extended CONNECT cannot be served as a plain request (RFC 8441 §4).
        return Err(Denied::Upgrade.into());
    }
    Ok(Routed { route, uri, client_host, upgrade })
}

/// The prepare phase of a routed request: the route's body limit, the head rewrite both modes
/// share, the client's look-alikes of the fields sluice writes dropped, forwarding headers,
/// the request id, then the global and the route's request rules.
pub fn prepare(
    request: Request<Incoming>,
    routed: &Routed<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Request<Body>, ProxyError> {
    let route = routed.route;
    let request = Body::limit_request(request, route.config.max_body_bytes, ctx.received.clone())?;
    let (mut parts, body) = request.into_parts();
    prepare_head(&mut parts, routed, ctx, proxy);
    Ok(Request::from_parts(parts, body))
}

/// The head part of [`prepare`]: the rewrite both modes share, forwarding headers, the
/// request id, the global and the route's request rules.
pub fn prepare_head(
    parts: &mut http::request::Parts,
    routed: &Routed<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) {
    let route = routed.route;
    let host = match (&routed.client_host, route.config.preserve_host) {
        (Some(client), true) => client.clone(),
        _ => route.upstream_host.clone(),
    };
    let settings = &proxy.config.headers;
    exchange::prepare_head(parts, routed.uri.clone(), host, routed.upgrade.as_ref(), proxy.via());
    // Before sluice writes its own fields: a client's `X_Api_Key` beside an injected
    // `X-Api-Key` would reach a CGI-style origin as the same variable.
    lookalike::drop_lookalikes(&mut parts.headers, &route.owned_names);
    let hop =
        Hop { client: &ctx.downstream.ip, proto: ctx.scheme, host: routed.client_host.as_ref() };
    forwarded::apply_forwarding(&mut parts.headers, hop, settings);
    // The id replaces whatever the client sent (unless trusted, when it is the client's).
    parts.headers.insert(proxy.config.request_id.header.clone(), ctx.id_header());
    rules::apply(&settings.request, &mut parts.headers);
    rules::apply(&route.config.request_headers, &mut parts.headers);
}

/// `example.com` from `example.com:8080`, `[::1]` from `[::1]:8080`.
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host.get(colon..).unwrap_or_default().contains(']') => {
            host.get(..colon).unwrap_or(host)
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_dropped_from_hosts() {
        assert_eq!(without_port("example.com:8080"), "example.com");
        assert_eq!(without_port("example.com"), "example.com");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
