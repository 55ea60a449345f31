//! Finishing an [`Entry`] when its traffic ends: a response body that counts what it sends
//! ([`ObservedBody`]), and the hand-over to a tunnel or upgrade relay ([`SessionLog`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::{Entry, Failure};
use crate::body::{Body, BodyIdleTimeout, BoxError};
use crate::error::ErrorKind;
use crate::relay::Relayed;

/// The body of every response sluice sends: the proxied or generated [`Body`], counting the
/// bytes it passes, finishing its entry at the end of the stream, on an upstream failure, or
/// when the client goes away (the body is dropped unfinished).
#[derive(Debug)]
pub struct ObservedBody {
    inner: Body,
    entry: Option<Entry>,
}

impl ObservedBody {
    /// Wraps `inner`; `entry` is finished when the body ends.
    pub fn new(inner: Body, entry: Entry) -> ObservedBody {
        ObservedBody { inner, entry: Some(entry) }
    }

    /// A body whose entry is finished elsewhere (by a session's relay).
    pub fn unobserved(inner: Body) -> ObservedBody {
        ObservedBody { inner, entry: None }
    }

    fn finish(&mut self, failure: Option<Failure>) {
        if let Some(mut entry) = self.entry.take() {
            if entry.failure.is_none() {
                entry.failure = failure;
            }
            entry.finish();
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(entry)) = (frame.data_ref(), this.entry.as_mut()) {
                    entry.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(Some(Err(err))) => {
                let kind = if err.downcast_ref::<BodyIdleTimeout>().is_some() {
                    ErrorKind::HttpResponseTimeout
                } else {
                    ErrorKind::ConnectionTerminated
                };
                this.finish(Some(Failure::Proxy(kind)));
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

/// The meeting point of a request's entry (from `dispatch`, once the response is ready) and
/// its relay's outcome (from the relay task, once the session closes); whichever arrives
/// second finishes the entry.
#[derive(Debug, Clone)]
pub struct SessionLog(Arc<Mutex<Meeting>>);

#[derive(Debug)]
enum Meeting {
    Waiting,
    Started(Box<Entry>),
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

    /// Hands over the entry of the request that opened the session.
    pub fn start(&self, entry: Entry) {
        let mut meeting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *meeting, Meeting::Done) {
            Meeting::Ended(end) => finish(entry, end),
            Meeting::Waiting => *meeting = Meeting::Started(Box::new(entry)),
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
            Meeting::Started(entry) => finish(*entry, end),
            Meeting::Waiting => *meeting = Meeting::Ended(end),
            Meeting::Ended(_) | Meeting::Done => {}
        }
    }
}

fn finish(mut entry: Entry, end: SessionEnd) {
    match end {
        SessionEnd::Relayed(relayed) => {
            entry.relayed_in = relayed.to_upstream;
            entry.sent = relayed.to_downstream;
            entry.close = Some(relayed.end.as_str());
        }
        SessionEnd::NotUpgraded => entry.failure = Some(Failure::ClientClosed),
    }
    entry.finish();
}
