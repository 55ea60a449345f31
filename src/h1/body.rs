//! Relaying a body by its framing (RFC 9112 §6), re-framing it only where the receiving side
//! needs another delimitation than the sending side used:
//!
//! | received           | sent to an HTTP/1.1 peer        | sent to an HTTP/1.0 client       |
//! |--------------------|---------------------------------|----------------------------------|
//! | nothing            | nothing                         | nothing                          |
//! | Content-Length     | the bytes as they are           | the bytes as they are            |
//! | chunked            | the chunks as they are (trailers only if accepted) | the data, then close |
//! | until close        | chunked                         | the bytes, then close            |
//!
//! [`BodyRelay`] is pure: it reads received bytes and says what to send for them
//! ([`Step`]), so the caller writes straight from its read buffer, copying nothing it does not
//! have to.

use crate::h1::Framing;
use crate::h1::chunked::{ChunkError, Chunked, Piece};

/// How a body is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No body.
    Empty,
    /// Exactly this many bytes, as received.
    Length(u64),
    /// Chunks passed through as received; the trailer section only when `trailers`.
    Chunks {
        /// Whether the trailer fields are passed on (the receiver accepts them).
        trailers: bool,
    },
    /// Chunked, decoded to its data; the sender closes the connection to end it.
    Unchunk,
    /// Received until close, sent on as chunks.
    Chunk,
    /// Received until close, sent on as it is; the sender closes the connection to end it.
    UntilClose,
}

impl Plan {
    /// How to send a body received with `framing` to a receiver that speaks HTTP/1.1
    /// (`http11`) and accepts trailer fields (`trailers`).
    pub fn for_receiver(framing: Framing, http11: bool, trailers: bool) -> Plan {
        match (framing, http11) {
            (Framing::Empty, _) => Plan::Empty,
            (Framing::Length(n), _) => Plan::Length(n),
            (Framing::Chunked, true) => Plan::Chunks { trailers },
            (Framing::Chunked, false) => Plan::Unchunk,
            (Framing::CloseDelimited, true) => Plan::Chunk,
            (Framing::CloseDelimited, false) => Plan::UntilClose,
        }
    }

    /// Whether the sent body is chunked (the head says `Transfer-Encoding: chunked`).
    pub fn is_chunked(self) -> bool {
        matches!(self, Plan::Chunks { .. } | Plan::Chunk)
    }

    /// Whether the receiver's connection must close to end the body.
    pub fn closes(self) -> bool {
        matches!(self, Plan::Unchunk | Plan::UntilClose)
    }
}

/// What to do with the next received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the first `n` received bytes as they are.
    Copy(usize),
    /// Drop the first `n` received bytes.
    Skip(usize),
    /// Send these bytes, taking nothing from the received ones.
    Emit(&'static [u8]),
    /// Send a chunk-size line for the `n` received bytes that follow (sent by the next step),
    /// taking nothing from the received ones.
    ChunkHeader(usize),
    /// The body has been sent completely; nothing more belongs to it.
    Done,
    /// Everything received has been dealt with; more is needed.
    More,
}

/// Why a body could not be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The chunked framing is broken.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The sender closed before the body was complete.
    #[error("the body ended early")]
    Incomplete,
}

/// Follows one body being relayed.
#[derive(Debug)]
pub struct BodyRelay {
    plan: Plan,
    /// Bytes of a Content-Length body still due.
    remaining: u64,
    chunked: Option<Chunked>,
    /// A chunk of a close-delimited body has been announced and its data is being copied; its
    /// closing CRLF is due after this many more bytes.
    encoding: Option<usize>,
    /// Body content bytes received so far (chunk data, not framing).
    data: u64,
    /// Bytes to send before anything else: the end of a chunked body sent without trailers.
    queued: Option<&'static [u8]>,
    done: bool,
}

/// The CRLF after a chunk's data.
const CRLF: &[u8] = b"\r\n";
/// The last chunk of a body with no trailer fields.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl BodyRelay {
    /// Relays a body received as `plan`'s source framing says; a chunked body's trailer
    /// section may take at most `max_trailers` bytes.
    pub fn new(plan: Plan, max_trailers: usize) -> BodyRelay {
        let (remaining, chunked) = match plan {
            Plan::Length(n) => (n, None),
            Plan::Chunks { .. } | Plan::Unchunk => (0, Some(Chunked::new(max_trailers))),
            Plan::Empty | Plan::Chunk | Plan::UntilClose => (0, None),
        };
        BodyRelay {
            plan,
            remaining,
            chunked,
            encoding: None,
            data: 0,
            queued: None,
            done: plan == Plan::Empty,
        }
    }

    /// How the body is being sent.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// Whether the whole body has been relayed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Body content bytes received so far.
    pub fn data_received(&self) -> u64 {
        self.data
    }

    /// What to do next with `input`, the received bytes not yet dealt with (empty when there
    /// are none). The caller performs the step, drops what it took from `input`, and asks
    /// again until [`Step::More`] or [`Step::Done`].
    pub fn step(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        if let Some(bytes) = self.queued.take() {
            // Only the end of a chunked body is ever queued.
            self.done = true;
            return Ok(Step::Emit(bytes));
        }
        if self.done {
            return Ok(Step::Done);
        }
        match self.plan {
            Plan::Empty => {
                self.done = true;
                Ok(Step::Done)
            }
            Plan::Length(_) => {
                if self.remaining == 0 {
                    self.done = true;
                    return Ok(Step::Done);
                }
                if input.is_empty() {
                    return Ok(Step::More);
                }
                let take = self.remaining.min(input.len() as u64);
                self.remaining -= take;
                self.data += take;
                Ok(Step::Copy(take as usize))
            }
            Plan::UntilClose => {
                if input.is_empty() {
                    return Ok(Step::More);
                }
                self.data += input.len() as u64;
                Ok(Step::Copy(input.len()))
            }
            Plan::Chunk => match self.encoding.take() {
                Some(0) => Ok(Step::Emit(CRLF)),
                Some(n) => {
                    self.encoding = Some(0);
                    self.data += n as u64;
                    Ok(Step::Copy(n))
                }
                None if input.is_empty() => Ok(Step::More),
                None => {
                    self.encoding = Some(input.len());
                    Ok(Step::ChunkHeader(input.len()))
                }
            },
            Plan::Chunks { trailers } => self.chunk_step(input, Some(trailers)),
            Plan::Unchunk => self.chunk_step(input, None),
        }
    }

    /// A step through a chunked body, sent as chunks (`Some(trailers)`) or as its data only.
    fn chunk_step(&mut self, input: &[u8], chunks: Option<bool>) -> Result<Step, BodyError> {
        let Some(chunked) = self.chunked.as_mut() else { return Ok(Step::Done) };
        if input.is_empty() {
            return Ok(Step::More);
        }
        let (taken, piece) = chunked.next(input)?;
        if piece == Piece::Data {
            self.data += taken as u64;
        }
        if piece == Piece::End {
            match chunks {
                // Without its trailer fields, the section is the empty line alone: the
                // received end line is dropped and a CRLF of our own sent in its place.
                Some(false) => {
                    self.queued = Some(CRLF);
                    return Ok(Step::Skip(taken));
                }
                Some(true) => {
                    self.done = true;
                    return Ok(Step::Copy(taken));
                }
                None => {
                    self.done = true;
                    return Ok(Step::Skip(taken));
                }
            }
        }
        Ok(match (piece, chunks) {
            (Piece::Trailer, Some(false)) => Step::Skip(taken),
            (_, Some(_)) | (Piece::Data, None) => Step::Copy(taken),
            (_, None) => Step::Skip(taken),
        })
    }

    /// The sender closed its side: the body is complete if it was delimited by the close (the
    /// steps to finish sending it are returned), and incomplete otherwise.
    pub fn finish(&mut self) -> Result<&'static [u8], BodyError> {
        if self.done {
            return Ok(b"");
        }
        match self.plan {
            Plan::UntilClose => {
                self.done = true;
                Ok(b"")
            }
            Plan::Chunk if self.encoding.is_none() => {
                self.done = true;
                Ok(LAST_CHUNK)
            }
            _ => Err(BodyError::Incomplete),
        }
    }
}

/// Relays `input`, arriving in pieces of `step` bytes, as `relay` says, into `out`; returns
/// how many received bytes belonged to the body, and whether the body ended. At the end of
/// `input`, `closed` says whether the sender closed its side there. For tests and fuzzing: the
/// proxy performs the steps against sockets.
pub fn relay_all(
    relay: &mut BodyRelay,
    input: &[u8],
    step: usize,
    closed: bool,
    out: &mut Vec<u8>,
) -> Result<usize, BodyError> {
    let mut at = 0;
    let mut available = 0;
    loop {
        let window = input.get(at..available).unwrap_or_default();
        match relay.step(window)? {
            Step::Copy(n) => {
                out.extend_from_slice(window.get(..n).unwrap_or_default());
                at += n;
            }
            Step::Skip(n) => at += n,
            Step::Emit(bytes) => out.extend_from_slice(bytes),
            Step::ChunkHeader(n) => out.extend_from_slice(format!("{n:x}\r\n").as_bytes()),
            Step::Done => return Ok(at),
            Step::More if available < input.len() => {
                available = (available + step.max(1)).min(input.len());
            }
            Step::More if closed => {
                out.extend_from_slice(relay.finish()?);
                return Ok(at);
            }
            Step::More => return Err(BodyError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(
        plan: Plan,
        input: &[u8],
        step: usize,
        closed: bool,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut relay = BodyRelay::new(plan, 1024);
        let mut out = Vec::new();
        let took = relay_all(&mut relay, input, step, closed, &mut out)?;
        Ok((out, took))
    }

    const CHUNKED: &[u8] = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn each_plan_sends_what_its_receiver_expects() {
        let body_end = CHUNKED.len() - 4;
        for step in 1..=CHUNKED.len() {
            let (out, took) =
                relayed(Plan::Chunks { trailers: true }, CHUNKED, step, false).unwrap();
            assert_eq!((&out[..], took), (&CHUNKED[..body_end], body_end), "step {step}");
            let (out, took) =
                relayed(Plan::Chunks { trailers: false }, CHUNKED, step, false).unwrap();
            assert_eq!(out, b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "step {step}");
            assert_eq!(took, body_end);
            let (out, took) = relayed(Plan::Unchunk, CHUNKED, step, false).unwrap();
            assert_eq!((&out[..], took), (&b"abcde"[..], body_end), "step {step}");
            let (out, took) = relayed(Plan::Length(5), b"hello world", step, false).unwrap();
            assert_eq!((&out[..], took), (&b"hello"[..], 5));
            let (out, _) = relayed(Plan::UntilClose, b"hello", step, true).unwrap();
            assert_eq!(out, b"hello");
            let (out, _) = relayed(Plan::Chunk, b"hello", step, true).unwrap();
            // Re-chunked, the body decodes to the same data.
            let (data, _) = relayed(Plan::Unchunk, &out, 64, false).unwrap();
            assert_eq!(data, b"hello", "{:?}", String::from_utf8_lossy(&out));
        }
        assert_eq!(relayed(Plan::Empty, b"anything", 1, false).unwrap(), (Vec::new(), 0));
        assert_eq!(relayed(Plan::Chunk, b"", 1, true).unwrap().0, b"0\r\n\r\n");
    }

    #[test]
    fn a_body_cut_short_is_incomplete() {
        assert_eq!(relayed(Plan::Length(5), b"hel", 1, true), Err(BodyError::Incomplete));
        assert_eq!(
            relayed(Plan::Chunks { trailers: true }, b"3\r\nab", 1, true),
            Err(BodyError::Incomplete)
        );
        assert!(matches!(relayed(Plan::Unchunk, b"3\nabc", 1, true), Err(BodyError::Chunk(_))));
    }

    #[test]
    fn plans_by_receiver() {
        assert_eq!(
            Plan::for_receiver(Framing::Chunked, true, false),
            Plan::Chunks { trailers: false }
        );
        assert_eq!(Plan::for_receiver(Framing::Chunked, false, true), Plan::Unchunk);
        assert_eq!(Plan::for_receiver(Framing::CloseDelimited, true, false), Plan::Chunk);
        assert_eq!(Plan::for_receiver(Framing::CloseDelimited, false, false), Plan::UntilClose);
        assert!(Plan::Unchunk.closes() && Plan::UntilClose.closes() && !Plan::Chunk.closes());
    }
}
