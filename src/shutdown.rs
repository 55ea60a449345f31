//! Graceful shutdown as an object: one signal to stop, one tracker for everything that must
//! finish (connections and tunnels), and a drain with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Shared handle to the shutdown signal and the set of tracked tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    signal: CancellationToken,
    tasks: TaskTracker,
}

/// Whether a drain finished in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection and tunnel finished within the grace period.
    Complete,
    /// The grace period ran out with work still in flight.
    GraceExpired,
}

impl Shutdown {
    /// A handle with no signal sent and no tasks.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Runs `task` on the runtime, tracked so that [`Shutdown::drain`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once shutdown has begun.
    pub fn signalled(&self) -> WaitForCancellationFuture<'_> {
        self.signal.cancelled()
    }

    /// True once shutdown has begun.
    pub fn is_signalled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// A token for one listener: fires at shutdown, or earlier when that listener alone is
    /// stopped (removed by a reload).
    pub fn listener_token(&self) -> CancellationToken {
        self.signal.child_token()
    }

    /// Begins shutdown and waits up to `grace` for tracked tasks to finish.
    pub async fn drain(&self, grace: Duration) -> Drained {
        self.signal.cancel();
        self.tasks.close();
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => Drained::Complete,
            Err(_) => Drained::GraceExpired,
        }
    }

    /// Number of tracked tasks still running.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }
}
