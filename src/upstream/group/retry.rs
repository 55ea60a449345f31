//! When a failed attempt may be tried again on another target: the route's retry policy and
//! the pure decision over one attempt's failure.
//!
//! A request that never reached the target (no connection, or a pooled connection that died
//! before the request was written) is always safe to send elsewhere: the target saw nothing.
//! Once it was sent, trying again would repeat it, so only methods the route lists may be
//! retried: the idempotent ones by default (RFC 9110 §9.2.2), POST only when the route opts
//! in (an AI API's completion is safe to ask for twice; a payment is not). A retry happens
//! only before any byte of a response has been passed on to the client; the request path
//! guarantees that by deciding on the response head alone.

use std::time::Duration;

use http::{Method, StatusCode};

/// Default largest number of attempts per request, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 10;
/// Default statuses that make an attempt worth retrying.
pub const DEFAULT_STATUSES: [u16; 3] = [502, 503, 504];
/// Default size of the buffer that keeps a request body for a retry.
pub const DEFAULT_REPLAY_LIMIT: u64 = 64 * 1024;
/// Largest `retry_body_limit`.
pub const MAX_REPLAY_LIMIT: u64 = 8 * 1024 * 1024;

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
    pub replay_limit: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            statuses: StatusSet::from_codes(DEFAULT_STATUSES).unwrap_or_default(),
            methods: MethodSet::idempotent(),
            per_try_timeout: None,
            replay_limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

/// What went wrong with one attempt, as far as retrying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The target never saw the request: the connection failed, the target was full, or a
    /// pooled connection died before the request was written.
    NotSent,
    /// The request was sent (perhaps partly) and no response head came: a reset, a timeout,
    /// a protocol error.
    NoResponse,
    /// A response head with this status.
    Status(StatusCode),
}

impl RetryPolicy {
    /// Whether an attempt of a `method` request that failed with `failure` may be tried again,
    /// as far as the policy goes (the attempt cap, the budget and the body are the caller's
    /// to check).
    pub fn retries(&self, method: &Method, failure: AttemptFailure) -> bool {
        match failure {
            AttemptFailure::NotSent => true,
            AttemptFailure::NoResponse => self.methods.contains(method),
            AttemptFailure::Status(status) => {
                self.statuses.contains(status) && self.methods.contains(method)
            }
        }
    }

    /// Whether a retry policy is in force at all.
    pub fn enabled(&self) -> bool {
        self.max_attempts > 1
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

    #[test]
    fn retry_decision_table() {
        let policy = RetryPolicy::default();
        let post =
            RetryPolicy { methods: MethodSet::parse(["GET", "POST"]).unwrap(), ..policy.clone() };
        let status = |code| AttemptFailure::Status(StatusCode::from_u16(code).unwrap());
        for (policy, method, failure, expected) in [
            (&policy, Method::GET, AttemptFailure::NotSent, true),
            (&policy, Method::POST, AttemptFailure::NotSent, true),
            (&policy, Method::GET, AttemptFailure::NoResponse, true),
            (&policy, Method::POST, AttemptFailure::NoResponse, false),
            (&post, Method::POST, AttemptFailure::NoResponse, true),
            (&policy, Method::GET, status(503), true),
            (&policy, Method::PUT, status(502), true),
            (&policy, Method::GET, status(500), false),
            (&policy, Method::GET, status(429), false),
            (&policy, Method::POST, status(503), false),
            (&post, Method::POST, status(503), true),
        ] {
            assert_eq!(policy.retries(&method, failure), expected, "{method} {failure:?}");
        }
        assert!(policy.enabled());
        assert!(!RetryPolicy { max_attempts: 1, ..policy }.enabled());
    }
}
