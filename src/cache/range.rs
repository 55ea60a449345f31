//! Byte ranges served from a complete stored response (RFC 9110 §14): which part of it a
//! request asks for, and the `Content-Range` of the answer.

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use crate::cache::policy::validation::strong_match;

/// What to send for a request's `Range` against a stored representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No (usable) range: send the whole response with its own status.
    Full,
    /// 206 Partial Content with bytes `start..=end`.
    Partial {
        /// First byte, counted from 0.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// Decides how to answer `request`'s `Range` from a stored 200 response with header fields
/// `stored` and `length` bytes of content.
///
/// Only GET has range semantics (RFC 9110 §14.2). A `Range` whose unit is not `bytes`, that
/// does not parse, or that asks for more than one range is ignored and the whole response is
/// sent, which RFC 9110 §14.2 allows ("A server MAY ignore the Range header field"). An
/// `If-Range` that does not match the stored validator strongly also means the whole response
/// (RFC 9110 §13.1.5).
pub fn answer(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
    length: u64,
) -> RangeAnswer {
    if *method != Method::GET {
        return RangeAnswer::Full;
    }
    let Some(range) = request.get(header::RANGE).and_then(|value| value.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if let Some(condition) = request.get(header::IF_RANGE)
        && !if_range_holds(condition, stored)
    {
        return RangeAnswer::Full;
    }
    let Some((unit, specs)) = range.split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    let mut specs = specs.split(',').map(str::trim).filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeAnswer::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // suffix-range: the last N bytes.
        let Some(suffix) = number(last) else {
            return RangeAnswer::Full;
        };
        if suffix == 0 || length == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Partial { start: length.saturating_sub(suffix), end: length - 1 };
    }
    let Some(start) = number(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            // first > last makes the range invalid, and an invalid Range is ignored (§14.1.1).
            _ => return RangeAnswer::Full,
        }
    };
    if start >= length {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end: end.min(length - 1) }
}

/// Whether `If-Range` holds for the stored response: an entity tag must match the stored one
/// strongly; a date must equal the stored `Last-Modified` exactly (RFC 9110 §13.1.5).
fn if_range_holds(condition: &HeaderValue, stored: &HeaderMap) -> bool {
    let condition = condition.as_bytes();
    if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
        return stored
            .get(header::ETAG)
            .is_some_and(|etag| strong_match(condition, etag.as_bytes()));
    }
    stored.get(header::LAST_MODIFIED).is_some_and(|modified| modified.as_bytes() == condition)
}

/// `Content-Range` of a 206 (`bytes 0-1/11`).
pub fn content_range(start: u64, end: u64, length: u64) -> HeaderValue {
    digits_value(format!("bytes {start}-{end}/{length}"))
}

/// `Content-Range` of a 416 (`bytes */11`, RFC 9110 §15.5.17).
pub fn unsatisfied_range(length: u64) -> HeaderValue {
    digits_value(format!("bytes */{length}"))
}

/// A header value from text made of ASCII letters, digits and punctuation, which is always
/// valid; the fallback is never used.
fn digits_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fields::{Fields, map};

    /// Header fields of a test case, as name/value pairs.

    #[test]
    fn table() {
        use RangeAnswer::*;
        let stored = [("etag", "\"v1\""), ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")];
        let cases: &[(&str, Fields<'_>, u64, RangeAnswer)] = &[
            ("GET", &[], 11, Full),
            ("GET", &[("range", "bytes=0-1")], 11, Partial { start: 0, end: 1 }),
            ("GET", &[("range", "bytes=1-")], 11, Partial { start: 1, end: 10 }),
            ("GET", &[("range", "bytes=-1")], 11, Partial { start: 10, end: 10 }),
            ("GET", &[("range", "bytes=-50")], 11, Partial { start: 0, end: 10 }),
            ("GET", &[("range", "bytes=5-100")], 11, Partial { start: 5, end: 10 }),
            ("GET", &[("range", "Bytes = 0-0")], 11, Partial { start: 0, end: 0 }),
            ("GET", &[("range", "bytes=11-")], 11, Unsatisfiable),
            ("GET", &[("range", "bytes=-0")], 11, Unsatisfiable),
            ("GET", &[("range", "bytes=0-")], 0, Unsatisfiable),
            ("GET", &[("range", "bytes=5-2")], 11, Full),
            ("GET", &[("range", "bytes=0-1,3-4")], 11, Full),
            ("GET", &[("range", "items=0-1")], 11, Full),
            ("GET", &[("range", "bytes=a-b")], 11, Full),
            ("HEAD", &[("range", "bytes=0-1")], 11, Full),
            (
                "GET",
                &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                11,
                Partial { start: 0, end: 1 },
            ),
            ("GET", &[("range", "bytes=0-1"), ("if-range", "W/\"v1\"")], 11, Full),
            ("GET", &[("range", "bytes=0-1"), ("if-range", "\"v2\"")], 11, Full),
            (
                "GET",
                &[("range", "bytes=0-1"), ("if-range", "Sun, 06 Nov 1994 08:49:37 GMT")],
                11,
                Partial { start: 0, end: 1 },
            ),
            (
                "GET",
                &[("range", "bytes=0-1"), ("if-range", "Sun, 06 Nov 1994 08:49:38 GMT")],
                11,
                Full,
            ),
        ];
        for (method, request, length, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                answer(&method, &map(request), &map(&stored), *length),
                *expected,
                "{method} {request:?} {length}"
            );
        }
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(0, 1, 11), "bytes 0-1/11");
        assert_eq!(unsatisfied_range(11), "bytes */11");
    }

    proptest::proptest! {
        #[test]
        fn a_partial_answer_is_always_inside_the_content(range in "[ -~]{0,20}", length in 0u64..1000) {
            if let Ok(value) = HeaderValue::from_str(&range) {
                let mut request = HeaderMap::new();
                request.insert(header::RANGE, value);
                if let RangeAnswer::Partial { start, end } = answer(&Method::GET, &request, &HeaderMap::new(), length) {
                    proptest::prop_assert!(start <= end && end < length);
                }
            }
        }
    }
}
