#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! Property tests of the pure functions on the proxy path, each against a simple model:
//! path joining and segment matching (reverse routes), hop-by-hop removal (RFC 9110 §7.6.1) and
//! absolute-form request targets (RFC 9112 §3.2.2). The fuzz targets in `fuzz/` check the same
//! functions on arbitrary bytes; these check exact results on well-formed input.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use proptest::prelude::*;
use sluice::headers::hop_by_hop;
use sluice::uri::path::has_dot_segment;
use sluice::uri::path::join;
use sluice::uri::path::segment_prefix;
use sluice::uri::target;

/// `join` as its doc comment describes it: the base without its trailing `/`, then the rest,
/// with a single `/` when both are empty ("never a doubled or missing slash, never empty").
fn join_model(base: &str, rest: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() && rest.is_empty() { "/".to_owned() } else { format!("{base}{rest}") }
}

proptest! {
    #[test]
    fn join_matches_its_model(
        base in "(/[a-z0-9%]{1,5}){0,3}/?",
        rest in "(/[a-z0-9%.]{0,5}){0,3}",
    ) {
        let joined = join(&base, &rest);
        prop_assert_eq!(&joined, &join_model(&base, &rest));
        prop_assert!(!joined.is_empty());
        prop_assert!(joined.starts_with('/'), "{:?}", joined);
        if !base.contains("//") && !rest.contains("//") {
            prop_assert!(!joined.contains("//"), "{:?} + {:?} = {:?}", base, rest, joined);
        }
        if !rest.is_empty() {
            prop_assert!(joined.ends_with(&rest), "{:?} + {:?} = {:?}", base, rest, joined);
        }
    }
}

/// `/api` matches `/api` and everything below it, never `/apiary`; `/` matches everything.
fn segment_model(prefix: &str, path: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/")) || prefix == "/"
}

/// Normalised route prefixes (as `config::route::normalize_prefix` leaves them) over a small
/// alphabet, so generated paths often share a byte prefix without sharing a segment.
fn route_prefix() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "(/[ab]{1,3}){1,3}"]
}

/// Request paths: independent of the prefix, or the prefix with something appended.
fn request_path(prefix: String) -> impl Strategy<Value = (String, String)> {
    let independent = "(/[ab]{0,3}){0,4}";
    let extended = "[ab/]{0,4}".prop_map({
        let prefix = prefix.clone();
        move |suffix| format!("{prefix}{suffix}")
    });
    prop_oneof![independent, extended].prop_map(move |path| (prefix.clone(), path))
}

proptest! {
    #[test]
    fn segment_prefix_matches_its_model(
        (prefix, path) in route_prefix().prop_flat_map(request_path),
    ) {
        prop_assert_eq!(
            segment_prefix(&prefix, &path),
            segment_model(&prefix, &path),
            "prefix {:?}, path {:?}", prefix, path
        );
    }
}

/// A path is refused when, percent-decoded once, split at `/` and `\`, with each segment cut at
/// its first `;`, some segment is `.` or `..` (`uri::path::has_dot_segment`'s doc comment).
fn dot_segment_model(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded.split(|b| *b == b'/' || *b == b'\\').any(|segment| {
        let name = segment.split(|b| *b == b';').next().unwrap_or_default();
        name == b"." || name == b".."
    })
}

proptest! {
    #[test]
    fn dot_segments_match_their_model(path in "([/\\\\.;a%]|%2[eEfF]|%5[cC]|%3[bB]|%25){0,12}") {
        prop_assert_eq!(has_dot_segment(&path), dot_segment_model(&path), "{:?}", path);
    }
}

/// Removed whatever `Connection` says (RFC 9110 §7.6.1; the proxy credentials and challenge,
/// RFC 9110 §11.7.1 and §11.7.2, are for this proxy alone).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Field names: end-to-end ones (some usually repeated), every fixed hop-by-hop one except
/// `connection` (which the test writes itself), and `trailer`, which is end-to-end.
const NAMES: [&str; 14] = [
    "x-a",
    "x-b",
    "x-c",
    "accept",
    "set-cookie",
    "host",
    "trailer",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// A Connection option: a field name in random case, or `close`, which names no field here.
fn connection_option() -> impl Strategy<Value = String> {
    let name = prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned);
    (prop_oneof![name, Just("close".to_owned())], any::<bool>())
        .prop_map(|(option, upper)| if upper { option.to_ascii_uppercase() } else { option })
}

/// One Connection line: options joined by commas with optional whitespace around them.
fn connection_line() -> impl Strategy<Value = (Vec<String>, String)> {
    prop::collection::vec((connection_option(), "[ ]{0,2}", "[ ]{0,2}"), 1..4).prop_map(|opts| {
        let line = opts.iter().map(|(o, l, r)| format!("{l}{o}{r}")).collect::<Vec<_>>();
        (opts.into_iter().map(|(o, _, _)| o).collect(), line.join(","))
    })
}

fn grouped(headers: &HeaderMap) -> BTreeMap<String, Vec<HeaderValue>> {
    headers
        .keys()
        .map(|name| (name.as_str().to_owned(), headers.get_all(name).iter().cloned().collect()))
        .collect()
}

proptest! {
    #[test]
    fn strip_removes_exactly_the_hop_by_hop_fields(
        fields in prop::collection::vec(prop::sample::select(NAMES.to_vec()), 0..12),
        connection in prop::collection::vec(connection_line(), 0..3),
    ) {
        let mut headers = HeaderMap::new();
        // Each value is unique, so the model also checks the order of repeated fields.
        for (i, name) in fields.iter().enumerate() {
            headers.append(*name, HeaderValue::from_str(&format!("v{i}")).unwrap());
        }
        for (_, line) in &connection {
            headers.append(http::header::CONNECTION, HeaderValue::from_str(line).unwrap());
        }
        let named: Vec<String> =
            connection.iter().flat_map(|(options, _)| options).map(|o| o.to_ascii_lowercase()).collect();
        let mut expected = grouped(&headers);
        expected.retain(|name, _| {
            !HOP_BY_HOP.contains(&name.as_str()) && !named.contains(name)
        });

        hop_by_hop::strip(&mut headers);

        prop_assert_eq!(grouped(&headers), expected, "connection lines {:?}", connection);
        for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
            prop_assert!(!headers.contains_key(HeaderName::from_bytes(name.as_bytes()).unwrap()));
        }
    }
}

/// Hosts as a client writes them: DNS names, IPv4 literals and bracketed IPv6 literals.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
        any::<[u8; 4]>().prop_map(|b| Ipv4Addr::from(b).to_string()),
        any::<[u8; 16]>().prop_map(|b| format!("[{}]", Ipv6Addr::from(b))),
    ]
}

/// Path and optional query with the characters RFC 3986 allows unescaped, percent escapes
/// (including the `%2F` that must not be decoded) and `+`.
fn path_and_query() -> impl Strategy<Value = String> {
    (
        "(/([a-zA-Z0-9._~!$&'()*+,;=:@-]|%2F|%2e|%C3%A9){0,6}){1,3}",
        prop::option::of("[a-zA-Z0-9._~!$&'()*+,;=:@/?%-]{0,10}"),
    )
        .prop_map(|(path, query)| match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        })
}

proptest! {
    #[test]
    fn absolute_targets_keep_authority_port_and_path(
        host in host(),
        port in 1..=u16::MAX,
        path in path_and_query(),
        https in any::<bool>(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let text = format!("{scheme}://{host}:{port}{path}");
        let uri: Uri = text.parse().unwrap();
        let (target, upstream) = target::absolute(&uri).unwrap();
        prop_assert_eq!(target.authority.as_str(), format!("{host}:{port}"));
        prop_assert_eq!(target.host(), host.as_str());
        prop_assert_eq!(target.port, port);
        prop_assert_eq!(upstream.scheme_str(), Some(scheme));
        prop_assert_eq!(upstream.path_and_query().map(|pq| pq.as_str()), Some(path.as_str()));
        prop_assert_eq!(upstream.to_string(), text);

        let connect = target::connect(&format!("{host}:{port}").parse().unwrap()).unwrap();
        prop_assert_eq!(connect, target);
    }
}
