//! Shared counters behind one trait, [`Counters`]: request and token budgets counted in
//! fixed windows, and cooldowns (a provider key resting after a 429). In memory by default
//! ([`memory::MemoryCounters`]: one instance, nothing to install); in Redis when configured
//! ([`redis::RedisCounters`]), so that every sluice instance behind a load balancer enforces
//! one budget. [`SharedState`] is what the gateway holds: the configured store, and what to
//! do when Redis cannot be reached ([`FailMode`]).
//!
//! **Windows are fixed and aligned to the Unix epoch** (a minute window is
//! `floor(unix_seconds / 60)`, a day window a UTC day). Every instance derives the same
//! window from its clock without coordination, one counter per window is one Redis key with
//! one `INCRBY`, and the `Retry-After` of a refusal is exact: the end of the window. The
//! price is the known weakness of fixed windows: a client can spend a budget at the end of one
//! window and again at the start of the next. A sliding window would need a second key read
//! per check; budgets of AI gateways are commonly stated per minute and per (UTC) day, which
//! is what this counts.

pub mod counter;
pub mod memory;
pub mod redis;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

pub use crate::state::counter::{Admission, Charge, Check, Counters, StateError, UnixTime, Window};
use crate::state::memory::MemoryCounters;
use crate::state::redis::RedisCounters;

/// What to do when the shared store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Keep serving, counting in this instance's memory until Redis is back: budgets are then
    /// enforced per instance rather than across all of them.
    #[default]
    Open,
    /// Refuse requests that need a budget check (503) until Redis is back.
    Closed,
}

impl FailMode {
    /// The mode named in a config file: `open` or `closed`.
    pub fn parse(text: &str) -> Option<FailMode> {
        match text {
            "open" => Some(FailMode::Open),
            "closed" => Some(FailMode::Closed),
            _ => None,
        }
    }

    /// The name as written in a config file.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// The metric handles of the shared store: failed operations, and whether it is currently
/// unreachable (so counting is local, or refusing).
#[derive(Debug, Clone, Default)]
pub struct StateMetrics {
    /// Operations on the shared store that failed or timed out.
    pub errors: Counter,
    /// 1 while the shared store is unreachable, else 0.
    pub degraded: Gauge<i64, AtomicI64>,
}

/// Where counters live.
#[derive(Debug)]
enum Store {
    Memory,
    Redis(RedisCounters),
}

/// The counters the gateway uses: in memory, or in Redis with local counters to fall back
/// on; Redis failing is logged once when it starts and once when it ends, and counted.
///
/// After a failure Redis is left alone for the retry interval: requests meanwhile go straight
/// to the fallback (local counters, or a refusal), so an outage costs each request nothing
/// rather than a timeout.
#[derive(Debug)]
pub struct SharedState {
    store: Store,
    local: MemoryCounters,
    fail: FailMode,
    metrics: StateMetrics,
    degraded: AtomicBool,
    retry_interval: Duration,
    /// When Redis may be tried again, after a failure.
    resting_until: Mutex<Option<tokio::time::Instant>>,
}

impl SharedState {
    /// Counters in this process's memory.
    pub fn memory() -> SharedState {
        SharedState {
            store: Store::Memory,
            local: MemoryCounters::new(),
            fail: FailMode::Open,
            metrics: StateMetrics::default(),
            degraded: AtomicBool::new(false),
            retry_interval: Duration::ZERO,
            resting_until: Mutex::new(None),
        }
    }

    /// Counters in Redis, behaving as `fail` says while it cannot be reached, and trying it
    /// again `retry_interval` after a failure.
    pub fn redis(
        redis: RedisCounters,
        fail: FailMode,
        retry_interval: Duration,
        metrics: StateMetrics,
    ) -> SharedState {
        SharedState {
            store: Store::Redis(redis),
            local: MemoryCounters::new(),
            fail,
            metrics,
            degraded: AtomicBool::new(false),
            retry_interval,
            resting_until: Mutex::new(None),
        }
    }

    /// Which store this is, for logs and `sluice check`.
    pub fn describe(&self) -> String {
        match &self.store {
            Store::Memory => "memory".to_owned(),
            Store::Redis(redis) => {
                format!("redis {} (fail {})", redis.address(), self.fail.as_str())
            }
        }
    }

    /// Adds `charges` at once when the counters are in this process's memory (so the next
    /// request already sees them); returns false, adding nothing, when they are in Redis.
    pub fn charge_in_memory(&self, charges: &[Charge<'_>], now: UnixTime) -> bool {
        match self.store {
            Store::Memory => {
                self.local.charge_now(charges, now);
                true
            }
            Store::Redis(_) => false,
        }
    }

    /// Whether the counters are shared with other instances (kept in Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Redis(_))
    }

    /// Whether the shared store is currently unreachable.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Records the outcome of a Redis operation: a failure when it starts and the recovery
    /// are logged once each, every failure is counted.
    fn observe<T>(&self, result: &Result<T, StateError>) {
        match result {
            Ok(_) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    self.metrics.degraded.set(0);
                    tracing::warn!(store = %self.describe(), "shared state reachable again");
                }
            }
            Err(err) => {
                self.metrics.errors.inc();
                let until = tokio::time::Instant::now() + self.retry_interval;
                *self.resting_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    self.metrics.degraded.set(1);
                    let fallback = match self.fail {
                        FailMode::Open => "counting in local memory until it is back",
                        FailMode::Closed => "refusing budgeted requests until it is back",
                    };
                    tracing::error!(
                        error = %describe(err),
                        "shared state unreachable: {fallback}"
                    );
                }
            }
        }
    }

    /// Whether Redis failed less than the retry interval ago.
    fn resting(&self) -> bool {
        if !self.degraded.load(Ordering::Relaxed) {
            return false;
        }
        let until = *self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// Runs `remote` on Redis, or `local` in memory: when there is no Redis, and when Redis
    /// failed and the mode is fail-open.
    async fn run<T, R, L>(&self, remote: R, local: L) -> Result<T, StateError>
    where
        R: AsyncFnOnce(&RedisCounters) -> Result<T, StateError>,
        L: AsyncFnOnce(&MemoryCounters) -> Result<T, StateError>,
    {
        let Store::Redis(redis) = &self.store else { return local(&self.local).await };
        let result = if self.resting() {
            Err(StateError::Resting { address: redis.address().to_owned() })
        } else {
            let result = remote(redis).await;
            self.observe(&result);
            result
        };
        match (result, self.fail) {
            (Err(_), FailMode::Open) => local(&self.local).await,
            (result, _) => result,
        }
    }
}

/// An error and its causes on one line.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

impl Counters for SharedState {
    async fn admit(&self, checks: &[Check<'_>], now: UnixTime) -> Result<Admission, StateError> {
        self.run(async |r| r.admit(checks, now).await, async |l| l.admit(checks, now).await).await
    }

    async fn charge(&self, charges: &[Charge<'_>], now: UnixTime) -> Result<(), StateError> {
        self.run(async |r| r.charge(charges, now).await, async |l| l.charge(charges, now).await)
            .await
    }

    async fn cool(&self, name: &str, period: Duration, now: UnixTime) -> Result<(), StateError> {
        // Cooldowns are kept locally as well, so a key cooled here stays cooled through an
        // outage of the shared store.
        let _ = self.local.cool(name, period, now).await;
        self.run(async |r| r.cool(name, period, now).await, async |_| Ok(())).await
    }

    async fn cooling(
        &self,
        names: &[&str],
        now: UnixTime,
    ) -> Result<Vec<Option<Duration>>, StateError> {
        self.run(async |r| r.cooling(names, now).await, async |l| l.cooling(names, now).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_modes_round_trip() {
        for mode in [FailMode::Open, FailMode::Closed] {
            assert_eq!(FailMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(FailMode::parse("maybe"), None);
    }
}
