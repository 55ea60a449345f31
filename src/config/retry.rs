//! `[route.retry]`: when a failed attempt of a route with several targets is tried again on
//! another, and the retry budget that keeps retries from multiplying the load on a failing
//! backend. As written in the file, as validated, and as `sluice check` shows it.

use std::fmt::Write as _;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// Default largest number of attempts per request, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest `attempts`.
pub const MAX_ATTEMPTS: u32 = 10;
/// Default statuses that make an attempt worth retrying.
pub const DEFAULT_RETRY_STATUSES: [u16; 3] = [502, 503, 504];
/// Longest `per_try_timeout` (as the longest response timeout).
pub const MAX_PER_TRY_TIMEOUT: Duration = super::MAX_RESPONSE_HEADER_TIMEOUT;
/// Default size of the buffer that keeps a request body for a retry.
pub const DEFAULT_RETRY_BUFFER_BYTES: u64 = 64 * 1024;
/// Largest `buffer_bytes`.
pub const MAX_RETRY_BUFFER_BYTES: u64 = 8 * 1024 * 1024;
/// Default share of recent requests that may be retried, in percent.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
/// Largest `budget_percent`: every request retried once.
pub const MAX_BUDGET_PERCENT: u32 = 100;
/// Default retries per second allowed whatever the share, so a quiet route can still retry.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Largest `budget_min_per_second`.
pub const MAX_BUDGET_MIN_PER_SECOND: u32 = 100_000;

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (1: never retry).
    pub max_attempts: u32,
    /// Response statuses that are retried.
    pub statuses: StatusSet,
    /// Methods retried once the request was sent.
    pub methods: MethodSet,
    /// Time one attempt may take to produce a response head; `None`: the route's response
    /// timeout.
    pub per_try_timeout: Option<Duration>,
    /// Largest request body kept for a replay; a larger one makes the request non-retryable.
    pub buffer_bytes: u64,
    /// The retry budget.
    pub budget: BudgetSettings,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            statuses: StatusSet::from_codes(DEFAULT_RETRY_STATUSES).unwrap_or_default(),
            methods: MethodSet::idempotent(),
            per_try_timeout: None,
            buffer_bytes: DEFAULT_RETRY_BUFFER_BYTES,
            budget: BudgetSettings::default(),
        }
    }
}

/// How large a route's retry budget is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Retries as a share of the requests in the window, in percent.
    pub percent: u32,
    /// Retries per second allowed on top of the share.
    pub min_per_second: u32,
}

impl Default for BudgetSettings {
    fn default() -> BudgetSettings {
        BudgetSettings {
            percent: DEFAULT_BUDGET_PERCENT,
            min_per_second: DEFAULT_BUDGET_MIN_PER_SECOND,
        }
    }
}

/// A set of 4xx and 5xx statuses, as a bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet {
    bits: [u64; 4],
}

impl StatusSet {
    /// The set of `codes`; `None` if one is not a 4xx or 5xx status (retrying a success or a
    /// redirect makes no sense).
    pub fn from_codes(codes: impl IntoIterator<Item = u16>) -> Option<StatusSet> {
        let mut set = StatusSet::default();
        for code in codes {
            let offset = usize::from(code.checked_sub(400).filter(|offset| *offset < 200)?);
            *set.bits.get_mut(offset / 64)? |= 1 << (offset % 64);
        }
        Some(set)
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: StatusCode) -> bool {
        let Some(offset) = status.as_u16().checked_sub(400).map(usize::from) else {
            return false;
        };
        self.bits.get(offset / 64).is_some_and(|word| word & (1 << (offset % 64)) != 0)
    }

    /// The statuses in ascending order.
    pub fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        (400u16..600).filter(|code| StatusCode::from_u16(*code).is_ok_and(|s| self.contains(s)))
    }
}

/// The methods a route retries once a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet {
    bits: u16,
}

/// The methods a [`MethodSet`] can hold, in bit order. CONNECT is not among them: a tunnel is
/// never retried.
const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::PUT,
    Method::DELETE,
    Method::POST,
    Method::PATCH,
];

impl MethodSet {
    /// The idempotent methods (RFC 9110 §9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub fn idempotent() -> MethodSet {
        MethodSet { bits: 0b0011_1111 }
    }

    /// The set of the methods named in `names` (upper case, as in a request line); `Err` with
    /// the first name it cannot hold.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<MethodSet, &'a str> {
        let mut set = MethodSet::default();
        for name in names {
            let position = METHODS.iter().position(|method| method.as_str() == name).ok_or(name)?;
            set.bits |= 1 << position;
        }
        Ok(set)
    }

    /// Whether `method` is in the set.
    pub fn contains(&self, method: &Method) -> bool {
        METHODS
            .iter()
            .position(|known| known == method)
            .is_some_and(|position| self.bits & (1 << position) != 0)
    }

    /// The methods' names, in a fixed order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        METHODS
            .iter()
            .enumerate()
            .filter(|(position, _)| self.bits & (1 << position) != 0)
            .map(|(_, method)| method.as_str())
    }
}

/// `[route.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    /// Attempts per request, the first included.
    pub attempts: Option<Spanned<i64>>,
    /// Response statuses that are retried.
    pub statuses: Option<Vec<Spanned<i64>>>,
    /// Methods retried once sent.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Time one attempt may take to produce a response head.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Request body bytes kept for a replay.
    pub buffer_bytes: Option<Spanned<i64>>,
    /// Retries as a share of recent requests, in percent.
    pub budget_percent: Option<Spanned<i64>>,
    /// Retries per second allowed on top of the share.
    pub budget_min_per_second: Option<Spanned<i64>>,
}

impl Checker<'_> {
    /// The retry policy at `key` (`route[i].retry`), defaults for what is not given.
    pub(super) fn retry(&mut self, key: &str, file: Option<&FileRetry>) -> RetryPolicy {
        let d = RetryPolicy::default();
        let Some(file) = file else { return d };
        let statuses = match &file.statuses {
            None => d.statuses,
            Some(list) => {
                let mut codes = Vec::with_capacity(list.len());
                for code in list {
                    match u16::try_from(*code.get_ref()).ok().filter(|c| (400..600).contains(c)) {
                        Some(valid) => codes.push(valid),
                        None => self.report(
                            code.span(),
                            &format!("{key}.statuses"),
                            format!("{} is not a 4xx or 5xx status", code.get_ref()),
                        ),
                    }
                }
                StatusSet::from_codes(codes).unwrap_or_default()
            }
        };
        let methods = match &file.methods {
            None => d.methods,
            Some(list) => {
                let mut set = MethodSet::default();
                for name in list {
                    match MethodSet::parse([name.get_ref().as_str()]) {
                        Ok(one) => set.bits |= one.bits,
                        Err(bad) => self.report(
                            name.span(),
                            &format!("{key}.methods"),
                            format!(
                                "`{bad}` is not one of GET, HEAD, OPTIONS, TRACE, PUT, DELETE, \
                                 POST, PATCH"
                            ),
                        ),
                    }
                }
                set
            }
        };
        let per_try_timeout = file.per_try_timeout.clone().map(|t| {
            let key = format!("{key}.per_try_timeout");
            self.duration(&key, Some(t), MAX_PER_TRY_TIMEOUT, MAX_PER_TRY_TIMEOUT)
        });
        RetryPolicy {
            max_attempts: self.count(
                &format!("{key}.attempts"),
                file.attempts.clone(),
                d.max_attempts,
                1..=MAX_ATTEMPTS,
            ),
            statuses,
            methods,
            per_try_timeout,
            buffer_bytes: self.count(
                &format!("{key}.buffer_bytes"),
                file.buffer_bytes.clone(),
                d.buffer_bytes,
                0..=MAX_RETRY_BUFFER_BYTES,
            ),
            budget: BudgetSettings {
                percent: self.count(
                    &format!("{key}.budget_percent"),
                    file.budget_percent.clone(),
                    d.budget.percent,
                    0..=MAX_BUDGET_PERCENT,
                ),
                min_per_second: self.count(
                    &format!("{key}.budget_min_per_second"),
                    file.budget_min_per_second.clone(),
                    d.budget.min_per_second,
                    0..=MAX_BUDGET_MIN_PER_SECOND,
                ),
            },
        }
    }
}

/// The `retry` line of a route with targets, for `sluice check`.
pub(super) fn write_summary(out: &mut String, retry: &RetryPolicy) {
    let statuses: Vec<String> = retry.statuses.codes().map(|c| c.to_string()).collect();
    let methods: Vec<&str> = retry.methods.names().collect();
    let _ = writeln!(
        out,
        "    retry: {} attempts on [{}] for [{}], per try {}, body buffer {} bytes, budget {}% + {}/s",
        retry.max_attempts,
        statuses.join(", "),
        methods.join(", "),
        retry
            .per_try_timeout
            .map_or("the response timeout".to_owned(), |t| humantime::format_duration(t)
                .to_string()),
        retry.buffer_bytes,
        retry.budget.percent,
        retry.budget.min_per_second,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_set_table() {
        let set = StatusSet::from_codes([429, 502, 503, 504]).unwrap();
        for (code, expected) in
            [(429, true), (502, true), (599, false), (500, false), (200, false), (404, false)]
        {
            assert_eq!(set.contains(StatusCode::from_u16(code).unwrap()), expected, "{code}");
        }
        assert_eq!(set.codes().collect::<Vec<_>>(), [429, 502, 503, 504]);
        assert!(StatusSet::from_codes([599, 400]).is_some());
        for bad in [200, 302, 399, 600, 0] {
            assert_eq!(StatusSet::from_codes([bad]), None, "{bad}");
        }
    }

    #[test]
    fn method_set_table() {
        let idempotent = MethodSet::idempotent();
        assert_eq!(
            idempotent.names().collect::<Vec<_>>(),
            ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        );
        assert!(!idempotent.contains(&Method::POST));
        assert!(!idempotent.contains(&Method::CONNECT));
        let with_post = MethodSet::parse(["GET", "POST"]).unwrap();
        assert!(with_post.contains(&Method::POST));
        assert!(!with_post.contains(&Method::PUT));
        assert_eq!(MethodSet::parse(["GET", "get"]), Err("get"));
        assert_eq!(MethodSet::parse(["CONNECT"]), Err("CONNECT"));
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert!(!with_post.contains(&custom));
    }
}
