//! Validation (RFC 9111 §4.3): the conditional request a cache sends for a stored response,
//! updating the stored header fields from a 304, and answering a client's own conditional
//! request from the cache.

use std::time::SystemTime;

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::date;
use super::directives::split_list;
use super::freshness::date_value;

/// Request fields that make a request conditional or partial; replaced by the cache's own
/// validators when it validates a stored response, and never sent when it fetches a whole
/// response to store.
pub const CONDITIONAL_FIELDS: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Turns `request` (a copy of the client's request) into the conditional request that
/// validates a stored response with header fields `stored` (RFC 9111 §4.3.1): the stored
/// `ETag` in `If-None-Match` and the stored `Last-Modified` in `If-Modified-Since`. The
/// client's own preconditions and `Range` are removed: the cache answers those itself from the
/// validated response. Returns whether a validator was added; without one the request is an
/// ordinary one that fetches the response again.
pub fn make_conditional(request: &mut HeaderMap, stored: &HeaderMap) -> bool {
    for name in &CONDITIONAL_FIELDS {
        request.remove(name);
    }
    let mut added = false;
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
        added = true;
    }
    added
}

/// Whether a 304 with header fields `not_modified` validates the stored response with header
/// fields `stored` (RFC 9111 §4.3.4): when the 304 carries an entity tag, it must be the stored
/// one; a 304 without one validates the response that was asked about.
pub fn validates(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    match (not_modified.get(header::ETAG), stored.get(header::ETAG)) {
        (Some(new), Some(old)) => weak_match(new.as_bytes(), old.as_bytes()),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Fields a 304 never changes in a stored response (RFC 9111 §3.2): `Content-Length`
/// describes the stored content, which a 304 does not carry; the framing fields describe a
/// message, not the response.
const NOT_UPDATED: [HeaderName; 3] =
    [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION];

/// Updates stored header fields from a 304 (RFC 9111 §3.2, §4.3.4): every field the 304
/// carries replaces the stored field of that name, except those in [`NOT_UPDATED`].
pub fn update_from_304(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if NOT_UPDATED.contains(name) {
            continue;
        }
        if !replaced.contains(&name) {
            stored.remove(name);
            replaced.push(name);
        }
        stored.append(name.clone(), value.clone());
    }
}

/// How a client's conditional GET or HEAD is answered from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    /// Not conditional, or the condition holds: send the stored response.
    Full,
    /// The client's copy is current: send 304 Not Modified.
    NotModified,
}

/// Evaluates a request's `If-None-Match` / `If-Modified-Since` against a stored response
/// (RFC 9111 §4.3.2, RFC 9110 §13.2.2): `If-None-Match` takes precedence, with weak
/// comparison; `If-Modified-Since` compares with the stored `Last-Modified`, or `Date`, or the
/// time the response was received, in that order.
pub fn evaluate(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
    response_time: SystemTime,
) -> Conditional {
    if *method != Method::GET && *method != Method::HEAD {
        return Conditional::Full;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG) else {
            return Conditional::Full;
        };
        let matched = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|line| line.to_str().ok())
            .flat_map(split_list)
            .any(|tag| tag == "*" || weak_match(tag.as_bytes(), etag.as_bytes()));
        return if matched { Conditional::NotModified } else { Conditional::Full };
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| date::parse(text, response_time));
    let Some(since) = since else {
        return Conditional::Full;
    };
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| date::parse(text, response_time))
        .unwrap_or_else(|| date_value(stored, response_time));
    if modified <= since { Conditional::NotModified } else { Conditional::Full }
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): equal opaque tags, either or both
/// of them weak.
pub fn weak_match(a: &[u8], b: &[u8]) -> bool {
    opaque(a) == opaque(b)
}

/// Strong comparison (RFC 9110 §8.8.3.2): both strong and equal.
pub fn strong_match(a: &[u8], b: &[u8]) -> bool {
    !a.starts_with(b"W/") && a == b
}

/// An entity tag without its weakness indicator.
fn opaque(tag: &[u8]) -> &[u8] {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    let start = tag.iter().position(|byte| !matches!(byte, b' ' | b'\t')).unwrap_or(tag.len());
    let end = tag.iter().rposition(|byte| !matches!(byte, b' ' | b'\t')).map_or(start, |at| at + 1);
    tag.get(start..end).unwrap_or_default()
}

/// The header fields of a 304 generated from a stored response (RFC 9110 §15.4.5): those a
/// 200 would have carried that the client's cache updates from, plus `Last-Modified`, which
/// guides that update.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    const KEPT: [HeaderName; 7] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ];
    let mut out = HeaderMap::with_capacity(KEPT.len());
    for name in &KEPT {
        for value in stored.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The value of an HTTP-date field for `time`.
pub fn date_header(time: SystemTime) -> HeaderValue {
    HeaderValue::try_from(date::format(time))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fields::{Fields, map};

    /// Header fields of a test case, as name/value pairs.
    use std::time::{Duration, UNIX_EPOCH};

    fn time(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn conditional_request_carries_the_stored_validators() {
        let mut request =
            map(&[("if-none-match", "\"client\""), ("range", "bytes=0-1"), ("x", "1")]);
        let stored =
            map(&[("etag", "\"abc\""), ("last-modified", "Wed, 01 Jan 2020 00:00:00 GMT")]);
        assert!(make_conditional(&mut request, &stored));
        assert_eq!(request.get("if-none-match").unwrap(), "\"abc\"");
        assert_eq!(request.get("if-modified-since").unwrap(), "Wed, 01 Jan 2020 00:00:00 GMT");
        assert!(!request.contains_key("range"));
        assert_eq!(request.get("x").unwrap(), "1");
        let mut request = map(&[("if-modified-since", "Wed, 01 Jan 2020 00:00:00 GMT")]);
        assert!(!make_conditional(&mut request, &HeaderMap::new()));
        assert!(request.is_empty());
    }

    #[test]
    fn update_from_304_replaces_all_but_content_length() {
        let mut stored = map(&[
            ("content-length", "36"),
            ("cache-control", "max-age=1"),
            ("test-header", "old"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=1"),
            ("kept", "1"),
        ]);
        let not_modified = map(&[
            ("content-length", "10"),
            ("cache-control", "max-age=3600"),
            ("test-header", "new"),
            ("set-cookie", "c=2"),
            ("set-cookie", "d=2"),
        ]);
        update_from_304(&mut stored, &not_modified);
        assert_eq!(stored.get("content-length").unwrap(), "36");
        assert_eq!(stored.get("cache-control").unwrap(), "max-age=3600");
        assert_eq!(stored.get("test-header").unwrap(), "new");
        let cookies: Vec<_> = stored.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["c=2", "d=2"]);
        assert_eq!(stored.get("kept").unwrap(), "1");
    }

    #[test]
    fn validates_table() {
        let cases: &[(Fields<'_>, Fields<'_>, bool)] = &[
            (&[("etag", "\"a\"")], &[("etag", "\"a\"")], true),
            (&[("etag", "\"a\"")], &[("etag", "W/\"a\"")], true),
            (&[("etag", "\"a\"")], &[("etag", "\"b\"")], false),
            (&[], &[("etag", "\"b\"")], false),
            (&[("etag", "\"a\"")], &[], true),
            (&[], &[], true),
        ];
        for (stored, not_modified, expected) in cases {
            assert_eq!(
                validates(&map(stored), &map(not_modified)),
                *expected,
                "{stored:?} {not_modified:?}"
            );
        }
    }

    #[test]
    fn evaluate_table() {
        use Conditional::*;
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let earlier = "Sun, 06 Nov 1994 08:00:00 GMT";
        let later = "Sun, 06 Nov 1994 09:00:00 GMT";
        let stored = [("etag", "\"abcdef\""), ("last-modified", lm), ("date", later)];
        let cases: &[(&str, Fields<'_>, Fields<'_>, Conditional)] = &[
            ("GET", &[], &stored, Full),
            ("GET", &[("if-none-match", "\"abcdef\"")], &stored, NotModified),
            ("HEAD", &[("if-none-match", "\"abcdef\"")], &stored, NotModified),
            ("POST", &[("if-none-match", "\"abcdef\"")], &stored, Full),
            ("GET", &[("if-none-match", "W/\"abcdef\"")], &stored, NotModified),
            ("GET", &[("if-none-match", "\"1234\", \"abcdef\", \"5678\"")], &stored, NotModified),
            ("GET", &[("if-none-match", "\"1234\"")], &stored, Full),
            ("GET", &[("if-none-match", "*")], &stored, NotModified),
            ("GET", &[("if-none-match", "\"x\"")], &[("last-modified", lm)], Full),
            // If-None-Match takes precedence over If-Modified-Since.
            (
                "GET",
                &[("if-none-match", "\"abcdef\""), ("if-modified-since", earlier)],
                &stored,
                NotModified,
            ),
            ("GET", &[("if-none-match", "\"nope\""), ("if-modified-since", later)], &stored, Full),
            ("GET", &[("if-modified-since", lm)], &stored, NotModified),
            ("GET", &[("if-modified-since", later)], &stored, NotModified),
            ("GET", &[("if-modified-since", earlier)], &stored, Full),
            (
                "GET",
                &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
                &stored,
                NotModified,
            ),
            ("GET", &[("if-modified-since", "garbage")], &stored, Full),
            // Without Last-Modified, Date stands in.
            ("GET", &[("if-modified-since", later)], &[("date", lm)], NotModified),
            ("GET", &[("if-modified-since", earlier)], &[("date", lm)], Full),
        ];
        for (method, request, stored, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                evaluate(&method, &map(request), &map(stored), time(784_111_777)),
                *expected,
                "{method} {request:?}"
            );
        }
    }

    #[test]
    fn entity_tag_comparisons() {
        assert!(weak_match(b"W/\"1\"", b"\"1\""));
        assert!(!weak_match(b"\"1\"", b"\"2\""));
        assert!(strong_match(b"\"1\"", b"\"1\""));
        assert!(!strong_match(b"W/\"1\"", b"W/\"1\""));
    }

    #[test]
    fn not_modified_keeps_only_the_update_fields() {
        let stored = map(&[
            ("etag", "\"a\""),
            ("cache-control", "max-age=60"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("vary", "accept"),
        ]);
        let out = not_modified_headers(&stored);
        let mut names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["cache-control", "etag", "vary"]);
    }
}
