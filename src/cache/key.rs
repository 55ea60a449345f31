//! Cache keys (RFC 9111 §2, §4.1): the primary key of a stored response (method and target
//! URI) and the secondary key made of the request header fields its `Vary` names.

use http::Method;
use http::header::{self, HeaderMap, HeaderName};

/// The primary cache key: the request method and the target URI, normalised so that
/// spellings of one URI that RFC 9110 §4.2.3 calls equivalent share an entry (scheme and host
/// in lower case, no default port, `/` for an empty path). HEAD shares GET's key: a HEAD
/// request can be answered from a stored GET response (RFC 9110 §9.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// GET for GET and HEAD, else the method itself.
    method: Method,
    /// `scheme://authority/path?query`, normalised.
    url: Box<str>,
}

impl CacheKey {
    /// The key of a request for `scheme://authority` + `path_and_query`.
    pub fn new(method: &Method, scheme: &str, authority: &str, path_and_query: &str) -> Self {
        let method = if *method == Method::HEAD { Method::GET } else { method.clone() };
        let mut url =
            String::with_capacity(scheme.len() + authority.len() + path_and_query.len() + 4);
        url.push_str(&scheme.to_ascii_lowercase());
        url.push_str("://");
        url.push_str(&normal_authority(scheme, authority));
        if !path_and_query.starts_with('/') {
            url.push('/');
        }
        url.push_str(path_and_query);
        CacheKey { method, url: url.into_boxed_str() }
    }

    /// The key of a GET request for an absolute URL (`http://host/path`), as an operator
    /// writes it for a purge; `None` when it is not one.
    pub fn for_url(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.is_empty()
            || !scheme.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"+-.".contains(&byte))
        {
            return None;
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return None;
        }
        Some(CacheKey::new(&Method::GET, scheme, authority, path))
    }

    /// The method part of the key.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The normalised target URI.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `scheme://authority` of the target URI.
    pub fn origin(&self) -> &str {
        let after_scheme = self.url.find("://").map_or(0, |at| at + 3);
        let end = self
            .url
            .get(after_scheme..)
            .and_then(|rest| rest.find('/'))
            .map_or(self.url.len(), |at| after_scheme + at);
        self.url.get(..end).unwrap_or(&self.url)
    }

    /// The GET key of a URI reference found in this response's `Location` or
    /// `Content-Location` (RFC 9110 §10.2.2, §8.7), resolved against this key's URI; `None`
    /// when it names another origin, which a cache must not invalidate for (RFC 9111 §4.4).
    pub fn resolve_same_origin(&self, reference: &str) -> Option<Self> {
        let reference = reference.trim();
        let origin = self.origin();
        let resolved = if reference.contains("://") {
            CacheKey::for_url(reference)?
        } else if let Some(network_path) = reference.strip_prefix("//") {
            let scheme = origin.split("://").next().unwrap_or("http");
            CacheKey::for_url(&format!("{scheme}://{network_path}"))?
        } else if reference.starts_with('/') {
            CacheKey { method: Method::GET, url: format!("{origin}{reference}").into_boxed_str() }
        } else {
            // A relative path: replace the last segment of this key's path (RFC 3986 §5.2.3),
            // without dot-segment removal.
            let path = self.url.get(origin.len()..).unwrap_or("/");
            let path = path.split(['?', '#']).next().unwrap_or("/");
            let directory = path.rfind('/').and_then(|at| path.get(..=at)).unwrap_or("/");
            CacheKey {
                method: Method::GET,
                url: format!("{origin}{directory}{reference}").into_boxed_str(),
            }
        };
        let resolved = CacheKey { url: strip_fragment(&resolved.url).into(), ..resolved };
        (resolved.origin() == origin).then_some(resolved)
    }

    /// Approximate heap bytes the key holds, for the store's weigher.
    pub fn heap_size(&self) -> usize {
        self.url.len()
    }
}

/// Whether `url` is `prefix` or lies under it by whole path segments.
pub fn under_prefix(url: &str, prefix: &str) -> bool {
    match url.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with(['/', '?']),
        None => false,
    }
}

/// A URL without its `#fragment`.
fn strip_fragment(url: &str) -> &str {
    url.split('#').next().unwrap_or(url)
}

/// A lower-case authority without userinfo and without the scheme's default port.
fn normal_authority(scheme: &str, authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority).to_ascii_lowercase();
    let default = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else {
        return authority;
    };
    match authority.strip_suffix(default) {
        // Keep "[::1]:80" -> "[::1]", but never strip from something like "host:8080".
        Some(host) if !host.ends_with(':') => host.to_owned(),
        _ => authority,
    }
}

/// A response's `Vary` (RFC 9110 §12.5.5): which request fields select it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`, or an empty one: the response fits every request for its URI.
    Nothing,
    /// The listed fields (lower case, each once).
    Fields(Box<[HeaderName]>),
    /// `*` anywhere in the field, or a member that is not a field name: no request matches
    /// (RFC 9111 §4.1).
    Any,
}

impl Vary {
    /// The `Vary` of a response, read from all of its `Vary` lines.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut fields: Vec<HeaderName> = Vec::new();
        for line in headers.get_all(header::VARY) {
            for member in list_members(line.as_bytes()) {
                if member == b"*" {
                    return Vary::Any;
                }
                let Ok(name) = HeaderName::from_bytes(member) else {
                    return Vary::Any;
                };
                if !fields.contains(&name) {
                    fields.push(name);
                }
            }
        }
        if fields.is_empty() { Vary::Nothing } else { Vary::Fields(fields.into_boxed_slice()) }
    }

    /// The secondary key of `request` under this `Vary`.
    pub fn key(&self, request: &HeaderMap) -> VaryKey {
        match self {
            Vary::Fields(fields) => {
                VaryKey(fields.iter().map(|name| normal_value(name, request)).collect())
            }
            Vary::Nothing | Vary::Any => VaryKey(Box::default()),
        }
    }

    /// Whether a request whose secondary key under this `Vary` is `request_key` may be
    /// answered by a response stored with `stored_key` (RFC 9111 §4.1).
    pub fn matches(&self, stored_key: &VaryKey, request_key: &VaryKey) -> bool {
        match self {
            Vary::Nothing => true,
            Vary::Fields(_) => stored_key == request_key,
            Vary::Any => false,
        }
    }
}

/// The normalised values of the request fields a `Vary` names, in its order; `None` for a
/// field the request lacks (which matches only a request that lacks it too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VaryKey(Box<[Option<Box<[u8]>>]>);

impl VaryKey {
    /// A key made of these normalised values (as [`VaryKey::values`] gave them), for a
    /// response read back from the disk tier.
    pub fn from_values(values: Vec<Option<Box<[u8]>>>) -> Self {
        VaryKey(values.into_boxed_slice())
    }

    /// The normalised values, in the order of the `Vary` they were taken under.
    pub fn values(&self) -> &[Option<Box<[u8]>>] {
        &self.0
    }

    /// Approximate heap bytes the key holds, for the store's weigher.
    pub fn heap_size(&self) -> usize {
        self.0.iter().map(|value| value.as_ref().map_or(0, |bytes| bytes.len()) + 16).sum()
    }
}

/// Fields whose values are case-insensitive throughout: content codings (RFC 9110 §8.4.1),
/// charsets (§8.3.2) and language tags (§8.5.1, RFC 5646 §2.1.1).
const CASE_INSENSITIVE: [HeaderName; 3] =
    [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE, header::ACCEPT_CHARSET];

/// One request field's value for a secondary key: every line combined (RFC 9110 §5.3), list
/// members with the whitespace around them removed and empty members dropped, and lower case
/// where the field is case-insensitive. So `Foo: 1, 2`, `Foo: 1,2` and two lines `Foo: 1` /
/// `Foo: 2` select the same response (RFC 9111 §4.1 allows such normalisation).
fn normal_value(name: &HeaderName, request: &HeaderMap) -> Option<Box<[u8]>> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let lower = CASE_INSENSITIVE.contains(name);
    let mut out = Vec::new();
    for line in lines {
        for member in list_members(line.as_bytes()) {
            if !out.is_empty() {
                out.push(b',');
            }
            if lower {
                out.extend(member.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(member);
            }
        }
    }
    Some(out.into_boxed_slice())
}

/// Members of a comma-separated field value, trimmed, empty ones dropped; commas inside a
/// quoted string do not separate.
fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let mut quoted = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (index, byte) in rest.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if quoted && *byte == b'\\' {
                    escaped = true;
                } else if *byte == b'"' {
                    quoted = !quoted;
                } else if *byte == b',' && !quoted {
                    end = index;
                    break;
                }
            }
            let member = trim(rest.get(..end).unwrap_or_default());
            rest = rest.get(end + 1..).unwrap_or_default();
            if !member.is_empty() {
                return Some(member);
            }
        }
        None
    })
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|byte| !matches!(byte, b' ' | b'\t')).unwrap_or(bytes.len());
    let end =
        bytes.iter().rposition(|byte| !matches!(byte, b' ' | b'\t')).map_or(start, |at| at + 1);
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fields::{Fields, map};

    /// Header fields of a test case, as name/value pairs.

    #[test]
    fn primary_key_table() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            ("GET", "http", "Example.COM", "/a?b=C", "http://example.com/a?b=C"),
            ("HEAD", "http", "example.com:80", "/a", "http://example.com/a"),
            ("GET", "HTTPS", "example.com:443", "", "https://example.com/"),
            ("GET", "http", "example.com:8080", "/", "http://example.com:8080/"),
            ("GET", "https", "example.com:80", "/", "https://example.com:80/"),
            ("GET", "http", "[::1]:80", "/x", "http://[::1]/x"),
            ("GET", "http", "user@host", "/x", "http://host/x"),
        ];
        for (method, scheme, authority, path, url) in cases {
            let key = CacheKey::new(
                &Method::from_bytes(method.as_bytes()).unwrap(),
                scheme,
                authority,
                path,
            );
            assert_eq!(key.url(), *url);
            assert_eq!(*key.method(), Method::GET);
        }
        let post = CacheKey::new(&Method::POST, "http", "a", "/");
        assert_ne!(post, CacheKey::new(&Method::GET, "http", "a", "/"));
        assert_eq!(
            CacheKey::for_url("http://A:80/x?y").map(|key| key.url().to_owned()),
            Some("http://a/x?y".to_owned())
        );
        assert_eq!(
            CacheKey::for_url("http://a").map(|key| key.url().to_owned()),
            Some("http://a/".to_owned())
        );
        assert_eq!(CacheKey::for_url("/relative"), None);
        assert_eq!(CacheKey::for_url("http:///x"), None);
    }

    #[test]
    fn resolve_same_origin_table() {
        let base = CacheKey::new(&Method::POST, "http", "a.test", "/test/uuid?q=1");
        let cases: &[(&str, Option<&str>)] = &[
            ("/test/uuid/location_target", Some("http://a.test/test/uuid/location_target")),
            ("other", Some("http://a.test/test/other")),
            ("http://A.test:80/x#frag", Some("http://a.test/x")),
            ("//a.test/y", Some("http://a.test/y")),
            ("http://b.test/x", None),
            ("https://a.test/x", None),
            ("//b.test/y", None),
        ];
        for (reference, expected) in cases {
            let resolved = base.resolve_same_origin(reference);
            assert_eq!(resolved.as_ref().map(CacheKey::url), *expected, "{reference}");
            if let Some(resolved) = resolved {
                assert_eq!(*resolved.method(), Method::GET);
            }
        }
    }

    #[test]
    fn vary_parsing_table() {
        let fields = |names: &[&str]| {
            Vary::Fields(
                names.iter().map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap()).collect(),
            )
        };
        let cases: &[(&[&str], Vary)] = &[
            (&[], Vary::Nothing),
            (&[""], Vary::Nothing),
            (&["Foo"], fields(&["foo"])),
            (&["Foo, Bar", "foo"], fields(&["foo", "bar"])),
            (&["*"], Vary::Any),
            (&["*, *"], Vary::Any),
            (&[", *"], Vary::Any),
            (&["", "*"], Vary::Any),
            (&["*, Foo"], Vary::Any),
            (&["Foo, *"], Vary::Any),
            (&["Foo", "*"], Vary::Any),
            (&["bad name"], Vary::Any),
        ];
        for (lines, expected) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|line| ("vary", *line)).collect();
            assert_eq!(Vary::of(&map(&pairs)), *expected, "{lines:?}");
        }
    }

    #[test]
    fn vary_matching_table() {
        let cases: &[(&str, Fields<'_>, Fields<'_>, bool)] = &[
            ("Foo", &[("foo", "1")], &[("foo", "1")], true),
            ("Foo", &[("foo", "1")], &[("foo", "2")], false),
            ("Foo", &[], &[("foo", "1")], false),
            ("Foo", &[("foo", "1")], &[], false),
            ("Foo", &[("foo", "")], &[], false),
            ("Foo", &[("foo", "1"), ("other", "2")], &[("foo", "1"), ("other", "3")], true),
            ("Foo, Bar", &[("foo", "1"), ("bar", "abc")], &[("foo", "1"), ("bar", "abcde")], false),
            (
                "Foo, Bar, Baz",
                &[("foo", "1"), ("baz", "789")],
                &[("foo", "1"), ("baz", "789")],
                true,
            ),
            // Normalisation: combined lines, whitespace, case of case-insensitive fields.
            ("Foo", &[("foo", "1, 2")], &[("foo", "1"), ("foo", "2")], true),
            ("Foo", &[("foo", "1,2")], &[("foo", " 1, 2 ")], true),
            ("Foo", &[("foo", "A")], &[("foo", "a")], false),
            (
                "Accept-Language",
                &[("accept-language", "en, de")],
                &[("accept-language", " en ,   de")],
                true,
            ),
            (
                "Accept-Language",
                &[("accept-language", "en, de")],
                &[("accept-language", "eN, De")],
                true,
            ),
            (
                "Accept-Language",
                &[("accept-language", "en, de")],
                &[("accept-language", "de, en")],
                false,
            ),
            (
                "Accept-Encoding",
                &[("accept-encoding", "GZIP,br")],
                &[("accept-encoding", "gzip, BR")],
                true,
            ),
            ("Foo", &[("foo", "\"a, b\"")], &[("foo", "\"a, b\"")], true),
            ("Foo", &[("foo", "\"a, b\"")], &[("foo", "\"a,b\"")], false),
            ("*", &[], &[], false),
        ];
        for (vary, stored, request, expected) in cases {
            let vary = Vary::of(&map(&[("vary", vary)]));
            let stored_key = vary.key(&map(stored));
            let request_key = vary.key(&map(request));
            assert_eq!(
                vary.matches(&stored_key, &request_key),
                *expected,
                "{vary:?} {stored:?} {request:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn whitespace_around_members_never_changes_the_key(
            members in proptest::collection::vec("[a-z0-9=;.]{1,8}", 1..5),
            spaces in proptest::collection::vec(0usize..3, 10),
        ) {
            let pad = |n: usize| " ".repeat(n);
            let tight = members.join(",");
            let loose: Vec<String> = members
                .iter()
                .enumerate()
                .map(|(i, m)| format!("{}{}{}", pad(spaces[i % 10]), m, pad(spaces[(i + 5) % 10])))
                .collect();
            let vary = Vary::of(&map(&[("vary", "x-foo")]));
            proptest::prop_assert_eq!(
                vary.key(&map(&[("x-foo", &tight)])),
                vary.key(&map(&[("x-foo", &loose.join(","))]))
            );
        }

        #[test]
        fn keys_never_panic(authority in "[ -~]{0,20}", path in "[ -~]{0,20}", reference in "[ -~]{0,20}") {
            let key = CacheKey::new(&Method::GET, "http", &authority, &path);
            let _ = key.resolve_same_origin(&reference);
            let _ = CacheKey::for_url(&reference);
            let _ = key.origin();
        }
    }
}
