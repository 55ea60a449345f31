//! Per-route request tallies for the status page: how many requests finished, how many of
//! them with a 5xx status, and their latencies, as cumulative counters that
//! [`super::history::History`] samples once a second.
//!
//! Only request/response exchanges are tallied (forward and reverse); a tunnel's or WebSocket
//! session's duration is how long it stayed open, which is not a latency, and open sessions
//! are shown by their own gauges. Like the metric families, a tally exists per route name
//! that has seen traffic, for the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::observe::latency::{LatencyCounts, LatencyHistogram};

/// A route's name, `None` for forward-proxy traffic (the `route` metric label's value).
pub type RouteName = Option<Arc<str>>;

/// The cumulative counts of one route (or of the forward proxy: the empty route label).
#[derive(Debug, Default)]
pub struct RouteTally {
    errors: AtomicU64,
    latency: LatencyHistogram,
}

impl RouteTally {
    /// Counts one finished request with its status and duration.
    pub fn record(&self, status: u16, duration: Duration) {
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(duration);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> TallySnapshot {
        // The two are read separately, so a request finishing in between may be in one and
        // not the other until the next snapshot; `since` keeps errors ≤ requests.
        let latency = self.latency.snapshot();
        TallySnapshot { errors: self.errors.load(Ordering::Relaxed), latency }
    }
}

/// A route's counts at one moment, or over an interval (the difference of two).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallySnapshot {
    /// Requests answered with a 5xx status.
    pub errors: u64,
    /// Every request's duration, by bucket; their total is the number of requests.
    pub latency: LatencyCounts,
}

impl TallySnapshot {
    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.latency.total()
    }

    /// What was counted after `earlier`, a snapshot of the same tally; errors never exceed
    /// requests.
    pub fn since(&self, earlier: &TallySnapshot) -> TallySnapshot {
        let latency = self.latency.since(&earlier.latency);
        let errors = self.errors.saturating_sub(earlier.errors).min(latency.total());
        TallySnapshot { errors, latency }
    }
}

/// Every route's tally, created on a route's first request.
#[derive(Debug, Default)]
pub struct Traffic {
    routes: RwLock<HashMap<RouteName, Arc<RouteTally>>>,
}

impl Traffic {
    /// The tally of `route`, created if it has none yet. Routes keep the returned handle, so
    /// the map is consulted once per route, not per request.
    pub fn tally(&self, route: &RouteName) -> Arc<RouteTally> {
        let known = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(route).cloned();
        if let Some(tally) = known {
            return tally;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.entry(route.clone()).or_default().clone()
    }

    /// Every tally, for sampling.
    pub fn all(&self) -> Vec<(RouteName, Arc<RouteTally>)> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.iter().map(|(route, tally)| (route.clone(), tally.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_has_one_tally_counting_requests_and_5xx() {
        let traffic = Traffic::default();
        let api: RouteName = Some(Arc::from("api"));
        let first = traffic.tally(&api);
        for status in [200, 404, 500, 502, 101] {
            first.record(status, Duration::from_millis(1));
        }
        let before = traffic.tally(&api).snapshot();
        assert_eq!((before.requests(), before.errors), (5, 2));
        traffic.tally(&api).record(503, Duration::from_millis(1));
        traffic.tally(&None).record(200, Duration::from_millis(1));
        let interval = first.snapshot().since(&before);
        assert_eq!((interval.requests(), interval.errors), (1, 1));
        assert_eq!(traffic.all().len(), 2);
    }

    #[test]
    fn an_interval_never_has_more_errors_than_requests() {
        let earlier = TallySnapshot::default();
        let later = TallySnapshot { errors: 3, latency: LatencyCounts::default() };
        assert_eq!(later.since(&earlier).errors, 0);
    }
}
