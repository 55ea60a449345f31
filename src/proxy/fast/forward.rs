//! The forward proxy on the HTTP/1 fast path: a plain `http://` absolute-form request
//! (`GET http://host:port/path`, what `curl -x` and `HTTP_PROXY` clients send) to a forward
//! listener, served with the same phases as `proxy::serve_forward` on the general path.
//!
//! Admission is [`admit`] itself (every policy check in its order: client ACL, framing, `Host`,
//! request line, rate, loop detection, the target, `Proxy-Authorization`, denied hosts); the
//! upstream head is the one `forward::prepare` and the pooled client produce: origin-form
//! target, hop-by-hop fields (the client's `Proxy-Authorization` among them) removed, `Host`
//! set to the target's authority and this proxy's `Via` entry added
//! ([`exchange::head_edits`]). The connection comes from the listener's keyed [`FastPool`]
//! (idle connections per `host:port`, within `limits.max_idle_upstream_per_host` and
//! `timeouts.upstream_idle`) or is dialled by the listener's forward connector, so the
//! destination guard judges every resolved address and `limits.max_upstream_connections`
//! counts these connections with the general path's. The response gets only the hop-by-hop
//! removal and `Via`, as `exchange::respond` gives a forwarded one (no header rules, no
//! request id).
//!
//! [`decide`] leaves to the general path what it serves differently: a destination a
//! `[[parent]]` rule sends through a parent, `https://` targets, listeners whose forward proxy
//! caches, bodies over `limits.max_request_body_bytes` (refused there with 413), and whatever
//! the reverse fast path leaves too (upgrades, CONNECT, `Expect`, chunked request bodies,
//! TRACE and OPTIONS).

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::Scheme;
use http::{Method, StatusCode};
use tokio::time::Instant;

use crate::downstream::Downstream;
use crate::downstream::h1::ClientConn;
use crate::downstream::hold::ConnectionHold;
use crate::error::{NotServed, ProxyError};
use crate::h1::fields::Field;
use crate::h1::request::RequestHead;
use crate::h1::response::{self, Answering};
use crate::h1::{Framing, Parsed, buffers, write};
use crate::headers::edit::Edits;
use crate::observe::{Failure, Mode};
use crate::proxy::context::RequestContext;
use crate::proxy::fast::{
    Answer, ClientSide, Dial, Served, Unfinished, exchange_failed, read_upstream, refuse,
    rewritten, send, send_body,
};
use crate::proxy::state::{ListenerContext, Proxy};
use crate::proxy::{Destination, RequestKind, admit, classify_head, exchange, forward};
use crate::upstream::client::UpstreamError;
use crate::upstream::h1::ExchangeFailure;
use crate::upstream::replay;
use crate::uri::target::Target;

/// Whether the fast path serves this request as the forward proxy. Pure: no phase has run.
pub fn decide(head: &RequestHead<'_>, proxy: &Proxy, listener: &ListenerContext) -> bool {
    let plain = !head.wants_upgrade
        && !head.expect
        && head.method != Method::CONNECT
        && head.method != Method::TRACE
        && head.method != Method::OPTIONS
        && matches!(head.framing, Framing::Empty | Framing::Length(_));
    if !plain || !listener.modes.forward || listener.cache {
        return false;
    }
    if head.uri.scheme() != Some(&Scheme::HTTP)
        || classify_head(head, false, listener.modes, &proxy.router) != RequestKind::Absolute
    {
        return false;
    }
    // A destination some parent takes is reached through it: the general path's egress.
    let Some(host) = head.uri.host() else { return false };
    if proxy.egress.parents_for(host).is_some() {
        return false;
    }
    match head.framing {
        Framing::Length(n) => n <= proxy.config.limits.max_request_body_bytes,
        _ => true,
    }
}

/// A request [`begin`] has taken through the phases up to its upstream head; the request head
/// it came from is no longer borrowed.
#[derive(Debug)]
pub struct Begun {
    ctx: RequestContext,
    prepared: Result<Prepared, ProxyError>,
    head_len: usize,
    framing: Framing,
    client_side: ClientSide,
    answering: Answering,
    /// The request may be sent again on a new connection when a reused one closed before
    /// answering (`upstream::replay`: an idempotent method without a body).
    replayable: bool,
}

/// What the send phase needs.
#[derive(Debug)]
struct Prepared {
    target: Target,
    /// The upstream head, in an output buffer.
    head: Vec<u8>,
}

/// The phases up to the upstream head (context, admit, prepare) for a request [`decide`]
/// took; `last` says the connection closes after it.
pub async fn begin(
    head: RequestHead<'_>,
    proxy: &Proxy,
    listener: &ListenerContext,
    downstream: &Downstream,
    hold: &Arc<ConnectionHold>,
    last: bool,
) -> Begun {
    let mut ctx = super::context(&head, Mode::Forward, proxy, listener, downstream, hold);
    ctx.series = Some(listener.forward_series.clone());
    let prepared = prepare(&head, &ctx, proxy, listener).await;
    Begun {
        ctx,
        prepared,
        head_len: head.len,
        framing: head.framing,
        client_side: ClientSide::of(&head, last),
        answering: Answering { head: head.method == Method::HEAD },
        replayable: replay::idempotent(&head.method)
            && matches!(head.framing, Framing::Empty | Framing::Length(0)),
    }
}

/// The send, respond and log phases of a request [`begin`] prepared, over the client's
/// connection; `fields` is the connection's reusable field list (the response head's now).
pub async fn finish(
    client: &mut ClientConn,
    fields: &mut Vec<Field>,
    begun: Begun,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Served {
    let Begun { mut ctx, prepared, head_len, framing, client_side, .. } = begun;
    client.consume(head_len);
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            return refuse(client, err, framing, ctx, proxy, client_side.refusal_closes()).await;
        }
    };
    let request = Request {
        prepared: &prepared,
        framing,
        answering: begun.answering,
        client_side,
        replayable: begun.replayable,
    };
    let exchanged = relay(client, fields, &request, &mut ctx, proxy, listener).await;
    let Prepared { head, .. } = prepared;
    buffers::give(head);
    match exchanged {
        Ok(served) => {
            ctx.finish();
            served
        }
        Err(Unfinished::BeforeResponse(err)) => {
            refuse(client, err, Framing::Empty, ctx, proxy, true).await
        }
        Err(Unfinished::Midway(failure)) => {
            ctx.failure = Some(failure);
            ctx.finish();
            Served::Close
        }
    }
}

/// Admit and prepare: the target the listener's policy lets through, and the head its origin
/// receives.
async fn prepare(
    head: &RequestHead<'_>,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Prepared, ProxyError> {
    let Destination::Forward(target, uri) =
        admit(head, RequestKind::Absolute, ctx, proxy, listener).await?
    else {
        // `decide` let through only absolute-form requests to a forward listener.
        return Err(ProxyError::NotServed(NotServed::ForwardDisabled));
    };
    // RFC 9112 §3.2.2: `Host` is the target's authority.
    let host = forward::host_of(&target)?;
    let mut edits = Edits::new();
    exchange::head_edits(&host, proxy.via(), head.version.as_http(), &mut edits);
    let mut out = buffers::take();
    // Origin-form, as hyper writes the URI of a request that goes straight to its origin:
    // the path (`/` when empty), then the query.
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path().as_bytes());
    if let Some(query) = uri.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let keep_length = matches!(head.framing, Framing::Length(_));
    write::fields(&mut out, &head.fields, &edits, keep_length);
    write::end(&mut out);
    Ok(Prepared { target, head: out })
}

/// One prepared request, as the send and respond phases read it.
#[derive(Debug, Clone, Copy)]
struct Request<'a> {
    prepared: &'a Prepared,
    framing: Framing,
    answering: Answering,
    client_side: ClientSide,
    replayable: bool,
}

/// The idle stack a target's connections wait in: `host:port`.
fn pool_key(target: &Target) -> Cow<'_, str> {
    let authority = target.authority.as_str();
    if authority.len() > target.host().len() {
        // The authority names its port (userinfo is gone from a target).
        Cow::Borrowed(authority)
    } else {
        Cow::Owned(format!("{authority}:{}", target.port))
    }
}

/// The send and respond phases: the upstream head and the request body out over a connection
/// from the listener's pool, the response head and body back.
async fn relay(
    client: &mut ClientConn,
    fields: &mut Vec<Field>,
    request: &Request<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Served, Unfinished> {
    let upstream = &listener.forward;
    let pool = &listener.forward_pool;
    let connector = upstream.connector();
    let settings = *upstream.settings();
    let target = &request.prepared.target;
    let authority = &target.authority;
    let key = pool_key(target);
    let dial = Dial { pool, connector, key: &key, authority };
    let head = &request.prepared.head;
    let mut response = buffers::take();
    let result = async {
        let mut conn = send(client, &dial, false, head, request.framing, ctx).await?;
        let after = settings.response_header;
        let deadline = Instant::now() + after;
        let mut retried = false;
        let answer = loop {
            let max_head = settings.max_response_head;
            let answered = respond_head(&response, fields, request, max_head, proxy);
            if let Some(answer) = answered.map_err(Unfinished::BeforeResponse)? {
                break answer;
            }
            let read = read_upstream(client, &mut conn.stream, &mut response);
            match tokio::time::timeout_at(deadline, read).await {
                // The client left: its request is abandoned, and the connection (which counts
                // under the per-address cap) with it.
                Ok(None) => return Err(Unfinished::Midway(Failure::ClientClosed)),
                // A pooled connection the upstream closed as the request went out: sent once
                // more, on a new connection, as the general client replays it.
                Ok(Some(Ok(0) | Err(_)))
                    if conn.reused && !retried && response.is_empty() && request.replayable =>
                {
                    retried = true;
                    conn = send(client, &dial, true, head, request.framing, ctx).await?;
                }
                Ok(Some(Ok(0))) => return Err(exchange_failed(authority, ExchangeFailure::Closed)),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(err))) => {
                    return Err(exchange_failed(authority, ExchangeFailure::Io(err)));
                }
                Err(_) => {
                    let target = authority.clone();
                    let err = UpstreamError::ResponseTimeout { target, after };
                    return Err(Unfinished::BeforeResponse(err.into()));
                }
            }
        };
        ctx.answered_by(conn.peer);
        ctx.status = answer.status.as_u16();
        let Answer { len, head: mut out, plan, keep_alive, .. } = answer;
        response.drain(..len.min(response.len()));
        let body =
            send_body(client, &mut conn, &mut response, &mut out, plan, &settings, ctx).await;
        buffers::give(out);
        match body {
            Ok(()) if keep_alive && response.is_empty() => pool.release(&key, conn),
            Ok(()) => {}
            Err(failure) => return Err(Unfinished::Midway(failure)),
        }
        let closes = request.client_side.closes(plan);
        if closes { Ok(Served::Close) } else { Ok(Served::KeepAlive) }
    }
    .await;
    response.clear();
    buffers::give(response);
    result
}

/// The respond phase for a response head at the start of `buf`: `None` until it is all there.
/// A forwarded response gets hop-by-hop removal and this proxy's `Via` entry only.
fn respond_head(
    buf: &[u8],
    fields: &mut Vec<Field>,
    request: &Request<'_>,
    max_head: usize,
    proxy: &Proxy,
) -> Result<Option<Answer>, ProxyError> {
    let head = match response::parse_within(buf, request.answering, fields, max_head) {
        Ok(Parsed::Complete(head)) => head,
        Ok(Parsed::Partial) => return Ok(None),
        Err(err) => {
            let target = request.prepared.target.authority.clone();
            let source = Box::new(ExchangeFailure::Protocol(err));
            return Err(UpstreamError::Exchange { target, source }.into());
        }
    };
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        // No upgrade is asked for on this path, so this upstream broke the protocol.
        let target = request.prepared.target.authority.clone();
        return Err(ProxyError::UnexpectedUpgrade { target });
    }
    let mut edits = Edits::new();
    exchange::response_edits(&[], proxy.via(), head.version.as_http(), &mut edits);
    Ok(Some(rewritten(&head, &edits, request.client_side)))
}
