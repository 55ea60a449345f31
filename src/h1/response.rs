//! Parsing an upstream's response head (RFC 9112 §4) and deciding how its body is delimited
//! (RFC 9112 §6.3), as hyper's client does: informational responses other than 101 are
//! skipped, a response to HEAD and a 204 or 304 have no body, Transfer-Encoding wins over
//! Content-Length and makes the body chunked when its last coding is `chunked` (and
//! close-delimited otherwise), equal Content-Length values may repeat, and a response with
//! neither is delimited by the connection closing.

use std::mem::MaybeUninit;

use http::StatusCode;

use crate::h1::fields::{Field, Fields};
use crate::h1::{ConnectionMembers, Framing, HeadLimits, Parsed, Span, Version, content_length};

/// hyper's limits for a response head: its read buffer's maximum (8 KiB + 100 × 4 KiB) and
/// its default field count.
pub const RESPONSE_LIMITS: HeadLimits =
    HeadLimits { max_bytes: 8192 + 4096 * 100, max_fields: 100 };

/// Why a response head is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a response head by the HTTP/1 grammar.
    #[error("malformed response head: {0}")]
    Syntax(&'static str),
    /// The head is larger, or has more fields, than the limits allow.
    #[error("the response head is too large")]
    TooLarge,
    /// A status code outside 100-999.
    #[error("invalid status code")]
    Status,
    /// Transfer-Encoding in an HTTP/1.0 response.
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    EncodingInHttp10,
    /// A Content-Length that is not a number, or differing values.
    #[error("invalid Content-Length")]
    BadLength,
}

/// What the response head's framing depends on in the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answering {
    /// The request was a HEAD: the response has no body whatever its fields say.
    pub head: bool,
}

/// A parsed response head, borrowing the buffer it was parsed from.
#[derive(Debug)]
pub struct ResponseHead<'b> {
    /// Bytes the head took, skipped informational responses included: the body starts there.
    pub len: usize,
    /// The status.
    pub status: StatusCode,
    /// The reason phrase as received.
    pub reason: &'b [u8],
    /// The protocol version.
    pub version: Version,
    /// The field lines.
    pub fields: Fields<'b>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the upstream connection may carry another request once this body is read:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, and
    /// never after a close-delimited body or a protocol switch.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`, skipping informational responses other
/// than 101, and records its fields in `fields` (cleared first).
pub fn parse<'b>(
    buf: &'b [u8],
    answering: Answering,
    fields: &'b mut Vec<Field>,
) -> Result<Parsed<ResponseHead<'b>>, ResponseError> {
    parse_within(buf, answering, fields, RESPONSE_LIMITS.max_bytes)
}

/// [`parse`], refusing a head (informational ones included) over `max_bytes` as too large:
/// the upstream's `limits.max_response_head_bytes`, as the general client applies it.
pub fn parse_within<'b>(
    buf: &'b [u8],
    answering: Answering,
    fields: &'b mut Vec<Field>,
    max_bytes: usize,
) -> Result<Parsed<ResponseHead<'b>>, ResponseError> {
    let limits = HeadLimits { max_bytes, ..RESPONSE_LIMITS };
    let mut skipped = 0;
    loop {
        let rest = buf.get(skipped..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(Parsed::Partial);
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; 100];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            rest,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => {
                return Err(ResponseError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
            Err(err) => return Err(ResponseError::Syntax(crate::h1::syntax(err))),
        };
        if len > limits.max_bytes {
            return Err(ResponseError::TooLarge);
        }
        let (Some(code), Some(reason), Some(minor)) =
            (response.code, response.reason, response.version)
        else {
            return Err(ResponseError::Syntax("incomplete status line"));
        };
        let status = StatusCode::from_u16(code).map_err(|_| ResponseError::Status)?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            skipped += len;
            continue;
        }
        let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
        fields.clear();
        let mut keep_alive = version == Version::Http11;
        let mut saw_close = false;
        let mut options = false;
        let (mut encodings, mut chunked, mut lengths) = (false, false, false);
        let mut length: Option<u64> = None;
        let mut length_valid = true;
        for header in response.headers.iter() {
            let name = header.name.as_bytes();
            let value = header.value;
            if name.eq_ignore_ascii_case(b"connection") {
                let members = ConnectionMembers::of(value);
                options |= members.options;
                if saw_close || members.close {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = members.keep_alive;
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                encodings = true;
                // hyper looks at the last line's last coding.
                chunked = ends_in_chunked(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                lengths = true;
                // A list of equal values is one length (RFC 9110 §8.6).
                for member in visible(value).into_iter().flat_map(|v| v.split(|&b| b == b',')) {
                    match content_length(member.trim_ascii()) {
                        Some(n) if length.is_none_or(|previous| previous == n) => {
                            length = Some(n);
                        }
                        _ => length_valid = false,
                    }
                }
                if visible(value).is_none() {
                    length_valid = false;
                }
            }
            fields.push(Field { name: Span::within(buf, name), value: Span::within(buf, value) });
        }
        let framing = match status.as_u16() {
            101 => Framing::Empty,
            204 | 304 => Framing::Empty,
            _ if answering.head => Framing::Empty,
            _ if encodings && version == Version::Http10 => {
                return Err(ResponseError::EncodingInHttp10);
            }
            _ if encodings && chunked => Framing::Chunked,
            _ if encodings => Framing::CloseDelimited,
            _ if lengths => match (length, length_valid) {
                (Some(n), true) => Framing::Length(n),
                _ => return Err(ResponseError::BadLength),
            },
            _ => Framing::CloseDelimited,
        };
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        let keep_alive = keep_alive && !switching && framing != Framing::CloseDelimited;
        return Ok(Parsed::Complete(ResponseHead {
            len: skipped + len,
            status,
            reason: reason.as_bytes(),
            version,
            fields: Fields::parsed(buf, fields, options),
            framing,
            keep_alive,
        }));
    }
}

/// `value` when it is visible ASCII (and HTAB), as hyper reads list fields; `None` otherwise.
fn visible(value: &[u8]) -> Option<&[u8]> {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)).then_some(value)
}

fn ends_in_chunked(value: &[u8]) -> bool {
    visible(value)
        .and_then(|v| v.rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str, head: bool) -> Result<(u16, Framing, bool, usize), ResponseError> {
        let mut fields = Vec::new();
        match parse(input.as_bytes(), Answering { head }, &mut fields)? {
            Parsed::Complete(r) => Ok((r.status.as_u16(), r.framing, r.keep_alive, r.len)),
            Parsed::Partial => panic!("partial: {input:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        use Framing::*;
        let cases: &[(&str, bool, (u16, Framing, bool))] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n", false, (200, Length(51), true)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false, (200, Length(5), true)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n", true, (200, Empty, true)),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false, (204, Empty, true)),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", false, (304, Empty, true)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, (200, Chunked, true)),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
                false,
                (200, CloseDelimited, false),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                (200, Chunked, true),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, (200, CloseDelimited, false)),
            ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false, (200, Length(2), false)),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                false,
                (200, Length(2), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                false,
                (200, Length(2), false),
            ),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", false, (101, Empty, false)),
        ];
        for (input, head, expected) in cases {
            let (status, framing, keep_alive, _) = parsed(input, *head).unwrap();
            assert_eq!((status, framing, keep_alive), *expected, "{input:?}");
        }
    }

    #[test]
    fn informational_responses_are_skipped() {
        let input = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let mut fields = Vec::new();
        let Parsed::Complete(head) =
            parse(input.as_bytes(), Answering { head: false }, &mut fields).unwrap()
        else {
            panic!("partial")
        };
        assert_eq!(head.status, 200);
        assert_eq!(head.len, input.len() - 1);
        assert_eq!(head.fields.get("content-length"), Some(&b"1"[..]));
        assert_eq!(head.fields.get("link"), None);
        let mut fields = Vec::new();
        let partial = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2",
            Answering { head: false },
            &mut fields,
        );
        assert!(matches!(partial, Ok(Parsed::Partial)));
    }

    #[test]
    fn unusable_heads_are_errors() {
        for (input, expected) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                ResponseError::BadLength,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ResponseError::BadLength),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::EncodingInHttp10,
            ),
            ("HTTP/1.1 20 OK\r\n\r\n", ResponseError::Syntax("invalid status")),
            (
                "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                ResponseError::Syntax("invalid header name"),
            ),
        ] {
            let mut fields = Vec::new();
            let got = parse(input.as_bytes(), Answering { head: false }, &mut fields).err();
            assert_eq!(got, Some(expected), "{input:?}");
        }
    }
}
