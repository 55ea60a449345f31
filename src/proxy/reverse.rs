//! The reverse proxy / API gateway's phases: route an origin-form request to a configured
//! route ([`route`]), then rewrite it for that route's upstream ([`prepare`]).

use http::header::HOST;
use http::{HeaderValue, Request, Uri, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::{NotServed, ProxyError};
use crate::headers::edit::{Edit, Edits};
use crate::headers::forwarded::{Forwarding, Hop};
use crate::headers::{host, lookalike, rules};
use crate::policy::{Denied, RateLimited};
use crate::proxy::context::RequestContext;
use crate::proxy::exchange;
use crate::proxy::head::Head;
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
    let mut routed = route_head(request, ctx, proxy)?;
    let upgrade = upgrade::take(request, &routed.route.config.allow_upgrades);
    if upgrade.is_none() && upgrade::is_extended_connect(request) {
        // An HTTP/2 extended CONNECT cannot be served as a plain request (RFC 8441 §4).
        return Err(Denied::Upgrade.into());
    }
    routed.upgrade = upgrade;
    Ok(routed)
}

/// The route phase up to the upgrade check: the route, its upstream URI and its rate limit.
/// What [`route`] does for a request that asks for no upgrade.
pub fn route_head<'p>(
    request: &impl Head,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
) -> Result<Routed<'p>, ProxyError> {
    let (client_host, route) = find(request, proxy);
    let route = route.ok_or(ProxyError::NotServed(NotServed::NoRoute))?;
    enter(route, client_host, request, ctx)
}

/// [`route_head`] for a request whose route is already found (with the host the client
/// asked for): records it, builds the upstream URI and applies the route's rate limit.
pub fn enter<'p>(
    route: &'p Route,
    client_host: Option<HeaderValue>,
    request: &impl Head,
    ctx: &mut RequestContext,
) -> Result<Routed<'p>, ProxyError> {
    ctx.series = Some(route.series.clone());
    let uri = path::upstream_uri(&route.config, request.uri())?;
    if let Some(limiter) = &route.limiter {
        limiter.acquire(()).map_err(|retry_after| RateLimited { retry_after })?;
    }
    Ok(Routed { route, uri, client_host, upgrade: None })
}

/// The host the client asked for, and the route that takes the request: the lookup of the
/// route phase, without its side effects.
pub fn find<'p>(request: &impl Head, proxy: &'p Proxy) -> (Option<HeaderValue>, Option<&'p Route>) {
    let client_host = client_host(request);
    let host_name = client_host.as_ref().and_then(|h| h.to_str().ok()).map(without_port);
    let route = proxy.router.find(host_name, request.uri().path());
    (client_host, route)
}

/// The host the client asked for (RFC 9112 §3.2.2): for absolute-form the target's authority,
/// else its `Host`.
pub fn client_host(request: &impl Head) -> Option<HeaderValue> {
    match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => request.first(&HOST_NAME).and_then(host::value),
    }
}

static HOST_NAME: http::HeaderName = HOST;

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
/// request id, the global and the route's request rules (an AI route prepares its head here
/// too, after reading its body).
pub fn prepare_head(
    parts: &mut http::request::Parts,
    routed: &Routed<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) {
    // Before sluice writes its own fields: a client's `X_Api_Key` beside an injected
    // `X-Api-Key` would reach a CGI-style origin as the same variable.
    lookalike::drop_lookalikes(&mut parts.headers, &routed.route.owned_names);
    let rewrite = Rewrite::new(routed, ctx, proxy);
    let mut edits = Edits::new();
    rewrite.edits(routed, ctx, proxy, parts.version, &mut edits);
    exchange::prepare_head(parts, routed.uri.clone(), routed.upgrade.as_ref(), edits);
}

/// The values a routed request's head gains on its way upstream, made once per request; both
/// paths turn them into the same edits ([`Rewrite::edits`]).
#[derive(Debug)]
pub struct Rewrite {
    host: HeaderValue,
    forwarding: Forwarding,
    id: HeaderValue,
}

impl Rewrite {
    /// The values for `routed`.
    pub fn new(routed: &Routed<'_>, ctx: &mut RequestContext, proxy: &Proxy) -> Rewrite {
        let route = routed.route;
        let host = match (&routed.client_host, route.config.preserve_host) {
            (Some(client), true) => client.clone(),
            _ => route.upstream_host.clone(),
        };
        let forwarding = Forwarding::new(hop(routed, ctx), &proxy.config.headers);
        Rewrite { host, forwarding, id: ctx.id_header() }
    }

    /// The edits of the prepare phase, in order, for a head received with `received`: `Host`
    /// and `Via`, the forwarding fields, the request id (it replaces whatever the client sent,
    /// unless trusted, when it is the client's), then the global and the route's rules.
    pub fn edits<'a>(
        &'a self,
        routed: &'a Routed<'_>,
        ctx: &'a RequestContext,
        proxy: &'a Proxy,
        received: Version,
        out: &mut Edits<'a>,
    ) {
        let settings = &proxy.config.headers;
        exchange::head_edits(&self.host, proxy.via(), received, out);
        self.forwarding.edits(hop(routed, ctx), settings, out);
        out.push(Edit::Set(&proxy.config.request_id.header, &self.id));
        rules::push_edits(&settings.request, out);
        rules::push_edits(&routed.route.config.request_headers, out);
    }
}

/// What the forwarding fields say about this hop.
fn hop<'a>(routed: &'a Routed<'_>, ctx: &'a RequestContext) -> Hop<'a> {
    Hop { client: &ctx.downstream.ip, proto: ctx.scheme, host: routed.client_host.as_ref() }
}

/// `example.com` from `example.com:8080`, `[::1]` from `[::1]:8080`.
fn without_port(host: &str) -> &str {
    // One pass from the end, byte by byte: a host is short, and this runs on every request.
    for (at, &b) in host.as_bytes().iter().enumerate().rev() {
        match b {
            b':' => return host.get(..at).unwrap_or(host),
            b']' => return host,
            _ => {}
        }
    }
    host
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
        assert_eq!(without_port("a:b:80"), "a:b");
        assert_eq!(without_port(""), "");
    }
}
