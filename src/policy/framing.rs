//! Message framing checks against request smuggling (RFC 9112 §6.1, §6.3).
//!
//! hyper already refuses most ambiguous messages (differing or list-valued Content-Length,
//! unknown or non-final chunked, obs-fold, bad bytes in fields). On the parsed head this check
//! refuses what it still lets through: any transfer coding other than exactly `chunked`. The
//! Content-Length checks here are defence in depth only: hyper drops Content-Length beside
//! Transfer-Encoding, and folds identical repeated Content-Length lines, before the service
//! sees the head, so over HTTP/1 those cases are caught on the wire by [`super::wire`].

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

/// Why a message's framing is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.1: "ought to be handled as an
    /// error").
    #[error("both Content-Length and Transfer-Encoding are present")]
    LengthAndEncoding,
    /// More than one Content-Length field line.
    #[error("Content-Length is repeated")]
    RepeatedLength,
    /// A transfer coding other than a single `chunked`.
    #[error("unsupported Transfer-Encoding (only `chunked` is accepted)")]
    Encoding,
}

/// Checks the framing fields of a message head.
pub fn check(headers: &HeaderMap) -> Result<(), FramingError> {
    let lengths = headers.get_all(CONTENT_LENGTH).iter().count();
    check_fields(lengths, headers.get_all(TRANSFER_ENCODING).iter().map(|v| v.as_bytes()))
}

/// [`check`] on what it reads: how many `Content-Length` lines the head has, and the values of
/// its `Transfer-Encoding` lines.
pub fn check_fields<'a>(
    lengths: usize,
    mut encodings: impl Iterator<Item = &'a [u8]>,
) -> Result<(), FramingError> {
    let encoding = encodings.next();
    if encoding.is_some() && lengths > 0 {
        return Err(FramingError::LengthAndEncoding);
    }
    if lengths > 1 {
        return Err(FramingError::RepeatedLength);
    }
    if let Some(value) = encoding {
        // Read as text (visible ASCII), as a header value's `to_str` reads it.
        let text = value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
        let chunked = text && value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        if !chunked || encodings.next().is_some() {
            return Err(FramingError::Encoding);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn table() {
        use FramingError::*;
        for (input, expected) in [
            (&[][..], Ok(())),
            (&[("content-length", "5")][..], Ok(())),
            (&[("transfer-encoding", "chunked")][..], Ok(())),
            (&[("transfer-encoding", "Chunked ")][..], Ok(())),
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
                Err(LengthAndEncoding),
            ),
            (&[("content-length", "5"), ("content-length", "5")][..], Err(RepeatedLength)),
            (&[("transfer-encoding", "gzip, chunked")][..], Err(Encoding)),
            (
                &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")][..],
                Err(Encoding),
            ),
            (&[("transfer-encoding", "identity")][..], Err(Encoding)),
        ] {
            assert_eq!(check(&headers(input)), expected, "{input:?}");
        }
    }
}
