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

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::state::memory::MemoryCounters;
use crate::state::redis::RedisCounters;

/// The length of a counting window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// 60 seconds, starting on the minute.
    Minute,
    /// 86,400 seconds, starting at midnight UTC.
    Day,
}

impl Window {
    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Day => 86_400,
        }
    }

    /// Name for keys, logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
        }
    }

    /// The number of the window `now` falls in.
    pub fn index(self, now: UnixTime) -> u64 {
        now.0 / 1000 / self.seconds()
    }

    /// The time left until the window `now` falls in ends.
    pub fn remaining(self, now: UnixTime) -> Duration {
        let length = self.seconds() * 1000;
        Duration::from_millis(length - now.0 % length)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch: windows must mean the same thing to
/// every instance sharing a counter, so they follow the wall clock, not a monotonic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The current time.
    pub fn now() -> UnixTime {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        UnixTime(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// This time plus `duration`.
    pub fn after(self, duration: Duration) -> UnixTime {
        UnixTime(self.0.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
    }
}

/// One budget to check on admission: the counter `name` in its current `window` may grow by
/// `cost` as long as it stays within `limit`.
///
/// A check with `cost` 0 (a token budget, charged only once the response reports its usage)
/// passes while the counter is below `limit`, i.e. as if it cost one: a budget that is spent
/// refuses the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// The counter's name (a virtual key's or route's budget).
    pub name: &'a str,
    /// Its window.
    pub window: Window,
    /// What admission adds to it.
    pub cost: u64,
    /// The most it may hold.
    pub limit: u64,
}

impl Check<'_> {
    /// Whether a counter at `current` lets this check pass.
    pub fn passes(&self, current: u64) -> bool {
        current.checked_add(self.cost.max(1)).is_some_and(|total| total <= self.limit)
    }
}

/// An amount to add to a counter without a check: tokens a response reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'a> {
    /// The counter's name.
    pub name: &'a str,
    /// Its window.
    pub window: Window,
    /// What to add.
    pub amount: u64,
}

/// The outcome of [`Counters::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Every check passed and every cost was added.
    Admitted,
    /// The check at this index failed; nothing was added. The budget renews in `retry_after`.
    Refused {
        /// Index of the failed check in the slice given.
        check: usize,
        /// Until the failed check's window ends.
        retry_after: Duration,
    },
}

/// The shared store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis did not answer in time.
    #[error("shared state at {address} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The server (without credentials).
        address: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("shared state at {address} failed")]
    Redis {
        /// The server (without credentials).
        address: String,
        /// What Redis or the connection said.
        #[source]
        source: ::redis::RedisError,
    },
    /// The configured Redis URL is not usable.
    #[error("shared state: `{address}` is not a usable Redis URL")]
    Url {
        /// The server (without credentials).
        address: String,
        /// Why.
        #[source]
        source: ::redis::RedisError,
    },
}

/// The shared counters' operations. Every operation on several counters is atomic: all of
/// a request's budgets are checked and charged together, so concurrent requests (on one
/// instance or many) never both take the last unit of a budget.
pub trait Counters: Send + Sync {
    /// Checks every budget in `checks` at `now` and, only if all pass, adds their costs.
    fn admit(
        &self,
        checks: &[Check<'_>],
        now: UnixTime,
    ) -> impl Future<Output = Result<Admission, StateError>> + Send;

    /// Adds `charges` to their counters in the windows of `now`.
    fn charge(
        &self,
        charges: &[Charge<'_>],
        now: UnixTime,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Marks `name` as cooling down for `period` from `now` (a later call replaces it).
    fn cool(
        &self,
        name: &str,
        period: Duration,
        now: UnixTime,
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// For each of `names`, how long it still cools down, if it does.
    fn cooling(
        &self,
        names: &[&str],
        now: UnixTime,
    ) -> impl Future<Output = Result<Vec<Option<Duration>>, StateError>> + Send;
}

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
#[derive(Debug)]
pub struct SharedState {
    store: Store,
    local: MemoryCounters,
    fail: FailMode,
    metrics: StateMetrics,
    degraded: AtomicBool,
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
        }
    }

    /// Counters in Redis, behaving as `fail` says while it cannot be reached.
    pub fn redis(redis: RedisCounters, fail: FailMode, metrics: StateMetrics) -> SharedState {
        SharedState {
            store: Store::Redis(redis),
            local: MemoryCounters::new(),
            fail,
            metrics,
            degraded: AtomicBool::new(false),
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

    /// Runs `remote` on Redis, or `local` in memory: when there is no Redis, and when Redis
    /// failed and the mode is fail-open.
    async fn run<T, R, L>(&self, remote: R, local: L) -> Result<T, StateError>
    where
        R: AsyncFnOnce(&RedisCounters) -> Result<T, StateError>,
        L: AsyncFnOnce(&MemoryCounters) -> Result<T, StateError>,
    {
        let Store::Redis(redis) = &self.store else { return local(&self.local).await };
        let result = remote(redis).await;
        self.observe(&result);
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
    fn windows_are_aligned_to_the_epoch() {
        let t = UnixTime(1_700_000_123_456);
        assert_eq!(Window::Minute.index(t), 1_700_000_123 / 60);
        assert_eq!(Window::Minute.remaining(t), Duration::from_millis(60_000 - 23_456));
        assert_eq!(Window::Day.index(t), 1_700_000_123 / 86_400);
        let midnight = UnixTime(19_675 * 86_400_000);
        assert_eq!(Window::Day.remaining(midnight), Duration::from_secs(86_400));
        assert_eq!(Window::Day.index(UnixTime(midnight.0 - 1)) + 1, Window::Day.index(midnight));
    }

    #[test]
    fn checks_pass_within_the_limit_and_free_checks_need_room_for_one() {
        let check = |cost, limit| Check { name: "n", window: Window::Minute, cost, limit };
        let cases = [
            (check(1, 3), 2, true),
            (check(1, 3), 3, false),
            (check(0, 100), 99, true),
            (check(0, 100), 100, false),
            (check(5, 10), 5, true),
            (check(5, 10), 6, false),
            (check(1, 0), 0, false),
            (check(1, u64::MAX), u64::MAX, false),
        ];
        for (check, current, passes) in cases {
            assert_eq!(check.passes(current), passes, "{check:?} at {current}");
        }
    }

    #[test]
    fn fail_modes_round_trip() {
        for mode in [FailMode::Open, FailMode::Closed] {
            assert_eq!(FailMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(FailMode::parse("maybe"), None);
    }
}
