//! Following a chunked body (RFC 9112 §7.1) byte by byte, as it arrives, without buffering it:
//! which bytes are chunk data, which are framing, which belong to the trailer section, and
//! where the body ends. Every chunk-size line is checked with [`chunk_size`], the rule the wire
//! guard applies to a client's bodies on the general path, so a body the guard refuses is
//! refused here too.

use crate::h1::is_tchar;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The size on a chunk-size line `hex *( BWS ";" BWS name [ BWS "=" BWS value ] ) CRLF`, or
/// `None` if the line is malformed (RFC 9112 §7.1.1).
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if hex_len == 0 || hex_len > 16 {
        return None;
    }
    let size = u64::from_str_radix(std::str::from_utf8(line.get(..hex_len)?).ok()?, 16).ok()?;
    let mut rest = line.get(hex_len..)?;
    loop {
        rest = trim_ws(rest);
        if rest.is_empty() {
            return Some(size);
        }
        rest = trim_ws(rest.strip_prefix(b";")?);
        let name_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name_len == 0 {
            return None;
        }
        rest = trim_ws(rest.get(name_len..)?);
        if let Some(after) = rest.strip_prefix(b"=") {
            rest = trim_ws(after);
            if let Some(quoted) = rest.strip_prefix(b"\"") {
                let mut escaped = false;
                let mut end = None;
                for (i, &b) in quoted.iter().enumerate() {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        end = Some(i);
                        break;
                    } else if b < 0x20 && b != b'\t' {
                        return None;
                    }
                }
                rest = quoted.get(end? + 1..)?;
            } else {
                let value_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
                if value_len == 0 {
                    return None;
                }
                rest = rest.get(value_len..)?;
            }
        }
    }
}

fn trim_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    bytes.get(start..).unwrap_or_default()
}

/// What a stretch of a chunked body's bytes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Chunk data: the body's content.
    Data,
    /// Chunk framing: size lines and the CRLF after each chunk's data.
    Framing,
    /// The zero-size chunk that ends the data.
    Last,
    /// Trailer field lines.
    Trailer,
    /// The empty line that ends the body; nothing after it belongs to this body.
    End,
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk-size line is malformed or too long.
    #[error("malformed chunk-size line")]
    SizeLine,
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    /// A trailer line is malformed, or the trailer section too large.
    #[error("malformed trailer section")]
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeLine,
    Data(u64),
    /// The CRLF after chunk data; how many of its bytes are still due.
    DataEnd(u8),
    Trailers,
    Done,
}

/// Follows one chunked body.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The part of a size line or of the trailer section seen so far.
    line: Vec<u8>,
    /// Most bytes the trailer section may take.
    max_trailers: usize,
}

impl Chunked {
    /// Follows a body whose trailer section may take at most `max_trailers` bytes.
    pub fn new(max_trailers: usize) -> Chunked {
        Chunked { state: State::SizeLine, line: Vec::new(), max_trailers }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next stretch of `input` (not empty): returns how many bytes it took and what
    /// they are. Returns `(0, Piece::End)` once the body is complete.
    pub fn next(&mut self, input: &[u8]) -> Result<(usize, Piece), ChunkError> {
        match self.state {
            State::Done => Ok((0, Piece::End)),
            State::Data(remaining) => {
                let take = remaining.min(input.len() as u64);
                let left = remaining - take;
                self.state = if left == 0 { State::DataEnd(2) } else { State::Data(left) };
                Ok((take as usize, Piece::Data))
            }
            State::DataEnd(due) => {
                let mut taken = 0;
                let mut due = due;
                for &b in input.iter().take(usize::from(due)) {
                    let expected = if due == 2 { b'\r' } else { b'\n' };
                    if b != expected {
                        return Err(ChunkError::DataEnd);
                    }
                    due -= 1;
                    taken += 1;
                }
                self.state = if due == 0 { State::SizeLine } else { State::DataEnd(due) };
                Ok((taken, Piece::Framing))
            }
            State::SizeLine => {
                let (taken, complete) = line_end(input);
                let Some(part) = input.get(..taken) else { return Err(ChunkError::SizeLine) };
                if self.line.len() + taken > MAX_CHUNK_LINE {
                    return Err(ChunkError::SizeLine);
                }
                if !complete {
                    self.line.extend_from_slice(part);
                    return Ok((taken, Piece::Framing));
                }
                let size = if self.line.is_empty() {
                    chunk_size(part)
                } else {
                    self.line.extend_from_slice(part);
                    let size = chunk_size(&self.line);
                    self.line.clear();
                    size
                };
                match size.ok_or(ChunkError::SizeLine)? {
                    0 => {
                        self.state = State::Trailers;
                        Ok((taken, Piece::Last))
                    }
                    size => {
                        self.state = State::Data(size);
                        Ok((taken, Piece::Framing))
                    }
                }
            }
            State::Trailers => {
                let (taken, complete) = line_end(input);
                let part = input.get(..taken).unwrap_or_default();
                self.line.extend_from_slice(part);
                if self.line.len() > self.max_trailers {
                    return Err(ChunkError::Trailers);
                }
                if !complete {
                    return Ok((taken, Piece::Trailer));
                }
                let section = &self.line;
                if section.len() < 2 || section.get(section.len() - 2) != Some(&b'\r') {
                    return Err(ChunkError::Trailers);
                }
                if section.as_slice() == b"\r\n" || section.ends_with(b"\r\n\r\n") {
                    // The whole trailer section is here: its fields must parse as fields.
                    let mut slots = [httparse::EMPTY_HEADER; 64];
                    let fields = if section.as_slice() == b"\r\n" {
                        Ok(httparse::Status::Complete((2, &[][..])))
                    } else {
                        httparse::parse_headers(section, &mut slots)
                    };
                    match fields {
                        Ok(httparse::Status::Complete((len, _))) if len == section.len() => {}
                        _ => return Err(ChunkError::Trailers),
                    }
                    self.state = State::Done;
                    self.line = Vec::new();
                    // The final CRLF is the end; the lines before it were trailer fields.
                    return Ok((taken, Piece::End));
                }
                Ok((taken, Piece::Trailer))
            }
        }
    }
}

/// How many bytes of `input` the current line takes (up to and including its LF), and
/// whether that completes the line.
fn line_end(input: &[u8]) -> (usize, bool) {
    match memchr::memchr(b'\n', input) {
        Some(lf) => (lf + 1, true),
        None => (input.len(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the bytes of each kind in order, and how many bytes the body took.
    type Followed = (Vec<u8>, Vec<(Piece, Vec<u8>)>, usize);

    /// Feeds `input` in pieces of `step` bytes; returns the data, the bytes of each kind, and
    /// how many bytes the body took, or the error.
    fn follow(input: &[u8], step: usize) -> Result<Followed, ChunkError> {
        let mut chunked = Chunked::new(1024);
        let mut data = Vec::new();
        let mut pieces: Vec<(Piece, Vec<u8>)> = Vec::new();
        let mut at = 0;
        while !chunked.is_done() && at < input.len() {
            let end = (at + step).min(input.len());
            let mut window = &input[at..end];
            while !window.is_empty() && !chunked.is_done() {
                let (taken, piece) = chunked.next(window)?;
                if piece == Piece::Data {
                    data.extend_from_slice(&window[..taken]);
                }
                match pieces.last_mut() {
                    Some((last, bytes)) if *last == piece => {
                        bytes.extend_from_slice(&window[..taken])
                    }
                    _ => pieces.push((piece, window[..taken].to_vec())),
                }
                at += taken;
                window = &window[taken..];
            }
        }
        Ok((data, pieces, at))
    }

    #[test]
    fn a_body_is_followed_to_its_end_however_it_arrives() {
        let body =
            b"3;a=b;c=\"d;\\\"e\"\r\nx\ny\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for step in 1..=body.len() {
            let (data, pieces, took) = follow(body, step).unwrap();
            assert_eq!(data, b"x\ny0123456789", "step {step}");
            assert_eq!(took, end, "step {step}");
            // A partial line cannot be told from a trailer field until it ends: the end line
            // may arrive partly as `Trailer` pieces, and only its last byte as `End`.
            let trailer: Vec<u8> = pieces
                .iter()
                .filter(|(p, _)| matches!(p, Piece::Trailer | Piece::End))
                .flat_map(|(_, b)| b.clone())
                .collect();
            assert_eq!(trailer, b"X-T: 1\r\n\r\n", "step {step}");
            let all: Vec<u8> = pieces.iter().flat_map(|(_, b)| b.clone()).collect();
            assert_eq!(all, &body[..end], "step {step}");
        }
        let (data, _, took) = follow(b"0\r\n\r\nrest", 64).unwrap();
        assert!(data.is_empty());
        assert_eq!(took, 5);
    }

    #[test]
    fn what_the_wire_guard_refuses_is_refused() {
        for body in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"3;x=\"a\r\nabc\r\n0\r\n\r\n",
            b"3;\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nBad Name: 1\r\n\r\n",
        ] {
            for step in [1, 3, 64] {
                assert!(
                    follow(body, step).is_err(),
                    "{:?} in {step}s",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1f\r\n"), Some(31));
        assert_eq!(chunk_size(b"0 ; name = \"v\" \r\n"), Some(0));
        assert_eq!(chunk_size(b"ffffffffffffffff\r\n"), Some(u64::MAX));
        assert_eq!(chunk_size(b"1f\n"), None);
        assert_eq!(chunk_size(b" 1\r\n"), None);
        assert_eq!(chunk_size(b"1;=v\r\n"), None);
    }
}
