//! What the cache did with a request: the `Cache-Status` response field (RFC 9211) and the
//! short outcome written to the access log and counted in metrics.

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The `Cache-Status` field name (RFC 9211 §2).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went to the origin (RFC 9211 §2.2, the `fwd` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The request method is not one the cache serves.
    Method,
    /// Nothing was stored for the URI.
    UriMiss,
    /// Something was stored for the URI, but not for these request header fields.
    VaryMiss,
    /// A stored response was not usable for another reason.
    Miss,
    /// The request's own directives (`no-cache`, `max-age=0`) made it go forward.
    Request,
    /// The stored response was stale and had to be validated or fetched again.
    Stale,
    /// Only part of the response was stored (or a range was asked of a miss).
    Partial,
}

impl Forward {
    /// The RFC 9211 token.
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Miss => "miss",
            Forward::Request => "request",
            Forward::Stale => "stale",
            Forward::Partial => "partial",
        }
    }
}

/// How a request was answered, for the access log's `cache` field and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from a fresh stored response.
    Hit,
    /// Served from a stale stored response (`stale-while-revalidate`, `stale-if-error`,
    /// `max-stale`, or the origin being down).
    Stale,
    /// A stored response was validated with the origin (304) and served.
    Revalidated,
    /// Fetched from the origin (whether or not then stored).
    Miss,
    /// Answered with the response another request for the same URI fetched meanwhile.
    Collapsed,
    /// The cache was not consulted (method, `Authorization`, a route without caching, ...).
    Bypass,
    /// `only-if-cached` with nothing usable stored: 504 without asking the origin.
    Unavailable,
}

impl Outcome {
    /// The outcome as a log field or metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Bypass => "bypass",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// One cache's entry in `Cache-Status` (RFC 9211 §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// `hit`: served from the cache without going forward (§2.1).
    pub hit: bool,
    /// `fwd`: why it went forward (§2.2).
    pub forward: Option<Forward>,
    /// `fwd-status`: the status the origin answered with (§2.3).
    pub forward_status: Option<StatusCode>,
    /// `ttl`: seconds of freshness left, negative when stale (§2.4).
    pub ttl: Option<i64>,
    /// `stored`: the response was stored (§2.5).
    pub stored: bool,
    /// `collapsed`: the request waited for another one's response (§2.6).
    pub collapsed: bool,
    /// `detail`: a token saying more (§2.8), e.g. `stale-while-revalidate`.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// A fresh hit with `ttl` seconds left.
    pub fn hit(ttl: i64) -> Self {
        CacheStatus { hit: true, ttl: Some(ttl), ..CacheStatus::default() }
    }

    /// Went forward for `reason`.
    pub fn forward(reason: Forward) -> Self {
        CacheStatus { forward: Some(reason), ..CacheStatus::default() }
    }

    /// The outcome this status stands for.
    pub fn outcome(&self) -> Outcome {
        match (self.hit, self.forward) {
            (true, _) if self.ttl.is_some_and(|ttl| ttl <= 0) => Outcome::Stale,
            (true, _) => Outcome::Hit,
            (false, Some(Forward::Bypass | Forward::Method)) => Outcome::Bypass,
            (false, Some(Forward::Stale | Forward::Request))
                if self.forward_status == Some(StatusCode::NOT_MODIFIED) =>
            {
                Outcome::Revalidated
            }
            (false, Some(_)) => Outcome::Miss,
            (false, None) => Outcome::Unavailable,
        }
    }

    /// The list member for a cache called `name` (an sf-token when it is one, else an
    /// sf-string), e.g. `sluice; fwd=uri-miss; stored`.
    pub fn render(&self, name: &str) -> String {
        let mut out = String::with_capacity(48);
        if is_token(name) {
            out.push_str(name);
        } else {
            out.push('"');
            for c in name.chars().filter(|c| (' '..='~').contains(c)) {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(forward) = self.forward {
            out.push_str("; fwd=");
            out.push_str(forward.as_str());
        }
        if let Some(status) = self.forward_status {
            out.push_str("; fwd-status=");
            out.push_str(status.as_str());
        }
        if let Some(ttl) = self.ttl {
            out.push_str("; ttl=");
            out.push_str(&ttl.to_string());
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            out.push_str(detail);
        }
        out
    }

    /// Adds this entry to the end of `headers`' `Cache-Status` list, after any entries of
    /// caches closer to the origin (RFC 9211 §2).
    pub fn append_to(&self, headers: &mut HeaderMap, name: &str) {
        if let Ok(value) = HeaderValue::try_from(self.render(name)) {
            headers.append(CACHE_STATUS, value);
        }
    }
}

/// Whether `text` is an sf-token (RFC 8941 §3.3.4).
fn is_token(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'*')
        && bytes.all(|byte| {
            crate::cache::policy::structured::is_tchar(byte) || byte == b':' || byte == b'/'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_table() {
        let cases: Vec<(CacheStatus, &str, &str)> = vec![
            (CacheStatus::hit(57), "sluice", "sluice; hit; ttl=57"),
            (
                CacheStatus { stored: true, ..CacheStatus::forward(Forward::UriMiss) },
                "sluice",
                "sluice; fwd=uri-miss; stored",
            ),
            (
                CacheStatus {
                    forward_status: Some(StatusCode::NOT_MODIFIED),
                    ttl: Some(3600),
                    ..CacheStatus::forward(Forward::Stale)
                },
                "edge 1",
                "\"edge 1\"; fwd=stale; fwd-status=304; ttl=3600",
            ),
            (
                CacheStatus { detail: Some("stale-while-revalidate"), ..CacheStatus::hit(-2) },
                "sluice",
                "sluice; hit; ttl=-2; detail=stale-while-revalidate",
            ),
            (
                CacheStatus { collapsed: true, ..CacheStatus::forward(Forward::Miss) },
                "sluice",
                "sluice; fwd=miss; collapsed",
            ),
        ];
        for (status, name, expected) in cases {
            assert_eq!(status.render(name), expected);
        }
    }

    #[test]
    fn outcome_table() {
        let revalidated = CacheStatus {
            forward_status: Some(StatusCode::NOT_MODIFIED),
            ..CacheStatus::forward(Forward::Stale)
        };
        let cases: Vec<(CacheStatus, Outcome)> = vec![
            (CacheStatus::hit(10), Outcome::Hit),
            (CacheStatus::hit(-1), Outcome::Stale),
            (revalidated, Outcome::Revalidated),
            (CacheStatus::forward(Forward::UriMiss), Outcome::Miss),
            (CacheStatus::forward(Forward::Method), Outcome::Bypass),
            (CacheStatus::default(), Outcome::Unavailable),
        ];
        for (status, outcome) in cases {
            assert_eq!(status.outcome(), outcome, "{status:?}");
        }
    }

    #[test]
    fn appends_after_upstream_entries() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        CacheStatus::hit(1).append_to(&mut headers, "sluice");
        let values: Vec<_> = headers.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(values, ["origin-cache; hit", "sluice; hit; ttl=1"]);
    }
}
