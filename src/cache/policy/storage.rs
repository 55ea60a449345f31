//! Whether a response may be stored by a shared cache (RFC 9111 §3), and what of it is kept
//! (§3.1).

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::directives::{DirectiveSource, RequestDirectives, ResponseDirectives};
use super::freshness::{Freshness, heuristically_cacheable};
use crate::cache::key::Vary;

/// Why a response is not stored; logged and counted, so a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not one whose responses this cache stores (only GET).
    Method,
    /// A status code this cache does not store as a response of its own (304, 206).
    Status,
    /// `must-understand` with a status code this cache does not know (§5.2.2.3).
    MustUnderstand,
    /// `no-store` in the response (§5.2.2.5).
    NoStore,
    /// `no-store` in the request (§5.2.1.5).
    RequestNoStore,
    /// `private` (§5.2.2.7): a shared cache must not store it.
    Private,
    /// The request carried `Authorization` and the response does not allow sharing it (§3.5).
    Authorization,
    /// `Vary: *`: no later request can ever match it (§4.1).
    VaryAny,
    /// No explicit freshness and a status code that is not heuristically cacheable (§3).
    NoFreshness,
    /// Stale on arrival with nothing to validate it with or to serve it stale under: storing
    /// it could never save a request.
    Unusable,
}

impl NotStorable {
    /// The reason as a log field or metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::MustUnderstand => "must_understand",
            NotStorable::NoStore => "no_store",
            NotStorable::RequestNoStore => "request_no_store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryAny => "vary_any",
            NotStorable::NoFreshness => "no_freshness",
            NotStorable::Unusable => "unusable",
        }
    }
}

/// Whether this cache understands `status` and conforms to its caching requirements
/// (`must-understand`, RFC 9111 §5.2.2.3): the final status codes RFC 9110 §15 defines, less
/// 206, whose partial content this cache does not store.
pub fn understands(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// The request side of a storage decision.
#[derive(Debug, Clone, Copy)]
pub struct StoredRequest<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request header fields.
    pub headers: &'a HeaderMap,
    /// Its parsed Cache-Control directives.
    pub directives: &'a RequestDirectives,
}

/// The response side of a storage decision.
#[derive(Debug, Clone, Copy)]
pub struct StoredResponse<'a> {
    /// The status code.
    pub status: StatusCode,
    /// The response header fields.
    pub headers: &'a HeaderMap,
    /// The directives this cache follows and where they came from.
    pub directives: &'a ResponseDirectives,
    /// Whether they came from Cache-Control or a targeted field.
    pub source: &'a DirectiveSource,
    /// Its freshness as assessed on arrival.
    pub freshness: &'a Freshness,
    /// Its `Vary`.
    pub vary: &'a Vary,
}

/// Whether a shared cache may store `response` to `request` (RFC 9111 §3).
pub fn storable(
    request: StoredRequest<'_>,
    response: StoredResponse<'_>,
) -> Result<(), NotStorable> {
    if request.method != Method::GET {
        return Err(NotStorable::Method);
    }
    let status = response.status;
    if status.is_informational()
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return Err(NotStorable::Status);
    }
    let directives = response.directives;
    // must-understand overrides no-store for a status code the cache understands (§5.2.2.3).
    if directives.must_understand {
        if !understands(status) {
            return Err(NotStorable::MustUnderstand);
        }
    } else if directives.no_store {
        return Err(NotStorable::NoStore);
    }
    if request.directives.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if directives.private.is_all() {
        return Err(NotStorable::Private);
    }
    if request.headers.contains_key(header::AUTHORIZATION)
        && !(directives.must_revalidate || directives.public || directives.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if *response.vary == Vary::Any {
        return Err(NotStorable::VaryAny);
    }
    let explicit = directives.public
        || directives.max_age.is_some()
        || directives.s_maxage.is_some()
        || (*response.source == DirectiveSource::CacheControl
            && response.headers.contains_key(header::EXPIRES));
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::NoFreshness);
    }
    let freshness = response.freshness;
    let validator = response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED);
    let stale_grant =
        freshness.stale_if_error.is_some() || freshness.stale_while_revalidate.is_some();
    if freshness.lifetime.is_zero() && !validator && !stale_grant {
        return Err(NotStorable::Unusable);
    }
    Ok(())
}

/// Removes from a response's header fields what a shared cache must not keep (RFC 9111 §3.1):
/// the hop-by-hop fields, and the fields a qualified `private` names (§5.2.2.7).
pub fn strip_unstorable(headers: &mut HeaderMap, directives: &ResponseDirectives) {
    crate::headers::hop_by_hop::strip(headers);
    for name in directives.private.fields() {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fields::{Fields, map};

    /// Header fields of a test case, as name/value pairs.
    /// Method, request fields, status, response fields, and the decision.
    type Case<'a> = (&'a str, Fields<'a>, u16, Fields<'a>, Result<(), NotStorable>);
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::Heuristic;
    use http::HeaderName;
    use std::time::{Duration, UNIX_EPOCH};

    fn decide(
        method: &str,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<(), NotStorable> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let request_headers = map(request);
        let request_directives = RequestDirectives::parse(&request_headers);
        let response_headers = map(response);
        let (directives, source) =
            effective(&response_headers, &[HeaderName::from_static("cdn-cache-control")]);
        let status = StatusCode::from_u16(status).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_601_600);
        let freshness = Freshness::assess(
            status,
            &response_headers,
            &directives,
            &source,
            now,
            now,
            Heuristic::default(),
        );
        let vary = Vary::of(&response_headers);
        storable(
            StoredRequest {
                method: &method,
                headers: &request_headers,
                directives: &request_directives,
            },
            StoredResponse {
                status,
                headers: &response_headers,
                directives: &directives,
                source: &source,
                freshness: &freshness,
                vary: &vary,
            },
        )
    }

    #[test]
    fn table() {
        use NotStorable::*;
        let lm = ("last-modified", "Mon, 07 Dec 2026 00:00:00 GMT");
        let fresh = ("cache-control", "max-age=3600");
        let cases: &[Case<'_>] = &[
            ("GET", &[], 200, &[fresh], Ok(())),
            ("HEAD", &[], 200, &[fresh], Err(Method)),
            ("POST", &[], 200, &[fresh], Err(Method)),
            ("GET", &[], 206, &[fresh], Err(Status)),
            ("GET", &[], 304, &[fresh], Err(Status)),
            ("GET", &[], 200, &[("cache-control", "no-store")], Err(NoStore)),
            ("GET", &[], 200, &[("cache-control", "max-age=10000, No-StOrE")], Err(NoStore)),
            ("GET", &[("cache-control", "no-store")], 200, &[fresh], Err(RequestNoStore)),
            ("GET", &[], 200, &[("cache-control", "private, max-age=3600")], Err(Private)),
            ("GET", &[], 200, &[("cache-control", "private=\"set-cookie\", max-age=3600")], Ok(())),
            // §3.5: Authorization needs an explicit permission to share.
            ("GET", &[("authorization", "FOO")], 200, &[fresh], Err(Authorization)),
            (
                "GET",
                &[("authorization", "FOO")],
                200,
                &[("cache-control", "max-age=3600, public")],
                Ok(()),
            ),
            (
                "GET",
                &[("authorization", "FOO")],
                200,
                &[("cache-control", "max-age=3600, must-revalidate")],
                Ok(()),
            ),
            (
                "GET",
                &[("authorization", "FOO")],
                200,
                &[("cache-control", "s-maxage=3600")],
                Ok(()),
            ),
            // must-understand overrides no-store only for a known status.
            (
                "GET",
                &[],
                200,
                &[("cache-control", "max-age=3600, no-store, must-understand")],
                Ok(()),
            ),
            (
                "GET",
                &[],
                599,
                &[("cache-control", "max-age=3600, no-store, must-understand")],
                Err(MustUnderstand),
            ),
            ("GET", &[], 200, &[fresh, ("vary", "foo, *")], Err(VaryAny)),
            // Explicit freshness makes any final status storable; otherwise only the
            // heuristically cacheable ones.
            ("GET", &[], 599, &[fresh], Ok(())),
            ("GET", &[], 201, &[lm], Err(NoFreshness)),
            ("GET", &[], 404, &[lm], Ok(())),
            ("GET", &[], 599, &[lm, ("cache-control", "public")], Ok(())),
            // Stale on arrival: kept only with a validator or a stale grant.
            ("GET", &[], 200, &[("cache-control", "max-age=0")], Err(Unusable)),
            ("GET", &[], 200, &[("cache-control", "no-cache"), ("etag", "\"a\"")], Ok(())),
            ("GET", &[], 200, &[("cache-control", "max-age=0, stale-if-error=60")], Ok(())),
            ("GET", &[], 200, &[], Err(Unusable)),
            // CDN-Cache-Control replaces Cache-Control, no-store included.
            (
                "GET",
                &[],
                200,
                &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=10000")],
                Ok(()),
            ),
            (
                "GET",
                &[],
                200,
                &[("cache-control", "max-age=100"), ("cdn-cache-control", "no-store")],
                Err(NoStore),
            ),
        ];
        for (method, request, status, response, expected) in cases {
            assert_eq!(
                decide(method, request, *status, response),
                *expected,
                "{method} {request:?} {status} {response:?}"
            );
        }
    }

    #[test]
    fn strips_hop_by_hop_and_private_fields() {
        let mut headers = map(&[
            ("connection", "a, b"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("keep-alive", "x"),
            ("set-cookie", "s=1"),
            ("cache-control", "private=\"set-cookie\", max-age=60"),
        ]);
        let (directives, _) = effective(&headers, &[]);
        strip_unstorable(&mut headers, &directives);
        let mut names: Vec<_> = headers.keys().map(|name| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["c", "cache-control"]);
    }
}
