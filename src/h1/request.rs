//! Parsing a request head in place (RFC 9112 §3, §5), with the refusals of the general path.
//!
//! The general path is the wire guard (`downstream::wire`) in front of hyper's parser. This
//! parser refuses what either of them refuses, with the status the general path answers:
//!
//! - the guard: a bare LF ending any line of the head (RFC 9112 §2.2), Content-Length with
//!   Transfer-Encoding, and more than one Content-Length line (RFC 9112 §6.1, §6.3), except on a
//!   CONNECT, whose head the guard does not inspect for framing (400);
//! - hyper: anything httparse refuses, a head over the size limit or with too many fields
//!   (431), a target over 65,534 bytes (414), a method or target the `http` crate cannot hold,
//!   Transfer-Encoding in HTTP/1.0 or not ending in `chunked`, and a Content-Length that is not
//!   a plain decimal number or differs between lines (400).
//!
//! A request it accepts is the request hyper would hand to the service: the same method,
//! target, version and field lines (names as received rather than lowercased), and the same
//! body framing. Leading empty lines are skipped, as both allow (RFC 9112 §2.2).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{Method, Uri};

use crate::h1::fields::{Field, Fields};
use crate::h1::{ConnectionMembers, Framing, HeadLimits, Parsed, Span, Version, content_length};

/// Longest request target hyper accepts (its `MAX_URI_LEN`); longer is refused with 414.
pub const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;

/// Field slots parsed on the stack; a head with more fields, where the limit allows them, is
/// parsed again with slots on the heap.
const STACK_FIELDS: usize = 100;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A line of the head ends in a bare LF (the wire guard's refusal).
    #[error("a line of the request head ends in a bare LF")]
    BareLf,
    /// Content-Length together with Transfer-Encoding (the wire guard's refusal).
    #[error("both Content-Length and Transfer-Encoding")]
    LengthWithEncoding,
    /// More than one Content-Length line (the wire guard's refusal).
    #[error("Content-Length is repeated")]
    RepeatedLength,
    /// Not a request head by the HTTP/1 grammar.
    #[error("malformed request head: {0}")]
    Syntax(&'static str),
    /// The head is larger, or has more fields, than the limits allow.
    #[error("the request head is too large")]
    TooLarge,
    /// The request target is longer than hyper accepts.
    #[error("the request target is too long")]
    TargetTooLong,
    /// The method or the target is not one the `http` crate can represent.
    #[error("the method or request target is invalid")]
    BadTarget,
    /// Transfer-Encoding in an HTTP/1.0 request.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    EncodingInHttp10,
    /// A transfer coding list that does not end in `chunked` (RFC 9112 §6.3).
    #[error("the transfer coding does not end in chunked")]
    NotChunked,
    /// A Content-Length that is not a decimal number.
    #[error("invalid Content-Length")]
    BadLength,
}

impl Refusal {
    /// The status the general path answers this refusal with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TooLarge => 431,
            Refusal::TargetTooLong => 414,
            _ => 400,
        }
    }
}

/// A parsed request head, borrowing the buffer it was parsed from.
#[derive(Debug)]
pub struct RequestHead<'b> {
    /// Bytes the head took, leading empty lines included: the body (or the next request)
    /// starts there.
    pub len: usize,
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The target exactly as received.
    pub target: &'b [u8],
    /// The protocol version.
    pub version: Version,
    /// The field lines.
    pub fields: Fields<'b>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3):
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Whether the client asked for a protocol switch (an `Upgrade` field in HTTP/1.1, or a
    /// CONNECT).
    pub wants_upgrade: bool,
    /// Whether the head carries an `Expect` field.
    pub expect: bool,
    /// Whether `TE` lists `trailers`: the client accepts trailer fields (RFC 9110 §10.1.4).
    pub accepts_trailers: bool,
}

/// Parses the request head at the start of `buf` (after any empty lines), recording its
/// fields in `fields` (cleared first; kept by the caller so its allocation is reused).
pub fn parse<'b>(
    buf: &'b [u8],
    limits: HeadLimits,
    fields: &'b mut Vec<Field>,
) -> Result<Parsed<RequestHead<'b>>, Refusal> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_FIELDS];
    let stack = slots.get_mut(..limits.max_fields.min(STACK_FIELDS)).unwrap_or_default();
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        stack,
    );
    let mut heap;
    let parsed = match parsed {
        Err(httparse::Error::TooManyHeaders) if limits.max_fields > STACK_FIELDS => {
            heap = vec![MaybeUninit::<httparse::Header<'b>>::uninit(); limits.max_fields];
            request = httparse::Request::new(&mut []);
            httparse::ParserConfig::default().parse_request_with_uninit_headers(
                &mut request,
                buf,
                &mut heap,
            )
        }
        other => other,
    };
    // The guard's refusal comes first, whatever else is wrong with the head; a complete head
    // whose lines all end in CRLF has nothing for it to find.
    let clean = matches!(parsed, Ok(httparse::Status::Complete(len)) if crlf_only(buf, len, request.headers));
    if !clean {
        guard_line_endings(buf, limits.max_bytes)?;
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => {
            return Err(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(err) => return Err(Refusal::Syntax(crate::h1::syntax(err))),
    };
    if len > limits.max_bytes {
        return Err(Refusal::TooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Refusal::Syntax("incomplete request line"));
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(Refusal::TargetTooLong);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::BadTarget)?;
    let uri = if target == "/" {
        Uri::from_static("/")
    } else {
        Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes()))
            .map_err(|_| Refusal::BadTarget)?
    };
    let version = Version::from_minor(minor);
    let connect = method == Method::CONNECT;

    fields.clear();
    let mut facts = Facts::new(version, connect);
    for header in request.headers.iter() {
        let name = header.name.as_bytes();
        facts.see(name, header.value)?;
        fields
            .push(Field { name: Span::within(buf, name), value: Span::within(buf, header.value) });
    }
    let framing = facts.framing()?;
    Ok(Parsed::Complete(RequestHead {
        len,
        method,
        uri,
        target: target.as_bytes(),
        version,
        fields: Fields::parsed(buf, fields, facts.options),
        framing,
        keep_alive: facts.keep_alive,
        wants_upgrade: facts.upgrade || connect,
        expect: facts.expect,
        accepts_trailers: facts.trailers,
    }))
}

/// The wire guard's line-ending rule: once the empty lines before a message are skipped, every
/// line of the head ends in CRLF. The guard stops looking once a head outgrows `max_bytes`
/// (hyper refuses it as too large), so a bare LF past that point is left to the size check.
fn guard_line_endings(buf: &[u8], max_bytes: usize) -> Result<(), Refusal> {
    let start = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let head = buf.get(start..).unwrap_or_default();
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf >= max_bytes {
            return Ok(());
        }
        let before = lf.checked_sub(1).and_then(|at| head.get(at));
        if before != Some(&b'\r') {
            return Err(Refusal::BareLf);
        }
        if lf >= 3 && head.get(lf - 3..=lf) == Some(b"\r\n\r\n") {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether the complete head of `len` bytes at the start of `buf` ends every line in CRLF, told
/// from where its lines start: httparse ends a line only at an LF, and a request line or a
/// field value holds none, so the LFs are those before each field line and the last two.
/// False sends the head through [`guard_line_endings`], which finds the bare LF, if any.
fn crlf_only(buf: &[u8], len: usize, headers: &[httparse::Header<'_>]) -> bool {
    let ends = len.checked_sub(4).and_then(|at| buf.get(at..len)) == Some(b"\r\n\r\n");
    ends && headers.iter().all(|header| {
        let start = Span::within(buf, header.name.as_bytes()).start as usize;
        start.checked_sub(2).and_then(|at| buf.get(at)) == Some(&b'\r')
    })
}

/// What the framing and connection fields of a head say, gathered line by line as hyper does.
struct Facts {
    version: Version,
    connect: bool,
    lengths: u32,
    length: Option<u64>,
    encodings: u32,
    chunked: bool,
    keep_alive: bool,
    saw_close: bool,
    /// A `Connection` line lists an option beyond the fixed hop-by-hop names.
    options: bool,
    upgrade: bool,
    expect: bool,
    trailers: bool,
}

impl Facts {
    fn new(version: Version, connect: bool) -> Facts {
        Facts {
            version,
            connect,
            lengths: 0,
            length: None,
            encodings: 0,
            chunked: false,
            keep_alive: version == Version::Http11,
            saw_close: false,
            options: false,
            upgrade: false,
            expect: false,
            trailers: false,
        }
    }

    fn see(&mut self, name: &[u8], value: &[u8]) -> Result<(), Refusal> {
        // Compare by length first: most fields are none of these.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.lengths += 1;
                // hyper ignores Content-Length after Transfer-Encoding (the guard refuses
                // the pair outright, see `framing`).
                if self.encodings == 0 {
                    let length = content_length(value).ok_or(Refusal::BadLength)?;
                    if self.length.is_some_and(|previous| previous != length) {
                        return Err(Refusal::BadLength);
                    }
                    self.length = Some(length);
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if self.version == Version::Http10 {
                    return Err(Refusal::EncodingInHttp10);
                }
                self.encodings += 1;
                self.chunked = ends_in_chunked(value);
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                let members = ConnectionMembers::of(value);
                self.options |= members.options;
                // Once any line asks to close, a later `keep-alive` does not undo it.
                if self.saw_close || members.close {
                    self.saw_close = true;
                    self.keep_alive = false;
                } else if !self.keep_alive {
                    self.keep_alive = members.keep_alive;
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                // Upgrades exist only in HTTP/1.1.
                self.upgrade = self.version == Version::Http11;
            }
            6 if name.eq_ignore_ascii_case(b"expect") => self.expect = true,
            2 if name.eq_ignore_ascii_case(b"te") => {
                self.trailers |= has_member(value, b"trailers");
            }
            _ => {}
        }
        Ok(())
    }

    fn framing(&self) -> Result<Framing, Refusal> {
        // The guard does not look at the framing of a CONNECT: it becomes a tunnel.
        if !self.connect {
            if self.lengths > 0 && self.encodings > 0 {
                return Err(Refusal::LengthWithEncoding);
            }
            if self.lengths > 1 {
                return Err(Refusal::RepeatedLength);
            }
        }
        if self.encodings > 0 {
            return if self.chunked { Ok(Framing::Chunked) } else { Err(Refusal::NotChunked) };
        }
        Ok(self.length.map_or(Framing::Empty, Framing::Length))
    }
}

/// hyper's test of a Transfer-Encoding line: its last member is `chunked`. A value that is not
/// visible ASCII is not.
fn ends_in_chunked(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether the list `value` has `member` (case-insensitive); a value that is not visible
/// ASCII has none, as hyper reads it.
fn has_member(value: &[u8], member: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value.split(|&b| b == b',').any(|m| m.trim_ascii().eq_ignore_ascii_case(member))
}

#[cfg(test)]
mod tests;
