//! What a client has accepted of what sluice sends it, and what follows when it accepts
//! nothing: the response body waits ([`Pacing`]), and a client that takes no byte for
//! `timeouts.client_send` is disconnected ([`SendDeadline`]).
//!
//! hyper buffers an HTTP/1 response body while the socket cannot take it: up to 16 chunks, or
//! its buffer size, each chunk as large as an upstream read. A client reading slowly (or not at
//! all) would pin all of that, and the upstream connection behind it, for as long as it
//! pleased. So the connection's I/O counts the bytes the socket accepted ([`SendProgress`]),
//! a response body hands hyper a frame only while less than [`BODY_AHEAD_BYTES`] of it are
//! waiting to be sent (which in turn stops sluice reading from the upstream), and the I/O fails
//! a write that has made no progress for the send timeout, which closes the connection.
//! HTTP/2 has flow control of its own; a stream whose window stays closed is handled by
//! `body::FedBody`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::observe::metrics::{Metrics, Rejection};

/// Most response body bytes handed to hyper that the client's socket has not accepted yet.
/// With the chunk hyper is writing and the one the upstream connection holds, a response
/// whose client reads slowly pins about this plus two upstream reads
/// (`limits.max_response_head_bytes` each) in sluice.
pub const BODY_AHEAD_BYTES: u64 = 16 * 1024;

/// Bytes one HTTP/1 client connection's socket has accepted, shared by its I/O (which counts
/// them) and its response bodies (which wait for them).
#[derive(Debug, Default)]
pub struct SendProgress {
    written: AtomicU64,
    /// Set while a body waits for the socket; the writer then wakes it.
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl SendProgress {
    /// Nothing sent yet.
    pub fn new() -> Arc<SendProgress> {
        Arc::new(SendProgress::default())
    }

    /// Bytes the socket has accepted so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Counts `bytes` more accepted, and wakes a body waiting for the socket.
    fn wrote(&self, bytes: usize) {
        self.written.fetch_add(bytes as u64, Ordering::AcqRel);
        // A plain load first: nearly every write finds no body waiting.
        if self.waiting.load(Ordering::Acquire) && self.waiting.swap(false, Ordering::AcqRel) {
            let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Asks to be woken (through `waker`) at the next write.
    fn wake_on_write(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        self.waiting.store(true, Ordering::Release);
    }
}

/// One HTTP/1 response body's place in its connection's sending: how much of it was handed
/// to hyper, against how much the socket has accepted since the body started.
#[derive(Debug)]
pub struct Pacing {
    progress: Arc<SendProgress>,
    /// The connection's `written` when this body was first polled (`None` before).
    start: Option<u64>,
    handed: u64,
}

impl Pacing {
    /// Paces a body sent on the connection of `progress`.
    pub fn new(progress: Arc<SendProgress>) -> Pacing {
        Pacing { progress, start: None, handed: 0 }
    }

    /// Ready when the body may hand hyper another frame: less than [`BODY_AHEAD_BYTES`] of
    /// what it handed are still unsent. (The response head counts as sent body, so the bound
    /// is loose by one head.) Otherwise the task is woken at the socket's next write.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let start = *self.start.get_or_insert_with(|| self.progress.written());
        if self.ahead(start) < BODY_AHEAD_BYTES {
            return Poll::Ready(());
        }
        self.progress.wake_on_write(cx.waker());
        // A write between the check and the registration would not have woken us.
        if self.ahead(start) < BODY_AHEAD_BYTES { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Records `bytes` of body handed to hyper.
    pub fn handed(&mut self, bytes: usize) {
        self.handed += bytes as u64;
    }

    fn ahead(&self, start: u64) -> u64 {
        let sent = self.progress.written().saturating_sub(start);
        self.handed.saturating_sub(sent)
    }
}

/// The I/O side of a client connection's sending: counts what the socket accepts into a
/// [`SendProgress`], and fails a write (or flush) that has made no progress for the send
/// timeout. The timer is made at the first stall and reused; a connection that never stalls
/// never has one. Off (passing everything through) when not configured, and from the moment
/// the connection is handed to a tunnel or upgrade ([`SendDeadline::stop`]).
#[derive(Debug)]
pub struct SendDeadline {
    timeout: Duration,
    progress: Option<Arc<SendProgress>>,
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    metrics: Option<Arc<Metrics>>,
}

impl SendDeadline {
    /// A deadline of `timeout` without progress, counting into `progress`; a connection it
    /// closes is counted into `metrics`, when given.
    pub fn new(
        timeout: Duration,
        progress: Arc<SendProgress>,
        metrics: Option<Arc<Metrics>>,
    ) -> SendDeadline {
        SendDeadline { timeout, progress: Some(progress), stall: None, stalled: false, metrics }
    }

    /// No deadline and no counting.
    pub fn off() -> SendDeadline {
        SendDeadline {
            timeout: Duration::ZERO,
            progress: None,
            stall: None,
            stalled: false,
            metrics: None,
        }
    }

    /// Stops counting and timing: the connection now relays a tunnel or an upgraded protocol,
    /// bounded by the relay's own timeouts.
    pub fn stop(&mut self) {
        self.progress = None;
        self.stall = None;
    }

    /// The connection's progress, for its response bodies, while counted.
    pub fn progress(&self) -> Option<&Arc<SendProgress>> {
        self.progress.as_ref()
    }

    /// Passes on the outcome of a write, counting accepted bytes; a write that could not
    /// proceed starts (or checks) the stall timer, and fails once it has run out.
    pub fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(progress) = &self.progress else { return polled };
        match polled {
            Poll::Ready(Ok(bytes)) => {
                if bytes > 0 {
                    self.stalled = false;
                    progress.wrote(bytes);
                }
                Poll::Ready(Ok(bytes))
            }
            Poll::Pending => match self.check(cx) {
                Poll::Ready(()) => Poll::Ready(self.timed_out()),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    /// Passes on the outcome of a flush (or shutdown), like [`SendDeadline::wrote`].
    pub fn flushed(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        if self.progress.is_none() {
            return polled;
        }
        match polled {
            Poll::Ready(Ok(())) => {
                self.stalled = false;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.check(cx) {
                Poll::Ready(()) => Poll::Ready(self.timed_out().map(|_| ())),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    /// Ready once the stall has lasted the whole timeout; pending (with the timer armed for
    /// this task) before.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.timeout;
            match self.stall.as_mut() {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.stall.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn timed_out(&mut self) -> io::Result<usize> {
        tracing::debug!(limit = "client_send", "the client accepted nothing in time; closing");
        if let Some(metrics) = self.metrics.take() {
            metrics.reject(Rejection::ClientSendTimeout);
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the client accepted nothing in time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Counter(AtomicU64);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_body_waits_while_too_much_is_unsent_and_is_woken_by_the_next_write() {
        let progress = SendProgress::new();
        let woken = Arc::new(Counter(AtomicU64::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut pacing = Pacing::new(progress.clone());
        assert!(pacing.poll_ready(&mut cx).is_ready());
        pacing.handed(10_000);
        assert!(pacing.poll_ready(&mut cx).is_ready(), "10,000 bytes ahead is allowed");
        pacing.handed(10_000);
        assert!(pacing.poll_ready(&mut cx).is_pending(), "20,000 bytes ahead is not");
        progress.wrote(2_000);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(pacing.poll_ready(&mut cx).is_pending(), "18,000 ahead");
        progress.wrote(5_000);
        assert!(pacing.poll_ready(&mut cx).is_ready(), "13,000 ahead");
        progress.wrote(1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2, "woken once per wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_for_the_timeout_fails() {
        let timeout = Duration::from_secs(60);
        let mut deadline = SendDeadline::new(timeout, SendProgress::new(), None);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(deadline.wrote(&mut cx, Poll::Pending).is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(deadline.flushed(&mut cx, Poll::Pending).is_pending());
        // Progress restarts the clock.
        assert!(matches!(deadline.wrote(&mut cx, Poll::Ready(Ok(1))), Poll::Ready(Ok(1))));
        assert!(deadline.wrote(&mut cx, Poll::Pending).is_pending());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(deadline.wrote(&mut cx, Poll::Pending).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        match deadline.wrote(&mut cx, Poll::Pending) {
            Poll::Ready(Err(err)) => assert_eq!(err.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        assert_eq!(deadline.progress().map(|p| p.written()), Some(1));
        deadline.stop();
        assert!(deadline.wrote(&mut cx, Poll::Pending).is_pending(), "stopped: no deadline");
    }
}
