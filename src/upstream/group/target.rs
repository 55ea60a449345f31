//! One target's shared state: what every request, the outlier detector and the health checker
//! read and write, all in atomics so the request path takes no lock.
//!
//! The state lives in an `Arc` of its own, apart from the configuration generation, so a
//! reload hands it to the new generation for a target that did not change
//! (`super::Group::new` with the previous group).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Moment;
use super::balance::Latency;
use super::health::Active;
use super::outlier::Passive;

/// Per-target caps (circuit breaking): beyond them the target is skipped for new attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Requests in flight to the target at once.
    pub max_in_flight: u32,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps { max_in_flight: crate::config::group::DEFAULT_MAX_IN_FLIGHT }
    }
}

/// Everything sluice knows about one target at run time.
#[derive(Debug)]
pub struct TargetState {
    /// Requests sent and not yet finished (response body ended or dropped).
    in_flight: AtomicU32,
    /// Passive health: consecutive failures, ejection and cooling.
    pub passive: Passive,
    /// Active health: the checker's verdict and its streak.
    pub active: Active,
    /// Latency estimate for `peak_ewma`.
    pub latency: Latency,
    /// Attempts sent to the target (first tries and retries).
    pub attempts: AtomicU64,
    /// Attempts that failed (connect error, timeout, 5xx).
    pub failures: AtomicU64,
    /// Retries sent to the target after another attempt failed.
    pub retries: AtomicU64,
}

/// What a new target's latency estimate starts at: a guess between a LAN and a far-away API,
/// replaced by the first real response (a slower one at once, see `balance::peak_ewma`).
pub const INITIAL_LATENCY: Duration = Duration::from_millis(50);

impl TargetState {
    /// The state of a target nothing is known about yet: healthy, nothing in flight.
    pub fn new() -> Arc<TargetState> {
        Arc::new(TargetState {
            in_flight: AtomicU32::new(0),
            passive: Passive::default(),
            active: Active::default(),
            latency: Latency::new(INITIAL_LATENCY),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// Whether the target may take requests at `now` as far as health goes: the active
    /// checker has not marked it down, and it is neither ejected nor cooling.
    pub fn healthy(&self, now: Moment) -> bool {
        self.active.is_healthy() && self.passive.available(now)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether another request fits under `caps`.
    pub fn has_room(&self, caps: &Caps) -> bool {
        self.in_flight() < caps.max_in_flight
    }

    /// Takes one in-flight slot under `caps.max_in_flight`; `None` when the target is full
    /// (another request took the last slot since the target was picked).
    pub fn enter(self: &Arc<TargetState>, caps: &Caps) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |now| {
                (now < caps.max_in_flight).then_some(now + 1)
            })
            .ok()?;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        Some(InFlight { state: self.clone() })
    }
}

/// One request in flight to a target; the slot is given back when this is dropped, which the
/// request path does when the response body has ended (or the attempt failed).
#[derive(Debug)]
pub struct InFlight {
    state: Arc<TargetState>,
}

impl InFlight {
    /// The target's state.
    pub fn state(&self) -> &Arc<TargetState> {
        &self.state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The metric handles of one target, looked up in their families the first time they are
/// written (by `observe::upstream`) and kept here, so an attempt does not hash its labels.
#[derive(Debug)]
pub struct TargetSeries {
    /// The route's name, the `route` label.
    pub route: Arc<str>,
    /// The target's name, the `target` label.
    pub target: Arc<str>,
    /// Attempts sent to the target.
    pub attempts: OnceLock<Counter>,
    /// Time to the response head.
    pub response: OnceLock<Histogram>,
    /// Retries sent to the target.
    pub retries: OnceLock<Counter>,
}

impl TargetSeries {
    /// Empty handles for `target` on `route`.
    pub fn new(route: Arc<str>, target: Arc<str>) -> TargetSeries {
        TargetSeries {
            route,
            target,
            attempts: OnceLock::new(),
            response: OnceLock::new(),
            retries: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_capped_and_given_back() {
        let state = TargetState::new();
        let caps = Caps { max_in_flight: 2 };
        let a = state.enter(&caps).unwrap();
        let b = state.enter(&caps).unwrap();
        assert!(!state.has_room(&caps));
        assert!(state.enter(&caps).is_none());
        drop(a);
        assert_eq!(state.in_flight(), 1);
        assert!(state.has_room(&caps));
        drop(b);
        assert_eq!(state.in_flight(), 0);
        assert_eq!(state.attempts.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_new_target_is_healthy() {
        let state = TargetState::new();
        assert!(state.healthy(Moment::from_nanos(0)));
        assert!(state.healthy(Moment::from_nanos(u64::MAX)));
    }
}
