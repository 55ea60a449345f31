//! The retry budget: retries may be at most a share of the requests of the last few seconds,
//! plus a small floor, so that a backend that fails everything gets at most that much extra
//! load from retries instead of `max_attempts` times its traffic (linkerd's and Finagle's
//! retry budgets).
//!
//! Counted in a ring of one-second buckets of atomics: recording a request or a retry is one
//! atomic add (and, once a second, resetting a stale bucket); deciding on a retry sums the
//! ring. Two retries decided at the same moment may both pass at the very edge of the
//! budget: it bounds load, it is not an exact count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Moment;
use crate::config::retry::BudgetSettings;

/// How far back the budget looks: the ring's buckets times their span.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Buckets in the ring.
const BUCKETS: usize = 10;

/// Whether one more retry fits: `retries + 1` at most `percent` of `requests` plus `floor`.
pub fn allows(requests: u64, retries: u64, percent: u32, floor: u64) -> bool {
    let allowed = u128::from(requests) * u128::from(percent) + u128::from(floor) * 100;
    (u128::from(retries) + 1) * 100 <= allowed
}

/// One second's counts.
#[derive(Debug, Default)]
struct Bucket {
    /// Which second (since the clock's epoch) the counts belong to.
    tick: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// A route's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    settings: BudgetSettings,
    buckets: [Bucket; BUCKETS],
    /// Retries refused because the budget was spent (for the metrics).
    exhausted: AtomicU64,
}

impl RetryBudget {
    /// An empty budget with `settings`.
    pub fn new(settings: BudgetSettings) -> RetryBudget {
        RetryBudget { settings, buckets: Default::default(), exhausted: AtomicU64::new(0) }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// Counts one request (not its retries) at `now`.
    pub fn record_request(&self, now: Moment) {
        if let Some(bucket) = self.current(now) {
            bucket.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget at `now`; false (and counted as exhausted) when the
    /// budget is spent.
    pub fn try_retry(&self, now: Moment) -> bool {
        let (requests, retries) = self.totals(now);
        let floor = u64::from(self.settings.min_per_second) * WINDOW.as_secs();
        if !allows(requests, retries, self.settings.percent, floor) {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(bucket) = self.current(now) {
            bucket.retries.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Retries refused for want of budget, since the budget was made.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Requests and retries counted in the window that ends at `now`.
    pub fn totals(&self, now: Moment) -> (u64, u64) {
        let tick = tick_of(now);
        self.buckets
            .iter()
            .filter(|bucket| {
                let seen = bucket.tick.load(Ordering::Acquire);
                seen <= tick && tick - seen < BUCKETS as u64
            })
            .fold((0, 0), |(requests, retries), bucket| {
                (
                    requests + bucket.requests.load(Ordering::Relaxed),
                    retries + bucket.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// The bucket of `now`'s second, emptied first if it still holds an older second (always
    /// there: the index is taken modulo the ring's length).
    fn current(&self, now: Moment) -> Option<&Bucket> {
        let tick = tick_of(now);
        let bucket = self.buckets.get(usize::try_from(tick % BUCKETS as u64).ok()?)?;
        let seen = bucket.tick.load(Ordering::Acquire);
        if seen != tick
            && bucket.tick.compare_exchange(seen, tick, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // Counts added between the exchange and these stores are lost: a second's
            // first few events, in an estimate.
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        Some(bucket)
    }
}

/// Which second `now` falls in.
fn tick_of(now: Moment) -> u64 {
    now.as_nanos() / (WINDOW.as_nanos() as u64 / BUCKETS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn allows_table() {
        for (requests, retries, percent, floor, expected) in [
            (0, 0, 20, 0, false),
            (0, 0, 20, 1, true),
            (0, 1, 20, 1, false),
            (100, 19, 20, 0, true),
            (100, 20, 20, 0, false),
            (100, 29, 20, 10, true),
            (100, 30, 20, 10, false),
            (10, 9, 100, 0, true),
            (10, 10, 100, 0, false),
            (u64::MAX, u64::MAX - 1, 100, 0, true),
        ] {
            assert_eq!(
                allows(requests, retries, percent, floor),
                expected,
                "{requests} requests, {retries} retries, {percent}% + {floor}"
            );
        }
    }

    #[test]
    fn retries_are_capped_at_a_share_of_recent_requests_plus_a_floor() {
        let budget = RetryBudget::new(BudgetSettings { percent: 20, min_per_second: 2 });
        // 1,000 requests over 10 s, every one failing and asking for two retries.
        let mut granted = 0u64;
        for i in 0..1000u64 {
            let now = Moment::from_nanos(i * 10 * MS);
            budget.record_request(now);
            for _ in 0..2 {
                if budget.try_retry(now) {
                    granted += 1;
                }
            }
        }
        // 20 % of 1,000 plus 2 per second over the 10 s window.
        let bound = 200 + 20;
        assert!(granted <= bound, "{granted} retries granted, bound {bound}");
        assert!(granted >= bound - 5, "{granted} retries granted, nearly {bound} expected");
        assert_eq!(budget.exhausted(), 2000 - granted);
    }

    #[test]
    fn the_floor_lets_a_quiet_route_retry() {
        let budget = RetryBudget::new(BudgetSettings { percent: 20, min_per_second: 1 });
        let now = Moment::from_nanos(5_000 * MS);
        budget.record_request(now);
        let granted = (0..100).filter(|_| budget.try_retry(now)).count();
        assert_eq!(granted, 10);
        let none = RetryBudget::new(BudgetSettings { percent: 20, min_per_second: 0 });
        none.record_request(now);
        assert!(!none.try_retry(now));
    }

    #[test]
    fn old_requests_leave_the_window() {
        let budget = RetryBudget::new(BudgetSettings { percent: 100, min_per_second: 0 });
        let start = Moment::from_nanos(1_000 * MS);
        for _ in 0..50 {
            budget.record_request(start);
        }
        assert_eq!(budget.totals(start), (50, 0));
        assert!(budget.try_retry(start.plus(Duration::from_secs(9))));
        assert_eq!(budget.totals(start.plus(Duration::from_secs(9))), (50, 1));
        // Eleven seconds later, the first second's requests have left the window...
        let later = start.plus(Duration::from_secs(11));
        assert_eq!(budget.totals(later).0, 0);
        assert!(!budget.try_retry(later));
        // ...and a bucket reused for a new second starts empty.
        budget.record_request(later);
        assert_eq!(budget.totals(later), (1, 1));
    }
}
