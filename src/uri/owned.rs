//! Copies of request targets that own their bytes. hyper parses a request head into slices of
//! its connection's read buffer, so a `Uri` or `Authority` kept from a request keeps that whole
//! buffer (8 KiB or more) alive; what outlives the exchange, such as a tunnel's context, keeps
//! a copy instead.

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// `authority`, in a buffer of its own.
pub fn authority(authority: &Authority) -> Authority {
    Authority::from_maybe_shared(Bytes::copy_from_slice(authority.as_str().as_bytes()))
        .unwrap_or_else(|_| authority.clone())
}

/// `uri`, with every part in a buffer of its own (the same URI, shared with nothing).
pub fn uri(uri: &Uri) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.scheme = parts.scheme.map(|scheme| scheme.as_str().parse::<Scheme>().unwrap_or(scheme));
    parts.authority = parts.authority.map(|a| authority(&a));
    parts.path_and_query = parts.path_and_query.map(|pq| {
        PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(pq.as_str().as_bytes()))
            .unwrap_or(pq)
    });
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_survives_the_copy() {
        for text in ["example.com:443", "[::1]:8443", "/a/b?c=d", "*", "http://h:81/p?q", "ws://h/"]
        {
            let shared = Uri::from_maybe_shared(Bytes::copy_from_slice(text.as_bytes())).unwrap();
            let copy = uri(&shared);
            assert_eq!(copy, shared);
            assert_eq!(copy.to_string(), shared.to_string());
            assert_eq!(copy.authority(), shared.authority());
            assert_eq!(copy.path_and_query(), shared.path_and_query());
        }
        let a: Authority = "user@host:8080".parse().unwrap();
        assert_eq!(authority(&a), a);
    }
}
