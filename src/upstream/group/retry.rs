//! When a failed attempt may be tried again on another target: the pure decision over one
//! attempt's failure and the route's [`RetryPolicy`].
//!
//! A request that never reached the target (no connection, or a pooled connection that died
//! before the request was written) is always safe to send elsewhere: the target saw nothing.
//! Once it was sent, trying again would repeat it, so only methods the route lists may be
//! retried: the idempotent ones by default (RFC 9110 §9.2.2), POST only when the route opts
//! in (an AI API's completion is safe to ask for twice; a payment is not). A retry happens
//! only before any byte of a response has been passed on to the client; the request path
//! guarantees that by deciding on the response head alone.

use http::{Method, StatusCode};

use crate::config::retry::RetryPolicy;

/// What went wrong with one attempt, as far as retrying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The target never saw the request: the connection or its TLS handshake failed.
    NotSent,
    /// The request was sent (perhaps partly) and no response head came: a reset, a timeout,
    /// a protocol error.
    NoResponse,
    /// A response head with this status.
    Status(StatusCode),
}

/// Whether an attempt of a `method` request that failed with `failure` may be tried again,
/// as far as `policy` goes (the attempt cap, the budget and the body are the caller's to
/// check).
pub fn retries(policy: &RetryPolicy, method: &Method, failure: AttemptFailure) -> bool {
    match failure {
        AttemptFailure::NotSent => true,
        AttemptFailure::NoResponse => policy.methods.contains(method),
        AttemptFailure::Status(status) => {
            policy.statuses.contains(status) && policy.methods.contains(method)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::retry::MethodSet;

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
            assert_eq!(retries(policy, &method, failure), expected, "{method} {failure:?}");
        }
    }
}
