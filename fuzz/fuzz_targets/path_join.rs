//! Reverse-proxy path rewriting: `uri::path::join`, `::has_dot_segment` (against a model) and
//! `::upstream_uri` on a route built by `RouteConfig::from_cli("/p=http://h/base", ..)`, with the
//! base path, prefix (normalised as the config does), strip flag and request target fuzzed.
//!
//! Input: one flag byte (`k` keeps the prefix, anything else strips it), then
//! `base \n rest \n prefix \n request-target`.

#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use sluice::config::RouteConfig;
use sluice::config::route::normalize_prefix;
use sluice::uri::path::segment_prefix;
use sluice::uri::path::{self, RewriteError};

fuzz_target!(|data: &[u8]| {
    let Some((flag, data)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let base = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();

    check_join(base, rest);
    for part in [base, rest, prefix, target] {
        assert_eq!(path::has_dot_segment(part), dot_segment_model(part), "{part:?}");
    }

    // The fuzzed base path, if it makes a valid upstream URL on host `h`, else `/base`.
    let mut route = (base.is_empty() || base.starts_with('/'))
        .then(|| RouteConfig::from_cli(&format!("/p=http://h{base}"), &Default::default()).ok())
        .flatten()
        .or_else(|| RouteConfig::from_cli("/p=http://h/base", &Default::default()).ok())
        .expect("the fixed route parses");
    if let Ok(prefix) = normalize_prefix(prefix) {
        route.prefix = prefix;
    }
    route.strip_prefix = *flag != b'k';
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    match path::upstream_uri(&route, &uri) {
        Ok(upstream) => {
            assert_eq!(upstream.scheme_str(), Some("http"));
            assert_eq!(upstream.authority().map(|a| a.as_str()), Some("h"));
            assert_eq!(upstream.query(), uri.query(), "query changed: {uri} -> {upstream}");
            assert!(upstream.path().starts_with('/'), "{uri} -> {upstream}");
            assert!(!path::has_dot_segment(uri.path()));
            // What the router would have sent here: the base path, then the request path with
            // the matched prefix removed, byte for byte.
            if segment_prefix(&route.prefix, uri.path()) {
                let kept = if route.strip_prefix && route.prefix != "/" {
                    uri.path().get(route.prefix.len()..).unwrap_or_default()
                } else {
                    uri.path()
                };
                assert_eq!(upstream.path(), path::join(&route.upstream.base_path, kept));
                assert!(upstream.path().ends_with(kept), "{uri} -> {upstream}");
            }
        }
        Err(RewriteError::DotSegment) => assert!(path::has_dot_segment(uri.path())),
        Err(RewriteError::Invalid) => {}
    }
});

/// `has_dot_segment` as its doc comment describes it: percent-decoded once, split at `/` and
/// `\`, each segment cut at its first `;`, some segment is `.` or `..`.
fn dot_segment_model(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (byte, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
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

/// `join` as its doc comment promises: the base without trailing `/`, then the rest; never a
/// doubled or missing slash, never empty.
fn check_join(base: &str, rest: &str) {
    let joined = path::join(base, rest);
    assert!(!joined.is_empty(), "join({base:?}, {rest:?}) is empty");
    if !base.contains("//") && !rest.contains("//") {
        assert!(!joined.contains("//"), "join({base:?}, {rest:?}) = {joined:?}");
    }
    if base.is_empty() || base.starts_with('/') {
        assert!(joined.starts_with('/'), "join({base:?}, {rest:?}) = {joined:?}");
    }
    assert!(joined.starts_with(base.trim_end_matches('/')));
    if !rest.is_empty() {
        assert!(joined.ends_with(rest), "join({base:?}, {rest:?}) = {joined:?}");
    }
}
