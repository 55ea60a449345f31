//! Graceful shutdown as an object: one signal to stop, trackers for everything that must
//! finish (the work: connections, tunnels and upgrades; and the services that produce it:
//! accept loops, the SIGHUP watcher), and a drain with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Shared handle to the shutdown signal and the set of tracked tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    signal: CancellationToken,
    /// Client connections, tunnels and upgrades: what [`Shutdown::in_flight`] counts.
    tasks: TaskTracker,
    /// Accept loops and the like, which end as soon as the signal fires; awaited by the drain
    /// but never counted as work in flight.
    services: TaskTracker,
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

    /// Runs `task`, a piece of work for a client (a connection, a tunnel, an upgrade), on the
    /// runtime, tracked so that [`Shutdown::drain`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Runs `service`, a task that serves no client itself and stops when the signal fires
    /// (an accept loop, the SIGHUP watcher), tracked so that [`Shutdown::drain`] waits for it
    /// without counting it in flight.
    pub fn spawn_service<F>(&self, service: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.services.spawn(service);
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
        self.services.close();
        let both = async {
            self.services.wait().await;
            self.tasks.wait().await;
        };
        match tokio::time::timeout(grace, both).await {
            Ok(()) => Drained::Complete,
            Err(_) => Drained::GraceExpired,
        }
    }

    /// Client connections, tunnels and upgrades still running (not the accept loops or other
    /// services).
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn services_are_drained_but_not_counted_in_flight() {
        let shutdown = Shutdown::new();
        let service = shutdown.clone();
        shutdown.spawn_service(async move { service.signalled().await });
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        shutdown.spawn(async move {
            let _ = released.await;
        });
        assert_eq!(shutdown.in_flight(), 1);
        let drain = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.drain(Duration::from_secs(20)).await }
        });
        let _ = release.send(());
        assert_eq!(drain.await.unwrap(), Drained::Complete);
        assert_eq!(shutdown.in_flight(), 0);
    }
}
