//! The requests open on a client connection that multiplexes them (HTTP/2, or any connection
//! of a listener that may speak it), for its idle timeout: hyper's HTTP/2 server has none, so a
//! client could keep a connection with no stream open forever.
//!
//! A request counts as open from its head until its context is finished: its response body
//! sent, or its tunnel or WebSocket closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The open requests of one connection, and since when it has had none.
#[derive(Debug)]
pub struct OpenStreams {
    open: AtomicUsize,
    /// The connection's start, the origin of `idle_from`.
    epoch: Instant,
    /// When (in milliseconds after `epoch`) the last open request finished.
    idle_from: AtomicU64,
}

impl OpenStreams {
    /// A connection just opened: no request yet, idle from now.
    pub fn new() -> Arc<OpenStreams> {
        Arc::new(OpenStreams {
            open: AtomicUsize::new(0),
            epoch: Instant::now(),
            idle_from: AtomicU64::new(0),
        })
    }

    /// Counts one more open request until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(self.clone())
    }

    /// How long the connection has had no request open (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_from.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(since)
    }
}

/// One open request; finished when dropped.
#[derive(Debug)]
pub struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        if streams.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = u64::try_from(streams.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            streams.idle_from.store(now, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_last_request_that_finished() {
        let streams = OpenStreams::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(streams.idle_for(), Duration::from_secs(3), "idle since it opened");
        let first = streams.start();
        let second = streams.start();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(streams.idle_for(), Duration::ZERO);
        drop(first);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(streams.idle_for(), Duration::ZERO, "one is still open");
        drop(second);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(streams.idle_for(), Duration::from_secs(2));
    }
}
