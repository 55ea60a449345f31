//! Matching and rewriting request paths for routes: pure functions on the raw, still
//! percent-encoded path, so `%2F`, `+` and UTF-8 escapes reach the upstream byte for byte.

use http::Uri;
use http::uri::PathAndQuery;

use crate::config::{RouteConfig, UpstreamUrl};

/// Why a request path cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A `.` or `..` segment (raw, percent-encoded, with `;` parameters or between
    /// backslashes or encoded separators) could escape the route's prefix at an upstream that
    /// normalises paths ([`has_dot_segment`]).
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
    let path_and_query = match uri.path_and_query() {
        // Nothing to strip or prepend: the request's own path and query, shared rather than
        // joined again (the common case, and the one every request of a plain route takes).
        Some(same)
            if base.base_path.is_empty() && rest.len() == path.len() && path.starts_with('/') =>
        {
            same.clone()
        }
        _ => {
            let mut joined = join(&base.base_path, rest);
            if let Some(query) = uri.query() {
                joined.push('?');
                joined.push_str(query);
            }
            PathAndQuery::try_from(joined).map_err(|_| RewriteError::Invalid)?
        }
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(base.scheme.clone());
    parts.authority = Some(base.authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| RewriteError::Invalid)
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

/// True when any segment of `path` could be read as `.` or `..` by an upstream: a segment is
/// what lies between separators, where a separator is `/`, `\` (IIS and several frameworks
/// treat it as `/`) or either of them percent-encoded (`%2F`, `%5C`, any case: servers that
/// decode before splitting); a segment's `;` parameters (RFC 3986 §3.3, Tomcat's
/// `..;/`), raw or as `%3B`, are ignored; and `%2E` counts as `.`. So `..`, `%2e%2E`,
/// `..;x`, `..\`, `..%2f` and `.%2E%5c` all refuse a path; `...`, `a..b` and `..a` do not.
///
/// One pass over the bytes, no allocation: it runs for every routed request.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut at = 0;
    let mut dots = 0u8;
    let mut other = false;
    let mut parameters = false;
    loop {
        let (unit, width) = match bytes.get(at) {
            None => (Unit::Separator, 0),
            Some(b'%') => match percent_decoded(bytes, at) {
                Some(decoded) => (Unit::of(decoded), 3),
                None => (Unit::Other, 1),
            },
            Some(&byte) => (Unit::of(byte), 1),
        };
        match unit {
            Unit::Separator => {
                if !other && (dots == 1 || dots == 2) {
                    return true;
                }
                if width == 0 {
                    return false;
                }
                (dots, other, parameters) = (0, false, false);
            }
            _ if parameters => {}
            Unit::Dot => dots = dots.saturating_add(1),
            Unit::Parameters => parameters = true,
            Unit::Other => other = true,
        }
        at += width;
    }
}

/// What one (decoded) byte of a path is to [`has_dot_segment`].
#[derive(Clone, Copy)]
enum Unit {
    /// Ends a segment: `/` or `\`.
    Separator,
    /// `.`.
    Dot,
    /// `;`: the segment's parameters follow.
    Parameters,
    /// Anything else.
    Other,
}

impl Unit {
    fn of(byte: u8) -> Unit {
        match byte {
            b'/' | b'\\' => Unit::Separator,
            b'.' => Unit::Dot,
            b';' => Unit::Parameters,
            _ => Unit::Other,
        }
    }
}

/// The byte `%XY` at `at` stands for, when both digits are hexadecimal.
fn percent_decoded(bytes: &[u8], at: usize) -> Option<u8> {
    let digit = |offset: usize| bytes.get(at + offset).and_then(|b| (*b as char).to_digit(16));
    let (high, low) = (digit(1)?, digit(2)?);
    u8::try_from(high * 16 + low).ok()
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
        assert_eq!(rewrite("/p", "http://u", true, "/p/..;/admin"), Err(RewriteError::DotSegment));
    }

    #[test]
    fn dot_segments_table() {
        for (path, refused) in [
            ("/", false),
            ("", false),
            ("/a/b/c", false),
            ("/.", true),
            ("/..", true),
            ("/a/./b", true),
            ("/a/../b", true),
            ("..", true),
            ("/a/..", true),
            ("/%2e%2E/a", true),
            ("/.%2e/a", true),
            ("/%2E/a", true),
            // Look-alikes: parameters, backslashes and encoded separators.
            ("/api/..;/admin", true),
            ("/api/..;jsessionid=x/admin", true),
            ("/api/.;x/admin", true),
            ("/api/..%3b/admin", true),
            ("/api/..%3B/admin", true),
            ("/api/..\\admin", true),
            ("/api\\..\\admin", true),
            ("/api/..%2fadmin", true),
            ("/api/..%2Fadmin", true),
            ("/api/..%5cadmin", true),
            ("/api/..%5Cadmin", true),
            ("/api/%2e%2e%2fadmin", true),
            ("/api/x%2f..", true),
            ("/api/x%5c.", true),
            // Not dot segments.
            ("/a..b/..c/v1.2", false),
            ("/.../x", false),
            ("/..a/x", false),
            ("/a;../x", false),
            ("/;../x", false),
            ("/a%2fb", false),
            ("/%2", false),
            ("/%", false),
            ("/.%2", false),
            ("/%zz./x", false),
            ("/%25%32%65/x", false),
        ] {
            assert_eq!(has_dot_segment(path), refused, "{path:?}");
        }
    }
}
