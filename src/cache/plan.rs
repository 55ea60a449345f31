//! The cache's decisions around one request: before it goes to the origin ([`plan`]: serve a
//! stored response, validate it, fetch, or stay out of the way) and when the origin's answer
//! arrives ([`after_fetch`]: store it, refresh the stored response from a 304, stand in for an
//! error with a stale response, or pass it on).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::body::SharedBody;
use super::key::Vary;
use super::policy::directives::{RequestDirectives, effective};
use super::policy::freshness::{Freshness, Heuristic, Reuse};
use super::policy::invalidation::is_safe;
use super::policy::storage::{self, NotStorable, StoredRequest, StoredResponse};
use super::policy::validation::{self, date_header};
use super::status::{CacheStatus, Forward};
use super::store::{Lookup, Object};

/// The RFC 9111 choices a deployment makes, resolved once per route or listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Targeted cache-control fields this cache obeys instead of Cache-Control, first match
    /// wins (RFC 9213), e.g. `CDN-Cache-Control`; empty to obey Cache-Control only.
    pub targeted: Arc<[HeaderName]>,
    /// How heuristic freshness is computed (RFC 9111 §4.2.2).
    pub heuristic: Heuristic,
    /// How long past its lifetime a stored response may stand in for an unreachable or
    /// failing origin when the response itself does not say (`None`: only `stale-if-error`).
    pub stale_when_down: Option<Duration>,
}

/// What to do with a request before it goes to the origin.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The cache stays out of the way. `invalidate`: the request is unsafe, and a success
    /// invalidates what is stored for its URI (RFC 9111 §4.4).
    Pass {
        /// Why, for `Cache-Status`.
        reason: Forward,
        /// Whether a successful response invalidates stored responses.
        invalidate: bool,
    },
    /// Answer from this stored response.
    Serve {
        /// The stored response.
        object: Arc<Object>,
        /// `Cache-Status` of the answer.
        status: CacheStatus,
        /// Revalidate it in the background (`stale-while-revalidate`).
        refresh: bool,
    },
    /// `only-if-cached` and nothing usable is stored: 504 (RFC 9111 §5.2.1.7).
    Unavailable,
    /// Ask the origin: validate `stored` when there is one, else fetch.
    Fetch {
        /// The stored response to validate (and to fall back on if the origin fails).
        stored: Option<Arc<Object>>,
        /// Why, for `Cache-Status`.
        reason: Forward,
    },
}

/// Whether [`plan`] looks a request up in the store at all: a GET or HEAD without the
/// preconditions that only the origin evaluates. The lookup can then be done beforehand (the
/// disk tier's is asynchronous).
pub fn consults_store(method: &Method, request: &HeaderMap) -> bool {
    (*method == Method::GET || *method == Method::HEAD)
        && !request.contains_key(header::IF_MATCH)
        && !request.contains_key(header::IF_UNMODIFIED_SINCE)
}

/// Decides what to do with a `method` request with header fields `request` and Cache-Control
/// `directives` at `now`; `lookup` asks the store, and is only called when the cache can
/// answer the request at all.
pub fn plan(
    method: &Method,
    request: &HeaderMap,
    directives: &RequestDirectives,
    lookup: impl FnOnce() -> Lookup,
    now: SystemTime,
) -> Plan {
    if !is_safe(method) {
        return Plan::Pass { reason: Forward::Method, invalidate: true };
    }
    if *method != Method::GET && *method != Method::HEAD {
        return Plan::Pass { reason: Forward::Method, invalidate: false };
    }
    // Preconditions other than the validators a cache answers itself are the origin's to
    // evaluate.
    if request.contains_key(header::IF_MATCH) || request.contains_key(header::IF_UNMODIFIED_SINCE) {
        return Plan::Pass { reason: Forward::Request, invalidate: false };
    }
    let missed = match lookup() {
        Lookup::Found(object)
            if object.body.ended().is_none_or(|end| end == super::body::BodyEnd::Complete) =>
        {
            return reuse(object, directives, now);
        }
        Lookup::Found(_) | Lookup::Miss => Forward::UriMiss,
        Lookup::VaryMiss => Forward::VaryMiss,
    };
    if directives.only_if_cached {
        return Plan::Unavailable;
    }
    // The cache fetches and stores whole responses to GET: a HEAD, a range, or a request that
    // forbids storing goes to the origin as it is.
    if *method == Method::HEAD {
        return Plan::Pass { reason: missed, invalidate: false };
    }
    if request.contains_key(header::RANGE) {
        return Plan::Pass { reason: Forward::Partial, invalidate: false };
    }
    if directives.no_store {
        return Plan::Pass { reason: Forward::Request, invalidate: false };
    }
    Plan::Fetch { stored: None, reason: missed }
}

/// Whether a stored response answers the request, stale or not, or needs validating.
fn reuse(object: Arc<Object>, directives: &RequestDirectives, now: SystemTime) -> Plan {
    let ttl = object.freshness.ttl(now);
    let served = |status: CacheStatus, refresh: bool| Plan::Serve {
        object: Arc::clone(&object),
        status,
        refresh,
    };
    match object.freshness.reuse(directives, now) {
        Reuse::Fresh => served(CacheStatus::hit(ttl), false),
        Reuse::StaleAccepted => {
            served(CacheStatus { detail: Some("max-stale"), ..CacheStatus::hit(ttl) }, false)
        }
        Reuse::StaleWhileRevalidate => served(
            CacheStatus { detail: Some("stale-while-revalidate"), ..CacheStatus::hit(ttl) },
            true,
        ),
        Reuse::Validate if directives.only_if_cached => Plan::Unavailable,
        Reuse::Validate => {
            // Fresh, yet to be validated: the request's own directives asked for it.
            let reason = if object.freshness.is_fresh(now) && !object.freshness.no_cache {
                Forward::Request
            } else {
                Forward::Stale
            };
            Plan::Fetch { stored: Some(object), reason }
        }
    }
}

/// What to do with the origin's answer to a [`Plan::Fetch`].
#[derive(Debug)]
pub enum AfterFetch {
    /// A 304 that validates the stored response: refresh it with [`refreshed`] and answer
    /// from it.
    Refresh,
    /// An error the stored response may stand in for (RFC 5861 §4).
    ServeStale,
    /// A storable response: this object (its body still to come) is to be admitted.
    Store(Box<Object>),
    /// Pass the response on unstored, for this reason.
    Pass(NotStorable),
}

/// The exchange a fetched response belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's header fields (as the client sent them: `Vary` selects on those).
    pub request: &'a HeaderMap,
    /// The request's Cache-Control directives.
    pub directives: &'a RequestDirectives,
    /// When the request was sent.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
}

/// Whether an origin status counts as an error a stale response may stand in for: the 500,
/// 502, 503 and 504 of RFC 5861 §4.
pub fn is_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Decides what to do with a response (status `status`, header fields `response` as they
/// will be sent to the client) to a fetch that validated `stored`, if anything.
pub fn after_fetch(
    exchange: Exchange<'_>,
    stored: Option<&Arc<Object>>,
    status: StatusCode,
    response: &HeaderMap,
    rules: &Rules,
) -> AfterFetch {
    if let Some(stored) = stored {
        if status == StatusCode::NOT_MODIFIED {
            return if validation::validates(&stored.headers, response) {
                AfterFetch::Refresh
            } else {
                AfterFetch::Pass(NotStorable::Status)
            };
        }
        if is_error(status)
            && stored.freshness.usable_on_error(
                exchange.directives,
                rules.stale_when_down,
                exchange.response_time,
            )
        {
            return AfterFetch::ServeStale;
        }
    }
    match stored_object(exchange, status, response, rules) {
        Ok(object) => AfterFetch::Store(Box::new(object)),
        Err(reason) => AfterFetch::Pass(reason),
    }
}

/// The object to store for a response, if RFC 9111 §3 allows storing it.
fn stored_object(
    exchange: Exchange<'_>,
    status: StatusCode,
    response: &HeaderMap,
    rules: &Rules,
) -> Result<Object, NotStorable> {
    let (directives, source) = effective(response, &rules.targeted);
    let freshness = Freshness::assess(
        status,
        response,
        &directives,
        &source,
        exchange.request_time,
        exchange.response_time,
        rules.heuristic,
    );
    let vary = Vary::of(response);
    storage::storable(
        StoredRequest {
            method: exchange.method,
            headers: exchange.request,
            directives: exchange.directives,
        },
        StoredResponse {
            status,
            headers: response,
            directives: &directives,
            source: &source,
            freshness: &freshness,
            vary: &vary,
        },
    )?;
    let mut headers = response.clone();
    storage::strip_unstorable(&mut headers, &directives);
    // A response stored without a Date gets one (RFC 9110 §6.6.1), so its age is computed
    // from the time it arrived here.
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, date_header(exchange.response_time));
    }
    let expected = content_length(response);
    let vary_key = vary.key(exchange.request);
    Ok(Object { status, headers, vary, vary_key, freshness, body: SharedBody::filling(expected) })
}

/// The stored response `stored` refreshed by a 304 with header fields `not_modified`
/// (RFC 9111 §4.3.4), with its freshness assessed again from the exchange's times.
pub fn refreshed(
    stored: &Object,
    not_modified: &HeaderMap,
    exchange: Exchange<'_>,
    rules: &Rules,
) -> Object {
    let mut headers = stored.headers.clone();
    validation::update_from_304(&mut headers, not_modified);
    let (directives, source) = effective(&headers, &rules.targeted);
    storage::strip_unstorable(&mut headers, &directives);
    let freshness = Freshness::assess(
        stored.status,
        &headers,
        &directives,
        &source,
        exchange.request_time,
        exchange.response_time,
        rules.heuristic,
    );
    stored.revalidated(headers, freshness)
}

/// The single valid `Content-Length` of a response, if it has one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    value.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::BodyEnd;
    use crate::cache::fields::{Fields, map};
    use crate::cache::key::VaryKey;
    use bytes::Bytes;
    use std::time::UNIX_EPOCH;

    fn time(offset: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_601_600 + offset)
    }

    fn object(response: Fields<'_>) -> Arc<Object> {
        let request = HeaderMap::new();
        let exchange = Exchange {
            method: &Method::GET,
            request: &request,
            directives: &RequestDirectives::default(),
            request_time: time(0),
            response_time: time(0),
        };
        let mut object =
            stored_object(exchange, StatusCode::OK, &map(response), &Rules::default()).unwrap();
        object.body = SharedBody::complete(vec![Bytes::from_static(b"x")]);
        Arc::new(object)
    }

    /// The plan, summed up as (kind, reason or detail).
    fn summary(plan: &Plan) -> (&'static str, &'static str) {
        match plan {
            Plan::Pass { reason, invalidate: true } => ("pass+invalidate", reason.as_str()),
            Plan::Pass { reason, .. } => ("pass", reason.as_str()),
            Plan::Serve { status, refresh: true, .. } => {
                ("serve+refresh", status.detail.unwrap_or(""))
            }
            Plan::Serve { status, .. } => ("serve", status.detail.unwrap_or("")),
            Plan::Unavailable => ("unavailable", ""),
            Plan::Fetch { stored: Some(_), reason } => ("validate", reason.as_str()),
            Plan::Fetch { stored: None, reason } => ("fetch", reason.as_str()),
        }
    }

    #[test]
    fn plan_table() {
        let fresh = object(&[("cache-control", "max-age=100"), ("etag", "\"a\"")]);
        let swr =
            object(&[("cache-control", "max-age=1, stale-while-revalidate=60"), ("etag", "\"a\"")]);
        type Case<'a> = (&'a str, Fields<'a>, Option<&'a Arc<Object>>, u64, (&'a str, &'a str));
        let cases: &[Case<'_>] = &[
            ("GET", &[], Some(&fresh), 10, ("serve", "")),
            ("HEAD", &[], Some(&fresh), 10, ("serve", "")),
            ("GET", &[], Some(&fresh), 200, ("validate", "stale")),
            ("GET", &[("cache-control", "no-cache")], Some(&fresh), 10, ("validate", "request")),
            ("GET", &[("cache-control", "max-stale")], Some(&fresh), 200, ("serve", "max-stale")),
            ("GET", &[], Some(&swr), 10, ("serve+refresh", "stale-while-revalidate")),
            ("GET", &[("cache-control", "only-if-cached")], Some(&fresh), 200, ("unavailable", "")),
            ("GET", &[("cache-control", "only-if-cached")], None, 0, ("unavailable", "")),
            ("GET", &[], None, 0, ("fetch", "uri-miss")),
            ("HEAD", &[], None, 0, ("pass", "uri-miss")),
            ("GET", &[("range", "bytes=0-1")], None, 0, ("pass", "partial")),
            ("GET", &[("range", "bytes=0-1")], Some(&fresh), 10, ("serve", "")),
            ("GET", &[("cache-control", "no-store")], None, 0, ("pass", "request")),
            ("GET", &[("if-match", "\"a\"")], Some(&fresh), 10, ("pass", "request")),
            ("POST", &[], Some(&fresh), 10, ("pass+invalidate", "method")),
            ("M-SEARCH", &[], None, 0, ("pass+invalidate", "method")),
            ("OPTIONS", &[], None, 0, ("pass", "method")),
        ];
        for (method, request, stored, later, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let request = map(request);
            let directives = RequestDirectives::parse(&request);
            let lookup = || stored.map_or(Lookup::Miss, |object| Lookup::Found(Arc::clone(object)));
            let plan = plan(&method, &request, &directives, lookup, time(*later));
            assert_eq!(summary(&plan), *expected, "{method} {request:?} +{later}");
        }
        let vary_miss = plan(
            &Method::GET,
            &HeaderMap::new(),
            &RequestDirectives::default(),
            || Lookup::VaryMiss,
            time(0),
        );
        assert_eq!(summary(&vary_miss), ("fetch", "vary-miss"));
        // A stored body that failed is no answer.
        let failed = object(&[("cache-control", "max-age=100")]);
        let mut broken = Object {
            body: SharedBody::filling(None),
            ..failed.revalidated(failed.headers.clone(), failed.freshness.clone())
        };
        broken.body.end(BodyEnd::Failed);
        broken.vary_key = VaryKey::default();
        let broken = Arc::new(broken);
        let plan = plan(
            &Method::GET,
            &HeaderMap::new(),
            &RequestDirectives::default(),
            || Lookup::Found(broken),
            time(0),
        );
        assert_eq!(summary(&plan), ("fetch", "uri-miss"));
    }

    #[test]
    fn after_fetch_table() {
        let stored = object(&[("cache-control", "max-age=1"), ("etag", "\"a\"")]);
        let lenient =
            object(&[("cache-control", "max-age=1, stale-if-error=60"), ("etag", "\"a\"")]);
        let strict = object(&[("cache-control", "max-age=1, must-revalidate, stale-if-error=60")]);
        let rules = Rules::default();
        let down = Rules { stale_when_down: Some(Duration::from_secs(60)), ..Rules::default() };
        type Case<'a> = (Option<&'a Arc<Object>>, u16, Fields<'a>, &'a Rules, &'a str);
        let cases: &[Case<'_>] = &[
            (Some(&stored), 304, &[("etag", "\"a\"")], &rules, "refresh"),
            (Some(&stored), 304, &[], &rules, "refresh"),
            (Some(&stored), 304, &[("etag", "\"b\"")], &rules, "pass:status"),
            (Some(&stored), 503, &[], &rules, "pass:no_freshness"),
            (Some(&stored), 503, &[], &down, "stale"),
            (Some(&lenient), 500, &[], &rules, "stale"),
            (Some(&lenient), 404, &[("cache-control", "max-age=5")], &rules, "store"),
            (Some(&strict), 503, &[], &down, "pass:no_freshness"),
            (None, 200, &[("cache-control", "max-age=5")], &rules, "store"),
            (None, 200, &[("cache-control", "private")], &rules, "pass:private"),
            (None, 304, &[("cache-control", "max-age=5")], &rules, "pass:status"),
        ];
        for (stored, status, response, rules, expected) in cases {
            let request = HeaderMap::new();
            let exchange = Exchange {
                method: &Method::GET,
                request: &request,
                directives: &RequestDirectives::default(),
                request_time: time(10),
                response_time: time(10),
            };
            let after = after_fetch(
                exchange,
                *stored,
                StatusCode::from_u16(*status).unwrap(),
                &map(response),
                rules,
            );
            let got = match after {
                AfterFetch::Refresh => "refresh".to_owned(),
                AfterFetch::ServeStale => "stale".to_owned(),
                AfterFetch::Store(_) => "store".to_owned(),
                AfterFetch::Pass(reason) => format!("pass:{}", reason.as_str()),
            };
            assert_eq!(got, *expected, "{status} {response:?}");
        }
    }

    #[test]
    fn stored_objects_get_a_date_and_their_announced_length() {
        let request = map(&[("accept-language", "EN")]);
        let exchange = Exchange {
            method: &Method::GET,
            request: &request,
            directives: &RequestDirectives::default(),
            request_time: time(0),
            response_time: time(0),
        };
        let response = map(&[
            ("cache-control", "max-age=5"),
            ("content-length", "42"),
            ("vary", "Accept-Language"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ]);
        let object = stored_object(exchange, StatusCode::OK, &response, &Rules::default()).unwrap();
        assert_eq!(object.headers.get(header::DATE).unwrap(), "Mon, 07 Dec 2026 00:00:00 GMT");
        assert_eq!(object.body.expected_len(), Some(42));
        assert!(!object.headers.contains_key("x-hop"));
        assert!(
            object
                .vary
                .matches(&object.vary_key, &object.vary.key(&map(&[("accept-language", "en")])))
        );
    }

    #[test]
    fn refreshing_updates_fields_and_freshness_but_keeps_the_body() {
        let stored = object(&[
            ("cache-control", "max-age=1"),
            ("etag", "\"a\""),
            ("test-header", "old"),
            ("content-length", "1"),
        ]);
        let not_modified = map(&[
            ("cache-control", "max-age=3600"),
            ("test-header", "new"),
            ("content-length", "0"),
        ]);
        let request = HeaderMap::new();
        let exchange = Exchange {
            method: &Method::GET,
            request: &request,
            directives: &RequestDirectives::default(),
            request_time: time(100),
            response_time: time(100),
        };
        let refreshed = refreshed(&stored, &not_modified, exchange, &Rules::default());
        assert_eq!(refreshed.headers.get("test-header").unwrap(), "new");
        assert_eq!(refreshed.headers.get("content-length").unwrap(), "1");
        assert_eq!(refreshed.freshness.lifetime.as_secs(), 3600);
        assert!(refreshed.freshness.is_fresh(time(200)));
        assert!(Arc::ptr_eq(&refreshed.body, &stored.body));
    }
}
