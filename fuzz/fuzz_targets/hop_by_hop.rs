//! Hop-by-hop removal (RFC 9110 §7.6.1): bytes -> header lines -> `headers::hop_by_hop::strip`.
//! Afterwards no fixed hop-by-hop field and no field named by any original `Connection` line
//! remains, and every other line is kept with its values in order.

#![no_main]

#[path = "header_lines.rs"]
mod header_lines;

use http::HeaderName;
use http::header::CONNECTION;
use libfuzzer_sys::fuzz_target;
use sluice::headers::hop_by_hop;

/// Removed whatever `Connection` says (RFC 9110 §7.6.1, §11.7.1, §11.7.2).
const FIXED: [&str; 8] = [
    "connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

fuzz_target!(|data: &[u8]| {
    let mut headers = header_lines::map(data);
    let before = header_lines::grouped(&headers);
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();

    hop_by_hop::strip(&mut headers);

    for name in FIXED {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    for name in &named {
        assert!(!headers.contains_key(name), "{name} named by Connection survived");
    }
    let is_removed = |name: &str| FIXED.contains(&name) || named.iter().any(|n| n.as_str() == name);
    let mut expected = before;
    expected.retain(|name, _| !is_removed(name));
    assert_eq!(header_lines::grouped(&headers), expected, "end-to-end fields changed");
});
