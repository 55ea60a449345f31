//! Invalidation (RFC 9111 §4.4): which stored responses an unsafe request's response makes
//! stale.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::cache::key::CacheKey;

/// Whether `method` is safe (RFC 9110 §9.2.1); every method this list does not know,
/// extension methods included, is treated as unsafe.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The keys whose stored responses the response to an unsafe request invalidates (RFC 9111
/// §4.4): on a non-error status (2xx or 3xx), the target URI and the URIs in `Location` and
/// `Content-Location` when they have the same origin. Empty for safe methods and errors.
pub fn invalidated(
    method: &Method,
    target: &CacheKey,
    status: StatusCode,
    response: &HeaderMap,
) -> Vec<CacheKey> {
    if is_safe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let own = CacheKey::for_url(target.url()).unwrap_or_else(|| target.clone());
    let mut keys = vec![own];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        for value in response.get_all(name) {
            if let Some(key) = value.to_str().ok().and_then(|text| target.resolve_same_origin(text))
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn table() {
        let target = CacheKey::new(&Method::POST, "http", "a.test", "/test/x");
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/test/x/location_target"));
        headers
            .insert(header::CONTENT_LOCATION, HeaderValue::from_static("http://b.test/elsewhere"));
        let cases: &[(&str, u16, &[&str])] = &[
            ("POST", 200, &["http://a.test/test/x", "http://a.test/test/x/location_target"]),
            ("PUT", 201, &["http://a.test/test/x", "http://a.test/test/x/location_target"]),
            ("DELETE", 303, &["http://a.test/test/x", "http://a.test/test/x/location_target"]),
            ("M-SEARCH", 204, &["http://a.test/test/x", "http://a.test/test/x/location_target"]),
            ("POST", 500, &[]),
            ("PUT", 404, &[]),
            ("GET", 200, &[]),
            ("HEAD", 200, &[]),
            ("OPTIONS", 200, &[]),
        ];
        for (method, status, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let keys =
                invalidated(&method, &target, StatusCode::from_u16(*status).unwrap(), &headers);
            let urls: Vec<_> = keys.iter().map(CacheKey::url).collect();
            assert_eq!(urls, *expected, "{method} {status}");
            assert!(keys.iter().all(|key| *key.method() == Method::GET));
        }
    }
}
