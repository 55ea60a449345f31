//! Request ids: generated per process, or kept from a trusted client.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

use crate::config::{MAX_REQUEST_ID_BYTES, RequestIdConfig};

/// A request's id: generated here, or kept from the client when configured to trust it.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// Generated: a per-process random prefix and a sequence number.
    Local(u64),
    /// The client's own id (checked to be short and made of safe characters).
    Client(HeaderValue),
}

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A random prefix chosen once per process, so ids from two runs or two instances differ.
fn process_prefix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        // Truncation keeps 32 of the hash's 64 random bits, plenty to tell processes apart.
        hasher.finish() as u32
    })
}

impl RequestId {
    /// The id for a request with `headers`: the client's when trusted and well-formed, else a
    /// fresh one.
    pub fn for_request(headers: &HeaderMap, config: &RequestIdConfig) -> RequestId {
        if config.trust_incoming
            && let Some(value) = headers.get(&config.header)
            && is_safe_id(value.as_bytes())
        {
            return RequestId::Client(value.clone());
        }
        RequestId::Local(NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// [`RequestId::for_request`] on the value of the request's id field, when it has one.
    pub fn for_value(value: Option<&[u8]>, config: &RequestIdConfig) -> RequestId {
        if config.trust_incoming
            && let Some(value) = value
            && is_safe_id(value)
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            return RequestId::Client(value);
        }
        RequestId::Local(NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a header value, to pass upstream and back to the client.
    pub fn to_header_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(value) => value.clone(),
            RequestId::Local(sequence) => {
                // Hex by hand: this runs for every reverse-proxied request.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let value =
                    (u128::from(process_prefix()) << 48) | u128::from(sequence & 0xffff_ffff_ffff);
                let mut text = [0u8; 20];
                for (i, byte) in text.iter_mut().enumerate() {
                    let shift = 4 * (19 - i);
                    *byte = HEX.get(((value >> shift) & 0xf) as usize).copied().unwrap_or(b'0');
                }
                // Owned behind a reference count from the start: the value is cloned for the
                // upstream head and the response, and a clone is then an increment rather than
                // the allocation a copied slice takes on its first clone.
                HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
                    .unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Local(sequence) => {
                write!(f, "{:08x}{:012x}", process_prefix(), sequence & 0xffff_ffff_ffff)
            }
            RequestId::Client(value) => {
                f.write_str(std::str::from_utf8(value.as_bytes()).unwrap_or("-"))
            }
        }
    }
}

/// An incoming id is kept only if it cannot break a log line or a header: 1 to 128 of
/// `A-Z a-z 0-9 - _ . : / + =`.
fn is_safe_id(bytes: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_fixed_width() {
        let headers = HeaderMap::new();
        let config = RequestIdConfig::default();
        let a = RequestId::for_request(&headers, &config).to_string();
        let b = RequestId::for_request(&headers, &config).to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        let id = RequestId::for_request(&headers, &config);
        assert_eq!(id.to_header_value().to_str().unwrap(), id.to_string());
    }

    #[test]
    fn client_ids_are_kept_only_when_trusted_and_safe() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        let mut config = RequestIdConfig::default();
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
        config.trust_incoming = true;
        assert_eq!(RequestId::for_request(&headers, &config).to_string(), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("a b\"c"));
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
        headers.insert("x-request-id", HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
    }
}
