//! Request collapsing: while one request for a key is on its way to the origin, the others for
//! that key wait for its response instead of asking the origin too.
//!
//! The first request becomes the [`Leader`]; the rest are [`Follower`]s that wait, each for at
//! most its own time limit, for the leader to settle: with the stored response (which they
//! then stream, possibly while it is still arriving), or with word that it will not be shared
//! (not storable, too large, a different `Vary` selection), after which each goes to the
//! origin itself. A leader that is dropped without settling (its client went away, or it
//! failed) releases its followers the same way, so no follower waits on a request that no
//! longer exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::key::CacheKey;
use super::store::Object;

/// The default time a request waits for another one's response before going to the origin
/// itself.
pub const DEFAULT_COLLAPSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the leader's request settled, as its followers see it.
#[derive(Debug, Clone)]
pub enum Settled {
    /// Its response was stored (its body may still be arriving).
    Stored(Arc<Object>),
    /// Its response is not shared: go to the origin.
    NotShared,
    /// It failed before a response arrived; the error kind is for the follower's log and
    /// its own fallback (a stale response, or an error of the same kind).
    Failed,
}

/// The channel a leader settles through.
type Outcome = watch::Sender<Option<Settled>>;

/// The requests on their way to the origin, by key.
#[derive(Debug, Default)]
pub struct Collapser {
    /// One entry per key with a leader in flight.
    pending: Mutex<HashMap<CacheKey, Arc<Outcome>>>,
}

/// What a request is for its key.
#[derive(Debug)]
pub enum Role {
    /// The first: it goes to the origin and settles for the others.
    Leader(Leader),
    /// Another request's response is on its way: wait for it.
    Follower(Follower),
}

impl Collapser {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Collapser::default())
    }

    /// Joins the requests for `key`: the leader when none is in flight, else a follower.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Role {
        let mut pending = self.lock();
        if let Some(outcome) = pending.get(key) {
            return Role::Follower(Follower { outcome: outcome.subscribe() });
        }
        let outcome = Arc::new(watch::Sender::new(None));
        pending.insert(key.clone(), Arc::clone(&outcome));
        Role::Leader(Leader {
            collapser: Arc::clone(self),
            key: key.clone(),
            outcome,
            settled: false,
        })
    }

    /// How many keys have a leader in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    /// The table; a panic elsewhere while holding the lock leaves a consistent map, so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Outcome>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes `key`'s entry if it is still `outcome`'s.
    fn leave(&self, key: &CacheKey, outcome: &Arc<Outcome>) {
        let mut pending = self.lock();
        if pending.get(key).is_some_and(|current| Arc::ptr_eq(current, outcome)) {
            pending.remove(key);
        }
    }
}

/// The request that goes to the origin for its key.
#[derive(Debug)]
pub struct Leader {
    /// The table it is registered in.
    collapser: Arc<Collapser>,
    /// Its key.
    key: CacheKey,
    /// Where its followers wait.
    outcome: Arc<Outcome>,
    /// Whether it settled.
    settled: bool,
}

impl Leader {
    /// How many followers are waiting now.
    pub fn followers(&self) -> usize {
        self.outcome.receiver_count()
    }

    /// Settles the key: followers get `settled`, and later requests find the store (or go to
    /// the origin) rather than this leader.
    pub fn settle(mut self, settled: Settled) {
        self.settled = true;
        self.collapser.leave(&self.key, &self.outcome);
        self.outcome.send_replace(Some(settled));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.settled {
            self.collapser.leave(&self.key, &self.outcome);
            self.outcome.send_replace(Some(Settled::Failed));
        }
    }
}

/// A request waiting for its leader.
#[derive(Debug)]
pub struct Follower {
    /// Where the leader settles.
    outcome: watch::Receiver<Option<Settled>>,
}

impl Follower {
    /// Waits for the leader to settle, for at most `limit`; `None` when it has not by then.
    pub async fn wait(mut self, limit: Duration) -> Option<Settled> {
        let settled = tokio::time::timeout(limit, self.outcome.wait_for(Option::is_some)).await;
        match settled {
            Ok(Ok(settled)) => settled.clone(),
            // The leader (and the sender it holds) is gone without a word: it failed.
            Ok(Err(_)) => Some(Settled::Failed),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Method::GET, "http", "a.test", path)
    }

    fn leader(role: Role) -> Leader {
        match role {
            Role::Leader(leader) => leader,
            Role::Follower(_) => panic!("expected the leader"),
        }
    }

    fn follower(role: Role) -> Follower {
        match role {
            Role::Follower(follower) => follower,
            Role::Leader(_) => panic!("expected a follower"),
        }
    }

    #[tokio::test]
    async fn one_leader_per_key_and_followers_see_how_it_settled() {
        let collapser = Collapser::new();
        let first = leader(collapser.join(&key("/a")));
        let _other = leader(collapser.join(&key("/b")));
        let waiting: Vec<_> = (0..3).map(|_| follower(collapser.join(&key("/a")))).collect();
        assert_eq!(first.followers(), 3);
        assert_eq!(collapser.in_flight(), 2);
        let tasks: Vec<_> = waiting
            .into_iter()
            .map(|follower| tokio::spawn(follower.wait(Duration::from_secs(5))))
            .collect();
        first.settle(Settled::NotShared);
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Some(Settled::NotShared)));
        }
        // Settled: the next request leads again.
        assert_eq!(collapser.in_flight(), 1);
        let _again = leader(collapser.join(&key("/a")));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let collapser = Collapser::new();
        let first = leader(collapser.join(&key("/a")));
        let waiting = follower(collapser.join(&key("/a")));
        drop(first);
        assert!(matches!(waiting.wait(Duration::from_secs(5)).await, Some(Settled::Failed)));
        assert_eq!(collapser.in_flight(), 0);
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let collapser = Collapser::new();
        let _first = leader(collapser.join(&key("/a")));
        let waiting = follower(collapser.join(&key("/a")));
        assert!(waiting.wait(Duration::from_millis(20)).await.is_none());
    }

    #[tokio::test]
    async fn a_follower_joining_after_settling_sees_the_outcome_immediately() {
        let collapser = Collapser::new();
        let first = leader(collapser.join(&key("/a")));
        let waiting = follower(collapser.join(&key("/a")));
        first.settle(Settled::Failed);
        assert!(matches!(waiting.wait(Duration::from_millis(1)).await, Some(Settled::Failed)));
    }
}
