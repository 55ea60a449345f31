//! What the shared counters count and how they are asked: windows ([`Window`]) on the wall
//! clock ([`UnixTime`]), admission checks and charges, and the [`Counters`] trait every store
//! implements.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Redis failed a moment ago; it is tried again once the retry interval has passed.
    #[error("shared state at {address} is unreachable; it is tried again shortly")]
    Resting {
        /// The server (without credentials).
        address: String,
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
}
