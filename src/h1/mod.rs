//! sluice's own HTTP/1.1 codec, for the fast path of plain HTTP/1.1 traffic: request and
//! response heads parsed in place from a connection's buffer, heads serialised straight into
//! an output buffer with the header edits applied while copying, and bodies relayed by their
//! framing.
//!
//! - [`request`] parses a request head and decides its body's framing, refusing what the
//!   general path refuses: the wire guard's byte-level refusals (bare LF line endings,
//!   Content-Length with Transfer-Encoding, repeated Content-Length) and hyper's (bad syntax,
//!   a transfer coding that does not end in `chunked`, a bad Content-Length, heads over the
//!   size or field-count limit, a target too long);
//! - [`response`] parses an upstream's response head and decides its body's framing
//!   (RFC 9112 §6.3);
//! - [`fields`] is the parsed field section: lookups and token lists over spans of the buffer;
//! - [`chunked`] follows a chunked body, validating every chunk line as the wire guard does;
//! - [`body`] relays a body by its framing, re-framing it only where the two sides differ;
//! - [`write`] serialises request and response heads, applying [`crate::headers::edit`] edits
//!   while copying the fields;
//! - [`buffers`] lends connections their buffers only while they use them;
//! - [`date`] keeps the `Date` value a generated response carries, formatted once a second;
//! - [`timer`] is a connection's timer for its waits, reused from one wait to the next.
//!
//! A leaf: it knows bytes and the header rules, nothing of connections or the request path.
//! Tokenising is httparse's (the tokenizer hyper itself uses), so field names, values and
//! request targets are accepted or refused exactly as the general path does.

pub mod body;
pub mod buffers;
pub mod chunked;
pub mod date;
pub mod fields;
pub mod request;
pub mod response;
pub mod timer;
pub mod write;

/// The HTTP/1 minor version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    /// The version as the `http` crate names it.
    pub fn as_http(self) -> http::Version {
        match self {
            Version::Http10 => http::Version::HTTP_10,
            Version::Http11 => http::Version::HTTP_11,
        }
    }

    fn from_minor(minor: u8) -> Version {
        if minor == 0 { Version::Http10 } else { Version::Http11 }
    }
}

/// A range of bytes in the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `part`, a slice of `buf`. Heads are bounded far below 4 GiB (the head limit
    /// is at most 1 MiB), so offsets fit in 32 bits.
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        let end = start + part.len();
        Span { start: start as u32, end: end as u32 }
    }

    /// These bytes of `buf`.
    pub fn of(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize).unwrap_or_default()
    }

    /// Whether the span is empty.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// How the body of a message is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    CloseDelimited,
}

/// The size limits of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most bytes in a head, leading empty lines included; more is refused as too large.
    pub max_bytes: usize,
    /// Most header fields; more is refused as too large.
    pub max_fields: usize,
}

/// Whether the bytes so far hold a whole head.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The head, complete.
    Complete(T),
    /// Not all of the head has arrived yet.
    Partial,
}

/// What httparse found wrong, in words.
fn syntax(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Splits a comma-separated list field value into its trimmed, non-empty members (RFC 9110
/// §5.6.1).
pub fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|member| !member.is_empty())
}

/// What one `Connection` line lists, read in one pass: a value that is not visible ASCII
/// lists nothing, as hyper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionMembers {
    /// `close` is among the members.
    pub close: bool,
    /// `keep-alive` is among them.
    pub keep_alive: bool,
    /// A member other than the fixed hop-by-hop names (`close` included): it may name a field
    /// the rewrite must drop.
    pub options: bool,
}

impl ConnectionMembers {
    /// The members of the `Connection` value `value`.
    pub fn of(value: &[u8]) -> ConnectionMembers {
        let mut members = ConnectionMembers::default();
        if !value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return members;
        }
        for member in list_members(value) {
            if member.eq_ignore_ascii_case(b"close") {
                members.close = true;
                members.options = true;
            } else if member.eq_ignore_ascii_case(b"keep-alive") {
                members.keep_alive = true;
            } else if !crate::headers::hop_by_hop::is_fixed(member) {
                members.options = true;
            }
        }
        members
    }
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A decimal Content-Length value: digits only, no sign, no spaces, no overflow (hyper's rule
/// for a request's field; a response may carry a list of equal values, see [`response`]).
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |total, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        total.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths() {
        for (input, expected) in [
            (&b"0"[..], Some(0)),
            (b"51", Some(51)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"", None),
            (b"+5", None),
            (b"5 ", None),
            (b"5,5", None),
            (b"0x5", None),
        ] {
            assert_eq!(content_length(input), expected, "{input:?}");
        }
    }

    #[test]
    fn list_members_are_trimmed_and_empty_ones_skipped() {
        let members: Vec<_> = list_members(b" a ,,b\t, c d ,").collect();
        assert_eq!(members, [&b"a"[..], b"b", b"c d"]);
    }
}
