//! The log phase: finishing a request's context when its traffic ends, through a response
//! body that counts what it sends ([`ObservedBody`]), or through the hand-over to a tunnel or
//! upgrade relay ([`SessionLog`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Version;
use http_body::{Body as _, Frame, SizeHint};

use crate::body::{Body, BodyIdleTimeout, BoxError, ClientSendTimeout};
use crate::downstream::send::Pacing;
use crate::error::ErrorKind;
use crate::observe::Failure;
use crate::proxy::context::RequestContext;
use crate::relay::Relayed;

/// What the phases hand to the log phase: the response for the client and, when the request
/// opened a tunnel or an upgrade, the session whose relay finishes the request.
#[derive(Debug)]
pub struct Reply {
    /// The response.
    pub response: http::Response<Body>,
    /// The tunnel's or upgrade's meeting point, when there is one.
    pub session: Option<SessionLog>,
}

impl Reply {
    /// A response whose body ends the request.
    pub fn plain(response: http::Response<Body>) -> Reply {
        Reply { response, session: None }
    }
}

/// The body of every response sluice sends: the proxied or generated [`Body`], counting the
/// bytes it passes, finishing its request's context at the end of the stream, on an upstream
/// failure, or when the client goes away (the body is dropped unfinished).
///
/// The context is boxed: hyper keeps the response body inline in its connection state, so
/// the context inline would make every connection that large for its whole life.
///
/// On HTTP/1 it also paces itself to the client ([`Pacing`]): it takes a frame from `inner`
/// only while little of what it handed hyper is still unsent, so a slow reader holds back the
/// upstream instead of filling sluice's buffers.
#[derive(Debug)]
pub struct ObservedBody {
    inner: Body,
    ctx: Option<Box<RequestContext>>,
    pacing: Option<Pacing>,
}

impl ObservedBody {
    /// Wraps `inner`; `ctx` is finished when the body ends.
    pub fn new(inner: Body, ctx: Box<RequestContext>) -> ObservedBody {
        let pacing = match ctx.version {
            // HTTP/2 streams have flow control of their own.
            Version::HTTP_2 | Version::HTTP_3 => None,
            _ => ctx.downstream.send.clone().map(Pacing::new),
        };
        ObservedBody { inner, ctx: Some(ctx), pacing }
    }

    /// A body whose context is finished elsewhere (by a session's relay).
    pub fn unobserved(inner: Body) -> ObservedBody {
        ObservedBody { inner, ctx: None, pacing: None }
    }

    fn finish(&mut self, failure: Option<Failure>) {
        if let Some(mut ctx) = self.ctx.take() {
            if ctx.failure.is_none() {
                ctx.failure = failure;
            }
            ctx.finish();
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(pacing) = this.pacing.as_mut() {
            ready!(pacing.poll_ready(cx));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(ctx) = this.ctx.as_mut() {
                        ctx.sent += data.len() as u64;
                    }
                    if let Some(pacing) = this.pacing.as_mut() {
                        pacing.handed(data.len());
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(Some(Err(err))) => {
                let failure = if err.downcast_ref::<BodyIdleTimeout>().is_some() {
                    Failure::Proxy(ErrorKind::HttpResponseTimeout)
                } else if err.downcast_ref::<ClientSendTimeout>().is_some() {
                    // The client's side stalled, not the upstream's.
                    Failure::ClientClosed
                } else {
                    Failure::Proxy(ErrorKind::ConnectionTerminated)
                };
                this.finish(Some(failure));
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Bodies hyper never polls (HEAD, 204, 304, empty) end here, complete; anything else
        // dropped before its end means the client went away.
        let failure = (!self.inner.is_end_stream()).then_some(Failure::ClientClosed);
        self.finish(failure);
    }
}

/// The meeting point of a request's context (from the respond phase, once the response is
/// ready) and its relay's outcome (from the relay task, once the session closes); whichever
/// arrives second finishes the context.
#[derive(Debug, Clone)]
pub struct SessionLog(Arc<Mutex<Meeting>>);

#[derive(Debug)]
enum Meeting {
    Waiting,
    Started(Box<RequestContext>),
    Ended(SessionEnd),
    Done,
}

/// How a session ended.
#[derive(Debug, Clone, Copy)]
enum SessionEnd {
    Relayed(Relayed),
    /// The connection was never handed over (the client left before the switch).
    NotUpgraded,
}

impl Default for SessionLog {
    fn default() -> Self {
        SessionLog::new()
    }
}

impl SessionLog {
    /// A meeting point with neither side arrived.
    pub fn new() -> SessionLog {
        SessionLog(Arc::new(Mutex::new(Meeting::Waiting)))
    }

    /// Hands over the context of the request that opened the session. The context may wait
    /// for the session's whole life, so it first lets go of the connection's read buffer.
    pub fn start(&self, mut ctx: Box<RequestContext>) {
        let mut meeting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *meeting, Meeting::Done) {
            Meeting::Ended(end) => finish(ctx, end),
            Meeting::Waiting => {
                ctx.detach();
                *meeting = Meeting::Started(ctx);
            }
            Meeting::Started(_) | Meeting::Done => {}
        }
    }

    /// Reports the relay's outcome.
    pub fn relayed(&self, relayed: Relayed) {
        self.end(SessionEnd::Relayed(relayed));
    }

    /// Reports that the connection was never handed over.
    pub fn not_upgraded(&self) {
        self.end(SessionEnd::NotUpgraded);
    }

    fn end(&self, end: SessionEnd) {
        let mut meeting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *meeting, Meeting::Done) {
            Meeting::Started(ctx) => finish(ctx, end),
            Meeting::Waiting => *meeting = Meeting::Ended(end),
            Meeting::Ended(_) | Meeting::Done => {}
        }
    }
}

fn finish(mut ctx: Box<RequestContext>, end: SessionEnd) {
    match end {
        SessionEnd::Relayed(relayed) => {
            ctx.relayed_in = relayed.to_upstream;
            ctx.sent = relayed.to_downstream;
            ctx.close = Some(relayed.end.as_str());
        }
        SessionEnd::NotUpgraded => ctx.failure = Some(Failure::ClientClosed),
    }
    ctx.finish();
}
