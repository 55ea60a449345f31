//! The HTTP/1 fast path's send phase for a route with several targets: the same attempts as
//! the general path's [`failover::send`] (the pick, the verdicts, retries within the policy
//! and the budget, the access-log fields and metrics), over each target's own [`FastPool`].
//!
//! Every attempt's upstream head is written from the request head still parsed in the
//! client's buffer, with the target's `Host` and request rules added to the route's edits, and
//! the request body is sent from that buffer too: [`super::decide`] takes a request with a
//! body only when it is there whole and within the retry buffer, so any attempt can send it
//! again byte for byte. A retry is decided on the response head alone, before anything
//! reaches the client; the head of the attempt that stands is then rewritten for the client
//! (the target's response rules first) and its body relayed as on a route with one upstream,
//! the target's in-flight slot kept in the context until the body has ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::header::HOST;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{ClientSide, Exchanged, Taken, respond_head};
use crate::downstream::h1::write_both;
use crate::error::{NotServed, ProxyError};
use crate::h1::fields;
use crate::h1::request::RequestHead;
use crate::h1::response::{self, Answering};
use crate::h1::timer::Timer;
use crate::h1::{Framing, Parsed, buffers, write};
use crate::headers::edit::{Edit, Edits};
use crate::headers::rules;
use crate::observe::metrics::Metrics;
use crate::proxy::context::RequestContext;
use crate::proxy::failover::{self, Recorded, Step};
use crate::proxy::head::Head;
use crate::proxy::reverse::{self, Rewrite, Routed};
use crate::proxy::router::Route;
use crate::proxy::state::{ListenerContext, Proxy};
use crate::proxy::{Destination, Picked, RequestKind, admit, pick_upstream};
use crate::upstream::client::UpstreamError;
use crate::upstream::group::outlier;
use crate::upstream::group::retry::AttemptFailure;
use crate::upstream::group::{Endpoint, Group, InFlight, Moment, Rng, Tried, affinity};
use crate::upstream::h1::{ExchangeFailure, FastPool, H1Conn};
use crate::upstream::replay;

/// What the phases up to the send phase produced.
#[derive(Debug)]
pub(super) enum Prepared<'p> {
    /// A route with one upstream: the request routed, and its upstream head.
    One((Routed<'p>, Vec<u8>)),
    /// A route with several targets: the send phase is over.
    Group(Sent),
}

/// The attempt that stands, with its response head, for the respond phase.
#[derive(Debug)]
pub(super) struct Sent {
    /// The target that answered.
    pub endpoint: Arc<Endpoint>,
    /// Its answer.
    pub exchanged: Exchanged,
    /// Bytes of request body after the head in the client's buffer, sent with every attempt.
    pub body_len: usize,
}

/// Whether the fast path can take a request to `route` whose head of `head_len` bytes
/// announces a body of `length` bytes, with `buffered` bytes in the client's buffer: on a
/// route with several targets, only a body already there whole and within the route's retry
/// buffer, so every attempt can send it as the first did.
pub(super) fn holds_body(route: &Route, head_len: usize, length: u64, buffered: usize) -> bool {
    let Some(group) = &route.group else { return true };
    let Ok(whole) = usize::try_from(length) else { return false };
    length <= group.settings().retry.buffer_bytes && head_len.saturating_add(whole) <= buffered
}

/// What the send phase of a route with several targets has of the client's connection.
pub(super) struct Client<'c> {
    /// The client's buffer, the request head at its start.
    pub buffered: &'c [u8],
    /// The connection's timer, for the waits on each target's answer.
    pub timer: &'c mut Timer,
    /// Whether the connection closes after this request.
    pub last: bool,
}

/// The phases from admission to the end of the send phase for a request to a route with
/// several targets: admit, route, pick upstream, then one attempt after another until one
/// answers in a way that is not retried or no retry is allowed.
pub(super) async fn send<'p>(
    head: &RequestHead<'_>,
    taken: Taken<'p>,
    client: Client<'_>,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
    listener: &ListenerContext,
) -> Result<Prepared<'p>, ProxyError> {
    match admit(head, RequestKind::Origin, ctx, proxy, listener).await? {
        Destination::Route => {}
        // `decide` let through only origin-form requests that are not for the PAC file.
        _ => return Err(ProxyError::NotServed(NotServed::NoRoute)),
    }
    let routed = reverse::enter(taken.route, taken.client_host, head, ctx)?;
    let Picked::Group(group) = pick_upstream(&routed) else {
        return Err(ProxyError::NotServed(NotServed::NoRoute));
    };
    let body_len = match head.framing {
        Framing::Length(length) => usize::try_from(length).unwrap_or(usize::MAX),
        _ => 0,
    };
    let Client { buffered, timer, last } = client;
    let body = buffered.get(head.len..head.len.saturating_add(body_len)).unwrap_or_default();
    if let Some(meter) = &ctx.received {
        meter.fetch_add(body.len() as u64, Ordering::Relaxed);
    }
    let rewrite = Rewrite::new(&routed, ctx, proxy);
    let exchange = Exchange {
        body,
        // As the general path's pools resend a request that lost the keep-alive race.
        resendable: head.framing == Framing::Empty && replay::idempotent(&head.method),
        answering: Answering { head: head.method == Method::HEAD },
        client_side: ClientSide::of(head, last),
    };
    let mut upstream_head = buffers::take();
    let attempted =
        attempts(group, head, &routed, &rewrite, &exchange, &mut upstream_head, timer, ctx, proxy)
            .await;
    buffers::give(upstream_head);
    let (endpoint, exchanged) = attempted?;
    Ok(Prepared::Group(Sent { endpoint, exchanged, body_len }))
}

/// What every attempt sends and how its answer is read.
struct Exchange<'b> {
    /// The request body, whole.
    body: &'b [u8],
    /// Whether a request that met a pooled connection closing under it goes again on a new one.
    resendable: bool,
    answering: Answering,
    client_side: ClientSide,
}

/// The attempts over `group`'s targets, as [`failover::send`] makes them: records in `ctx`
/// which target answered, after how many attempts, and keeps its in-flight slot there.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    group: &Group,
    head: &RequestHead<'_>,
    routed: &Routed<'_>,
    rewrite: &Rewrite,
    exchange: &Exchange<'_>,
    upstream_head: &mut Vec<u8>,
    timer: &mut Timer,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<(Arc<Endpoint>, Exchanged), ProxyError> {
    let metrics = &proxy.observer.metrics;
    let set = group.targets();
    let mut now = Moment::now();
    let key =
        group.settings().hash_on.as_ref().and_then(|on| {
            affinity::key_by(on, |name| head.values(name), ctx.downstream.addr.ip())
        });
    let mut rng = Rng::per_request();
    let mut tried = Tried::default();
    let (mut index, mut slot) = failover::first_target(group, &set, key, now, &mut rng, metrics)?;
    loop {
        let member = failover::begin_attempt(&set, index, &mut tried, ctx)?;
        let endpoint = &member.spec.endpoint;
        upstream_head.clear();
        write_head(upstream_head, head, routed, rewrite, endpoint, ctx, proxy)?;
        let sent_at = now;
        let result = exchange.attempt(endpoint, upstream_head, routed, timer, ctx, proxy).await;
        now = Moment::now();
        let at = Recorded { set: &set, index, elapsed: now.since(sent_at), now };
        let from = Step { set: &set, key, tried: &tried, previous: endpoint, now };
        let method = &ctx.method;
        let outcome = match result {
            Ok(answered) => {
                let status = answered.answer.status;
                let max_head = endpoint.upstream.settings().max_response_head;
                let wait = retry_after(&answered, exchange.answering, max_head);
                let again = failover::answered_with(group, metrics, &at, status, wait, method);
                if let Some(next) =
                    again.then(|| next(group, &from, ctx, metrics, &mut rng)).flatten()
                {
                    // Dropped unread: its status line never reached the client.
                    answered.discard();
                    (index, slot) = next;
                    failover::retried(&set, index, metrics);
                    continue;
                }
                ctx.upstream_target = Some(member.spec.name.clone());
                ctx.upstream_slot = Some(slot);
                ctx.answered_by(answered.conn.peer);
                return Ok((endpoint.clone(), answered));
            }
            Err(err @ ProxyError::UnexpectedUpgrade { .. }) => {
                // A `101` answers, as far as the target's health goes; the respond phase then
                // refuses it, as on the general path.
                let switching = StatusCode::SWITCHING_PROTOCOLS;
                failover::answered_with(group, metrics, &at, switching, None, method);
                ctx.upstream_target = Some(member.spec.name.clone());
                ctx.upstream_slot = Some(slot);
                return Err(err);
            }
            Err(err) => err,
        };
        let failure = match &outcome {
            ProxyError::Upstream(error) => failover::failure_of(error),
            _ => AttemptFailure::NoResponse,
        };
        let elsewhere = failover::failed_with(group, metrics, &at, &outcome, failure, method);
        drop(slot);
        match elsewhere.then(|| next(group, &from, ctx, metrics, &mut rng)).flatten() {
            Some(next) => {
                (index, slot) = next;
                failover::retried(&set, index, metrics);
            }
            None => {
                ctx.upstream_target = Some(member.spec.name.clone());
                return Err(outcome);
            }
        }
    }
}

/// The target and slot of another attempt, when the attempts left, the targets not yet tried
/// and the retry budget allow one (the body is in the buffer: it is always whole).
fn next(
    group: &Group,
    from: &Step<'_>,
    ctx: &RequestContext,
    metrics: &Metrics,
    rng: &mut Rng,
) -> Option<(usize, InFlight)> {
    let (index, slot) = failover::next_target(group, from, ctx, rng)?;
    failover::spend_retry(group, from.now, ctx, metrics).then_some((index, slot))
}

/// Writes the upstream head of one attempt on `endpoint`: the request line with the target's
/// path, the route's edits, then the target's `Host` (unless the route keeps the client's) and
/// its own request rules, as the general path's attempt does to its copy of the head.
fn write_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    routed: &Routed<'_>,
    rewrite: &Rewrite,
    endpoint: &Endpoint,
    ctx: &RequestContext,
    proxy: &Proxy,
) -> Result<(), ProxyError> {
    let route = routed.route;
    let mut edits = Edits::new();
    rewrite.edits(routed, ctx, proxy, head.version.as_http(), &mut edits);
    if !route.config.preserve_host {
        edits.push(Edit::Set(&HOST_NAME, &endpoint.host));
    }
    rules::push_edits(&endpoint.request_headers, &mut edits);
    let elsewhere;
    let uri = if endpoint.route_url {
        &routed.uri
    } else {
        elsewhere = endpoint.uri(&route.config, &ctx.target, &routed.uri)?;
        &elsewhere
    };
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    write::request_line(out, head.method.as_str().as_bytes(), target.as_bytes());
    let keep_length = matches!(head.framing, Framing::Length(_));
    let owned = &route.owned_names;
    let written =
        write::fields_without(out, &head.fields, &edits, keep_length, |name| owned.drops(name));
    if !written.host {
        // A rule removed `Host`: the target's authority, as the general client sends.
        write::field(out, HOST_NAME.as_str().as_bytes(), endpoint.host.as_bytes());
    }
    write::end(out);
    Ok(())
}

static HOST_NAME: HeaderName = HOST;

impl Exchange<'_> {
    /// One attempt on `endpoint`: a connection from its pool, `upstream_head` and the body
    /// out, the response head back (rewritten for the client, which has seen nothing yet).
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        upstream_head: &[u8],
        routed: &Routed<'_>,
        timer: &mut Timer,
        ctx: &mut RequestContext,
        proxy: &Proxy,
    ) -> Result<Exchanged, ProxyError> {
        let authority = &endpoint.url.authority;
        let Some(pool) = endpoint.fast.as_ref() else {
            return Err(ProxyError::NotServed(NotServed::NoRoute));
        };
        let mut conn = self.open(endpoint, pool, false, upstream_head).await?;
        let after = endpoint.upstream.settings().response_header;
        let deadline = Instant::now() + after;
        let mut response = buffers::take();
        let mut resent = false;
        let result = loop {
            let target = Some(endpoint);
            let (answering, client_side) = (self.answering, self.client_side);
            let answered = fields::with_spare(|fields| {
                respond_head(&response, fields, answering, client_side, routed, target, ctx, proxy)
            });
            match answered {
                Ok(Some(answer)) => break Ok(answer),
                Ok(None) => {}
                Err(err) => break Err(err),
            }
            let read = timer.within_at(deadline, conn.stream.read_buf(&mut response));
            match read.await.ok_or(()) {
                // A pooled connection the upstream closed as the request went out: it goes
                // once more, on a new connection (as the general path's pools resend it).
                Ok(Ok(0) | Err(_))
                    if conn.reused && !resent && response.is_empty() && self.resendable =>
                {
                    resent = true;
                    match self.open(endpoint, pool, true, upstream_head).await {
                        Ok(fresh) => conn = fresh,
                        Err(err) => break Err(err),
                    }
                }
                Ok(Ok(0)) => break Err(failed(authority, ExchangeFailure::Closed)),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => break Err(failed(authority, ExchangeFailure::Io(err))),
                Err(_) => {
                    let target = authority.clone();
                    break Err(UpstreamError::ResponseTimeout { target, after }.into());
                }
            }
        };
        match result {
            Ok(answer) => Ok(Exchanged { conn, response, answer }),
            Err(err) => {
                response.clear();
                buffers::give(response);
                Err(err)
            }
        }
    }

    /// A connection to `endpoint` from `pool` (a new one when `fresh`) with `upstream_head`
    /// and the body written on it.
    async fn open(
        &self,
        endpoint: &Endpoint,
        pool: &FastPool,
        fresh: bool,
        upstream_head: &[u8],
    ) -> Result<H1Conn, ProxyError> {
        let authority = &endpoint.url.authority;
        let connector = endpoint.upstream.connector();
        let connected = pool.connection(connector, "", authority, fresh).await;
        let mut conn = connected
            .map_err(|source| UpstreamError::Connect { target: authority.clone(), source })?;
        let written = if self.body.is_empty() {
            conn.stream.write_all(upstream_head).await
        } else {
            write_both(&mut conn.stream, upstream_head, self.body).await
        };
        written.map_err(|err| failed(authority, ExchangeFailure::Io(err)))?;
        Ok(conn)
    }
}

/// An exchange failure before the response head, as the general client reports it.
fn failed(target: &http::uri::Authority, failure: ExchangeFailure) -> ProxyError {
    UpstreamError::Exchange { target: target.clone(), source: Box::new(failure) }.into()
}

/// The wait a `429` or `503` asks for with `Retry-After` (the only answers whose wait counts,
/// see `outlier::Verdict::of_response`); its head is read again only for those.
fn retry_after(answered: &Exchanged, answering: Answering, max_head: usize) -> Option<Duration> {
    let status = answered.answer.status;
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let head = answered.response.get(..answered.answer.len)?;
    let value = fields::with_spare(|fields| {
        let Ok(Parsed::Complete(head)) = response::parse_within(head, answering, fields, max_head)
        else {
            return None;
        };
        HeaderValue::from_bytes(head.fields.get("retry-after")?).ok()
    })?;
    outlier::retry_after(&value, SystemTime::now())
}
