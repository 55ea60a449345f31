//! `Max-Forwards` (RFC 9110 §7.6.2): how many more intermediaries a `TRACE` or `OPTIONS`
//! request may pass, so a client can probe a chain of proxies one hop at a time.
//!
//! "Each intermediary that receives a TRACE or OPTIONS request containing a Max-Forwards
//! header field MUST check and update its value prior to forwarding the request. If the
//! received value is zero (0), the intermediary MUST NOT forward the request; instead, the
//! intermediary MUST respond as the final recipient. If the received Max-Forwards value is
//! greater than zero, the intermediary MUST generate an updated Max-Forwards field in the
//! forwarded message with a field value that is the lesser of a) the received value
//! decremented by one (1) or b) the recipient's maximum supported value for Max-Forwards."
//! Other methods may ignore the field, and do here: it passes through untouched.

use http::header::MAX_FORWARDS;
use http::{HeaderMap, HeaderValue, Method};

/// The largest `Max-Forwards` sluice forwards; any larger value is received as this one.
/// No chain of proxies is longer, and it keeps the arithmetic in range.
pub const MAX_SUPPORTED: u64 = u32::MAX as u64;

/// What to do with a request after reading its `Max-Forwards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Forward it (the field, if there was one, is already decremented).
    Forward,
    /// The value was 0: sluice is the final recipient and answers itself.
    Answer,
}

/// Applies `Max-Forwards` to a request with `method`, decrementing the field in `headers`
/// when the request is to be forwarded. A value that is not `1*DIGIT`, or several lines that
/// disagree, cannot be updated and is left for the next recipient to judge; it does not stop
/// the request.
pub fn apply(method: &Method, headers: &mut HeaderMap) -> Hop {
    if method != Method::TRACE && method != Method::OPTIONS {
        return Hop::Forward;
    }
    let Some(received) = value(headers) else {
        return Hop::Forward;
    };
    match received.checked_sub(1) {
        None => Hop::Answer,
        Some(next) => {
            headers.insert(MAX_FORWARDS, HeaderValue::from(next));
            Hop::Forward
        }
    }
}

/// The field's value, when every line of it is the same `1*DIGIT`; capped at
/// [`MAX_SUPPORTED`].
fn value(headers: &HeaderMap) -> Option<u64> {
    let mut lines = headers.get_all(MAX_FORWARDS).iter();
    let first = lines.next()?;
    if lines.any(|line| line != first) {
        return None;
    }
    let digits = first.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10).and_then(|acc| acc.checked_add(u64::from(digit - b'0')))
    });
    Some(value.unwrap_or(MAX_SUPPORTED).min(MAX_SUPPORTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: Method, lines: &[&str]) -> (Hop, Vec<String>) {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(MAX_FORWARDS, HeaderValue::from_str(line).unwrap());
        }
        let hop = apply(&method, &mut headers);
        let after =
            headers.get_all(MAX_FORWARDS).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        (hop, after)
    }

    #[test]
    fn trace_and_options_count_down_and_stop_at_zero() {
        let cases: [(Method, &[&str], Hop, &[&str]); 12] = [
            (Method::OPTIONS, &["0"], Hop::Answer, &["0"]),
            (Method::TRACE, &["0"], Hop::Answer, &["0"]),
            (Method::OPTIONS, &["5"], Hop::Forward, &["4"]),
            (Method::TRACE, &["1"], Hop::Forward, &["0"]),
            (Method::OPTIONS, &[" 07 "], Hop::Forward, &["6"]),
            (Method::OPTIONS, &[], Hop::Forward, &[]),
            (Method::OPTIONS, &["5", "5"], Hop::Forward, &["4"]),
            (Method::OPTIONS, &["99999999999999999999999"], Hop::Forward, &["4294967294"]),
            (Method::OPTIONS, &["5", "3"], Hop::Forward, &["5", "3"]),
            (Method::OPTIONS, &["-1"], Hop::Forward, &["-1"]),
            (Method::OPTIONS, &["five"], Hop::Forward, &["five"]),
            (Method::GET, &["0"], Hop::Forward, &["0"]),
        ];
        for (method, lines, hop, after) in cases {
            let got = run(method.clone(), lines);
            assert_eq!(
                got,
                (hop, after.iter().map(|s| s.to_string()).collect()),
                "{method} {lines:?}"
            );
        }
    }
}
