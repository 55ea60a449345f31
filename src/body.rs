//! The one body type on the proxy path.
//!
//! An enum rather than a boxed trait object: forwarding a body costs no allocation and no
//! dynamic dispatch, and every variant is `Unpin`, as hyper's pooled client requires.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Boxed error carried by a body stream; only allocated when a stream actually fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as sluice forwards or generates it.
#[derive(Debug)]
pub enum Body {
    /// Streamed from a peer (client or upstream), frame by frame.
    Stream(Incoming),
    /// An upstream response body that fails if the upstream goes quiet for too long.
    Upstream(IdleBody),
    /// A short message sluice wrote itself, such as an error explanation.
    Message(Full<Bytes>),
    /// No body at all.
    Empty,
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body::Empty
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
            Body::Message(inner) => Pin::new(inner).poll_frame(cx).map_err(|never| match never {}),
            Body::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream(inner) => inner.is_end_stream(),
            Body::Upstream(timed) => timed.inner.is_end_stream(),
            Body::Message(inner) => inner.is_end_stream(),
            Body::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream(inner) => inner.size_hint(),
            Body::Upstream(timed) => timed.inner.size_hint(),
            Body::Message(inner) => inner.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
        }
    }
}
