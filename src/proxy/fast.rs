//! The HTTP/1 fast path: the same phases as [`crate::proxy::handle`] for a plain HTTP/1.1
//! request to a route whose upstream speaks plain HTTP/1.1, with sluice's own codec
//! (`h1`) on both sides instead of hyper's server, `http::Request`, a `HeaderMap` and the
//! pooled client.
//!
//! The request head is parsed in place in the client connection's buffer; admission, routing,
//! picking the upstream and the header rewrite are the same functions the general path runs
//! ([`admit`], [`reverse::route_head`], [`pick_upstream`], [`reverse::Rewrite`]), reading the
//! head through [`crate::proxy::head::Head`] and producing the edits the general path applies to its map; the
//! upstream head is written straight into an output buffer with those edits applied while the
//! field lines are copied, and sent over a connection the downstream connection's task takes
//! from the route's [`FastPool`] and gives back once the response has been read to its end.
//! The response head is rewritten the same way and the body relayed by its framing.
//!
//! [`decide`] makes the choice once per request, before any phase runs, and the choice is
//! counted (`sluice_requests_path_total{path}`). Everything it does not take goes to the
//! general path, which then serves the connection from that request on, with the bytes
//! already read in front of the socket: upgrades and CONNECT, `Expect`, chunked request bodies, bodies over the route's limit, TRACE
//! and OPTIONS (Max-Forwards), absolute-form targets [`forward::decide`] leaves (it serves the
//! forward proxy's plain `http://` requests, see [`forward`]), the PAC file,
//! requests no route takes, routes that cache, routes reached
//! through an `upstream_proxy`, upstreams over TLS or HTTP/2, on a route with several targets
//! a request body not wholly in the buffer or larger than the retry buffer ([`group`]), a head that has not arrived whole by the first read after the connection woke
//! (hyper's header timeout then applies to the rest of it), and every head the parser refuses (the wire guard and hyper answer those, so a
//! refusal is the general path's by construction).

pub mod forward;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::downstream::Downstream;
use crate::downstream::h1::{ClientConn, write_both};
use crate::downstream::hold::ConnectionHold;
use crate::error::{self, ProxyError};
use crate::h1::body::{BodyRelay, Plan, Step};
use crate::h1::fields::Field;
use crate::h1::request::{self, RequestHead};
use crate::h1::response::{self, Answering, RESPONSE_LIMITS, ResponseHead};
use crate::h1::{Framing, HeadLimits, Parsed, Version, buffers, date, write};
use crate::headers::edit::{self, Edit, Edits};
use crate::observe::metrics::RequestPath;
use crate::observe::{Failure, Mode, RequestId};
use crate::proxy::context::{Received, RequestContext};
use crate::proxy::reverse::{self, Rewrite, Routed};
use crate::proxy::router::Route;
use crate::proxy::state::{ListenerContext, Proxy};
use crate::proxy::{Destination, Picked, RequestKind, admit, classify_head, exchange};
use crate::proxy::{answer, pick_upstream};
use crate::upstream::client::UpstreamError;
use crate::upstream::connect::{Connector, UpstreamTcp};
use crate::upstream::group::Endpoint;
use crate::upstream::h1::{ExchangeFailure, FastPool, H1Conn};

mod group;

/// What became of the request at the front of a client connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Served; the connection may carry the next request.
    KeepAlive,
    /// Served (or failed); the connection must close.
    Close,
    /// Not for the fast path: nothing of it was consumed, the general path takes the connection.
    General,
}

/// A request the fast path takes: its route, and the host the client asked for.
#[derive(Debug)]
pub struct Taken<'p> {
    /// The route.
    pub route: &'p Route,
    /// The host the client asked for (its `Host`).
    pub client_host: Option<HeaderValue>,
}

/// The decision, once per request: the route the request goes to when the fast path serves
/// it, `None` when the general path does; `buffered` bytes of the connection's buffer hold
/// the head and what followed it. Pure: no phase has run yet.
pub fn decide<'p>(
    head: &RequestHead<'_>,
    buffered: usize,
    proxy: &'p Proxy,
    listener: &ListenerContext,
) -> Option<Taken<'p>> {
    let plain = !head.wants_upgrade
        && !head.expect
        && head.method != Method::CONNECT
        && head.method != Method::TRACE
        && head.method != Method::OPTIONS
        && matches!(head.framing, Framing::Empty | Framing::Length(_));
    if !plain || classify_head(head, false, listener.modes, &proxy.router) != RequestKind::Origin {
        return None;
    }
    if head.uri.authority().is_some() || !listener.modes.reverse {
        return None;
    }
    if listener.modes.forward
        && proxy.config.pac.is_some()
        && answer::is_pac(&head.method, &head.uri)
    {
        return None;
    }
    let (client_host, route) = reverse::find(head, proxy);
    let route = route?;
    // Only a route that can be served here has a pool (`router::serves_fast`).
    route.fast.as_ref()?;
    match head.framing {
        Framing::Length(n) if n > route.config.max_body_bytes => None,
        Framing::Length(n) if !group::holds_body(route, head.len, n, buffered) => None,
        _ => Some(Taken { route, client_host }),
    }
}

/// Serves the request whose head starts `client`'s buffer, when the fast path takes it;
/// `fields` is the connection's reusable field list, `last` says the connection closes after
/// this request (`limits.max_requests_per_connection`).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    client: &mut ClientConn,
    fields: &mut Vec<Field>,
    proxy: &Proxy,
    listener: &ListenerContext,
    downstream: &Downstream,
    hold: &Arc<ConnectionHold>,
    last: bool,
) -> Served {
    let limits = HeadLimits {
        max_bytes: proxy.config.limits.max_request_head_bytes,
        max_fields: proxy.config.limits.max_request_headers,
    };
    // The group path waits on its targets with the connection's timer while the head is
    // still borrowed from the buffer.
    let (buffered, timer) = client.parts();
    let Ok(Parsed::Complete(head)) = request::parse(buffered, limits, fields) else {
        return Served::General;
    };
    if forward::decide(&head, proxy, listener) {
        let begun = forward::begin(head, proxy, listener, downstream, hold, last).await;
        return forward::finish(client, fields, begun, proxy, listener).await;
    }
    let Some(taken) = decide(&head, buffered.len(), proxy, listener) else {
        return Served::General;
    };
    let mut ctx = context(&head, Mode::Reverse, proxy, listener, downstream, hold);
    // The phases up to the upstream head, while the request head is borrowed from the buffer.
    let prepared = match taken.route.group.as_deref() {
        None => prepare(&head, taken, &mut ctx, proxy, listener).await.map(group::Prepared::One),
        // A route with targets sends here, while each attempt's head can still be written
        // from the request head in the buffer.
        Some(_) => {
            let client = group::Client { buffered, timer, last };
            group::send(&head, taken, client, &mut ctx, proxy, listener).await
        }
    };
    let head_len = head.len;
    let framing = head.framing;
    let client_side = ClientSide::of(&head, last);
    let method_head = head.method == Method::HEAD;
    drop(head);
    client.consume(head_len);
    let (exchanged, target) = match prepared {
        Ok(group::Prepared::One((routed, upstream_head))) => {
            let answering = Answering { head: method_head };
            let exchanged = exchange_head(
                client,
                fields,
                &routed,
                &upstream_head,
                framing,
                answering,
                client_side,
                &mut ctx,
                proxy,
            )
            .await;
            buffers::give(upstream_head);
            match exchanged {
                Ok(exchanged) => (exchanged, Answerer::Route(routed.route)),
                Err(Unfinished::BeforeResponse(err)) => {
                    // Nothing reached the client yet: it gets the error the general path
                    // renders.
                    return refuse(client, err, Framing::Empty, ctx, proxy, true).await;
                }
                Err(Unfinished::Midway(failure)) => {
                    ctx.failure = Some(failure);
                    ctx.finish();
                    return Served::Close;
                }
            }
        }
        Ok(group::Prepared::Group(sent)) => {
            client.consume(sent.body_len);
            (sent.exchanged, Answerer::Target(sent.endpoint))
        }
        Err(err) => {
            return refuse(client, err, framing, ctx, proxy, client_side.refusal_closes()).await;
        }
    };
    // The respond phase, the same for a route's one upstream and a group's target.
    let Exchanged { conn, mut response, answer } = exchanged;
    ctx.status = answer.status.as_u16();
    let (pool, settings) = target.pool();
    let body = respond_body(client, conn, &mut response, answer, pool, settings, &mut ctx).await;
    response.clear();
    buffers::give(response);
    match body {
        Ok(plan) => {
            ctx.finish();
            if client_side.closes(plan) { Served::Close } else { Served::KeepAlive }
        }
        Err(failure) => {
            ctx.failure = Some(failure);
            ctx.finish();
            Served::Close
        }
    }
}

/// The context of a request the fast path serves in `mode`, begun from its head: its id,
/// the fields the access log wants, and the request counted on the fast path.
fn context(
    head: &RequestHead<'_>,
    mode: Mode,
    proxy: &Proxy,
    listener: &ListenerContext,
    downstream: &Downstream,
    hold: &Arc<ConnectionHold>,
) -> RequestContext {
    let observer = &proxy.observer;
    observer.metrics.request_path(RequestPath::Fast);
    let id_name = &proxy.config.request_id.header;
    let id = RequestId::for_value(head.fields.get(id_name.as_str()), &proxy.config.request_id);
    let logged_headers = observer
        .wanted_headers()
        .iter()
        .filter_map(|name| {
            let value = head.fields.get(name.as_str())?;
            Some((name.clone(), HeaderValue::from_bytes(value).ok()?))
        })
        .collect();
    let received = Received {
        method: head.method.clone(),
        target: head.uri.clone(),
        version: head.version.as_http(),
        logged_headers,
        has_body: head.framing != Framing::Empty,
    };
    RequestContext::begin(
        received,
        mode,
        id,
        downstream.clone(),
        listener.scheme,
        hold.clone(),
        observer,
    )
}

/// What answered a request: a route's one upstream, or one of its targets.
enum Answerer<'p> {
    Route(&'p Route),
    Target(Arc<Endpoint>),
}

impl Answerer<'_> {
    /// Its connection pool and settings.
    fn pool(&self) -> (Option<&FastPool>, &crate::upstream::client::UpstreamSettings) {
        match self {
            Answerer::Route(route) => (route.fast.as_ref(), route.upstream.settings()),
            Answerer::Target(endpoint) => (endpoint.fast.as_ref(), endpoint.upstream.settings()),
        }
    }
}

/// An exchange up to the response head: the upstream connection, what was read from it (the
/// head and any body bytes after it), and the head rewritten for the client.
#[derive(Debug)]
struct Exchanged {
    conn: H1Conn,
    response: Vec<u8>,
    answer: Answer,
}

impl Exchanged {
    /// Gives back the buffers of an answer that is retried (its status line never reached
    /// the client); the connection, with an unread body, closes.
    fn discard(self) {
        let Exchanged { mut response, answer, .. } = self;
        buffers::give(answer.head);
        response.clear();
        buffers::give(response);
    }
}

/// The phases from admission to the upstream head: admit, route, pick upstream, prepare.
async fn prepare<'p>(
    head: &RequestHead<'_>,
    taken: Taken<'p>,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
    listener: &ListenerContext,
) -> Result<(Routed<'p>, Vec<u8>), ProxyError> {
    match admit(head, RequestKind::Origin, ctx, proxy, listener).await? {
        Destination::Route => {}
        // `decide` let through only origin-form requests that are not for the PAC file.
        _ => return Err(ProxyError::NotServed(crate::error::NotServed::NoRoute)),
    }
    let routed = reverse::enter(taken.route, taken.client_host, head, ctx)?;
    // `decide` took only routes with one upstream: the pick is its client.
    let Picked::Client(_) = pick_upstream(&routed) else {
        return Err(ProxyError::NotServed(crate::error::NotServed::NoRoute));
    };
    let rewrite = Rewrite::new(&routed, ctx, proxy);
    let mut edits = Edits::new();
    rewrite.edits(&routed, ctx, proxy, head.version.as_http(), &mut edits);
    let mut out = buffers::take();
    let target = routed.uri.path_and_query().map_or("/", |pq| pq.as_str());
    write::request_line(&mut out, head.method.as_str().as_bytes(), target.as_bytes());
    let keep_length = matches!(head.framing, Framing::Length(_));
    // A client's `X_Api_Key` beside an injected `X-Api-Key` would reach a CGI-style origin as
    // the same variable: dropped, as the general path drops it (`lookalike::drop_lookalikes`).
    let owned = &routed.route.owned_names;
    let written = write::fields_without(&mut out, &head.fields, &edits, keep_length, |name| {
        owned.drops(name)
    });
    if !written.host {
        // A rule removed `Host`: the upstream's authority, as the general client sends.
        write::field(&mut out, HOST.as_str().as_bytes(), routed.route.upstream_host.as_bytes());
    }
    write::end(&mut out);
    // The edits borrow the route's values until here.
    drop(edits);
    Ok((routed, out))
}

/// How an exchange that did not complete ended.
#[derive(Debug)]
enum Unfinished {
    /// Before anything was sent to the client: render this error.
    BeforeResponse(ProxyError),
    /// After the response head was sent: the connection closes.
    Midway(Failure),
}

/// The send phase and the response head: the upstream head and the request body out over a
/// connection from the route's pool, the response head back, rewritten for the client.
#[allow(clippy::too_many_arguments)]
async fn exchange_head(
    client: &mut ClientConn,
    fields: &mut Vec<Field>,
    routed: &Routed<'_>,
    upstream_head: &[u8],
    framing: Framing,
    answering: Answering,
    client_side: ClientSide,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Exchanged, Unfinished> {
    let route = routed.route;
    let Some(pool) = route.fast.as_ref() else {
        return Err(Unfinished::BeforeResponse(ProxyError::NotServed(
            crate::error::NotServed::NoRoute,
        )));
    };
    let settings = route.upstream.settings();
    let authority = &route.config.upstream.authority;
    let dial = Dial { pool, connector: route.upstream.connector(), key: "", authority };
    let mut response = buffers::take();
    let result = async {
        let mut conn = send(client, &dial, false, upstream_head, framing, ctx).await?;
        let after = settings.response_header;
        let deadline = Instant::now() + after;
        let mut retried = false;
        let answer = loop {
            if let Some(answer) =
                respond_head(&response, fields, answering, client_side, routed, None, ctx, proxy)
                    .map_err(Unfinished::BeforeResponse)?
            {
                break answer;
            }
            let read = client.timer().within_at(deadline, conn.stream.read_buf(&mut response));
            match read.await.ok_or(()) {
                // A pooled connection the upstream closed as the request went out: nothing of
                // a request without a body can have been processed, so it goes once more, on a
                // new connection (as the general client retries it).
                Ok(Ok(0) | Err(_))
                    if conn.reused
                        && !retried
                        && response.is_empty()
                        && framing == Framing::Empty =>
                {
                    retried = true;
                    conn = send(client, &dial, true, upstream_head, framing, ctx).await?;
                }
                Ok(Ok(0)) => return Err(exchange_failed(authority, ExchangeFailure::Closed)),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(exchange_failed(authority, ExchangeFailure::Io(err))),
                Err(_) => {
                    let target = authority.clone();
                    let err = UpstreamError::ResponseTimeout { target, after };
                    return Err(Unfinished::BeforeResponse(err.into()));
                }
            }
        };
        ctx.answered_by(conn.peer);
        Ok((conn, answer))
    }
    .await;
    match result {
        Ok((conn, answer)) => Ok(Exchanged { conn, response, answer }),
        Err(err) => {
            response.clear();
            buffers::give(response);
            Err(err)
        }
    }
}

/// The respond phase's body, once `answer` (the client's head for the response read into
/// `response`) is made: a body that came whole with its head (the usual small response) goes
/// out from the read buffer in the same write as the head, no relay, no copy; any other is
/// relayed. The upstream connection goes back to `pool` when it can carry another request.
/// Returns the body's plan.
#[allow(clippy::too_many_arguments)]
async fn respond_body(
    client: &mut ClientConn,
    mut conn: H1Conn,
    response: &mut Vec<u8>,
    answer: Answer,
    pool: Option<&FastPool>,
    settings: &crate::upstream::client::UpstreamSettings,
    ctx: &mut RequestContext,
) -> Result<Plan, Failure> {
    let Answer { len, head: mut out, plan, keep_alive, .. } = answer;
    let rest = response.get(len..).unwrap_or_default();
    // `ended`: the upstream sent nothing after the body (the connection can be reused).
    let (body, ended) = match plan {
        Plan::Empty if rest.is_empty() => (whole(client, &out, &[], ctx).await, true),
        Plan::Length(n) if rest.len() as u64 == n => (whole(client, &out, rest, ctx).await, true),
        _ => {
            response.drain(..len.min(response.len()));
            // Boxed: a relayed body's state is several times a whole one's, and inline it would
            // be part of every request's state, which the connection allocates per request.
            let body = send_body(client, &mut conn, response, &mut out, plan, settings, ctx);
            let body = Box::pin(body).await;
            (body, response.is_empty())
        }
    };
    buffers::give(out);
    body?;
    if keep_alive
        && ended
        && let Some(pool) = pool
    {
        pool.release("", conn);
    }
    Ok(plan)
}

/// An upstream exchange failure before the response head, as the general client reports it.
fn exchange_failed(target: &http::uri::Authority, failure: ExchangeFailure) -> Unfinished {
    let err = UpstreamError::Exchange { target: target.clone(), source: Box::new(failure) };
    Unfinished::BeforeResponse(err.into())
}

/// Where a request's upstream connection comes from: an idle one in `pool` under `key`, or
/// one `connector` dials to `authority`.
struct Dial<'a> {
    pool: &'a FastPool,
    connector: &'a Connector,
    key: &'a str,
    authority: &'a Authority,
}

/// Takes a connection as `dial` says (a new one when `fresh`) and sends the upstream head and
/// the request body: as much of the body as has arrived goes in the same write as the head,
/// the rest as it comes.
async fn send(
    client: &mut ClientConn,
    dial: &Dial<'_>,
    fresh: bool,
    upstream_head: &[u8],
    framing: Framing,
    ctx: &mut RequestContext,
) -> Result<H1Conn, Unfinished> {
    let authority = dial.authority;
    let connected = dial.pool.connection(dial.connector, dial.key, authority, fresh).await;
    let mut conn = connected.map_err(|source| {
        let err = UpstreamError::Connect { target: authority.clone(), source };
        Unfinished::BeforeResponse(err.into())
    })?;
    let failed = |err| exchange_failed(authority, ExchangeFailure::Io(err));
    let Framing::Length(length) = framing else {
        conn.stream.write_all(upstream_head).await.map_err(failed)?;
        return Ok(conn);
    };
    let meter = ctx.received.clone();
    let count = |n: usize| {
        if let Some(meter) = &meter {
            meter.fetch_add(n as u64, Ordering::Relaxed);
        }
    };
    let mut remaining = length;
    let first = client.buffered().len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
    let body = client.buffered().get(..first).unwrap_or_default();
    write_both(&mut conn.stream, upstream_head, body).await.map_err(failed)?;
    count(first);
    client.consume(first);
    remaining -= first as u64;
    while remaining > 0 {
        let n = client.read_more().await.unwrap_or(0);
        if n == 0 {
            // The client went away in the middle of its body.
            ctx.failure = Some(Failure::ClientClosed);
            return Err(Unfinished::Midway(Failure::ClientClosed));
        }
        let take = client.buffered().len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let piece = client.buffered().get(..take).unwrap_or_default();
        conn.stream.write_all(piece).await.map_err(failed)?;
        count(take);
        client.consume(take);
        remaining -= take as u64;
    }
    Ok(conn)
}

/// What the response depends on in the client's request and connection.
#[derive(Debug, Clone, Copy)]
struct ClientSide {
    /// The client's HTTP version: an HTTP/1.0 client is answered in HTTP/1.0, with no chunks.
    version: Version,
    /// Whether the client asked to keep the connection open.
    keep_alive: bool,
    /// Whether this is the connection's last request (`limits.max_requests_per_connection`).
    limit_reached: bool,
    /// Whether the client accepts trailer fields.
    trailers: bool,
}

impl ClientSide {
    /// The client side of the request `head`; `last` says the connection closes after it.
    fn of(head: &RequestHead<'_>, last: bool) -> ClientSide {
        ClientSide {
            version: head.version,
            keep_alive: head.keep_alive,
            limit_reached: last,
            trailers: head.accepts_trailers,
        }
    }

    /// Whether the connection closes after a refusal: it is written in HTTP/1.1 with its own
    /// framing, so an HTTP/1.0 client's connection closes after it.
    fn refusal_closes(self) -> bool {
        self.limit_reached || !self.keep_alive || self.version == Version::Http10
    }

    /// Whether the connection closes after a response body sent as `plan`.
    fn closes(self, plan: Plan) -> bool {
        self.limit_reached || !self.keep_alive || plan.closes()
    }

    /// The `Connection` value the response carries, as hyper's server writes it: `close` on an
    /// HTTP/1.1 connection that closes, `keep-alive` on an HTTP/1.0 one that stays open.
    fn connection(self, plan: Plan) -> Option<&'static [u8]> {
        match (self.version, self.closes(plan)) {
            (_, true) if self.limit_reached => Some(b"close"),
            (Version::Http11, true) => Some(b"close"),
            (Version::Http10, false) => Some(b"keep-alive"),
            _ => None,
        }
    }
}

/// A response head, rewritten for the client.
#[derive(Debug)]
struct Answer {
    /// Bytes of the upstream's head (the body follows).
    len: usize,
    status: StatusCode,
    /// The head for the client, in an output buffer the body follows in.
    head: Vec<u8>,
    plan: Plan,
    /// Whether the upstream connection can carry another request after this body.
    keep_alive: bool,
}

/// The respond phase for a response head at the start of `buf`: `None` until it is all there.
/// `target` is the route's target that answered, when the route has several: its response
/// rules run first.
#[allow(clippy::too_many_arguments)]
fn respond_head(
    buf: &[u8],
    fields: &mut Vec<Field>,
    answering: Answering,
    client_side: ClientSide,
    routed: &Routed<'_>,
    target: Option<&Endpoint>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Option<Answer>, ProxyError> {
    let max_head = routed.route.upstream.settings().max_response_head;
    let authority = target.map_or(&routed.route.config.upstream.authority, |t| &t.url.authority);
    let head = match response::parse_within(buf, answering, fields, max_head) {
        Ok(Parsed::Complete(head)) => head,
        Ok(Parsed::Partial) => return Ok(None),
        Err(err) => {
            let target = authority.clone();
            let source = Box::new(ExchangeFailure::Protocol(err));
            return Err(UpstreamError::Exchange { target, source }.into());
        }
    };
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        // We never ask for an upgrade on this path, so this upstream broke the protocol.
        let target = authority.clone();
        return Err(ProxyError::UnexpectedUpgrade { target });
    }
    let route = &routed.route.config;
    let global = &proxy.config.headers.response;
    let with_target;
    let rules: &[_] = match target {
        Some(target) => {
            with_target = [&target.response_headers, &route.response_headers, global];
            &with_target
        }
        None => &[&route.response_headers, global],
    };
    let id_value = ctx.id_header();
    let mut edits = Edits::new();
    exchange::response_edits(rules, proxy.via(), head.version.as_http(), &mut edits);
    // Clients of an API quote this id when something went wrong; an upstream that sets its
    // own keeps it (as the general path does after the respond phase).
    let id_name: &HeaderName = &proxy.config.request_id.header;
    let has_id = (head.fields.get(id_name.as_str()).is_some()
        && !edit::drops(&edits, id_name.as_str().as_bytes()))
        || edit::additions(&edits).any(|(name, _)| name == id_name);
    if !has_id {
        edits.push(Edit::Append(id_name, &id_value));
    }
    Ok(Some(rewritten(&head, &edits, client_side)))
}

/// The client's head for the upstream's response `head`: sluice's status line in the
/// client's version, the fields with `edits` applied, the framing fields of the body's plan,
/// `Date` when the upstream sent none, and `Connection` when the client's connection needs it.
fn rewritten(head: &ResponseHead<'_>, edits: &[Edit<'_>], client_side: ClientSide) -> Answer {
    let http11 = client_side.version == Version::Http11;
    let plan = Plan::for_receiver(head.framing, http11, client_side.trailers);
    let mut out = buffers::take();
    if http11 {
        write::status_line(&mut out, head.status, head.reason);
    } else {
        write::status_line_http10(&mut out, head.status, head.reason);
    }
    // A body-less response (HEAD, 204, 304) keeps the length it declares, as hyper does.
    let keep_length = plan == Plan::Empty;
    let written = write::fields(&mut out, &head.fields, edits, keep_length);
    match plan {
        Plan::Length(n) => {
            let mut digits = [0u8; 20];
            write::field(&mut out, b"content-length", decimal(n, &mut digits));
        }
        Plan::Chunks { .. } | Plan::Chunk => {
            write::field(&mut out, b"transfer-encoding", b"chunked");
        }
        Plan::Empty | Plan::Unchunk | Plan::UntilClose => {}
    }
    if !written.date {
        date::append_line(&mut out);
    }
    if let Some(connection) = client_side.connection(plan) {
        write::field(&mut out, b"connection", connection);
    }
    write::end(&mut out);
    Answer { len: head.len, status: head.status, head: out, plan, keep_alive: head.keep_alive }
}

/// Relays the response body after its head (already in `out`), as `plan` says, reading from
/// the upstream with the body idle timeout; counts what reaches the client.
async fn send_body(
    client: &mut ClientConn,
    conn: &mut H1Conn,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
    plan: Plan,
    settings: &crate::upstream::client::UpstreamSettings,
    ctx: &mut RequestContext,
) -> Result<(), Failure> {
    let mut relay = BodyRelay::new(plan, RESPONSE_LIMITS.max_bytes);
    let mut at = 0;
    let client_gone = Failure::ClientClosed;
    loop {
        let window = input.get(at..).unwrap_or_default();
        let step = relay
            .step(window)
            .map_err(|_| Failure::Proxy(crate::error::ErrorKind::HttpProtocolError))?;
        match step {
            Step::Copy(n) => {
                out.extend_from_slice(window.get(..n).unwrap_or_default());
                at += n;
            }
            Step::Skip(n) => at += n,
            Step::Emit(bytes) => out.extend_from_slice(bytes),
            Step::ChunkHeader(n) => {
                let mut hex = [0u8; 16];
                out.extend_from_slice(hex_of(n, &mut hex));
                out.extend_from_slice(b"\r\n");
            }
            Step::Done => break,
            Step::More => {
                input.drain(..at);
                at = 0;
                // What is ready goes out before waiting: a streamed body (SSE) must not wait
                // for the next piece.
                if !out.is_empty() {
                    client.write_all(out, &[]).await.map_err(|_| client_gone)?;
                    out.clear();
                    ctx.sent = relay.data_received();
                }
                let read = read_upstream(client, &mut conn.stream, input);
                match tokio::time::timeout(settings.body_idle, read).await {
                    Ok(None) => return Err(client_gone),
                    Ok(Some(Ok(0))) => {
                        let end = relay.finish().map_err(|_| {
                            Failure::Proxy(crate::error::ErrorKind::ConnectionTerminated)
                        })?;
                        out.extend_from_slice(end);
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_))) => {
                        flush_partial(client, out, ctx, &relay).await;
                        return Err(Failure::Proxy(crate::error::ErrorKind::ConnectionTerminated));
                    }
                    Err(_) => {
                        flush_partial(client, out, ctx, &relay).await;
                        return Err(Failure::Proxy(crate::error::ErrorKind::HttpResponseTimeout));
                    }
                }
            }
        }
    }
    input.drain(..at);
    client.write_all(out, &[]).await.map_err(|_| client_gone)?;
    ctx.sent = relay.data_received();
    Ok(())
}

/// Sends a response head and its whole body, already read; the body counts as sent once the
/// client has taken it.
async fn whole(
    client: &mut ClientConn,
    head: &[u8],
    body: &[u8],
    ctx: &mut RequestContext,
) -> Result<(), Failure> {
    client.write_all(head, body).await.map_err(|_| Failure::ClientClosed)?;
    ctx.sent = body.len() as u64;
    Ok(())
}

/// What was relayed so far still goes out before the connection closes on a failure; the
/// body bytes the client got are counted as sent.
async fn flush_partial(
    client: &mut ClientConn,
    out: &[u8],
    ctx: &mut RequestContext,
    relay: &BodyRelay,
) {
    if client.write_all(out, &[]).await.is_ok() {
        ctx.sent = relay.data_received();
    }
}

/// Reads what the upstream sends into `buf` while watching the client: `None` when the client
/// closes its connection first (hyper stops serving it then on the general path), so the
/// upstream connection is dropped rather than held for a client that is gone. Bytes the
/// client pipelines meanwhile stay buffered, and the client is not watched once there are
/// some.
async fn read_upstream(
    client: &mut ClientConn,
    upstream: &mut UpstreamTcp,
    buf: &mut Vec<u8>,
) -> Option<std::io::Result<usize>> {
    while !client.at_eof() && client.buffered().is_empty() {
        tokio::select! {
            read = upstream.read_buf(buf) => return Some(read),
            sent = client.read_more() => if !matches!(sent, Ok(1..)) { return None },
        }
    }
    Some(upstream.read_buf(buf).await)
}

/// `n` in decimal.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(digit) = buf.get_mut(at) {
            *digit = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// `n` in upper-case hexadecimal, as hyper writes chunk sizes.
fn hex_of(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(digit) = buf.get_mut(at) {
            *digit = b"0123456789ABCDEF".get(n & 0xf).copied().unwrap_or(b'0');
        }
        n >>= 4;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// Renders `err` as the general path does and sends it; the request's context finishes. A
/// request body the client is still sending closes the connection (it cannot be skipped
/// safely).
async fn refuse(
    client: &mut ClientConn,
    err: ProxyError,
    framing: Framing,
    mut ctx: RequestContext,
    proxy: &Proxy,
    last: bool,
) -> Served {
    ctx.failure = Some(Failure::Proxy(err.kind()));
    ctx.status = err.kind().status().as_u16();
    let id = ctx.routed().then(|| (&proxy.config.request_id.header, ctx.id_header()));
    let wanted_close = last || framing != Framing::Empty;
    let (bytes, close, body) = render(&err, id, wanted_close);
    let written = client.write_all(&bytes, &[]).await;
    if written.is_ok() {
        // The error's body reached the client: counted as the general path counts it.
        ctx.sent = body as u64;
    }
    let served = match written {
        Ok(()) if !close => Served::KeepAlive,
        _ => Served::Close,
    };
    ctx.finish();
    served
}

/// `err` as the general path renders it, written as HTTP/1.1 with what hyper adds
/// (`content-length`, `date`), `extra` (the request id of a routed request) and
/// `connection: close` when `close` or the error itself closes the connection. Returns the
/// bytes, whether the connection closes and the length of the body.
fn render(
    err: &ProxyError,
    extra: Option<(&HeaderName, HeaderValue)>,
    close: bool,
) -> (Vec<u8>, bool, usize) {
    let (status, mut headers, body) = error::render_parts(err);
    let close = close || headers.contains_key(http::header::CONNECTION);
    headers.remove(http::header::CONNECTION);
    if let Some((name, value)) = extra {
        headers.insert(name.clone(), value);
    }
    let mut out = Vec::with_capacity(256 + body.len());
    let reason = status.canonical_reason().unwrap_or("Error");
    write::status_line(&mut out, status, reason.as_bytes());
    for (name, value) in &headers {
        write::field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut digits = [0u8; 20];
    write::field(&mut out, b"content-length", decimal(body.len() as u64, &mut digits));
    date::append_line(&mut out);
    if close {
        write::field(&mut out, b"connection", b"close");
    }
    write::end(&mut out);
    out.extend_from_slice(body.as_bytes());
    (out, close, body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_upper_case_hex_and_lengths_decimal() {
        let mut buf = [0u8; 16];
        assert_eq!(hex_of(0, &mut buf), b"0");
        assert_eq!(hex_of(255, &mut buf), b"FF");
        assert_eq!(hex_of(0x1a2b, &mut buf), b"1A2B");
        assert_eq!(hex_of(usize::MAX, &mut buf), b"FFFFFFFFFFFFFFFF");
        let mut digits = [0u8; 20];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(1024, &mut digits), b"1024");
        assert_eq!(decimal(u64::MAX, &mut digits), b"18446744073709551615");
    }
}
