//! Work the cache goes on doing after a client has its answer: `stale-while-revalidate`
//! refreshes, fills that keep storing a response after its first client left, and the disk
//! tier's writes.
//!
//! It runs under the graceful-shutdown tracker, so a drain waits for it (within the grace
//! period, like a connection), and at most `[cache] max_background` such tasks run at once:
//! past that a refresh is skipped (the next request past the response's freshness validates
//! it) and a fill whose client left is abandoned, so a burst of stale hits or of clients that
//! hang up cannot pile up work without bound.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use crate::shutdown::Shutdown;

/// Default number of background tasks the cache runs at once.
pub const DEFAULT_MAX_BACKGROUND: usize = 64;

/// Starts the cache's background tasks, tracked and bounded.
#[derive(Debug, Clone)]
pub struct Background {
    /// The tracker shutdown drains.
    shutdown: Shutdown,
    /// One permit per task that may run at once.
    slots: Arc<Semaphore>,
    /// How many slots there are.
    max: usize,
    /// Tasks not started because every slot was taken.
    skipped: Arc<AtomicU64>,
}

impl Background {
    /// Runs at most `max` tasks at once, tracked by `shutdown`.
    pub fn new(shutdown: Shutdown, max: usize) -> Self {
        let max = max.max(1);
        Background { shutdown, slots: Arc::new(Semaphore::new(max)), max, skipped: Arc::default() }
    }

    /// How many tasks may run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Runs `task` tracked by the shutdown tracker when a slot is free, holding the slot until
    /// it ends; returns `false`, with `task` dropped unstarted, when every slot is taken or
    /// there is no runtime to run it on (only while the process exits).
    pub fn try_spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        self.shutdown.spawn(async move {
            task.await;
            drop(slot);
        });
        true
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Tasks skipped so far because every slot was taken.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn tasks_are_bounded_and_drained() {
        let shutdown = Shutdown::new();
        let background = Background::new(shutdown.clone(), 2);
        let gate = Arc::new(tokio::sync::Notify::new());
        for _ in 0..2 {
            let gate = Arc::clone(&gate);
            assert!(background.try_spawn(async move { gate.notified().await }));
        }
        assert_eq!(background.running(), 2);
        assert!(!background.try_spawn(async {}), "both slots are taken");
        assert_eq!(background.skipped(), 1);
        // A drain waits for them, within its grace period.
        assert_eq!(
            shutdown.drain(Duration::from_millis(50)).await,
            crate::shutdown::Drained::GraceExpired
        );
        gate.notify_waiters();
        assert_eq!(
            shutdown.drain(Duration::from_secs(5)).await,
            crate::shutdown::Drained::Complete
        );
        assert_eq!(background.running(), 0);
    }
}
