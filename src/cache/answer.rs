//! The response a stored object gives one request: its status and header fields, and which
//! part of the stored body goes with them.
//!
//! `Age` is the object's current age (RFC 9111 §4.2.3, §5.1); a client's own conditional
//! request is answered with 304 when its copy is current (§4.3.2); a byte range of a complete
//! 200 becomes a 206 or a 416 (RFC 9110 §14); HEAD gets the header fields only (RFC 9110
//! §9.3.2); fields a qualified `no-cache` names are left out unless the object was just
//! validated (RFC 9111 §5.2.2.4).

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::policy::validation::{self, Conditional};
use super::range::{self, RangeAnswer};
use super::store::Object;

/// Which part of the stored body an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerBody {
    /// None (HEAD, 304, 416).
    Empty,
    /// All of it.
    Whole,
    /// `length` bytes from byte `start`.
    Range {
        /// First byte.
        start: u64,
        /// Bytes to send.
        length: u64,
    },
}

/// A response built from a stored object.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status code.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: HeaderMap,
    /// The part of the stored body it carries.
    pub body: AnswerBody,
}

/// Whether the stored object was validated with the origin for this very request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validated {
    /// Served from the store as it was.
    No,
    /// Just validated (or fetched), so fields kept back by a qualified `no-cache` may go.
    Yes,
}

/// Builds the answer `object` gives a `method` request with header fields `request` at `now`.
pub fn answer(
    object: &Object,
    method: &Method,
    request: &HeaderMap,
    validated: Validated,
    now: SystemTime,
) -> Answer {
    let mut headers = object.headers.clone();
    if validated == Validated::No {
        for name in &object.freshness.no_cache_fields {
            headers.remove(name);
        }
    }
    headers.insert(header::AGE, HeaderValue::from(object.freshness.current_age(now).as_secs()));
    // Preconditions select among representations; only a successful response has one.
    if object.status == StatusCode::OK
        && validation::evaluate(method, request, &headers, object.freshness.response_time)
            == Conditional::NotModified
    {
        let mut not_modified = validation::not_modified_headers(&headers);
        if let Some(age) = headers.get(header::AGE) {
            not_modified.insert(header::AGE, age.clone());
        }
        return Answer {
            status: StatusCode::NOT_MODIFIED,
            headers: not_modified,
            body: AnswerBody::Empty,
        };
    }
    if *method == Method::HEAD {
        return Answer { status: object.status, headers, body: AnswerBody::Empty };
    }
    if object.status == StatusCode::OK && object.body.is_complete() {
        let length = object.body.len();
        match range::answer(method, request, &headers, length) {
            RangeAnswer::Full => {}
            RangeAnswer::Partial { start, end } => {
                let length = end - start + 1;
                headers.insert(
                    header::CONTENT_RANGE,
                    range::content_range(start, end, object.body.len()),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                return Answer {
                    status: StatusCode::PARTIAL_CONTENT,
                    headers,
                    body: AnswerBody::Range { start, length },
                };
            }
            RangeAnswer::Unsatisfiable => {
                headers.insert(header::CONTENT_RANGE, range::unsatisfied_range(length));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return Answer {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    headers,
                    body: AnswerBody::Empty,
                };
            }
        }
    }
    Answer { status: object.status, headers, body: AnswerBody::Whole }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::SharedBody;
    use crate::cache::fields::{Fields, map};
    use crate::cache::key::{Vary, VaryKey};
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::{Freshness, Heuristic};
    use bytes::Bytes;
    use std::time::{Duration, UNIX_EPOCH};

    fn stored(status: u16, pairs: Fields<'_>, body: &'static [u8]) -> Object {
        let headers = map(pairs);
        let (directives, source) = effective(&headers, &[]);
        let status = StatusCode::from_u16(status).unwrap();
        let time = UNIX_EPOCH + Duration::from_secs(784_111_777);
        Object {
            status,
            freshness: Freshness::assess(
                status,
                &headers,
                &directives,
                &source,
                time,
                time,
                Heuristic::default(),
            ),
            headers,
            vary: Vary::Nothing,
            vary_key: VaryKey::default(),
            body: SharedBody::complete(vec![Bytes::from_static(body)]),
        }
    }

    fn ask(object: &Object, method: &str, request: Fields<'_>, validated: Validated) -> Answer {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let now = object.freshness.response_time + Duration::from_secs(30);
        answer(object, &method, &map(request), validated, now)
    }

    #[test]
    fn table() {
        let fields = [
            ("cache-control", "max-age=3600, no-cache=\"x-secret\""),
            ("etag", "\"v1\""),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("content-type", "text/plain"),
            ("content-length", "11"),
            ("x-secret", "s"),
            ("a", "1"),
        ];
        let object = stored(200, &fields, b"01234567890");
        type Case<'a> = (&'a str, Fields<'a>, u16, AnswerBody, Fields<'a>);
        let cases: &[Case<'_>] = &[
            (
                "GET",
                &[],
                200,
                AnswerBody::Whole,
                &[("age", "30"), ("a", "1"), ("content-length", "11")],
            ),
            ("HEAD", &[], 200, AnswerBody::Empty, &[("content-length", "11")]),
            (
                "GET",
                &[("range", "bytes=0-1")],
                206,
                AnswerBody::Range { start: 0, length: 2 },
                &[("content-range", "bytes 0-1/11"), ("content-length", "2"), ("a", "1")],
            ),
            (
                "GET",
                &[("range", "bytes=20-")],
                416,
                AnswerBody::Empty,
                &[("content-range", "bytes */11")],
            ),
            (
                "GET",
                &[("if-none-match", "\"v1\"")],
                304,
                AnswerBody::Empty,
                &[("etag", "\"v1\""), ("age", "30")],
            ),
            (
                "HEAD",
                &[("if-none-match", "W/\"v1\"")],
                304,
                AnswerBody::Empty,
                &[("etag", "\"v1\"")],
            ),
            ("GET", &[("if-none-match", "\"v2\"")], 200, AnswerBody::Whole, &[]),
            // A condition that holds (not modified) wins over a range.
            (
                "GET",
                &[("if-none-match", "\"v1\""), ("range", "bytes=0-1")],
                304,
                AnswerBody::Empty,
                &[],
            ),
        ];
        for (method, request, status, body, expected) in cases {
            let answer = ask(&object, method, request, Validated::No);
            assert_eq!(
                (answer.status.as_u16(), answer.body),
                (*status, *body),
                "{method} {request:?}"
            );
            for (name, value) in *expected {
                assert_eq!(
                    answer.headers.get(*name).map(|v| v.to_str().unwrap()),
                    Some(*value),
                    "{method} {request:?} {name}"
                );
            }
            assert!(!answer.headers.contains_key("x-secret"), "{method} {request:?}");
        }
        // A 304 carries only the fields that update the client's copy.
        let not_modified = ask(&object, "GET", &[("if-none-match", "\"v1\"")], Validated::No);
        assert!(
            !not_modified.headers.contains_key("content-type")
                && !not_modified.headers.contains_key("a")
        );
    }

    #[test]
    fn validated_answers_carry_the_no_cache_fields() {
        let object =
            stored(200, &[("cache-control", "no-cache=\"x-secret\""), ("x-secret", "s")], b"x");
        assert_eq!(ask(&object, "GET", &[], Validated::Yes).headers.get("x-secret").unwrap(), "s");
        assert!(!ask(&object, "GET", &[], Validated::No).headers.contains_key("x-secret"));
    }

    #[test]
    fn only_complete_200s_answer_ranges_and_conditions() {
        let not_found =
            stored(404, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], b"missing");
        let answer = ask(
            &not_found,
            "GET",
            &[("range", "bytes=0-1"), ("if-none-match", "\"v1\"")],
            Validated::No,
        );
        assert_eq!((answer.status, answer.body), (StatusCode::NOT_FOUND, AnswerBody::Whole));
        let mut growing = stored(200, &[("cache-control", "max-age=60")], b"");
        growing.body = SharedBody::filling(Some(100));
        let answer = ask(&growing, "GET", &[("range", "bytes=0-1")], Validated::No);
        assert_eq!((answer.status, answer.body), (StatusCode::OK, AnswerBody::Whole));
    }

    #[test]
    fn age_counts_the_initial_age_too() {
        let object = stored(200, &[("cache-control", "max-age=100000"), ("age", "30")], b"x");
        assert_eq!(ask(&object, "GET", &[], Validated::No).headers.get("age").unwrap(), "60");
    }
}
