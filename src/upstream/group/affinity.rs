//! Session affinity for `balance = "hash"`: which part of a request names its session, and
//! the stable key it hashes to.
//!
//! A request without the header or cookie has no key; the group then picks by weight at
//! random, as `random` would. The virtual key is known only to an AI route's admission, which
//! hashes its name with [`of_name`].

use std::net::IpAddr;

use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};

use super::balance::hash_bytes;
use crate::config::group::HashOn;

/// The request's key for `on`, if it has the part `on` names.
pub fn key(on: &HashOn, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    key_by(on, |name| headers.get_all(name).iter().map(HeaderValue::as_bytes), client)
}

/// [`key`] over any form of a request head: `values` gives the values of every line named
/// `name`, in order (the HTTP/1 fast path reads them from the head parsed in place).
pub fn key_by<'a, I>(
    on: &'a HashOn,
    values: impl Fn(&'a HeaderName) -> I,
    client: IpAddr,
) -> Option<u64>
where
    I: Iterator<Item = &'a [u8]>,
{
    match on {
        HashOn::Header(name) => {
            let mut values = values(name).peekable();
            values.peek()?;
            // Several lines hash as their comma-joined value would (RFC 9110 §5.3).
            let mut joined = Vec::new();
            for (index, value) in values.enumerate() {
                if index > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value);
            }
            Some(hash_bytes(&joined))
        }
        HashOn::Cookie(name) => cookie_in(values(&COOKIE_NAME), name).map(hash_bytes),
        HashOn::ClientAddress => Some(match client {
            IpAddr::V4(v4) => hash_bytes(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // The same client over an IPv4-mapped address keeps its key.
                Some(v4) => hash_bytes(&v4.octets()),
                None => hash_bytes(&v6.octets()),
            },
        }),
        HashOn::VirtualKey => None,
    }
}

static COOKIE_NAME: HeaderName = COOKIE;

/// The key of a client known by `name` (its virtual key's name), for `hash_on = "virtual_key"`.
pub fn of_name(name: &str) -> u64 {
    hash_bytes(name.as_bytes())
}

/// The value of the cookie `name` in the request's `Cookie` lines (RFC 6265 §5.4: pairs
/// separated by `;`); the first one if it appears more than once.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    cookie_in(headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes), name)
}

/// [`cookie`] in the values of the `Cookie` lines, `lines`.
fn cookie_in<'a>(lines: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    lines.flat_map(|line| line.split(|b| *b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let split = pair.iter().position(|b| *b == b'=')?;
        let (key, value) = pair.split_at(split);
        (key.trim_ascii() == name.as_bytes())
            .then(|| value.get(1..).unwrap_or_default().trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookie_table() {
        let h = headers(&[("cookie", "a=1; session=abc ; b=2"), ("cookie", "session=later")]);
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "sess"), None);
        assert_eq!(cookie(&headers(&[("cookie", "flag; x=")]), "x"), Some(&b""[..]));
        assert_eq!(cookie(&headers(&[("cookie", "flag")]), "flag"), None);
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn keys_table() {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let user = HashOn::Header(HeaderName::from_static("x-user"));
        let one = headers(&[("x-user", "alice")]);
        assert_eq!(key(&user, &one, client), Some(hash_bytes(b"alice")));
        assert_eq!(key(&user, &HeaderMap::new(), client), None);
        let two = headers(&[("x-user", "a"), ("x-user", "b")]);
        assert_eq!(key(&user, &two, client), Some(hash_bytes(b"a, b")));
        let session = HashOn::Cookie("sid".into());
        assert_eq!(
            key(&session, &headers(&[("cookie", "sid=42")]), client),
            Some(hash_bytes(b"42"))
        );
        assert_eq!(key(&session, &one, client), None);
        let by_address = HashOn::ClientAddress;
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(key(&by_address, &one, client), key(&by_address, &one, mapped));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_ne!(key(&by_address, &one, client), key(&by_address, &one, other));
    }
}
