//! The recent past of every route's traffic, for the status page's charts: one [`Sample`] a
//! second per route (requests, 5xx answers, p50 and p99 latency of that second), in a ring
//! that keeps `[admin] history` worth, and figures over about the last minute.
//!
//! Memory is bounded: a route keeps at most `history / SAMPLE_INTERVAL` samples of 24 bytes
//! and a handful of cumulative snapshots (under 1 KiB each) for the minute figures; a route
//! that has been idle for the whole window drops its samples and keeps one snapshot.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::observe::traffic::{RouteName, TallySnapshot, Traffic};

/// How often a sample is taken.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The span of the "recent" figures: requests and errors per second, p50 and p99.
pub const RECENT_WINDOW: Duration = Duration::from_secs(60);

/// Samples between two cumulative snapshots kept for the recent figures, which therefore
/// cover between [`RECENT_WINDOW`] and that plus this many samples.
const CHECKPOINT_EVERY: u64 = 10;

/// One route's traffic during one sample interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Requests that finished.
    pub requests: u32,
    /// Of those, the ones answered with a 5xx status.
    pub errors: u32,
    /// Median latency, when there were requests.
    pub p50: Option<Duration>,
    /// 99th-percentile latency, when there were requests.
    pub p99: Option<Duration>,
}

impl Sample {
    fn of(interval: &TallySnapshot) -> Sample {
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Sample {
            requests: count(interval.requests()),
            errors: count(interval.errors),
            p50: interval.latency.quantile(0.5),
            p99: interval.latency.quantile(0.99),
        }
    }
}

/// A route's traffic over the recent window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// The span these figures cover: [`RECENT_WINDOW`] to some seconds more, less just after
    /// start.
    pub window: Duration,
    /// Requests that finished in it.
    pub requests: u64,
    /// Of those, the ones answered with a 5xx status.
    pub errors: u64,
    /// Median latency, when there were requests.
    pub p50: Option<Duration>,
    /// 99th-percentile latency, when there were requests.
    pub p99: Option<Duration>,
}

/// What the status page shows of one route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Oldest first, [`History::len`] of them, the last one taken at [`History::end`].
    pub samples: Vec<Sample>,
    /// The figures over about the last minute.
    pub recent: Recent,
}

/// One route's samples and snapshots.
#[derive(Debug, Default)]
struct RouteHistory {
    /// The cumulative counts at the last sample.
    last: TallySnapshot,
    /// The newest `capacity` samples at most; empty while idle.
    samples: VecDeque<Sample>,
    /// Cumulative counts at earlier samples (by sample number), oldest first.
    checkpoints: VecDeque<(u64, TallySnapshot)>,
    /// Samples in a row with no request.
    idle: usize,
}

/// Every route's recent traffic.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    /// Samples taken so far.
    taken: u64,
    end: Option<SystemTime>,
    routes: HashMap<RouteName, RouteHistory>,
}

impl History {
    /// An empty history keeping `window` worth of samples (at least one).
    pub fn new(window: Duration) -> History {
        let capacity = (window.as_millis() / SAMPLE_INTERVAL.as_millis()).max(1);
        History {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            taken: 0,
            end: None,
            routes: HashMap::new(),
        }
    }

    /// How many samples each series has: those taken so far, up to the capacity.
    pub fn len(&self) -> usize {
        usize::try_from(self.taken).unwrap_or(usize::MAX).min(self.capacity)
    }

    /// How far back a full history reaches.
    pub fn capacity_span(&self) -> Duration {
        SAMPLE_INTERVAL * u32::try_from(self.capacity).unwrap_or(u32::MAX)
    }

    /// Whether no sample was taken yet.
    pub fn is_empty(&self) -> bool {
        self.taken == 0
    }

    /// When the newest sample was taken.
    pub fn end(&self) -> Option<SystemTime> {
        self.end
    }

    /// Takes one sample of every route's tally, at `now`.
    pub fn sample(&mut self, traffic: &Traffic, now: SystemTime) {
        self.taken += 1;
        self.end = Some(now);
        let (taken, capacity) = (self.taken, self.capacity);
        let window = RECENT_WINDOW.as_millis() / SAMPLE_INTERVAL.as_millis();
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        for (route, tally) in traffic.all() {
            let history = self.routes.entry(route).or_default();
            let current = tally.snapshot();
            let interval = current.since(&history.last);
            let quiet = interval.requests() == 0;
            if quiet && history.samples.is_empty() {
                // Idle: nothing to keep beyond the last counts.
                history.last = current;
                continue;
            }
            if history.samples.is_empty() {
                // (Re)starting: the recent figures count from the sample before this one.
                history.checkpoints.push_back((taken - 1, history.last.clone()));
            }
            history.samples.push_back(Sample::of(&interval));
            while history.samples.len() > capacity {
                history.samples.pop_front();
            }
            history.idle = if quiet { history.idle + 1 } else { 0 };
            if taken.is_multiple_of(CHECKPOINT_EVERY) {
                history.checkpoints.push_back((taken, current.clone()));
            }
            // Keep the newest checkpoint at least a window old, and none older.
            while history.checkpoints.get(1).is_some_and(|(at, _)| taken - at >= window) {
                history.checkpoints.pop_front();
            }
            history.last = current;
            if history.idle >= capacity.max(usize::try_from(window).unwrap_or(usize::MAX)) {
                history.samples = VecDeque::new();
                history.checkpoints = VecDeque::new();
                history.idle = 0;
            }
        }
    }

    /// The samples and recent figures of `route`; zeros for a route without traffic.
    pub fn series(&self, route: &RouteName) -> Series {
        let len = self.len();
        let window = RECENT_WINDOW.as_millis() / SAMPLE_INTERVAL.as_millis();
        let quiet = Recent {
            window: SAMPLE_INTERVAL
                * u32::try_from(u128::from(self.taken).min(window)).unwrap_or(u32::MAX),
            ..Recent::default()
        };
        let Some(history) = self.routes.get(route) else {
            return Series { samples: vec![Sample::default(); len], recent: quiet };
        };
        let mut samples = vec![Sample::default(); len.saturating_sub(history.samples.len())];
        samples.extend(history.samples.iter().rev().take(len).rev());
        let recent = match history.checkpoints.front() {
            Some((at, base)) => {
                let interval = history.last.since(base);
                let samples = u32::try_from(self.taken - at).unwrap_or(u32::MAX);
                Recent {
                    window: SAMPLE_INTERVAL * samples,
                    requests: interval.requests(),
                    errors: interval.errors,
                    p50: interval.latency.quantile(0.5),
                    p99: interval.latency.quantile(0.99),
                }
            }
            None => quiet,
        };
        Series { samples, recent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn route(name: &str) -> RouteName {
        Some(Arc::from(name))
    }

    /// Records `n` requests of `millis` each, `errors` of them 502.
    fn traffic(traffic: &Traffic, name: &str, n: u32, errors: u32, millis: u64) {
        let tally = traffic.tally(&route(name));
        for i in 0..n {
            tally.record(if i < errors { 502 } else { 200 }, Duration::from_millis(millis));
        }
    }

    fn at(second: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(second)
    }

    #[test]
    fn each_sample_holds_its_own_interval_and_series_share_one_timeline() {
        let live = Traffic::default();
        let mut history = History::new(Duration::from_secs(5));
        assert!(history.is_empty());
        traffic(&live, "api", 10, 1, 2);
        history.sample(&live, at(1));
        history.sample(&live, at(2));
        traffic(&live, "api", 4, 0, 40);
        traffic(&live, "web", 3, 3, 1);
        history.sample(&live, at(3));
        assert_eq!((history.len(), history.end()), (3, Some(at(3))));

        let api = history.series(&route("api"));
        let counts: Vec<_> = api.samples.iter().map(|s| (s.requests, s.errors)).collect();
        assert_eq!(counts, [(10, 1), (0, 0), (4, 0)]);
        assert_eq!(api.samples[1].p99, None);
        let p50 = api.samples[0].p50.unwrap();
        assert!(p50 > Duration::from_micros(1_700) && p50 < Duration::from_micros(2_300));
        let p99 = api.samples[2].p99.unwrap();
        assert!(p99 > Duration::from_millis(35) && p99 < Duration::from_millis(50));
        assert_eq!(api.recent.requests, 14);
        assert_eq!(api.recent.errors, 1);
        assert_eq!(api.recent.window, Duration::from_secs(3));

        // A route that started later is padded at the front; one never seen is all zeros.
        let web = history.series(&route("web"));
        let counts: Vec<_> = web.samples.iter().map(|s| (s.requests, s.errors)).collect();
        assert_eq!(counts, [(0, 0), (0, 0), (3, 3)]);
        assert_eq!(web.recent.window, Duration::from_secs(1));
        let none = history.series(&route("none"));
        assert_eq!(none.samples, vec![Sample::default(); 3]);
        let quiet = Recent { window: Duration::from_secs(3), ..Recent::default() };
        assert_eq!(none.recent, quiet);
    }

    #[test]
    fn the_ring_keeps_its_capacity_and_recent_covers_about_a_minute() {
        let live = Traffic::default();
        let mut history = History::new(Duration::from_secs(5));
        for second in 1..=100 {
            traffic(&live, "api", u32::try_from(second).unwrap(), 0, 1);
            history.sample(&live, at(second));
        }
        let api = history.series(&route("api"));
        let counts: Vec<_> = api.samples.iter().map(|s| s.requests).collect();
        assert_eq!(counts, [96, 97, 98, 99, 100]);
        let window = api.recent.window.as_secs();
        assert!((60..70).contains(&window), "{window}");
        // Requests in the last `window` seconds: the sum of the last `window` second numbers.
        let expected: u64 = (101 - window..=100).sum();
        assert_eq!(api.recent.requests, expected);
    }

    #[test]
    fn an_idle_route_drops_its_samples_and_counts_afresh_when_traffic_returns() {
        let live = Traffic::default();
        let mut history = History::new(Duration::from_secs(3));
        traffic(&live, "api", 5, 0, 1);
        for second in 1..=100 {
            history.sample(&live, at(second));
        }
        assert!(history.routes[&route("api")].samples.is_empty());
        let quiet = Recent { window: RECENT_WINDOW, ..Recent::default() };
        assert_eq!(history.series(&route("api")).recent, quiet);
        traffic(&live, "api", 2, 1, 1);
        history.sample(&live, at(101));
        let api = history.series(&route("api"));
        let counts: Vec<_> = api.samples.iter().map(|s| (s.requests, s.errors)).collect();
        assert_eq!(counts, [(0, 0), (0, 0), (2, 1)]);
        assert_eq!((api.recent.requests, api.recent.errors), (2, 1));
        assert_eq!(api.recent.window, Duration::from_secs(1));
    }
}
