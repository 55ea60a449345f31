//! A request body that can be sent again: the first attempt streams the client's body through
//! unchanged and keeps a copy of each data frame as it passes, up to a limit; a retry replays
//! the copy and then goes on reading the client's body where the first attempt stopped.
//!
//! Nothing waits for the copy: a frame is passed on the moment it arrives, so a streamed
//! upload is never held back to be buffered. Past the limit the copy is dropped and the
//! request can no longer be retried (once it was sent; a request whose body nobody had read
//! yet, because the connection failed, is still whole). Each data frame is copied into a
//! buffer of its own rather than kept by reference, so the memory held is the bytes kept and
//! no larger read buffer behind them.
//!
//! The state moves between attempts without sharing: an attempt's body owns it, and gives it
//! back when dropped (hyper drops a request body when the exchange ends or fails), so the
//! lock is taken twice per attempt, never per frame. This follows the idea of linkerd's
//! `ReplayBody`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;

/// The error type of every body on the proxy path (the same as `body::BoxError`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's body, behind a pointer so this module does not name the body enum that
/// contains it (a replayed body is one of its variants).
type Source = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync>>;

/// Whether a body whose size is described by `hint` can be kept within `limit` bytes: not when
/// it declares (or is known to have) more.
pub fn fits(hint: &SizeHint, limit: u64) -> bool {
    hint.lower() <= limit
}

/// The retry side of a replayable body: hands out the body again for another attempt.
#[derive(Debug)]
pub struct Replay {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The body's state while no attempt owns it.
    slot: Mutex<Option<Captured>>,
    /// Signalled when an attempt's body gives the state back.
    returned: Notify,
    /// The copy was dropped (over the limit, or the client's body failed): no replay.
    given_up: AtomicBool,
}

/// Everything needed to produce the body again.
struct Captured {
    /// Copies of the data frames read so far, in order.
    chunks: Vec<Bytes>,
    /// Their total length.
    kept: u64,
    /// The rest of the client's body, not read yet.
    rest: Source,
    /// The client's body has ended.
    ended: bool,
    /// Some of the client's body has been read (by any attempt).
    touched: bool,
    /// Its trailers, if it had some.
    trailers: Option<HeaderMap>,
    /// The client's body's size, as first described.
    hint: SizeHint,
    limit: u64,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured")
            .field("chunks", &self.chunks.len())
            .field("kept", &self.kept)
            .field("ended", &self.ended)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// One attempt's request body.
#[derive(Debug)]
pub struct ReplayBody {
    /// Owned while this attempt's body lives; given back on drop.
    captured: Option<Captured>,
    /// Chunks of `captured.chunks` this attempt has already produced.
    position: usize,
    /// This attempt has produced the trailers.
    trailers_sent: bool,
    shared: Arc<Shared>,
}

impl Replay {
    /// Wraps a client's `body`, keeping up to `limit` bytes of it; returns the replay handle
    /// and the first attempt's body.
    pub fn new(
        body: impl http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
        limit: u64,
    ) -> (Replay, ReplayBody) {
        let hint = body.size_hint();
        let shared = Arc::new(Shared {
            slot: Mutex::new(None),
            returned: Notify::new(),
            given_up: AtomicBool::new(!fits(&hint, limit)),
        });
        let captured = Captured {
            chunks: Vec::new(),
            kept: 0,
            ended: body.is_end_stream(),
            touched: false,
            rest: Box::pin(body),
            trailers: None,
            hint,
            limit,
        };
        let first = ReplayBody {
            captured: Some(captured),
            position: 0,
            trailers_sent: false,
            shared: shared.clone(),
        };
        (Replay { shared }, first)
    }

    /// Whether the body can still be replayed, as far as is known now (the copy was not
    /// dropped). Cheap: no lock.
    pub fn replayable(&self) -> bool {
        !self.shared.given_up.load(Ordering::Acquire)
    }

    /// The body for another attempt, once the previous attempt has given it back (waiting at
    /// most `wait` for that: hyper may still be finishing the previous attempt's body);
    /// `None` when it cannot be replayed (the copy was dropped after some of it was read) or
    /// did not come back in time. A body nobody has read yet is whole whatever its size.
    pub async fn again(&self, wait: Duration) -> Option<ReplayBody> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let taken = self.shared.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(captured) = taken {
                let whole = self.replayable() || !captured.touched;
                return whole.then(|| ReplayBody {
                    captured: Some(captured),
                    position: 0,
                    trailers_sent: false,
                    shared: self.shared.clone(),
                });
            }
            if !self.replayable() {
                // Given up while the previous attempt still holds the body: it was read.
                return None;
            }
            // `notify_one` keeps a permit when nobody waits yet, so a give-back between the
            // check above and this wait is not missed.
            tokio::time::timeout_at(deadline, self.shared.returned.notified()).await.ok()?;
        }
    }
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(captured) = self.captured.take() {
            *self.shared.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(captured);
            self.shared.returned.notify_one();
        }
    }
}

/// Gives up replaying: the copy is dropped and no attempt after this one gets the body.
fn give_up(shared: &Shared, captured: &mut Captured) {
    shared.given_up.store(true, Ordering::Release);
    captured.chunks = Vec::new();
    captured.trailers = None;
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(captured) = this.captured.as_mut() else {
            return Poll::Ready(None);
        };
        // First what an earlier attempt read, from the copy.
        if let Some(chunk) = captured.chunks.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if captured.ended {
            if !this.trailers_sent
                && let Some(trailers) = &captured.trailers
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
            return Poll::Ready(None);
        }
        // Then the client's body, passed on as it arrives and copied while it fits.
        let polled = captured.rest.as_mut().poll_frame(cx);
        if polled.is_ready() {
            captured.touched = true;
        }
        let given_up = this.shared.given_up.load(Ordering::Relaxed);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !given_up
                {
                    let kept = captured.kept.saturating_add(data.len() as u64);
                    if kept <= captured.limit {
                        captured.chunks.push(Bytes::copy_from_slice(data));
                        captured.kept = kept;
                        this.position += 1;
                    } else {
                        give_up(&this.shared, captured);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    if !given_up {
                        captured.trailers = Some(trailers.clone());
                    }
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                captured.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                // The client's body is broken: no attempt can have it whole.
                give_up(&this.shared, captured);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.captured {
            None => true,
            Some(captured) if this_has_more(self.position, self.trailers_sent, captured) => false,
            Some(captured) => captured.ended || captured.rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.captured {
            Some(captured) => captured.hint,
            None => SizeHint::with_exact(0),
        }
    }
}

/// Whether an attempt at `position` still has kept chunks or trailers to produce.
fn this_has_more(position: usize, trailers_sent: bool, captured: &Captured) -> bool {
    position < captured.chunks.len()
        || (captured.ended && !trailers_sent && captured.trailers.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use http::{HeaderValue, Request, Response};
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use http_body_util::channel::{Channel, Sender};
    use tokio::sync::{mpsc, oneshot};

    const WAIT: Duration = Duration::from_secs(10);

    /// A client body the test feeds frame by frame, arriving at a real hyper server on
    /// 127.0.0.1:0, which hands the received request's body over as a [`Body::Stream`].
    async fn streamed_body() -> (Sender<Bytes>, Body, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (bodies, mut received) = mpsc::unbounded_channel();
        let (finish, finished) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let finished = std::sync::Mutex::new(Some(finished));
            let service = hyper::service::service_fn(move |request: Request<_>| {
                let _ = bodies.send(Body::from(request.into_body()));
                let finished = finished.lock().unwrap().take();
                async move {
                    if let Some(finished) = finished {
                        let _ = finished.await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let (frames, channel) = Channel::<Bytes>::new(4);
        let request = Request::post("/").header("trailer", "x-checksum").body(channel).unwrap();
        tokio::spawn(async move { sender.send_request(request).await });
        let body = tokio::time::timeout(WAIT, received.recv()).await.unwrap().unwrap();
        (frames, body, finish)
    }

    async fn next_data(body: &mut ReplayBody) -> Bytes {
        let frame = tokio::time::timeout(WAIT, body.frame()).await.unwrap().unwrap().unwrap();
        frame.into_data().unwrap()
    }

    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        trailers
    }

    #[tokio::test]
    async fn frames_pass_at_once_and_a_replay_is_identical() {
        let (mut frames, body, _finish) = streamed_body().await;
        let (replay, mut first) = Replay::new(body, 1024);
        frames.send_data(Bytes::from_static(b"hello ")).await.unwrap();
        // The first frame arrives while the client has not sent the second one yet.
        assert_eq!(next_data(&mut first).await, "hello ");
        frames.send_data(Bytes::from_static(b"world")).await.unwrap();
        frames.send_trailers(trailers()).await.unwrap();
        drop(frames);
        let collected = tokio::time::timeout(WAIT, first.collect()).await.unwrap().unwrap();
        assert_eq!(collected.trailers(), Some(&trailers()));
        assert_eq!(collected.to_bytes(), "world");
        assert!(replay.replayable());

        for _ in 0..2 {
            let again = replay.again(WAIT).await.expect("the body comes back");
            assert!(!again.is_end_stream());
            let collected = tokio::time::timeout(WAIT, again.collect()).await.unwrap().unwrap();
            assert_eq!(collected.trailers(), Some(&trailers()));
            assert_eq!(collected.to_bytes(), "hello world");
        }
    }

    #[tokio::test]
    async fn a_retry_continues_where_the_first_attempt_stopped() {
        let (mut frames, body, _finish) = streamed_body().await;
        let (replay, mut first) = Replay::new(body, 1024);
        frames.send_data(Bytes::from_static(b"one ")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "one ");
        // The attempt fails with the rest of the body unread.
        drop(first);
        let mut again = replay.again(WAIT).await.unwrap();
        assert_eq!(next_data(&mut again).await, "one ");
        frames.send_data(Bytes::from_static(b"two")).await.unwrap();
        drop(frames);
        assert_eq!(next_data(&mut again).await, "two");
        drop(again);
        let third = replay.again(WAIT).await.unwrap();
        let collected = tokio::time::timeout(WAIT, third.collect()).await.unwrap().unwrap();
        assert_eq!(collected.to_bytes(), "one two");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_passes_but_is_not_replayed() {
        let (mut frames, body, _finish) = streamed_body().await;
        let (replay, mut first) = Replay::new(body, 8);
        frames.send_data(Bytes::from_static(b"12345")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "12345");
        assert!(replay.replayable());
        frames.send_data(Bytes::from_static(b"67890")).await.unwrap();
        assert_eq!(next_data(&mut first).await, "67890");
        assert!(!replay.replayable());
        drop(frames);
        drop(first);
        assert!(replay.again(WAIT).await.is_none());
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_replayed_only_untouched() {
        let (replay, first) = Replay::new(Body::message(vec![7u8; 100]), 99);
        assert!(!replay.replayable());
        // The connection failed before the body was read: it goes out whole.
        drop(first);
        let again = replay.again(WAIT).await.expect("an unread body is whole");
        assert_eq!(again.size_hint().exact(), Some(100));
        let collected = again.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 100);
        // Once read, it is gone.
        assert!(replay.again(WAIT).await.is_none());
    }

    #[tokio::test]
    async fn an_untouched_body_is_whole_for_the_next_attempt() {
        let (replay, first) = Replay::new(Body::message("payload"), 1024);
        drop(first);
        let again = replay.again(WAIT).await.unwrap();
        assert_eq!(again.size_hint().exact(), Some(7));
        assert_eq!(again.collect().await.unwrap().to_bytes(), "payload");
        let third = replay.again(WAIT).await.unwrap();
        assert_eq!(third.collect().await.unwrap().to_bytes(), "payload");
    }

    #[tokio::test]
    async fn an_empty_body_replays_as_empty() {
        let (replay, first) = Replay::new(Body::empty(), 1024);
        assert!(first.is_end_stream());
        drop(first);
        let again = replay.again(WAIT).await.unwrap();
        assert!(again.is_end_stream());
        assert!(again.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn again_waits_for_the_previous_attempt_and_no_longer_than_asked() {
        let (replay, first) = Replay::new(Body::message("x"), 1024);
        assert!(replay.again(Duration::from_millis(20)).await.is_none());
        let returned = tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(first);
        });
        assert!(replay.again(WAIT).await.is_some());
        returned.await.unwrap();
    }

    #[test]
    fn fits_table() {
        assert!(fits(&SizeHint::with_exact(10), 10));
        assert!(!fits(&SizeHint::with_exact(11), 10));
        assert!(fits(&SizeHint::default(), 10));
        let mut at_least = SizeHint::new();
        at_least.set_lower(20);
        assert!(!fits(&at_least, 10));
    }
}
