//! The first-event gate: for a streamed answer, sluice holds the response head until the
//! first server-sent event has arrived, so a stream that answers `200` and then fails at once
//! (ends, breaks, or sends an error event first), or never starts, can still fall back to
//! another key or provider: nothing has reached the client yet. Once the first event is
//! through, the gate is open for good and the stream passes frame by frame.
//!
//! The wait is bounded by the time-to-first-token deadline, and what is held by a byte limit:
//! a first event larger than that opens the gate as it is (it cannot be an error report).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::gateway::sse::{Line, SseReader, is_error_event};

/// Longest first event (with what precedes it) the gate holds; past it, the gate opens.
pub const MAX_GATE_BYTES: usize = 64 * 1024;

/// Why a stream failed before its first event.
#[derive(Debug, thiserror::Error)]
pub enum GateFailure {
    /// No event before the time-to-first-token deadline.
    #[error("no event before the time-to-first-token deadline")]
    Timeout,
    /// The body ended without an event.
    #[error("the stream ended before its first event")]
    Ended,
    /// The body failed before an event.
    #[error("the stream failed before its first event")]
    Broken(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The first event reports an error.
    #[error("the stream's first event is an error: {0}")]
    ErrorEvent(String),
}

/// A stream whose first event has arrived: the frames read so far, then the rest.
#[derive(Debug)]
pub struct Gated<B> {
    held: VecDeque<Frame<Bytes>>,
    rest: B,
    rest_ended: bool,
}

impl<B> Gated<B> {
    /// Bytes held by the gate.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().filter_map(Frame::data_ref).map(Bytes::len).sum()
    }
}

/// What the gate watches for in the lines of the stream.
#[derive(Debug, Default)]
struct FirstEvent {
    name: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    complete: bool,
}

impl FirstEvent {
    fn line(&mut self, line: Line<'_>) {
        if self.complete {
            return;
        }
        match line {
            Line::Event(name) => self.name = Some(name.to_vec()),
            Line::Data(data) => {
                let held = self.data.get_or_insert_with(Vec::new);
                if held.len() + data.len() <= MAX_GATE_BYTES {
                    held.extend_from_slice(data);
                }
            }
            // A blank line after data dispatches an event; without data it dispatches
            // nothing (comments and keep-alives), and the next event starts afresh.
            Line::End if self.data.is_some() => self.complete = true,
            Line::End => self.name = None,
            Line::Other => {}
        }
    }
}

/// Reads `body` until its first complete event, until `deadline`, or until [`MAX_GATE_BYTES`]
/// have been held (then the gate opens without judging the event).
pub async fn first_event<B>(
    mut body: B,
    deadline: tokio::time::Instant,
) -> Result<Gated<B>, GateFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut reader = SseReader::new();
    let mut first = FirstEvent::default();
    let mut held = VecDeque::new();
    let mut held_bytes = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(GateFailure::Timeout),
            Ok(None) => return Err(GateFailure::Ended),
            Ok(Some(Err(err))) => return Err(GateFailure::Broken(err.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            reader.feed(data, |line| first.line(line));
            held_bytes += data.len();
        }
        held.push_back(frame);
        if first.complete {
            let data = first.data.as_deref().unwrap_or_default();
            if is_error_event(first.name.as_deref(), data) {
                return Err(GateFailure::ErrorEvent(String::from_utf8_lossy(data).into_owned()));
            }
        }
        if first.complete || held_bytes > MAX_GATE_BYTES || body.is_end_stream() {
            let rest_ended = body.is_end_stream();
            if rest_ended && !first.complete {
                // Everything arrived and none of it is an event.
                return Err(GateFailure::Ended);
            }
            return Ok(Gated { held, rest: body, rest_ended });
        }
    }
}

impl<B> Body for Gated<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.rest_ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && (self.rest_ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held_bytes() as u64;
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::channel::{Channel, Sender};
    use std::time::Duration;
    use tokio::time::Instant;

    fn channel() -> (Sender<Bytes>, Channel<Bytes>) {
        Channel::new(8)
    }

    async fn send(sender: &mut Sender<Bytes>, text: &'static str) {
        sender.send_data(Bytes::from_static(text.as_bytes())).await.unwrap();
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn the_gate_opens_on_the_first_event_and_passes_everything_on() {
        let (mut tx, rx) = channel();
        send(&mut tx, ": keep-alive\n\nda").await;
        send(&mut tx, "ta: {\"choices\":[]}\n").await;
        send(&mut tx, "\ndata: second\n\n").await;
        let gated = first_event(rx, soon()).await.unwrap();
        assert_eq!(gated.held_bytes(), 16 + 19 + 15);
        send(&mut tx, "data: third\n\n").await;
        drop(tx);
        let all = gated.collect().await.unwrap().to_bytes();
        assert_eq!(
            all,
            ": keep-alive\n\ndata: {\"choices\":[]}\n\ndata: second\n\ndata: third\n\n"
        );
    }

    #[tokio::test]
    async fn failures_before_the_first_event_are_told_apart() {
        // An error event first: Anthropic's, then an OpenAI-compatible server's.
        for event in [
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
            "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        ] {
            let (mut tx, rx) = channel();
            send(&mut tx, event).await;
            let failure = first_event(rx, soon()).await.unwrap_err();
            assert!(matches!(failure, GateFailure::ErrorEvent(_)), "{failure:?}");
        }
        // The stream ends with only a comment.
        let (mut tx, rx) = channel();
        send(&mut tx, ": nothing\n\n").await;
        drop(tx);
        assert!(matches!(first_event(rx, soon()).await.unwrap_err(), GateFailure::Ended));
        // An event cut off by the end of the stream is no event.
        let (mut tx, rx) = channel();
        send(&mut tx, "data: {\"x\":1}\n").await;
        drop(tx);
        assert!(matches!(first_event(rx, soon()).await.unwrap_err(), GateFailure::Ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_times_out() {
        let (mut tx, rx) = channel();
        send(&mut tx, ": waiting\n\n").await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let failure = first_event(rx, deadline).await.unwrap_err();
        assert!(matches!(failure, GateFailure::Timeout));
        assert!(Instant::now() >= deadline);
        drop(tx);
    }

    #[tokio::test]
    async fn a_huge_first_event_opens_the_gate_unjudged() {
        let (mut tx, rx) = channel();
        let big = format!("data: {}", "x".repeat(MAX_GATE_BYTES + 1));
        tx.send_data(Bytes::from(big)).await.unwrap();
        let gated = first_event(rx, soon()).await.unwrap();
        assert!(gated.held_bytes() > MAX_GATE_BYTES);
    }
}
