//! Freshness (RFC 9111 §4.2): how long a stored response stays fresh, how old it is, and
//! whether it may answer a given request as it is, stale, or only after validation.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::date;
use super::directives::{
    DELTA_SECONDS_MAX, DirectiveSource, MaxStale, RequestDirectives, ResponseDirectives,
};

/// The default share of the time since `Last-Modified` taken as a heuristic freshness lifetime
/// (RFC 9111 §4.2.2 suggests "no more than some fraction", typically 10%).
pub const DEFAULT_HEURISTIC_PERCENT: u32 = 10;
/// The default cap on a heuristic freshness lifetime: one day, so that a response last modified
/// years ago is not kept for months on a guess.
pub const DEFAULT_MAX_HEURISTIC: Duration = Duration::from_secs(86_400);

/// How a heuristic freshness lifetime is computed (RFC 9111 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    /// Percentage of (Date − Last-Modified) to use; 0 disables heuristic freshness.
    pub percent: u32,
    /// Upper bound of a heuristic lifetime.
    pub max: Duration,
}

impl Default for Heuristic {
    fn default() -> Self {
        Heuristic { percent: DEFAULT_HEURISTIC_PERCENT, max: DEFAULT_MAX_HEURISTIC }
    }
}

/// Whether `status` is heuristically cacheable (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// `s-maxage`.
    SharedMaxAge,
    /// `max-age`.
    MaxAge,
    /// `Expires` minus `Date`.
    Expires,
    /// A heuristic from `Last-Modified`.
    Heuristic,
    /// Nothing: the response is stale from the start.
    None,
}

/// What a stored response's freshness depends on, computed once when it is stored or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The freshness lifetime (RFC 9111 §4.2.1).
    pub lifetime: Duration,
    /// Where [`Self::lifetime`] came from.
    pub source: LifetimeSource,
    /// `corrected_initial_age` (RFC 9111 §4.2.3).
    pub initial_age: Duration,
    /// When the response was received (`response_time`).
    pub response_time: SystemTime,
    /// `no-cache` without field names: every reuse needs validation (§5.2.2.4).
    pub no_cache: bool,
    /// The fields a qualified `no-cache` names: sent only after a validation (§5.2.2.4).
    pub no_cache_fields: Vec<http::HeaderName>,
    /// `must-revalidate` or `proxy-revalidate`: never served stale (§5.2.2.2, §5.2.2.8).
    pub must_revalidate: bool,
    /// `s-maxage`, which implies `proxy-revalidate` (§5.2.2.10); an explicit
    /// `stale-while-revalidate` or `stale-if-error` in the same response still applies.
    pub implied_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

/// Whether and how a stored response can answer a request (RFC 9111 §4.2.4, §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh enough for the request: serve it.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it: serve it.
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it and revalidate in the background.
    StaleWhileRevalidate,
    /// Validate with the origin first.
    Validate,
}

impl Freshness {
    /// Assesses a response received at `response_time` for a request sent at `request_time`.
    pub fn assess(
        status: StatusCode,
        headers: &HeaderMap,
        directives: &ResponseDirectives,
        source: &DirectiveSource,
        request_time: SystemTime,
        response_time: SystemTime,
        heuristic: Heuristic,
    ) -> Self {
        let date = date_value(headers, response_time);
        let (lifetime, from) = lifetime(status, headers, directives, source, date, heuristic);
        Freshness {
            lifetime,
            source: from,
            initial_age: initial_age(headers, date, request_time, response_time),
            response_time,
            no_cache: directives.no_cache.is_all(),
            no_cache_fields: directives.no_cache.fields().to_vec(),
            must_revalidate: directives.must_revalidate || directives.proxy_revalidate,
            implied_revalidate: directives.implied_revalidate(),
            stale_while_revalidate: directives.stale_while_revalidate.map(seconds),
            stale_if_error: directives.stale_if_error.map(seconds),
        }
    }

    /// `current_age` (RFC 9111 §4.2.3): the initial age plus the time resident here.
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now.duration_since(self.response_time).unwrap_or(Duration::ZERO);
        self.initial_age.saturating_add(resident)
    }

    /// Seconds of freshness left (negative once stale), as Cache-Status `ttl` reports it.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let age = i64::try_from(self.current_age(now).as_secs()).unwrap_or(i64::MAX);
        lifetime.saturating_sub(age)
    }

    /// How far past its lifetime the response is (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.current_age(now).saturating_sub(self.lifetime)
    }

    /// Whether the response is fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.current_age(now) < self.lifetime
    }

    /// Whether the response can answer a request with these directives at `now`.
    pub fn reuse(&self, request: &RequestDirectives, now: SystemTime) -> Reuse {
        if self.no_cache || request.no_cache {
            return Reuse::Validate;
        }
        let age = self.current_age(now);
        if let Some(max_age) = request.max_age
            && age > seconds(max_age)
        {
            return Reuse::Validate;
        }
        if let Some(min_fresh) = request.min_fresh
            && self.lifetime.saturating_sub(age) < seconds(min_fresh)
        {
            return Reuse::Validate;
        }
        if age < self.lifetime {
            return Reuse::Fresh;
        }
        if self.must_revalidate {
            return Reuse::Validate;
        }
        let staleness = age.saturating_sub(self.lifetime);
        let accepted = match request.max_stale {
            Some(MaxStale::Any) => true,
            Some(MaxStale::Seconds(limit)) => staleness <= seconds(limit),
            None => false,
        };
        if accepted && !self.implied_revalidate {
            return Reuse::StaleAccepted;
        }
        // A request max-age stops stale content it did not ask for.
        if request.max_age.is_none()
            && self.stale_while_revalidate.is_some_and(|window| staleness <= window)
        {
            return Reuse::StaleWhileRevalidate;
        }
        Reuse::Validate
    }

    /// Whether the response may stand in for an error from the origin (RFC 5861 §4, RFC 9111
    /// §4.2.4), given the request's own `stale-if-error` and the route's allowance for serving
    /// stale content while the origin is down (`when_down`).
    pub fn usable_on_error(
        &self,
        request: &RequestDirectives,
        when_down: Option<Duration>,
        now: SystemTime,
    ) -> bool {
        if self.no_cache || self.must_revalidate {
            return false;
        }
        let staleness = self.staleness(now);
        let explicit = [self.stale_if_error, request.stale_if_error.map(seconds)]
            .into_iter()
            .flatten()
            .any(|window| staleness <= window);
        if explicit {
            return true;
        }
        // The route's own allowance is not an origin's grant: s-maxage's implied
        // proxy-revalidate still holds against it.
        !self.implied_revalidate && when_down.is_some_and(|window| staleness <= window)
    }
}

/// A whole number of seconds.
fn seconds(value: u32) -> Duration {
    Duration::from_secs(u64::from(value))
}

/// The freshness lifetime of a response (RFC 9111 §4.2.1), for a shared cache.
fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    source: &DirectiveSource,
    date: SystemTime,
    heuristic: Heuristic,
) -> (Duration, LifetimeSource) {
    if let Some(delta) = directives.s_maxage {
        return (seconds(delta.seconds_or_zero()), LifetimeSource::SharedMaxAge);
    }
    if let Some(delta) = directives.max_age {
        return (seconds(delta.seconds_or_zero()), LifetimeSource::MaxAge);
    }
    // A targeted field (RFC 9213 §2.1) replaces Expires as well as Cache-Control.
    if *source == DirectiveSource::CacheControl && headers.contains_key(header::EXPIRES) {
        return (expires_lifetime(headers, date), LifetimeSource::Expires);
    }
    if (heuristically_cacheable(status) || directives.public)
        && let Some(lifetime) = heuristic_lifetime(headers, date, heuristic)
    {
        return (lifetime, LifetimeSource::Heuristic);
    }
    (Duration::ZERO, LifetimeSource::None)
}

/// `Expires` minus `Date`. More than one `Expires` line, or one that is not a valid
/// HTTP-date (notably `0`), means already expired (RFC 9111 §5.3).
fn expires_lifetime(headers: &HeaderMap, date: SystemTime) -> Duration {
    let mut lines = headers.get_all(header::EXPIRES).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Duration::ZERO;
    };
    line.to_str()
        .ok()
        .and_then(|text| date::parse(text, date))
        .and_then(|expires| expires.duration_since(date).ok())
        .unwrap_or(Duration::ZERO)
}

/// A share of the time since `Last-Modified` (RFC 9111 §4.2.2), if there is one to go on.
fn heuristic_lifetime(
    headers: &HeaderMap,
    date: SystemTime,
    heuristic: Heuristic,
) -> Option<Duration> {
    if heuristic.percent == 0 {
        return None;
    }
    let modified = single_date(headers, &header::LAST_MODIFIED, date)?;
    let since = date.duration_since(modified).ok()?;
    let share = since.as_secs().saturating_mul(u64::from(heuristic.percent)) / 100;
    Some(Duration::from_secs(share).min(heuristic.max))
}

/// The `Date` of a response, or the time it was received when it has no valid one
/// (RFC 9110 §6.6.1).
pub fn date_value(headers: &HeaderMap, response_time: SystemTime) -> SystemTime {
    single_date(headers, &header::DATE, response_time).unwrap_or(response_time)
}

/// A date field with exactly one valid value.
fn single_date(
    headers: &HeaderMap,
    name: &header::HeaderName,
    now: SystemTime,
) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    date::parse(line.to_str().ok()?, now)
}

/// The `Age` a response arrived with: the first member of the first line, if it is a plain
/// number (RFC 9111 §5.1: `Age = delta-seconds`); anything else is ignored.
pub fn age_value(headers: &HeaderMap) -> Duration {
    let Some(first) = headers.get(header::AGE).and_then(|value| value.to_str().ok()) else {
        return Duration::ZERO;
    };
    let member = first.split(',').next().unwrap_or_default().trim_matches([' ', '\t']);
    if member.is_empty() || !member.bytes().all(|byte| byte.is_ascii_digit()) {
        return Duration::ZERO;
    }
    let digits = member.trim_start_matches('0');
    let value = if digits.len() > 10 {
        DELTA_SECONDS_MAX
    } else {
        u32::try_from(digits.parse::<u64>().unwrap_or(0).min(u64::from(DELTA_SECONDS_MAX)))
            .unwrap_or(DELTA_SECONDS_MAX)
    };
    seconds(value)
}

/// `corrected_initial_age` (RFC 9111 §4.2.3).
fn initial_age(
    headers: &HeaderMap,
    date: SystemTime,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let response_delay = response_time.duration_since(request_time).unwrap_or(Duration::ZERO);
    let corrected_age_value = age_value(headers).saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fields::Fields;

    /// Header fields of a test case, as name/value pairs.
    use crate::cache::policy::directives::effective;
    use http::{HeaderName, HeaderValue};

    /// 2026-12-07T00:00:00Z.
    const NOW: i64 = 1_796_601_600;

    fn at(offset: i64) -> SystemTime {
        date::from_unix(NOW + offset).unwrap()
    }

    fn http_date(offset: i64) -> String {
        date::format(at(offset))
    }

    /// Builds headers from pairs; a value "@N" is the HTTP-date N seconds from NOW.
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let value = match value.strip_prefix('@') {
                Some(offset) => http_date(offset.parse().unwrap()),
                None => (*value).to_owned(),
            };
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        map
    }

    fn assess_with(status: u16, pairs: &[(&str, &str)], targets: &[HeaderName]) -> Freshness {
        let map = headers(pairs);
        let (directives, source) = effective(&map, targets);
        Freshness::assess(
            StatusCode::from_u16(status).unwrap(),
            &map,
            &directives,
            &source,
            at(0),
            at(0),
            Heuristic::default(),
        )
    }

    fn assess(pairs: &[(&str, &str)]) -> Freshness {
        assess_with(200, pairs, &[])
    }

    #[test]
    fn lifetime_table() {
        let cases: &[(Fields<'_>, u64, LifetimeSource)] = &[
            (&[("cache-control", "max-age=3600")], 3600, LifetimeSource::MaxAge),
            (&[("cache-control", "max-age=1, s-maxage=3600")], 3600, LifetimeSource::SharedMaxAge),
            (
                &[("cache-control", "max-age=3600"), ("cache-control", "s-maxage=1")],
                1,
                LifetimeSource::SharedMaxAge,
            ),
            (
                &[("cache-control", "max-age=3600"), ("expires", "@-7200"), ("date", "@0")],
                3600,
                LifetimeSource::MaxAge,
            ),
            (&[("cache-control", "max-age=3600"), ("expires", "0")], 3600, LifetimeSource::MaxAge),
            (&[("cache-control", "max-age=0"), ("expires", "@3600")], 0, LifetimeSource::MaxAge),
            (&[("cache-control", "max-age='3600'")], 0, LifetimeSource::MaxAge),
            (&[("expires", "@2592000"), ("date", "@0")], 2_592_000, LifetimeSource::Expires),
            (&[("expires", "@-2592000"), ("date", "@0")], 0, LifetimeSource::Expires),
            (&[("expires", "@300"), ("date", "@400")], 0, LifetimeSource::Expires),
            (&[("expires", "0"), ("date", "@0")], 0, LifetimeSource::Expires),
            (&[("expires", "@10"), ("date", "foo")], 10, LifetimeSource::Expires),
            (&[("expires", "@10"), ("expires", "@20")], 0, LifetimeSource::Expires),
            (&[("last-modified", "@-86400"), ("date", "@0")], 8640, LifetimeSource::Heuristic),
            (&[("last-modified", "@-8640000"), ("date", "@0")], 86_400, LifetimeSource::Heuristic),
            (&[("last-modified", "@100"), ("date", "@0")], 0, LifetimeSource::None),
            (&[("date", "@0")], 0, LifetimeSource::None),
        ];
        for (pairs, lifetime, source) in cases {
            let freshness = assess(pairs);
            assert_eq!(
                (freshness.lifetime.as_secs(), freshness.source),
                (*lifetime, *source),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn heuristics_only_for_heuristically_cacheable_statuses_or_public() {
        let old = [("last-modified", "@-86400"), ("date", "@0")];
        for status in [200, 203, 204, 404, 405, 410, 414, 501] {
            assert_eq!(
                assess_with(status, &old, &[]).source,
                LifetimeSource::Heuristic,
                "{status}"
            );
        }
        for status in [201, 202, 403, 502, 503, 504, 599] {
            assert_eq!(assess_with(status, &old, &[]).source, LifetimeSource::None, "{status}");
        }
        let public = [("last-modified", "@-86400"), ("date", "@0"), ("cache-control", "public")];
        assert_eq!(assess_with(599, &public, &[]).source, LifetimeSource::Heuristic);
    }

    #[test]
    fn targeted_field_replaces_expires() {
        let cdn = [HeaderName::from_static("cdn-cache-control")];
        let freshness = assess_with(
            200,
            &[("cdn-cache-control", "max-age=3600"), ("expires", "@-10000")],
            &cdn,
        );
        assert_eq!(freshness.lifetime.as_secs(), 3600);
        // Without a usable directive in it, Expires is still ignored.
        let freshness = assess_with(
            200,
            &[("cdn-cache-control", "foo"), ("expires", "@10000"), ("date", "@0")],
            &cdn,
        );
        assert_eq!(freshness.source, LifetimeSource::None);
    }

    #[test]
    fn age_table() {
        let cases: &[(&str, u64)] = &[
            ("7200", 7200),
            ("abc", 0),
            ("-7200", 0),
            ("7200.0", 0),
            ("2147483647", 2_147_483_647),
            ("2147483648", 2_147_483_648),
            ("99999999999999", 2_147_483_648),
            ("7200, 0", 7200),
            ("0, 7200", 0),
            ("003600", 3600),
            ("7200;foo=bar", 0),
        ];
        for (value, expected) in cases {
            assert_eq!(age_value(&headers(&[("age", value)])).as_secs(), *expected, "{value}");
        }
        // Two lines: the first counts.
        assert_eq!(age_value(&headers(&[("age", "7200"), ("age", "0")])).as_secs(), 7200);
        assert_eq!(age_value(&headers(&[("age", "0"), ("age", "7200")])).as_secs(), 0);
    }

    #[test]
    fn initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        // A slow origin clock (Date 10 s behind), Age 25: 25 wins; with Expires 20 s after Date,
        // the response is stale on arrival.
        let map = headers(&[("date", "@-10"), ("expires", "@10"), ("age", "25")]);
        let (directives, source) = effective(&map, &[]);
        let freshness = Freshness::assess(
            StatusCode::OK,
            &map,
            &directives,
            &source,
            at(-1),
            at(0),
            Heuristic::default(),
        );
        assert_eq!(freshness.initial_age.as_secs(), 26);
        assert!(!freshness.is_fresh(at(0)));
        // A fast origin clock (Date 10 s ahead): apparent age is zero, Age 15 > lifetime 10.
        let freshness = assess(&[("date", "@10"), ("expires", "@20"), ("age", "15")]);
        assert!(!freshness.is_fresh(at(0)));
        // Apparent age from an old Date.
        let freshness = assess(&[("date", "@-7200"), ("cache-control", "max-age=3600")]);
        assert_eq!(freshness.initial_age.as_secs(), 7200);
        assert_eq!(freshness.current_age(at(5)).as_secs(), 7205);
        assert_eq!(freshness.ttl(at(5)), -3605);
    }

    #[test]
    fn reuse_table() {
        use Reuse::*;
        let request = |value: &str| RequestDirectives::parse(&headers(&[("cache-control", value)]));
        let cases: &[(Fields<'_>, &str, i64, Reuse)] = &[
            (&[("cache-control", "max-age=100")], "", 50, Fresh),
            (&[("cache-control", "max-age=100")], "", 100, Validate),
            (&[("cache-control", "max-age=100")], "max-age=0", 1, Validate),
            (&[("cache-control", "max-age=100")], "max-age=60", 50, Fresh),
            (&[("cache-control", "max-age=100")], "min-fresh=60", 50, Validate),
            (&[("cache-control", "max-age=100")], "no-cache", 0, Validate),
            (&[("cache-control", "max-age=100, no-cache")], "", 0, Validate),
            (&[("cache-control", "max-age=100, no-cache=\"a\"")], "", 0, Fresh),
            (&[("cache-control", "max-age=2")], "max-stale=1000", 100, StaleAccepted),
            (&[("cache-control", "max-age=2")], "max-stale", 100_000, StaleAccepted),
            (&[("cache-control", "max-age=2")], "max-stale=10", 100, Validate),
            (&[("cache-control", "max-age=2, must-revalidate")], "max-stale", 100, Validate),
            (&[("cache-control", "s-maxage=2")], "max-stale", 100, Validate),
            (
                &[("cache-control", "max-age=1, stale-while-revalidate=4")],
                "",
                3,
                StaleWhileRevalidate,
            ),
            (&[("cache-control", "max-age=1, stale-while-revalidate=4")], "", 6, Validate),
            (&[("cache-control", "max-age=1, stale-while-revalidate=4")], "max-age=0", 3, Validate),
            (
                &[("cache-control", "max-age=1, stale-while-revalidate=4, proxy-revalidate")],
                "",
                3,
                Validate,
            ),
            (
                &[("cache-control", "s-maxage=1, stale-while-revalidate=4")],
                "",
                3,
                StaleWhileRevalidate,
            ),
        ];
        for (pairs, request_cc, later, expected) in cases {
            let freshness = assess(pairs);
            assert_eq!(
                freshness.reuse(&request(request_cc), at(*later)),
                *expected,
                "{pairs:?} {request_cc} +{later}"
            );
        }
    }

    #[test]
    fn usable_on_error_table() {
        let none = RequestDirectives::default();
        let minute = Some(Duration::from_secs(60));
        let cases: &[(&str, Option<Duration>, i64, bool)] = &[
            ("max-age=2", None, 10, false),
            ("max-age=2", minute, 10, true),
            ("max-age=2", minute, 100, false),
            ("max-age=2, stale-if-error=60", None, 10, true),
            ("max-age=2, stale-if-error=60", None, 100, false),
            ("max-age=2, must-revalidate", minute, 10, false),
            ("max-age=2, proxy-revalidate", minute, 10, false),
            ("max-age=2, no-cache", minute, 10, false),
            ("max-age=2, s-maxage=2", minute, 10, false),
            ("s-maxage=2, stale-if-error=60", None, 10, true),
        ];
        for (cc, when_down, later, expected) in cases {
            let freshness = assess(&[("cache-control", cc)]);
            assert_eq!(
                freshness.usable_on_error(&none, *when_down, at(*later)),
                *expected,
                "{cc} {when_down:?} +{later}"
            );
        }
        let asks = RequestDirectives { stale_if_error: Some(60), ..Default::default() };
        assert!(assess(&[("cache-control", "max-age=2")]).usable_on_error(&asks, None, at(10)));
    }
}
