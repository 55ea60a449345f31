//! Passive health (outlier detection): a target whose attempts keep failing is ejected for a
//! while, and a target that answered `429` or `503` with `Retry-After` cools until then.
//!
//! Ejection follows Envoy's outlier detection: `consecutive_failures` connect failures,
//! timeouts or 5xx in a row eject the target for `base_ejection` times the number of times it
//! has been ejected in a row (capped at `max_ejection`), and never more than
//! `max_ejected_percent` of a group's targets are ejected at once (at least one may be), so a
//! fault shared by every target cannot empty the group. An ejected target comes back on its
//! own when its time is up; its multiplier falls back to one once it has stayed in service
//! for `max_ejection`.
//!
//! Cooling is the upstream's own word (RFC 9110 §10.2.3, RFC 6585 §4): the target is left
//! alone until the time it named, capped at `max_cooldown`, whatever the share.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};

use super::Moment;
use crate::config::health::OutlierSettings;

/// What one attempt says about its target's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (any status below 500 that does not ask to cool).
    Success,
    /// A connect failure, a timeout, a broken exchange or a 5xx.
    Failure,
    /// It asked to be left alone until then (`429` or `503` with `Retry-After`).
    Cool(Moment),
    /// Nothing learnt (the client went away, or sluice itself refused the request).
    Neutral,
}

impl Verdict {
    /// The verdict on a response with `status` and, if it had one, `retry_after` (already
    /// parsed by [`retry_after`]), received at `now`.
    pub fn of_response(
        status: StatusCode,
        retry_after: Option<Duration>,
        now: Moment,
        settings: &OutlierSettings,
    ) -> Verdict {
        let asks_to_wait =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        match retry_after {
            Some(wait) if asks_to_wait && !wait.is_zero() => {
                Verdict::Cool(now.plus(wait.min(settings.max_cooldown)))
            }
            _ if status.is_server_error() => Verdict::Failure,
            _ => Verdict::Success,
        }
    }
}

/// The delay a `Retry-After` value asks for (RFC 9110 §10.2.3): delta-seconds, or an
/// HTTP-date relative to `now` (a date in the past asks for none). `None` when it is neither.
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time".
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How many of `total` targets may be ejected at once with `percent`: the share rounded
/// down, but at least one unless ejection is off (0 %).
pub fn max_ejected(total: usize, percent: u8) -> usize {
    if percent == 0 || total == 0 {
        return 0;
    }
    (total * usize::from(percent.min(100)) / 100).max(1)
}

/// The length of an ejection that is the `count`-th in a row: `base` times `count`, at most
/// `max`.
pub fn ejection_time(count: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(count.max(1)).min(max)
}

/// Which ejection in a row the next one is, given the previous count and when the previous
/// ejection ended: back to the first once the target has served for `max_ejection` since.
pub fn next_ejection_count(previous: u32, previous_end: Moment, now: Moment, max: Duration) -> u32 {
    if previous == 0 || now.since(previous_end) >= max { 1 } else { previous.saturating_add(1) }
}

/// One target's passive health, in atomics.
#[derive(Debug, Default)]
pub struct Passive {
    /// Failures since the last success or ejection.
    failures: AtomicU32,
    /// Ejections in a row (the multiplier of the next one).
    ejections: AtomicU32,
    /// When the current or last ejection ends, as [`Moment`] nanoseconds (0: never ejected).
    ejected_until: AtomicU64,
    /// When the current or last cooling ends.
    cooling_until: AtomicU64,
    /// Ejections since the process started (for the metrics).
    ejected_total: AtomicU64,
}

impl Passive {
    /// Neither ejected nor cooling at `now`.
    pub fn available(&self, now: Moment) -> bool {
        let until = self
            .ejected_until
            .load(Ordering::Relaxed)
            .max(self.cooling_until.load(Ordering::Relaxed));
        now.as_nanos() >= until
    }

    /// Ejected at `now`.
    pub fn ejected(&self, now: Moment) -> bool {
        now.as_nanos() < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Cooling at `now`.
    pub fn cooling(&self, now: Moment) -> bool {
        now.as_nanos() < self.cooling_until.load(Ordering::Relaxed)
    }

    /// When the current (or last) ejection ends, if the target was ever ejected.
    pub fn ejected_until(&self) -> Option<Moment> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0).then(|| Moment::from_nanos(until))
    }

    /// When the current (or last) cooling ends, if the target ever cooled.
    pub fn cooling_until(&self) -> Option<Moment> {
        let until = self.cooling_until.load(Ordering::Relaxed);
        (until != 0).then(|| Moment::from_nanos(until))
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Ejections since the process started.
    pub fn ejections(&self) -> u64 {
        self.ejected_total.load(Ordering::Relaxed)
    }

    /// A success: the failure streak ends. Reads before writing, so a healthy target's
    /// requests do not all write the same cache line.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A failure; true when the streak has reached `threshold` (0: never) and the target
    /// should be ejected if the group allows it.
    pub fn record_failure(&self, threshold: u32) -> bool {
        let streak = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        threshold != 0 && streak >= threshold
    }

    /// Cools the target until `until` (a later cooling already set is kept).
    pub fn cool(&self, until: Moment) {
        self.cooling_until.fetch_max(until.as_nanos(), Ordering::Relaxed);
    }

    /// Ejects the target from `now` and returns for how long. The caller has checked the
    /// group's share under its ejection lock, which also keeps two ejections of one target
    /// from racing.
    pub fn eject(&self, now: Moment, settings: &OutlierSettings) -> Duration {
        let previous_end = Moment::from_nanos(self.ejected_until.load(Ordering::Relaxed));
        let count = next_ejection_count(
            self.ejections.load(Ordering::Relaxed),
            previous_end,
            now,
            settings.max_ejection,
        );
        let length = ejection_time(count, settings.base_ejection, settings.max_ejection);
        self.ejections.store(count, Ordering::Relaxed);
        self.ejected_until.store(now.plus(length).as_nanos(), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.ejected_total.fetch_add(1, Ordering::Relaxed);
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn at(seconds: u64) -> Moment {
        Moment::from_nanos(seconds * S)
    }

    #[test]
    fn max_ejected_table() {
        for (total, percent, expected) in [
            (1, 50, 1),
            (2, 50, 1),
            (3, 50, 1),
            (4, 50, 2),
            (10, 10, 1),
            (10, 5, 1),
            (10, 100, 10),
            (10, 0, 0),
            (0, 50, 0),
            (3, 255, 3),
        ] {
            assert_eq!(max_ejected(total, percent), expected, "{total} targets at {percent}%");
        }
    }

    #[test]
    fn ejection_grows_and_is_capped() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(100);
        for (count, expected) in [(0, 30), (1, 30), (2, 60), (3, 90), (4, 100), (u32::MAX, 100)] {
            assert_eq!(ejection_time(count, base, max), Duration::from_secs(expected));
        }
    }

    #[test]
    fn ejection_count_resets_after_a_quiet_period() {
        let max = Duration::from_secs(300);
        assert_eq!(next_ejection_count(0, at(0), at(10), max), 1);
        assert_eq!(next_ejection_count(1, at(40), at(50), max), 2);
        assert_eq!(next_ejection_count(3, at(40), at(339), max), 4);
        assert_eq!(next_ejection_count(3, at(40), at(340), max), 1);
    }

    #[test]
    fn passive_ejects_for_growing_times_and_comes_back() {
        let settings = OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            ..OutlierSettings::default()
        };
        let passive = Passive::default();
        assert!(!passive.record_failure(3));
        passive.record_success();
        assert!(!passive.record_failure(3));
        assert!(!passive.record_failure(3));
        assert!(passive.record_failure(3));
        assert_eq!(passive.eject(at(100), &settings), Duration::from_secs(10));
        assert!(!passive.available(at(109)));
        assert!(passive.ejected(at(109)));
        assert!(passive.available(at(110)));
        assert_eq!(passive.consecutive_failures(), 0);
        // Ejected again soon after: longer, then capped.
        assert_eq!(passive.eject(at(112), &settings), Duration::from_secs(20));
        assert_eq!(passive.eject(at(140), &settings), Duration::from_secs(25));
        assert_eq!(passive.ejections(), 3);
        assert_eq!(passive.ejected_until(), Some(at(165)));
        // In service for max_ejection since: back to the base time.
        assert_eq!(passive.eject(at(190), &settings), Duration::from_secs(10));
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let passive = Passive::default();
        for _ in 0..100 {
            assert!(!passive.record_failure(0));
        }
    }

    #[test]
    fn cooling_keeps_the_later_time() {
        let passive = Passive::default();
        assert!(!passive.cooling(at(1)));
        passive.cool(at(50));
        passive.cool(at(20));
        assert!(passive.cooling(at(49)));
        assert!(!passive.available(at(49)));
        assert!(passive.available(at(50)));
        assert_eq!(passive.cooling_until(), Some(at(50)));
    }

    #[test]
    fn verdict_table() {
        let settings =
            OutlierSettings { max_cooldown: Duration::from_secs(60), ..OutlierSettings::default() };
        let now = at(1000);
        let secs = |s| Some(Duration::from_secs(s));
        for (status, retry_after, expected) in [
            (200, None, Verdict::Success),
            (404, None, Verdict::Success),
            (429, None, Verdict::Success),
            (429, secs(5), Verdict::Cool(at(1005))),
            (503, secs(5), Verdict::Cool(at(1005))),
            (503, secs(3600), Verdict::Cool(at(1060))),
            (503, secs(0), Verdict::Failure),
            (503, None, Verdict::Failure),
            (500, secs(5), Verdict::Failure),
            (502, None, Verdict::Failure),
            (200, secs(5), Verdict::Success),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                Verdict::of_response(status, retry_after, now, &settings),
                expected,
                "{status} {retry_after:?}"
            );
        }
    }

    #[test]
    fn retry_after_table() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        for (value, expected) in [
            ("120", Some(120)),
            (" 7 ", Some(7)),
            ("0", Some(0)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("Sun, 06 Nov 1994 08:50:37 GMT", Some(60)),
            ("Sunday, 06-Nov-94 08:49:47 GMT", Some(10)),
            ("Sun Nov  6 08:49:57 1994", Some(20)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(0)),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ] {
            let value = HeaderValue::from_str(value).unwrap();
            assert_eq!(retry_after(&value, now), expected.map(Duration::from_secs), "{value:?}");
        }
    }
}
