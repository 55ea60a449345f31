//! In-memory token buckets for request rate limits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Buckets kept before idle (full) ones are dropped, bounding memory per limiter.
const MAX_TRACKED_KEYS: usize = 65_536;

/// Longest wait a refusal reports. Validation keeps rates where waits are far shorter; this
/// keeps the float-to-`Duration` conversion, and the `Retry-After` arithmetic after it, total
/// for any rate at all.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `seconds` as a wait, at most [`LONGEST_WAIT`]; `Duration::from_secs_f64` would panic on an
/// infinite or huge value (a tiny rate), or a negative one.
fn wait(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).map_or(LONGEST_WAIT, |wait| wait.min(LONGEST_WAIT))
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key (client address, or one shared key for a route).
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Copy> RateLimiter<K> {
    /// A limiter allowing `limit.rate` requests per second with bursts of `limit.burst`.
    pub fn new(limit: RateLimit) -> RateLimiter<K> {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; when none is left, returns how long until one will be.
    pub fn acquire(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(&key) {
            // Forget clients whose bucket has refilled: they are indistinguishable from new.
            let full_after = burst / self.limit.rate;
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < full_after);
            if buckets.len() >= MAX_TRACKED_KEYS {
                // Still full: every tracked client is active. Refuse newcomers rather than grow.
                return Err(wait(full_after.max(1.0)));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: burst, updated: now });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.limit.rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait((1.0 - bucket.tokens) / self.limit.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let limiter = RateLimiter::new(RateLimit { rate: 2.0, burst: 3 });
        for _ in 0..3 {
            assert!(limiter.acquire(1).is_ok());
        }
        let wait = limiter.acquire(1).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.acquire(2).is_ok(), "keys are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.acquire(1).is_ok());
        assert!(limiter.acquire(1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_tiny_rate_waits_long_instead_of_panicking() {
        // 1 / 1e-20 seconds does not fit in a `Duration`.
        let limiter = RateLimiter::new(RateLimit { rate: 1e-20, burst: 1 });
        assert!(limiter.acquire(1).is_ok());
        assert_eq!(limiter.acquire(1), Err(LONGEST_WAIT));
    }

    #[test]
    fn waits_are_clamped() {
        assert_eq!(wait(0.5), Duration::from_millis(500));
        for bad in [f64::INFINITY, f64::NAN, 1e30, -1.0] {
            assert!(wait(bad) <= LONGEST_WAIT, "{bad}");
        }
    }
}
