//! The one body type on the proxy path.
//!
//! An enum rather than a boxed trait object: forwarding a body costs no allocation and no
//! dynamic dispatch, and every variant is `Unpin`, as hyper's pooled client requires.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

/// Boxed error carried by a body stream; only allocated when a stream actually fails.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as sluice forwards or generates it.
#[derive(Debug)]
pub enum Body {
    /// Streamed from a peer (client or upstream), frame by frame.
    Stream(Incoming),
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
            Body::Message(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Body::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream(inner) => inner.is_end_stream(),
            Body::Message(inner) => inner.is_end_stream(),
            Body::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream(inner) => inner.size_hint(),
            Body::Message(inner) => inner.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
        }
    }
}
