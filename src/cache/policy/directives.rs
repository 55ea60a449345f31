//! Cache-Control directives (RFC 9111 §5.2) of requests and responses, and the targeted
//! `CDN-Cache-Control` field (RFC 9213) that can stand in for a response's Cache-Control.
//!
//! Parsing follows the grammar `#( token [ "=" ( token / quoted-string ) ] )`: commas inside a
//! quoted string do not split (`extension="max-age=3600"` is one unknown directive), names are
//! case-insensitive, unknown directives are ignored (RFC 9111 §5.2.3). When a directive repeats,
//! the first occurrence counts (RFC 9111 §4.2.1).

use http::HeaderMap;
use http::header::{self, HeaderName};

use super::structured::is_tchar;

/// The largest delta-seconds value a cache has to represent; larger values and overflows are
/// read as this one (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u32 = 2_147_483_648;

/// A delta-seconds argument as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid number of seconds (capped at [`DELTA_SECONDS_MAX`]).
    Seconds(u32),
    /// Present but not a number (`max-age='60'`, `max-age=1.5`, `max-age`): RFC 9111 §4.2.1
    /// encourages treating such freshness information as stale.
    Invalid,
}

impl Delta {
    /// The number of seconds, with an invalid value read as zero.
    pub fn seconds_or_zero(self) -> u32 {
        match self {
            Delta::Seconds(seconds) => seconds,
            Delta::Invalid => 0,
        }
    }

    /// The number of seconds, if the value was valid.
    pub fn valid(self) -> Option<u32> {
        match self {
            Delta::Seconds(seconds) => Some(seconds),
            Delta::Invalid => None,
        }
    }
}

/// A directive that is either unqualified or lists header field names (`no-cache="a, b"`,
/// RFC 9111 §5.2.2.4 and §5.2.2.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Qualified {
    /// Absent.
    #[default]
    Absent,
    /// Present without field names: applies to the whole response.
    All,
    /// Present with field names: applies to those fields only.
    Fields(Vec<HeaderName>),
}

impl Qualified {
    /// Whether the directive applies to the whole response.
    pub fn is_all(&self) -> bool {
        matches!(self, Qualified::All)
    }

    /// The field names of a qualified directive (empty otherwise).
    pub fn fields(&self) -> &[HeaderName] {
        match self {
            Qualified::Fields(fields) => fields,
            _ => &[],
        }
    }
}

/// The response directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age` (§5.2.2.1).
    pub max_age: Option<Delta>,
    /// `s-maxage` (§5.2.2.10); also implies `proxy-revalidate`.
    pub s_maxage: Option<Delta>,
    /// `no-store` (§5.2.2.5).
    pub no_store: bool,
    /// `no-cache` (§5.2.2.4).
    pub no_cache: Qualified,
    /// `private` (§5.2.2.7).
    pub private: Qualified,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `must-revalidate` (§5.2.2.2).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8).
    pub proxy_revalidate: bool,
    /// `must-understand` (§5.2.2.3).
    pub must_understand: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<u32>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<u32>,
}

/// `max-stale` in a request (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// Without a value: any staleness is acceptable.
    Any,
    /// At most this many seconds stale.
    Seconds(u32),
}

/// The request directives a cache acts on (RFC 9111 §5.2.1, §5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age` (§5.2.1.1).
    pub max_age: Option<u32>,
    /// `max-stale` (§5.2.1.2).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh` (§5.2.1.3).
    pub min_fresh: Option<u32>,
    /// `no-cache` (§5.2.1.4), or `Pragma: no-cache` without a Cache-Control field (§5.4).
    pub no_cache: bool,
    /// `no-store` (§5.2.1.5).
    pub no_store: bool,
    /// `only-if-cached` (§5.2.1.7).
    pub only_if_cached: bool,
    /// `stale-if-error` (RFC 5861 §4, which allows it in requests).
    pub stale_if_error: Option<u32>,
}

/// One directive as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive<'a> {
    /// The name, as written (compare case-insensitively).
    name: &'a str,
    /// The argument with quoting removed, if there was one; `Err` when it was malformed.
    value: Option<Result<String, ()>>,
}

impl ResponseDirectives {
    /// The directives of every `Cache-Control` line of a response.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = ResponseDirectives::default();
        for directive in directives(headers, &header::CACHE_CONTROL) {
            out.apply(&directive);
        }
        out
    }

    /// Applies one directive; the first occurrence of a directive wins.
    fn apply(&mut self, directive: &Directive<'_>) {
        let name = directive.name;
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        if is("max-age") {
            self.max_age.get_or_insert(delta(&directive.value));
        } else if is("s-maxage") {
            self.s_maxage.get_or_insert(delta(&directive.value));
        } else if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            if self.no_cache == Qualified::Absent {
                self.no_cache = qualified(&directive.value);
            }
        } else if is("private") {
            if self.private == Qualified::Absent {
                self.private = qualified(&directive.value);
            }
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("must-understand") {
            self.must_understand = true;
        } else if is("stale-while-revalidate") {
            if self.stale_while_revalidate.is_none() {
                self.stale_while_revalidate = delta(&directive.value).valid();
            }
        } else if is("stale-if-error") && self.stale_if_error.is_none() {
            self.stale_if_error = delta(&directive.value).valid();
        }
    }

    /// Whether anything stops a stale response from being served without revalidation
    /// (RFC 9111 §4.2.4): `must-revalidate`, `proxy-revalidate` (shared caches), or `no-cache`.
    /// `s-maxage` implies `proxy-revalidate` (§5.2.2.10); see [`Self::implied_revalidate`].
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache.is_all()
    }

    /// Whether `s-maxage` is present, which implies `proxy-revalidate` for a shared cache.
    pub fn implied_revalidate(&self) -> bool {
        self.s_maxage.is_some()
    }
}

impl RequestDirectives {
    /// The directives of a request's `Cache-Control` lines, or of `Pragma: no-cache` when the
    /// request has no Cache-Control field (RFC 9111 §5.4; RFC 7234 §5.4 had Pragma ignored
    /// whenever Cache-Control is present).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = RequestDirectives::default();
        if !headers.contains_key(header::CACHE_CONTROL) {
            out.no_cache = directives(headers, &header::PRAGMA)
                .any(|directive| directive.name.eq_ignore_ascii_case("no-cache"));
            return out;
        }
        for directive in directives(headers, &header::CACHE_CONTROL) {
            let is = |known: &str| directive.name.eq_ignore_ascii_case(known);
            let seconds = || delta(&directive.value).valid();
            if is("max-age") {
                if out.max_age.is_none() {
                    out.max_age = seconds();
                }
            } else if is("max-stale") {
                if out.max_stale.is_none() {
                    out.max_stale = match &directive.value {
                        None => Some(MaxStale::Any),
                        Some(_) => seconds().map(MaxStale::Seconds),
                    };
                }
            } else if is("min-fresh") {
                if out.min_fresh.is_none() {
                    out.min_fresh = seconds();
                }
            } else if is("no-cache") {
                out.no_cache = true;
            } else if is("no-store") {
                out.no_store = true;
            } else if is("only-if-cached") {
                out.only_if_cached = true;
            } else if is("stale-if-error") && out.stale_if_error.is_none() {
                out.stale_if_error = seconds();
            }
        }
        out
    }
}

/// Which field a response's caching directives came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectiveSource {
    /// `Cache-Control` (and `Expires` applies).
    CacheControl,
    /// A targeted field such as `CDN-Cache-Control` (RFC 9213 §2.1): `Cache-Control` and
    /// `Expires` are ignored for this cache's own policy.
    Targeted(HeaderName),
}

/// The response directives this cache follows: those of the first targeted field in `targets`
/// with a valid, non-empty value (RFC 9213 §2.1), else those of Cache-Control.
pub fn effective(
    headers: &HeaderMap,
    targets: &[HeaderName],
) -> (ResponseDirectives, DirectiveSource) {
    for target in targets {
        if let Some(directives) = targeted(headers, target) {
            return (directives, DirectiveSource::Targeted(target.clone()));
        }
    }
    (ResponseDirectives::parse(headers), DirectiveSource::CacheControl)
}

/// The directives of one targeted field, if it is present with a valid, non-empty value.
///
/// A targeted field is a Structured Field Dictionary (RFC 9213 §2.1, RFC 8941 §3.2): a value
/// that does not parse as one makes the whole field invalid, and a directive whose value has
/// the wrong type (`max-age="60"`) is ignored.
fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut joined = String::new();
    for line in lines {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(line.to_str().ok()?);
    }
    let members = super::structured::dictionary(&joined)?;
    if members.is_empty() {
        return None;
    }
    let mut out = ResponseDirectives::default();
    for (key, item) in members {
        use super::structured::Item;
        let seconds = match item {
            Item::Integer(value) if value >= 0 => {
                Some(u32::try_from(value).unwrap_or(DELTA_SECONDS_MAX).min(DELTA_SECONDS_MAX))
            }
            _ => None,
        };
        let flag = item == Item::Boolean(true);
        match key.as_str() {
            "max-age" => {
                if let Some(seconds) = seconds {
                    out.max_age.get_or_insert(Delta::Seconds(seconds));
                }
            }
            "s-maxage" => {
                if let Some(seconds) = seconds {
                    out.s_maxage.get_or_insert(Delta::Seconds(seconds));
                }
            }
            "no-store" if flag => out.no_store = true,
            "no-cache" if flag => out.no_cache = Qualified::All,
            "private" if flag => out.private = Qualified::All,
            "public" if flag => out.public = true,
            "must-revalidate" if flag => out.must_revalidate = true,
            "proxy-revalidate" if flag => out.proxy_revalidate = true,
            "must-understand" if flag => out.must_understand = true,
            "stale-while-revalidate" => out.stale_while_revalidate = seconds,
            "stale-if-error" => out.stale_if_error = seconds,
            _ => {}
        }
    }
    Some(out)
}

/// Every directive on every line of field `name`; lines that are not text are skipped.
fn directives<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Directive<'a>> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| split_list(line).filter_map(directive))
}

/// The members of a comma-separated list, with commas inside quoted strings left alone and
/// surrounding whitespace and empty members dropped (RFC 9110 §5.6.1).
pub fn split_list(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (index, byte) in rest.bytes().enumerate() {
                if escaped {
                    escaped = false;
                } else if quoted && byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    quoted = !quoted;
                } else if byte == b',' && !quoted {
                    end = index;
                    break;
                }
            }
            let member = rest.get(..end).unwrap_or_default().trim_matches([' ', '\t']);
            rest = rest.get(end + 1..).unwrap_or_default();
            if !member.is_empty() {
                return Some(member);
            }
        }
    })
}

/// One list member as a directive: `name`, `name=token` or `name="quoted"`.
fn directive(member: &str) -> Option<Directive<'_>> {
    let Some((name, raw)) = member.split_once('=') else {
        return Some(Directive { name: member, value: None });
    };
    // Whitespace around "=" is not in the grammar; the name is still recognised so that a
    // malformed argument counts as invalid rather than as an unknown directive.
    let trimmed = name.trim_end_matches([' ', '\t']);
    if trimmed.is_empty() {
        return None;
    }
    let value = if trimmed.len() != name.len() {
        Err(())
    } else if raw.starts_with('"') {
        unquote(raw).ok_or(())
    } else if !raw.is_empty() && raw.bytes().all(is_tchar) {
        Ok(raw.to_owned())
    } else {
        Err(())
    };
    Some(Directive { name: trimmed, value: Some(value) })
}

/// The content of a quoted-string (RFC 9110 §5.6.4), if `raw` is exactly one.
pub fn unquote(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// A delta-seconds argument: digits only (a quoted string of digits is accepted too, as many
/// caches do), capped at [`DELTA_SECONDS_MAX`]; anything else, including no argument, is
/// [`Delta::Invalid`].
fn delta(value: &Option<Result<String, ()>>) -> Delta {
    let Some(Ok(text)) = value else {
        return Delta::Invalid;
    };
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Delta::Invalid;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 10 {
        return Delta::Seconds(DELTA_SECONDS_MAX);
    }
    let seconds = digits.parse::<u64>().unwrap_or(0);
    Delta::Seconds(
        u32::try_from(seconds.min(u64::from(DELTA_SECONDS_MAX))).unwrap_or(DELTA_SECONDS_MAX),
    )
}

/// A `no-cache` / `private` argument: none is [`Qualified::All`]; a quoted list names fields.
fn qualified(value: &Option<Result<String, ()>>) -> Qualified {
    match value {
        None => Qualified::All,
        Some(Ok(list)) => {
            let fields: Vec<HeaderName> = split_list(list)
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect();
            if fields.is_empty() { Qualified::All } else { Qualified::Fields(fields) }
        }
        // A malformed argument: the safe reading is the unqualified directive.
        Some(Err(())) => Qualified::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        map
    }

    fn response(lines: &[&str]) -> ResponseDirectives {
        ResponseDirectives::parse(&headers("cache-control", lines))
    }

    #[test]
    fn max_age_table() {
        let cases: &[(&[&str], Option<Delta>)] = &[
            (&["max-age=3600"], Some(Delta::Seconds(3600))),
            (&["MaX-aGe=3600"], Some(Delta::Seconds(3600))),
            (&["foobar, max-age=3600"], Some(Delta::Seconds(3600))),
            (&["max-age=003600"], Some(Delta::Seconds(3600))),
            (&["max-age=\"3600\""], Some(Delta::Seconds(3600))),
            (&["max-age=2147483647"], Some(Delta::Seconds(2_147_483_647))),
            (&["max-age=2147483648"], Some(Delta::Seconds(DELTA_SECONDS_MAX))),
            (&["max-age=2147483649"], Some(Delta::Seconds(DELTA_SECONDS_MAX))),
            (&["max-age=99999999999"], Some(Delta::Seconds(DELTA_SECONDS_MAX))),
            (&["max-age=-3600"], Some(Delta::Invalid)),
            (&["max-age='3600'"], Some(Delta::Invalid)),
            (&["max-age=3600.0"], Some(Delta::Invalid)),
            (&["max-age =3600"], Some(Delta::Invalid)),
            (&["max-age= 3600"], Some(Delta::Invalid)),
            (&["max-age"], Some(Delta::Invalid)),
            // A quoted argument of another directive hides what looks like max-age.
            (&["extension=\"max-age=3600\", max-age=1"], Some(Delta::Seconds(1))),
            (&["max-age=1, extension=\"max-age=3600\""], Some(Delta::Seconds(1))),
            (&["extension=\"a, max-age=3600\""], None),
            // The first occurrence counts, across lines too.
            (&["max-age=1800, max-age=1"], Some(Delta::Seconds(1800))),
            (&["max-age=1", "max-age=1800"], Some(Delta::Seconds(1))),
            (&[""], None),
        ];
        for (lines, expected) in cases {
            assert_eq!(response(lines).max_age, *expected, "lines: {lines:?}");
        }
    }

    #[test]
    fn flags_and_qualified_table() {
        let parsed = response(&["No-StOrE, PRIVATE, public", "must-revalidate,proxy-revalidate"]);
        assert!(parsed.no_store && parsed.public && parsed.must_revalidate);
        assert!(parsed.proxy_revalidate && parsed.private.is_all());
        assert!(parsed.forbids_stale());

        let parsed = response(&["no-cache=\"a, B\", private=\"set-cookie\""]);
        assert_eq!(
            parsed.no_cache,
            Qualified::Fields(vec![HeaderName::from_static("a"), HeaderName::from_static("b")])
        );
        assert_eq!(parsed.private.fields(), &[HeaderName::from_static("set-cookie")]);
        assert!(!parsed.forbids_stale());

        let parsed = response(&["max-age=1, stale-while-revalidate=4, stale-if-error=60"]);
        assert_eq!(parsed.stale_while_revalidate, Some(4));
        assert_eq!(parsed.stale_if_error, Some(60));

        let parsed = response(&["s-maxage=2"]);
        assert!(parsed.implied_revalidate() && !parsed.forbids_stale());
        assert!(response(&["max-age=3, no-store, must-understand"]).must_understand);
    }

    #[test]
    fn request_table() {
        let cases: &[(&[(&str, &str)], RequestDirectives)] = &[
            (&[("cache-control", "nothing-to-see-here")], RequestDirectives::default()),
            (
                &[("cache-control", "max-age=0, min-fresh=10")],
                RequestDirectives { max_age: Some(0), min_fresh: Some(10), ..Default::default() },
            ),
            (
                &[("cache-control", "max-stale")],
                RequestDirectives { max_stale: Some(MaxStale::Any), ..Default::default() },
            ),
            (
                &[("cache-control", "max-stale=1000")],
                RequestDirectives {
                    max_stale: Some(MaxStale::Seconds(1000)),
                    ..Default::default()
                },
            ),
            (
                &[("cache-control", "No-Cache, no-store, only-if-cached")],
                RequestDirectives {
                    no_cache: true,
                    no_store: true,
                    only_if_cached: true,
                    ..Default::default()
                },
            ),
            // Pragma counts only without Cache-Control.
            (&[("pragma", "no-cache")], RequestDirectives { no_cache: true, ..Default::default() }),
            (&[("pragma", "no-cache"), ("cache-control", "foo")], RequestDirectives::default()),
            (&[("pragma", "unrecognised-extension")], RequestDirectives::default()),
        ];
        for (pairs, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *pairs {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert_eq!(RequestDirectives::parse(&map), *expected, "pairs: {pairs:?}");
        }
    }

    #[test]
    fn targeted_field_table() {
        let cdn = HeaderName::from_static("cdn-cache-control");
        let targets = [cdn.clone()];
        let with = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            effective(&map, &targets)
        };
        // A valid targeted field replaces Cache-Control entirely.
        let (parsed, source) =
            with(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=10000")]);
        assert_eq!(source, DirectiveSource::Targeted(cdn.clone()));
        assert_eq!(parsed.max_age, Some(Delta::Seconds(10_000)));
        assert!(!parsed.no_store);
        let (parsed, _) = with(&[("cdn-cache-control", "max-age=99999999999")]);
        assert_eq!(parsed.max_age, Some(Delta::Seconds(DELTA_SECONDS_MAX)));
        let (parsed, _) = with(&[("cdn-cache-control", "private"), ("cache-control", "max-age=1")]);
        assert!(parsed.private.is_all() && parsed.max_age.is_none());
        // Not a valid dictionary: ignored, Cache-Control applies.
        for bad in ["max-age=10000, &&&&&", "MaX-aGe=3600", "max-age =100"] {
            let (parsed, source) =
                with(&[("cdn-cache-control", bad), ("cache-control", "no-store")]);
            assert_eq!(source, DirectiveSource::CacheControl, "{bad}");
            assert!(parsed.no_store, "{bad}");
        }
        // Valid, but the wrong type: the directive is ignored, the field still applies.
        let (parsed, source) =
            with(&[("cdn-cache-control", "max-age=\"10000\""), ("cache-control", "no-store")]);
        assert_eq!(source, DirectiveSource::Targeted(cdn));
        assert_eq!(parsed, ResponseDirectives::default());
        // Without targets configured, the field is just another header.
        let mut map = HeaderMap::new();
        map.insert("cdn-cache-control", HeaderValue::from_static("max-age=5"));
        assert_eq!(effective(&map, &[]).1, DirectiveSource::CacheControl);
    }

    #[test]
    fn split_list_respects_quotes() {
        let members: Vec<_> = split_list(" a ,, b=\"x, \\\"y\", c ,").collect();
        assert_eq!(members, ["a", "b=\"x, \\\"y\"", "c"]);
        assert_eq!(unquote("\"x, \\\"y\""), Some("x, \"y".to_owned()));
        assert_eq!(unquote("\"open"), None);
        assert_eq!(unquote("\"a\"b"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(line in "[ -~]{0,60}") {
            if let Ok(value) = HeaderValue::from_str(&line) {
                let mut map = HeaderMap::new();
                map.insert(header::CACHE_CONTROL, value.clone());
                map.insert("cdn-cache-control", value);
                let _ = ResponseDirectives::parse(&map);
                let _ = RequestDirectives::parse(&map);
                let _ = effective(&map, &[HeaderName::from_static("cdn-cache-control")]);
            }
        }
    }
}
