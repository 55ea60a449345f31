use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::h1::request;
use crate::h1::{HeadLimits, Parsed};

const LIMITS: HeadLimits = HeadLimits { max_bytes: 8192, max_fields: 100 };

type Grouped = BTreeMap<String, Vec<Vec<u8>>>;

/// The head's fields, grouped by lowercase name with their values in order.
fn grouped<'a>(lines: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Grouped {
    let mut grouped = Grouped::new();
    for (name, value) in lines {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        grouped.entry(name).or_default().push(value.to_vec());
    }
    grouped
}

/// The fields the general path sends for `head`: parsed into a map, hop-by-hop fields
/// stripped, `edits` applied.
fn through_a_map(head: &str, edits: &[Edit<'_>]) -> Grouped {
    let mut fields = Vec::new();
    let Ok(Parsed::Complete(parsed)) = request::parse(head.as_bytes(), LIMITS, &mut fields) else {
        panic!("{head:?} does not parse")
    };
    let mut map = HeaderMap::new();
    for (name, value) in parsed.fields.iter() {
        map.append(HeaderName::from_bytes(name).unwrap(), HeaderValue::from_bytes(value).unwrap());
    }
    hop_by_hop::strip(&mut map);
    edit::apply(edits.iter().copied(), &mut map);
    grouped(map.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
}

/// The fields the fast path sends for `head`: serialised while copying, then parsed back.
fn streamed(head: &str, edits: &[Edit<'_>]) -> (Vec<u8>, Grouped, Written) {
    let mut fields = Vec::new();
    let Ok(Parsed::Complete(parsed)) = request::parse(head.as_bytes(), LIMITS, &mut fields) else {
        panic!("{head:?} does not parse")
    };
    let mut out = Vec::new();
    request_line(&mut out, parsed.method.as_str().as_bytes(), parsed.target);
    let written = super::fields(&mut out, &parsed.fields, edits, true);
    end(&mut out);
    let mut again = Vec::new();
    let Ok(Parsed::Complete(back)) = request::parse(&out, LIMITS, &mut again) else {
        panic!("{:?} does not parse back", String::from_utf8_lossy(&out))
    };
    assert_eq!(back.len, out.len());
    let fields = grouped(back.fields.iter());
    (out.clone(), fields, written)
}

#[test]
fn copying_agrees_with_the_map_functions() {
    let host = http::header::HOST;
    let xff = HeaderName::from_static("x-forwarded-for");
    let gone = HeaderName::from_static("x-debug");
    let upstream = HeaderValue::from_static("upstream:80");
    let client = HeaderValue::from_static("192.0.2.1");
    let heads = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /p HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\nUser-Agent: ab\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nConnection: close, X-Secret\r\nx-secret: 1\r\nKeep-Alive: 5\r\n\
         TE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Debug: on\r\nX-Empty:\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\n\r\n",
    ];
    let edit_lists: [&[Edit<'_>]; 4] = [
        &[],
        &[Edit::Set(&host, &upstream)],
        &[Edit::Set(&host, &upstream), Edit::Append(&xff, &client), Edit::Remove(&gone)],
        &[Edit::Remove(&host), Edit::Set(&xff, &client), Edit::Append(&xff, &upstream)],
    ];
    for head in heads {
        for edits in edit_lists {
            let (out, fields, written) = streamed(head, edits);
            assert_eq!(
                fields,
                through_a_map(head, edits),
                "{head:?} with {edits:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(written.host, fields.contains_key("host"));
        }
    }
}

#[test]
fn received_lines_are_copied_whole_and_lengths_only_when_kept() {
    let head = "POST /x HTTP/1.1\r\nHost: a\r\nX-Spaced:  a  b\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    // (The pair is refused by the parser; build the fields from a head without it.)
    let head = head.replace("Transfer-Encoding: chunked\r\n", "");
    let mut fields = Vec::new();
    let Ok(Parsed::Complete(parsed)) = request::parse(head.as_bytes(), LIMITS, &mut fields) else {
        panic!()
    };
    let mut out = Vec::new();
    super::fields(&mut out, &parsed.fields, &[], true);
    assert_eq!(out, b"Host: a\r\nX-Spaced:  a  b\r\nContent-Length: 3\r\n");
    out.clear();
    super::fields(&mut out, &parsed.fields, &[], false);
    assert_eq!(out, b"Host: a\r\nX-Spaced:  a  b\r\n");
}

#[test]
fn fields_named_by_connection_are_dropped_and_others_kept() {
    let head = "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: X-Drop, close\r\n\
                X-Drop: 1\r\nClose: 2\r\nX-Keep: 3\r\nKeep-Alive: 4\r\n\r\n";
    let (out, _, _) = streamed(head, &[]);
    assert_eq!(out, b"GET / HTTP/1.1\r\nX-Keep: 3\r\n\r\n");
    // The same fields with only fixed hop-by-hop options: nothing else is dropped.
    let head = "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nX-Drop: 1\r\n\r\n";
    let (out, _, _) = streamed(head, &[]);
    assert_eq!(out, b"GET / HTTP/1.1\r\nX-Drop: 1\r\n\r\n");
}

#[test]
fn status_lines() {
    let mut out = Vec::new();
    status_line(&mut out, StatusCode::OK, b"OK");
    status_line(&mut out, StatusCode::NOT_FOUND, b"Nope");
    status_line(&mut out, StatusCode::from_u16(599).unwrap(), b"");
    assert_eq!(out, b"HTTP/1.1 200 OK\r\nHTTP/1.1 404 Nope\r\nHTTP/1.1 599 \r\n");
}
