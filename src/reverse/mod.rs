//! The reverse proxy / API gateway: route origin-form requests to configured upstreams.
//!
//! Order of work for a request: pick the route ([`router`]), build the upstream URI
//! ([`rewrite`]), keep an allowed upgrade, rewrite the head (hop-by-hop out, Host, Via), add
//! forwarding headers, apply the global then the route's request rules, send, and apply the
//! route's then the global response rules.

pub mod rewrite;
pub mod router;

use http::header::HOST;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::context::RequestContext;
use crate::dispatch::Proxy;
use crate::error::{Denied, NotServed, ProxyError};
use crate::headers::forwarded::{self, Hop};
use crate::headers::rules;
use crate::{exchange, upgrade};

/// Proxies a request to the route that matches its host and path.
pub async fn proxy(
    mut request: Request<Incoming>,
    ctx: &RequestContext,
    proxy: &Proxy,
) -> Result<Response<Body>, ProxyError> {
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
    let _ = ctx.route.set(route.series.clone());
    let uri = rewrite::upstream_uri(&route.config, request.uri())?;
    if let Some(limiter) = &route.limiter {
        limiter.acquire(()).map_err(|retry_after| ProxyError::RateLimited { retry_after })?;
    }
    let pending = upgrade::take(&mut request, &route.config.allow_upgrades);
    if pending.is_none() && upgrade::is_extended_connect(&request) {
        // An HTTP/2 extended CONNECT cannot be served as a plain request (RFC 8441 §4).
        return Err(ProxyError::Denied(Denied::Upgrade));
    }
    let request = Body::limit_request(request, route.config.max_body_bytes, ctx.received.clone())?;
    let (mut parts, body) = request.into_parts();
    let host = match (&client_host, route.config.preserve_host) {
        (Some(client), true) => client.clone(),
        _ => route.upstream_host.clone(),
    };
    let settings = &proxy.config.headers;
    exchange::prepare(&mut parts, uri, host, pending.as_ref(), settings.via);
    let hop = Hop { client: &ctx.peer, proto: ctx.scheme, host: client_host.as_ref() };
    forwarded::apply_forwarding(&mut parts.headers, hop, settings);
    // The id replaces whatever the client sent (unless trusted, when it is the client's).
    parts.headers.insert(proxy.config.request_id.header.clone(), ctx.id_header());
    rules::apply(&settings.request, &mut parts.headers);
    rules::apply(&route.config.request_headers, &mut parts.headers);
    let request = Request::from_parts(parts, body);
    exchange::send(
        proxy,
        &route.upstream,
        request,
        &route.config.upstream.authority,
        pending,
        &[&route.config.response_headers, &settings.response],
        ctx,
    )
    .await
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
