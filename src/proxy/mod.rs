//! The request path, phase by phase. [`handle`] runs them in order over one per-request
//! [`RequestContext`]; each phase is a plain function that reads and writes that context and
//! returns `Result<_, ProxyError>`, and an error is rendered here, once.
//!
//! | phase         | function                                    | what it does                                  |
//! |---------------|---------------------------------------------|-----------------------------------------------|
//! | classify      | [`classify`]                                | CONNECT, absolute-form or origin-form         |
//! | admit         | [`admit`]                                   | every policy check, in its documented order   |
//! | route         | [`reverse::route`]                          | the route, its URI, its own admission         |
//! | cache lookup  | [`cache::lookup`]                           | answer from the HTTP cache, or mark the fill  |
//! | pick upstream | [`pick_upstream`]                           | the route's client, or its group of targets   |
//! | prepare       | [`forward::prepare`], [`reverse::prepare`]  | body limit, head rewrite, forwarding, rules   |
//! | send          | [`exchange::send`], [`failover::send`], [`tunnel::open`] | the upstream exchange (a group's target picked per attempt, retried on another) |
//! | respond       | [`exchange::respond`], [`cache::Cached::respond`] | response filters, upgrades, body idle timeout, cache fill |
//! | log           | [`deliver`], then [`log::ObservedBody`] or [`log::SessionLog`] | access log and metrics, once, at the end |
//!
//! Classification runs before admission because it is pure and everything after it, the
//! access-log line of a refused request included, needs to know the request's kind.

pub mod ai;
pub mod answer;
pub mod cache;
pub mod context;
pub mod exchange;
pub mod failover;
pub mod fast;
pub mod forward;
pub mod head;
pub mod log;
pub mod reverse;
pub mod router;
pub mod state;
pub mod tunnel;
pub mod upgrade;

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, HOST, PROXY_AUTHORIZATION, TRANSFER_ENCODING, VIA};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::downstream::Downstream;
use crate::downstream::hold::ConnectionHold;
use crate::error::{self, NotServed, ProxyError};
use crate::observe::metrics::RequestPath;
use crate::observe::{Failure, Mode, RequestId};
use crate::policy::{self, framing};
use crate::proxy::cache::Looked;
use crate::proxy::context::RequestContext;
use crate::proxy::head::Head;
use crate::proxy::log::{ObservedBody, Reply, SessionLog};
use crate::proxy::router::Router;
use crate::proxy::state::{ListenerContext, Proxy};
use crate::upstream::client::Upstream;
use crate::upstream::group::Group;
use crate::uri::target::{self, Target};

/// The kind of request, decided from its method and request-target form (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `CONNECT host:port`.
    Connect,
    /// `GET http://host/path`: a forward-proxy request.
    Absolute,
    /// `GET /path`: a request for this server's own routes.
    Origin,
}

impl RequestKind {
    /// The traffic mode a request of this kind is logged and counted as.
    pub fn mode(self) -> Mode {
        match self {
            RequestKind::Connect => Mode::Tunnel,
            RequestKind::Absolute => Mode::Forward,
            RequestKind::Origin => Mode::Reverse,
        }
    }
}

/// Where an admitted request goes next.
#[derive(Debug)]
pub enum Destination {
    /// A CONNECT tunnel to this target.
    Tunnel(Target),
    /// An absolute-form request to this target, sent upstream as this URI.
    Forward(Target, Uri),
    /// An origin-form request for the routes.
    Route,
    /// `GET /proxy.pac` on a forward listener with `[pac]`: answered by sluice.
    Pac,
}

/// Serves one request from `downstream` on `listener`; never fails. The response body finishes
/// the request's context (the access-log line and the metrics) when it ends; a tunnel or
/// upgrade finishes it when the session closes.
pub async fn handle(
    request: Request<Incoming>,
    proxy: &Proxy,
    listener: &ListenerContext,
    downstream: Downstream,
    hold: Arc<ConnectionHold>,
) -> Response<ObservedBody> {
    proxy.observer.metrics.request_path(RequestPath::General);
    let kind = classify(&request, listener.modes, &proxy.router);
    let id = RequestId::for_request(request.headers(), &proxy.config.request_id);
    let observer = &proxy.observer;
    let context = RequestContext::start(
        &request,
        kind.mode(),
        id,
        downstream,
        listener.scheme,
        hold,
        observer,
    );
    let mut ctx = Box::new(context);
    if kind == RequestKind::Absolute {
        ctx.series = Some(listener.forward_series.clone());
    }
    let Reply { mut response, session } =
        match serve(request, kind, &mut ctx, proxy, listener).await {
            Ok(reply) => reply,
            Err(err) => {
                ctx.failure = Some(Failure::Proxy(err.kind()));
                Reply::plain(error::render(&err))
            }
        };
    if ctx.routed() {
        // Clients of an API quote this id when something went wrong; an upstream that sets
        // its own id (many AI APIs do) keeps it.
        let header = &proxy.config.request_id.header;
        if !response.headers().contains_key(header) {
            response.headers_mut().insert(header.clone(), ctx.id_header());
        }
    }
    deliver(response, session, ctx)
}

/// The phases from admission to the response, for one classified request.
async fn serve(
    mut request: Request<Incoming>,
    kind: RequestKind,
    ctx: &mut RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Reply, ProxyError> {
    let destination = admit(&request, kind, ctx, proxy, listener).await?;
    // A TRACE or OPTIONS whose Max-Forwards reached 0 stops here (RFC 9110 §7.6.2).
    if matches!(destination, Destination::Forward(..) | Destination::Route)
        && let Some(answer) = answer::max_forwards(&mut request, proxy.config.headers.trace)
    {
        return Ok(Reply::plain(answer));
    }
    match destination {
        Destination::Tunnel(target) => tunnel::open(request, target, ctx, proxy, listener).await,
        Destination::Pac => {
            let rules =
                proxy.config.pac.as_ref().ok_or(ProxyError::NotServed(NotServed::NoRoute))?;
            Ok(Reply::plain(answer::pac_file(&request, rules, listener.modes.socks)))
        }
        Destination::Forward(target, uri) => {
            serve_forward(request, target, uri, ctx, proxy, listener).await
        }
        Destination::Route => serve_route(request, ctx, proxy).await,
    }
}

/// An absolute-form request: cache lookup, the listener's forward client, prepare, send,
/// respond.
async fn serve_forward(
    mut request: Request<Incoming>,
    target: Target,
    uri: Uri,
    ctx: &mut RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Reply, ProxyError> {
    let upstream = &listener.forward;
    let address = cache::forward_address(&request, &target, listener);
    let cached = match cache::lookup(&mut request, address, ctx, proxy).await {
        Looked::Answered { reply, refresh } => {
            // The client has its answer; a refresh that cannot be prepared is skipped.
            if let Some(refresh) = refresh
                && let Ok((request, _)) = forward::prepare(request, &target, uri, ctx, proxy)
            {
                refresh.spawn(upstream.clone(), request, target.authority.clone());
            }
            return Ok(reply);
        }
        Looked::Forward(cached) => cached,
    };
    let (request, upgrade) = forward::prepare(request, &target, uri, ctx, proxy)?;
    let target = &target.authority;
    let answered = match exchange::send(upstream, request, target, upgrade.is_some(), ctx).await {
        Ok(answered) => answered,
        Err(err) => return cached.failed(err, ctx),
    };
    let body_idle = upstream.settings().body_idle;
    let reply = exchange::respond(answered, target, upgrade, &[], body_idle, ctx, proxy)?;
    Ok(cached.respond(reply, ctx))
}

/// An origin-form request: route, cache lookup, pick upstream, prepare, send (with failover
/// across a route's targets), respond.
async fn serve_route(
    mut request: Request<Incoming>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Reply, ProxyError> {
    let mut routed = reverse::route(&mut request, ctx, proxy)?;
    if routed.route.config.ai.is_some() {
        match ai::serve(request, routed, ctx, proxy).await {
            ai::Served::Reply(reply) => return Ok(reply),
            ai::Served::Plain(plain) => (request, routed) = *plain,
        }
    }
    let address = cache::route_address(&routed, ctx);
    let cached = match cache::lookup(&mut request, address, ctx, proxy).await {
        Looked::Answered { reply, refresh } => {
            // The client has its answer; a refresh that cannot be prepared is skipped. It goes
            // to the route's own client (its first target's, for a route with several), for
            // which `prepare` builds the request.
            if let Some(refresh) = refresh
                && let Ok(request) = reverse::prepare(request, &routed, ctx, proxy)
            {
                let target = routed.route.config.upstream.authority.clone();
                refresh.spawn(routed.route.upstream.clone(), request, target);
            }
            return Ok(reply);
        }
        Looked::Forward(cached) => cached,
    };
    let picked = pick_upstream(&routed);
    let request = reverse::prepare(request, &routed, ctx, proxy)?;
    let upgrade = routed.upgrade.take();
    let route = &routed.route.config;
    let sent = match picked {
        Picked::Client(upstream) => {
            let target = &route.upstream.authority;
            exchange::send(upstream, request, target, upgrade.is_some(), ctx)
                .await
                .map(|answered| (answered, None))
        }
        Picked::Group(group) => {
            let metrics = &proxy.observer.metrics;
            failover::send(group, &routed, request, upgrade.is_some(), ctx, metrics)
                .await
                .map(|sent| (sent.answered, Some(sent.endpoint)))
        }
    };
    let (answered, endpoint) = match sent {
        Ok(sent) => sent,
        Err(err) => return cached.failed(err, ctx),
    };
    let global = &proxy.config.headers.response;
    let reply = match &endpoint {
        // A target's own response rules run before the route's and the global ones.
        Some(endpoint) => {
            let rules = [&endpoint.response_headers, &route.response_headers, global];
            let body_idle = endpoint.upstream.settings().body_idle;
            let target = &endpoint.url.authority;
            exchange::respond(answered, target, upgrade, &rules, body_idle, ctx, proxy)?
        }
        None => {
            let rules = [&route.response_headers, global];
            let body_idle = routed.route.upstream.settings().body_idle;
            let target = &route.upstream.authority;
            exchange::respond(answered, target, upgrade, &rules, body_idle, ctx, proxy)?
        }
    };
    Ok(cached.respond(reply, ctx))
}

/// Classifies a request by its method, target form and the listener's modes.
///
/// Over HTTP/1 an absolute-form target is a forward-proxy request on a forward listener, and
/// an origin request for that authority otherwise (RFC 9112 §3.2.2). HTTP/2 requests always
/// carry a scheme and authority, so there the listener decides: forward-only listeners proxy
/// them, reverse-only listeners route them, and a listener doing both routes a request that
/// matches a route and proxies the rest.
pub fn classify<B>(
    request: &Request<B>,
    modes: crate::config::Modes,
    router: &Router,
) -> RequestKind {
    let extended = upgrade::is_extended_connect(request);
    classify_head(request, extended, modes, router)
}

/// [`classify`] on a head, `extended` saying whether it is an HTTP/2 extended CONNECT.
pub fn classify_head(
    request: &impl Head,
    extended: bool,
    modes: crate::config::Modes,
    router: &Router,
) -> RequestKind {
    let uri = request.uri();
    if extended {
        // RFC 8441: WebSocket over HTTP/2 names a path on this server.
        RequestKind::Origin
    } else if request.method() == Method::CONNECT {
        RequestKind::Connect
    } else if uri.scheme().is_none() || !modes.forward {
        RequestKind::Origin
    } else if request.version() != Version::HTTP_2 || !modes.reverse {
        RequestKind::Absolute
    } else if router.find(uri.host(), uri.path()).is_some() {
        RequestKind::Origin
    } else {
        RequestKind::Absolute
    }
}

/// The admit phase: every request-level policy check, in the order `policy` documents, and
/// the listener's modes; returns where the request goes. The checks that need a route run in
/// the route phase.
pub async fn admit(
    request: &impl Head,
    kind: RequestKind,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Destination, ProxyError> {
    let policy = &proxy.policy;
    let client = ctx.downstream.addr.ip();
    policy.check_client(client)?;
    framing::check_fields(request.count(&CONTENT_LENGTH), request.values(&TRANSFER_ENCODING))?;
    let (method, uri) = (request.method(), request.uri());
    policy::check_host_fields(method, uri, request.version(), request.values(&HOST))?;
    policy.check_request_line_of(method, uri)?;
    policy.check_client_rate(client)?;
    // A request carrying this instance's own Via entry went round in a loop (508).
    if let Some(via) = &proxy.via_entry
        && via.seen_in_values(request.values(&VIA))
    {
        return Err(ProxyError::Loop { pseudonym: via.pseudonym().to_owned() });
    }
    match kind {
        RequestKind::Connect | RequestKind::Absolute if listener.modes.forward => {
            // A tunnel has no URI of its own to send; an absolute-form request does.
            let (target, uri) = if kind == RequestKind::Connect {
                (target::connect(request.uri())?, None)
            } else {
                let (target, uri) = target::absolute(request.uri())?;
                (target, Some(uri))
            };
            if listener.policy.auth_required {
                let credentials = request
                    .first(&PROXY_AUTHORIZATION)
                    .and_then(|value| HeaderValue::from_bytes(value).ok());
                // Boxed: a credential check may hash a password off the runtime, and its
                // state would otherwise widen every request's future, authenticated or not.
                Box::pin(policy.check_credentials_value(credentials.as_ref())).await?;
            }
            if kind == RequestKind::Connect {
                policy::check_connect_port(&listener.policy, target.port)?;
            }
            if listener.guard.host_denied(target.host()) {
                return Err(policy::Denied::Host.into());
            }
            Ok(match uri {
                None => Destination::Tunnel(target),
                Some(uri) => Destination::Forward(target, uri),
            })
        }
        RequestKind::Connect | RequestKind::Absolute => {
            Err(ProxyError::NotServed(NotServed::ForwardDisabled))
        }
        RequestKind::Origin
            if listener.modes.forward
                && proxy.config.pac.is_some()
                && answer::is_pac(request.method(), request.uri()) =>
        {
            Ok(Destination::Pac)
        }
        RequestKind::Origin if listener.modes.reverse => Ok(Destination::Route),
        RequestKind::Origin => Err(ProxyError::NotServed(NotServed::ReverseDisabled)),
    }
}

/// What serves a routed request.
#[derive(Debug)]
pub enum Picked<'p> {
    /// The route's one upstream client.
    Client(&'p Upstream),
    /// The route's targets: the send phase picks one for each attempt (`Group::enter`).
    Group(&'p Group),
}

/// The pick-upstream phase: the route's client, or, for a route with several targets, its
/// group, which picks a target (tier, health, caps, balancing) for every attempt of the send
/// phase, since a retry must go to another.
pub fn pick_upstream<'p>(routed: &reverse::Routed<'p>) -> Picked<'p> {
    match &routed.route.group {
        Some(group) => Picked::Group(group),
        None => Picked::Client(&routed.route.upstream),
    }
}

/// The log phase: the response's status goes into the context, and the context goes with the
/// response body, or to the tunnel's or upgrade's relay (its `session`), which writes the
/// access-log line and the metrics once, when the traffic ends.
pub fn deliver(
    response: Response<Body>,
    session: Option<SessionLog>,
    mut ctx: Box<RequestContext>,
) -> Response<ObservedBody> {
    ctx.status = response.status().as_u16();
    match session {
        Some(session) => {
            session.start(ctx);
            response.map(ObservedBody::unobserved)
        }
        None => response.map(|body| ObservedBody::new(body, ctx)),
    }
}
