//! The `Host` value of a request: checked (RFC 9112 §3.2) and made into a header value once per
//! distinct value and thread, not once per request.
//!
//! Nearly every request a thread serves in a row carries the same `Host`, and checking it
//! means parsing it as an authority, which allocates; so the last value that passed is kept,
//! and a request with the same bytes shares it.

use std::cell::RefCell;

use http::HeaderValue;

thread_local! {
    /// The last `Host` value that passed [`is_valid`] on this thread.
    static LAST_VALID: RefCell<Option<HeaderValue>> = const { RefCell::new(None) };
}

/// Whether `value` is a usable `Host`: visible ASCII (as a header value's `to_str` reads it)
/// that parses as an authority without userinfo.
pub fn is_valid(value: &[u8]) -> bool {
    if LAST_VALID.with_borrow(|last| last.as_ref().is_some_and(|last| last.as_bytes() == value)) {
        return true;
    }
    let valid = value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<http::uri::Authority>().ok())
            .is_some_and(|authority| !authority.as_str().contains('@'));
    if valid
        && let Ok(header) = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value))
    {
        LAST_VALID.set(Some(header));
    }
    valid
}

/// `value` as a header value: the one [`is_valid`] kept when the bytes are the same (a
/// reference-count increment), else a new one.
pub fn value(value: &[u8]) -> Option<HeaderValue> {
    let kept = LAST_VALID
        .with_borrow(|last| last.as_ref().filter(|last| last.as_bytes() == value).cloned());
    kept.or_else(|| HeaderValue::from_bytes(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_and_shared() {
        assert!(is_valid(b"example.com:8080"));
        // The same bytes again: the kept value answers, and is the one handed out.
        assert!(is_valid(b"example.com:8080"));
        assert_eq!(value(b"example.com:8080").unwrap(), "example.com:8080");
        assert!(!is_valid(b"user@example.com"));
        assert!(!is_valid(b"exa mple.com"));
        assert!(!is_valid(b"example.com/path"));
        assert!(!is_valid(b""));
        // A refused value does not displace the kept one, and other values are still made.
        assert!(is_valid(b"example.com:8080"));
        assert_eq!(value(b"other.example").unwrap(), "other.example");
        assert!(value(b"bad\x01").is_none());
    }
}
