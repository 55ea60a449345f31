//! The one body type on the proxy path.
//!
//! An enum rather than a boxed trait object: forwarding a body costs no allocation and no
//! dynamic dispatch, and every variant is `Unpin`, as hyper's pooled client requires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

pub mod replay;

/// Boxed error carried by a body stream; only allocated when a stream actually fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as sluice forwards or generates it.
#[derive(Debug)]
pub enum Body {
    /// Streamed from a peer (client or upstream), frame by frame.
    Stream(Incoming),
    /// An upstream response body that fails if the upstream goes quiet for too long.
    Upstream(IdleBody),
    /// An upstream response body for an HTTP/2 client, read one frame ahead by a task that
    /// gives up on a client that stops taking frames.
    Fed(FedBody),
    /// A client's request body that fails once it exceeds the size limit.
    Limited(LimitedBody),
    /// A short message sluice wrote itself, such as an error explanation.
    Message(Full<Bytes>),
    /// A response served from the cache, read from its stored body (which may still be
    /// arriving).
    Cached(crate::cache::body::BodyReader),
    /// An upstream response body passed to the client while it is stored in the cache.
    Filling(Box<crate::cache::fill::Tee<Body>>),
    /// No body at all.
    Empty,
    /// A request body kept for a retry on another upstream, while it fits its buffer.
    Replay(Box<replay::ReplayBody>),
    /// An AI stream whose first event arrived before its response head was passed on: the
    /// frames read so far, then the rest.
    Gated(Box<crate::gateway::gate::Gated<Body>>),
    /// An AI response whose usage is read as it passes.
    Tapped(Box<crate::gateway::tap::UsageTap<Body>>),
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body::Empty
    }

    /// Limits a client's request body to `limit` bytes: refused at once when the declared
    /// Content-Length is larger, cut off while streaming otherwise.
    /// The bytes that pass are added to `meter`, when given, for the access log.
    pub fn limit_request(
        request: http::Request<Incoming>,
        limit: u64,
        meter: Option<Arc<AtomicU64>>,
    ) -> Result<http::Request<Body>, BodyTooLarge> {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(BodyTooLarge(limit));
        }
        Ok(request.map(|body| Body::Limited(LimitedBody::new(body, limit, meter))))
    }

    /// A complete body from bytes sluice generated.
    pub fn message(bytes: impl Into<Bytes>) -> Body {
        Body::Message(Full::new(bytes.into()))
    }
}

/// The upstream stopped sending body data for longer than the body idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no body data for {}", humantime::format_duration(*.0))]
pub struct BodyIdleTimeout(pub Duration);

/// A streamed body with an idle timeout between frames.
///
/// The timer is only created the first time the stream has to wait, and it is not reset on
/// every frame: when it fires early it is pushed to `last frame + idle`. A response that arrives
/// in one read therefore costs no timer at all, and a fast stream costs one clock read per frame.
#[derive(Debug)]
pub struct IdleBody {
    inner: Incoming,
    idle: Duration,
    last_frame: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    /// Wraps `inner`, failing it if no frame arrives for `idle`.
    pub fn new(inner: Incoming, idle: Duration) -> IdleBody {
        IdleBody { inner, idle, last_frame: Instant::now(), timer: None }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.last_frame = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let idle = self.idle;
                let deadline = self.last_frame + idle;
                let timer =
                    self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= deadline {
                        return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(idle)))));
                    }
                    // The timer was set for an older frame; move it to this one's deadline.
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// The client took no frame of the response for the send timeout (an HTTP/2 stream whose
/// flow-control window stayed closed); the upstream body was dropped.
#[derive(Debug, thiserror::Error)]
#[error("the client accepted no data for {}", humantime::format_duration(*.0))]
pub struct ClientSendTimeout(pub Duration);

/// A frame of a body, or its failure.
type FrameResult = Result<Frame<Bytes>, BoxError>;

/// An upstream response body read by a task of its own, one frame ahead of an HTTP/2 client.
///
/// hyper polls an HTTP/2 response body only while the client's flow-control window has room,
/// so a client that never opens its window would keep the body, and the upstream connection
/// under it, forever. The task waits at most the send timeout for the client to take each
/// frame; then it drops the upstream body (closing that connection) and the stream fails when
/// hyper next polls it. The upstream body keeps its own idle timeout in the task.
#[derive(Debug)]
pub struct FedBody {
    frames: tokio::sync::mpsc::Receiver<FrameResult>,
    stalled: Arc<AtomicBool>,
    client_send: Duration,
    hint: SizeHint,
    ended: bool,
}

impl FedBody {
    /// Starts the task reading `upstream`; `on_stall` runs once if the client stops taking
    /// frames for `client_send`.
    pub fn spawn(
        upstream: IdleBody,
        client_send: Duration,
        on_stall: impl FnOnce() + Send + 'static,
    ) -> FedBody {
        let hint = upstream.inner.size_hint();
        let ended = upstream.inner.is_end_stream();
        let (sender, frames) = tokio::sync::mpsc::channel(1);
        let stalled = Arc::new(AtomicBool::new(false));
        if !ended {
            tokio::spawn(feed(upstream, sender, client_send, stalled.clone(), on_stall));
        }
        FedBody { frames, stalled, client_send, hint, ended }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
            Poll::Ready(None) => {
                self.ended = true;
                if self.stalled.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(Box::new(ClientSendTimeout(self.client_send)))))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The task behind a [`FedBody`]: hands over one frame at a time, each within `client_send`
/// of the previous one being taken; stops when the body ends, when the client's stream goes
/// away, or when the client takes nothing in time.
async fn feed(
    mut upstream: IdleBody,
    frames: tokio::sync::mpsc::Sender<FrameResult>,
    client_send: Duration,
    stalled: Arc<AtomicBool>,
    on_stall: impl FnOnce() + Send + 'static,
) {
    loop {
        let slot = match tokio::time::timeout(client_send, frames.reserve()).await {
            Ok(Ok(slot)) => slot,
            // The client's stream is gone.
            Ok(Err(_)) => return,
            Err(_) => {
                drop(upstream);
                stalled.store(true, Ordering::Release);
                on_stall();
                return;
            }
        };
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| upstream.poll_frame(cx)) => frame,
            () = frames.closed() => return,
        };
        match frame {
            Some(Ok(frame)) => slot.send(Ok(frame)),
            Some(Err(err)) => return slot.send(Err(err)),
            None => return,
        }
    }
}

/// The client's request body exceeded the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A streamed request body that fails as soon as more than `limit` bytes have passed, so an
/// oversized upload is cut off while streaming instead of being buffered to be measured.
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    meter: Option<Arc<AtomicU64>>,
}

impl LimitedBody {
    /// Wraps `inner`, allowing at most `limit` bytes and counting them into `meter`.
    pub fn new(inner: Incoming, limit: u64, meter: Option<Arc<AtomicU64>>) -> LimitedBody {
        LimitedBody { inner, remaining: limit, limit, meter }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                match self.remaining.checked_sub(len) {
                    Some(remaining) => {
                        self.remaining = remaining;
                        if let Some(meter) = &self.meter {
                            meter.fetch_add(len, Ordering::Relaxed);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    None => Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.limit))))),
                }
            }
            other => other.map(|frame| frame.map(|r| r.map_err(Into::into))),
        }
    }
}

impl From<Incoming> for Body {
    fn from(incoming: Incoming) -> Body {
        Body::Stream(incoming)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Stream(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Body::Upstream(inner) => inner.poll_frame(cx),
            Body::Fed(inner) => inner.poll_frame(cx),
            Body::Limited(inner) => inner.poll_frame(cx),
            Body::Message(inner) => Pin::new(inner).poll_frame(cx).map_err(|never| match never {}),
            Body::Cached(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Body::Filling(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Gated(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Tapped(inner) => Pin::new(inner.as_mut()).poll_frame(cx),
            Body::Empty => Poll::Ready(None),
            Body::Replay(inner) => Pin::new(&mut **inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream(inner) => inner.is_end_stream(),
            Body::Upstream(timed) => timed.inner.is_end_stream(),
            Body::Fed(fed) => fed.ended,
            Body::Limited(limited) => limited.inner.is_end_stream(),
            Body::Message(inner) => inner.is_end_stream(),
            Body::Cached(inner) => inner.is_end_stream(),
            Body::Filling(inner) => inner.is_end_stream(),
            Body::Gated(inner) => inner.is_end_stream(),
            Body::Tapped(inner) => inner.is_end_stream(),
            Body::Empty => true,
            Body::Replay(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream(inner) => inner.size_hint(),
            Body::Upstream(timed) => timed.inner.size_hint(),
            Body::Fed(fed) => fed.hint,
            Body::Limited(limited) => limited.inner.size_hint(),
            Body::Message(inner) => inner.size_hint(),
            Body::Cached(inner) => inner.size_hint(),
            Body::Filling(inner) => inner.size_hint(),
            Body::Gated(inner) => inner.size_hint(),
            Body::Tapped(inner) => inner.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
            Body::Replay(inner) => inner.size_hint(),
        }
    }
}
