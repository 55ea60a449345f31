//! Matching and rewriting request paths for routes: pure functions on the raw, still
//! percent-encoded path, so `%2F`, `+` and UTF-8 escapes reach the upstream byte for byte.

use http::Uri;
use http::uri::PathAndQuery;

use crate::config::{RouteConfig, UpstreamUrl};

/// Why a request path cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A `.` or `..` segment (raw or percent-encoded) could escape the route's prefix at an
    /// upstream that normalises paths.
    #[error("the path contains a `.` or `..` segment")]
    DotSegment,
    /// The joined URI is not valid (never expected for a parsed request path).
    #[error("the rewritten URI is invalid")]
    Invalid,
}

/// The absolute upstream URI for `uri` on `route`.
pub fn upstream_uri(route: &RouteConfig, uri: &Uri) -> Result<Uri, RewriteError> {
    target_uri(route, &route.upstream, uri)
}

/// The absolute URI for `uri` on `route` at `base`, one of the route's targets.
pub fn target_uri(route: &RouteConfig, base: &UpstreamUrl, uri: &Uri) -> Result<Uri, RewriteError> {
    let path = uri.path();
    if has_dot_segment(path) {
        return Err(RewriteError::DotSegment);
    }
    let rest = if route.strip_prefix && route.prefix != "/" {
        path.get(route.prefix.len()..).unwrap_or_default()
    } else {
        path
    };
    let mut joined = join(&base.base_path, rest);
    if let Some(query) = uri.query() {
        joined.push('?');
        joined.push_str(query);
    }
    let path_and_query = PathAndQuery::try_from(joined).map_err(|_| RewriteError::Invalid)?;
    Uri::builder()
        .scheme(base.scheme.clone())
        .authority(base.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| RewriteError::Invalid)
}

/// Joins a base path (no trailing `/`, possibly empty) and the rest of a request path (empty or
/// starting with `/`): never a doubled or missing slash, and the result is never empty.
pub fn join(base: &str, rest: &str) -> String {
    let mut joined = String::with_capacity(base.len() + rest.len() + 1);
    joined.push_str(base.trim_end_matches('/'));
    if rest.is_empty() {
        if joined.is_empty() {
            joined.push('/');
        }
    } else {
        if !rest.starts_with('/') {
            joined.push('/');
        }
        joined.push_str(rest);
    }
    joined
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apiary`; `/` matches everything.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// True when any segment is `.` or `..`, written raw or percent-encoded in any case.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

    fn rewrite(
        prefix: &str,
        upstream: &str,
        strip: bool,
        request: &str,
    ) -> Result<String, RewriteError> {
        let mut route =
            RouteConfig::from_cli(&format!("{prefix}={upstream}"), &Timeouts::default()).unwrap();
        route.strip_prefix = strip;
        upstream_uri(&route, &request.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn segments_table() {
        for (prefix, path, expected) in [
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/x/y", true),
            ("/api", "/apiary", false),
            ("/api", "/ap", false),
            ("/api", "/API", false),
            ("/api", "/api%2Fx", false),
            ("/", "/anything", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
        ] {
            assert_eq!(segment_prefix(prefix, path), expected, "{prefix} vs {path}");
        }
    }

    #[test]
    fn join_table() {
        for (base, rest, expected) in [
            ("", "", "/"),
            ("", "/", "/"),
            ("", "/x", "/x"),
            ("/v1", "", "/v1"),
            ("/v1", "/", "/v1/"),
            ("/v1", "/chat", "/v1/chat"),
            ("/v1/", "/chat", "/v1/chat"),
        ] {
            assert_eq!(join(base, rest), expected, "{base:?} + {rest:?}");
        }
    }

    #[test]
    fn rewrite_table() {
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(
            rewrite("/defm", "https://api.x/v1", true, "/defm/chat?a=1"),
            ok("https://api.x/v1/chat?a=1")
        );
        assert_eq!(rewrite("/defm", "https://api.x/v1", true, "/defm"), ok("https://api.x/v1"));
        assert_eq!(rewrite("/defm", "http://api.x", true, "/defm"), ok("http://api.x/"));
        assert_eq!(rewrite("/defm", "http://api.x/", false, "/defm/a"), ok("http://api.x/defm/a"));
        assert_eq!(rewrite("/", "http://api.x/base", true, "/a/b"), ok("http://api.x/base/a/b"));
        assert_eq!(
            rewrite("/p", "http://u:81", true, "/p/a%2Fb/%C3%A9?q=a%2Fb+c&x=%E2%82%AC"),
            ok("http://u:81/a%2Fb/%C3%A9?q=a%2Fb+c&x=%E2%82%AC")
        );
        assert_eq!(rewrite("/p", "http://u", true, "/p/../admin"), Err(RewriteError::DotSegment));
        assert_eq!(
            rewrite("/p", "http://u", true, "/p/%2E%2e/admin"),
            Err(RewriteError::DotSegment)
        );
        assert_eq!(rewrite("/p", "http://u", true, "/p/a..b/c.d"), ok("http://u/a..b/c.d"));
    }
}
