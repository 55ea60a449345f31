//! A byte-level guard in front of hyper's HTTP/1 parser, for the framing that hyper tolerates
//! but a proxy must refuse (RFC 9112 §2.2, §6.1, §7.1): bare LF line endings, both
//! Content-Length and Transfer-Encoding, repeated Content-Length lines, and malformed chunk
//! size lines or extensions.
//!
//! The guard follows the client's byte stream message by message (head, then a
//! Content-Length or chunked body) without buffering it: it only looks at bytes as hyper reads
//! them. When it finds a violation it overwrites one byte of the offending line with NUL, so
//! hyper's own parser fails on it: a head is answered with 400 and the connection closed, and
//! a broken chunked body aborts the request. After that, or once a connection switches
//! protocols (CONNECT, Upgrade, the HTTP/2 preface), it only passes bytes through.
//!
//! That 400 is the one refusal `error::render` does not write: the guard sits below hyper, and a
//! response written by the guard itself would race hyper's writes on the same socket, so it
//! leaves the response to hyper's parser, which answers it with an empty body.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::downstream::send::{SendDeadline, SendProgress};
use crate::h1::chunked::{MAX_CHUNK_LINE, chunk_size};
use crate::observe::metrics::{Metrics, Rejection};

#[derive(Debug)]
enum State {
    /// Reading a request head (kept in `WireGuard::line`).
    Head,
    /// Inside a Content-Length body.
    Body(u64),
    /// Reading a chunk-size line (kept in `WireGuard::line`).
    ChunkLine,
    /// Inside chunk data, then the CRLF after it (`u8` counts the CRLF bytes still due).
    ChunkData(u64, u8),
    /// Reading the trailer section after the last chunk (kept in `WireGuard::line`).
    Trailers,
    /// Not HTTP/1 messages any more (tunnel, upgrade, HTTP/2), or already refused.
    Passthrough,
}

/// Capacity of the line buffer kept between messages.
const SPARE_LINE_CAPACITY: usize = 4096;

/// Bytes after which a connection has shown which protocol it speaks: the HTTP/2 preface.
const PROTOCOL_DETECTION_BYTES: usize = 24;

/// Wraps a client connection's I/O with the framing guard.
#[derive(Debug)]
pub struct WireGuard<I> {
    inner: I,
    state: State,
    /// What has been seen of the current head, chunk-size line or trailer section. One buffer
    /// reused for every message, so following a keep-alive connection allocates nothing per
    /// request.
    line: Vec<u8>,
    max_head: usize,
    /// Until the client has sent its first request head (or the HTTP/2 preface), reading is
    /// bounded by this deadline: hyper's protocol detection has no timer of its own, so a
    /// client that connects and stays silent would otherwise hold its slot forever.
    first_request: Option<Pin<Box<tokio::time::Sleep>>>,
    received: usize,
    /// Request heads completed so far.
    heads: u64,
    /// Where a missed first-request deadline is counted. hyper reports the read error of a
    /// connection that never sent a byte as a clean close, so only the guard can count it.
    metrics: Option<Arc<Metrics>>,
    /// Told after every read whether everything read so far ends on a message boundary (the
    /// connection may then be parked outside hyper, see `downstream::park`).
    boundary: Option<Arc<AtomicBool>>,
    /// Counts what the client accepts and disconnects a client that accepts nothing for the
    /// send timeout, until it asks for a tunnel or upgrade (see `downstream::send`).
    send: SendDeadline,
}

impl<I> WireGuard<I> {
    /// Guards `inner`; heads longer than `max_head` are left to hyper's own limit (431). The
    /// first request head must arrive within `first_request`.
    pub fn new(inner: I, max_head: usize, first_request: std::time::Duration) -> WireGuard<I> {
        WireGuard {
            inner,
            state: State::Head,
            line: Vec::new(),
            max_head,
            first_request: Some(Box::pin(tokio::time::sleep(first_request))),
            received: 0,
            heads: 0,
            metrics: None,
            boundary: None,
            send: SendDeadline::off(),
        }
    }

    /// Wraps `inner` without guarding its framing (a connection that speaks HTTP/2 from the
    /// start); the preface must still arrive within `first_request`.
    pub fn passthrough(inner: I, first_request: std::time::Duration) -> WireGuard<I> {
        WireGuard {
            inner,
            state: State::Passthrough,
            line: Vec::new(),
            max_head: 0,
            first_request: Some(Box::pin(tokio::time::sleep(first_request))),
            received: 0,
            heads: 0,
            metrics: None,
            boundary: None,
            send: SendDeadline::off(),
        }
    }

    /// Counts what the client accepts, and fails a write that makes no progress for
    /// `timeout` (counted into `metrics`, when given), until the client switches protocols.
    pub fn sending_within(mut self, timeout: Duration, metrics: Option<Arc<Metrics>>) -> Self {
        self.send = SendDeadline::new(timeout, SendProgress::new(), metrics);
        self
    }

    /// What the client has accepted so far, when counted.
    pub fn send_progress(&self) -> Option<Arc<SendProgress>> {
        self.send.progress().cloned()
    }

    /// Counts a missed first-request deadline into `metrics`.
    pub fn counting_into(mut self, metrics: Arc<Metrics>) -> WireGuard<I> {
        self.metrics = Some(metrics);
        self
    }

    /// Reports into `flag`, after every read, whether the bytes read so far end exactly at a
    /// message boundary.
    pub fn reporting_boundary(mut self, flag: Arc<AtomicBool>) -> WireGuard<I> {
        self.boundary = Some(flag);
        self
    }

    /// When the first request head is due, until the client has shown it is talking (a
    /// complete head, or enough bytes to tell its protocol); `None` after that.
    pub fn first_request_deadline(&self) -> Option<tokio::time::Instant> {
        self.first_request.as_ref().map(|sleep| sleep.deadline())
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The wrapped connection, once no more HTTP is read from it (a tunnel took it over).
    pub fn into_inner(self) -> I {
        self.inner
    }

    /// Whether the first request head (or the preface) has been seen.
    fn detected(&self, head_completed: bool) -> bool {
        head_completed || self.received >= PROTOCOL_DETECTION_BYTES
    }

    /// Follows `bytes` (just read); on a violation, poisons one of them and stops guarding.
    fn observe(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let Some(&byte) = bytes.get(i) else { return };
            let verdict = match &mut self.state {
                State::Passthrough => return,
                State::Body(remaining) => {
                    let take = (*remaining).min((bytes.len() - i) as u64);
                    *remaining -= take;
                    i += take as usize;
                    if *remaining == 0 {
                        self.state = State::Head;
                    }
                    continue;
                }
                State::ChunkData(remaining, crlf) => {
                    if *remaining > 0 {
                        let take = (*remaining).min((bytes.len() - i) as u64);
                        *remaining -= take;
                        i += take as usize;
                        continue;
                    }
                    let expected = if *crlf == 2 { b'\r' } else { b'\n' };
                    if byte != expected {
                        Verdict::Refuse
                    } else {
                        *crlf -= 1;
                        if *crlf == 0 {
                            self.state = State::ChunkLine;
                        }
                        Verdict::Continue
                    }
                }
                State::Head => {
                    // Empty lines between messages are ignored, as RFC 9112 §2.2 allows; they
                    // frame nothing, so their line endings cannot be ambiguous.
                    if self.line.is_empty() && (byte == b'\r' || byte == b'\n') {
                        Verdict::Continue
                    } else {
                        // Take the rest of the line in one step (up to and including its LF):
                        // only line ends need a decision, so the bytes between them are copied,
                        // not looked at one by one.
                        let rest = bytes.get(i..).unwrap_or_default();
                        let (taken, ends_line) = match memchr::memchr(b'\n', rest) {
                            Some(lf) => (lf + 1, true),
                            None => (rest.len(), false),
                        };
                        self.line.extend_from_slice(rest.get(..taken).unwrap_or_default());
                        // The verdict below is about the last byte taken.
                        i += taken.saturating_sub(1);
                        let seen = &self.line;
                        if seen.len() > self.max_head {
                            Verdict::GiveUp
                        } else if !ends_line {
                            Verdict::Continue
                        } else if seen.get(seen.len().wrapping_sub(2)) != Some(&b'\r') {
                            Verdict::Refuse
                        } else if seen.ends_with(b"\r\n\r\n") {
                            match framing_of(seen) {
                                Framing::Ambiguous => Verdict::Refuse,
                                framing => {
                                    self.heads += 1;
                                    if framing == Framing::Switch {
                                        // A tunnel's bytes are bounded by its idle timeout.
                                        self.send.stop();
                                    }
                                    Verdict::Next(after_head(framing))
                                }
                            }
                        } else {
                            Verdict::Continue
                        }
                    }
                }
                State::ChunkLine => {
                    let line = &mut self.line;
                    line.push(byte);
                    if line.len() > MAX_CHUNK_LINE {
                        Verdict::Refuse
                    } else if byte == b'\n' {
                        match chunk_size(line) {
                            Some(0) => Verdict::Next(State::Trailers),
                            Some(size) => Verdict::Next(State::ChunkData(size, 2)),
                            None => Verdict::Refuse,
                        }
                    } else {
                        Verdict::Continue
                    }
                }
                State::Trailers => {
                    let seen = &mut self.line;
                    seen.push(byte);
                    if seen.len() > self.max_head {
                        // Never stop guarding while hyper still parses HTTP/1.
                        Verdict::Refuse
                    } else if byte == b'\n' && seen.get(seen.len().wrapping_sub(2)) != Some(&b'\r')
                    {
                        Verdict::Refuse
                    } else if seen.as_slice() == b"\r\n" || seen.ends_with(b"\r\n\r\n") {
                        Verdict::Next(State::Head)
                    } else {
                        Verdict::Continue
                    }
                }
            };
            match verdict {
                Verdict::Continue => {}
                Verdict::Next(state) => {
                    self.state = state;
                    self.line.clear();
                    // Keep a small buffer for the next message; give back a large one.
                    if self.line.capacity() > SPARE_LINE_CAPACITY {
                        self.line = Vec::new();
                    }
                }
                Verdict::GiveUp => {
                    self.state = State::Passthrough;
                    self.line = Vec::new();
                }
                Verdict::Refuse => {
                    if let Some(b) = bytes.get_mut(i) {
                        *b = 0;
                    }
                    tracing::debug!(limit = "framing", "ambiguous request framing refused");
                    self.state = State::Passthrough;
                    self.line = Vec::new();
                    return;
                }
            }
            i += 1;
        }
    }
}

enum Verdict {
    Continue,
    Next(State),
    GiveUp,
    Refuse,
}

/// What follows a complete head with unambiguous framing.
fn after_head(framing: Framing) -> State {
    match framing {
        Framing::None | Framing::Length(0) => State::Head,
        Framing::Length(n) => State::Body(n),
        Framing::Chunked => State::ChunkLine,
        Framing::Switch | Framing::Preface | Framing::Ambiguous => State::Passthrough,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// CONNECT or an upgrade request: no more HTTP/1 to follow, a tunnel may.
    Switch,
    /// The HTTP/2 preface: no more HTTP/1 to follow, HTTP/2 does.
    Preface,
    Ambiguous,
}

fn framing_of(head: &[u8]) -> Framing {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.starts_with(b"CONNECT ") {
        return Framing::Switch;
    }
    if request_line.starts_with(b"PRI * HTTP/2.0") {
        return Framing::Preface;
    }
    let (mut lengths, mut length, mut encodings, mut upgrade) = (0u32, None, 0u32, false);
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let (name, value) = line.split_at(colon);
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let value = String::from_utf8_lossy(value.get(1..).unwrap_or_default());
            length = value.trim().parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if lengths > 1 || (lengths > 0 && encodings > 0) {
        return Framing::Ambiguous;
    }
    if upgrade {
        return Framing::Switch;
    }
    match (encodings, length) {
        // hyper itself refuses anything but a final `chunked`, and `policy::framing` anything
        // but exactly `chunked`; either way it is a chunked body if anything.
        (1.., _) => Framing::Chunked,
        (0, Some(n)) => Framing::Length(n),
        (0, None) => Framing::None,
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WireGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let heads_before = self.heads;
                if let Some(new) = buf.filled_mut().get_mut(before..) {
                    self.received += new.len();
                    let eof = new.is_empty();
                    self.observe(new);
                    if eof || self.detected(self.heads > heads_before) {
                        self.first_request = None;
                    }
                }
                if let Some(flag) = &self.boundary {
                    let at_boundary = matches!(self.state, State::Head) && self.line.is_empty();
                    flag.store(at_boundary, Ordering::Relaxed);
                }
            }
            Poll::Pending => {
                if let Some(deadline) = self.first_request.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    tracing::debug!(limit = "request_header", "no request before the deadline");
                    // Counted once, however often the failed read is retried.
                    if let Some(metrics) = self.metrics.take() {
                        metrics.reject(Rejection::RequestHeadTimeout);
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request received in time",
                    )));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WireGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.send.wrote(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.send.flushed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.send.flushed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.send.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns where the guard poisoned it, if it did.
    fn poisoned_at(input: &[u8], step: usize) -> Option<usize> {
        poisoned_with_limit(input, step, 64 * 1024)
    }

    /// [`poisoned_at`] with heads limited to `max_head` bytes.
    fn poisoned_with_limit(input: &[u8], step: usize, max_head: usize) -> Option<usize> {
        let mut guard = WireGuard {
            inner: (),
            state: State::Head,
            line: Vec::new(),
            max_head,
            first_request: None,
            received: 0,
            heads: 0,
            metrics: None,
            boundary: None,
            send: SendDeadline::off(),
        };
        let mut data = input.to_vec();
        for (n, piece) in data.chunks_mut(step).enumerate() {
            let copy = piece.to_vec();
            guard.observe(piece);
            if let Some(i) = piece.iter().zip(&copy).position(|(a, b)| a != b) {
                return Some(n * step + i);
            }
        }
        None
    }

    fn refused(input: &str) -> bool {
        [1, 3, 7, 4096].iter().all(|&step| poisoned_at(input.as_bytes(), step).is_some())
    }

    fn accepted(input: &str) -> bool {
        [1, 3, 7, 4096].iter().all(|&step| poisoned_at(input.as_bytes(), step).is_none())
    }

    #[test]
    fn well_formed_messages_pass_untouched() {
        assert!(accepted("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(accepted(
            "\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhe\nloGET / HTTP/1.1\r\n\r\n"
        ));
        assert!(accepted(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d;\\\"e\"\r\nx\ny\r\n\
             A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ));
        assert!(accepted("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
        // After CONNECT or an upgrade anything may follow.
        assert!(accepted("CONNECT a:443 HTTP/1.1\r\n\r\n\n\x00anything\n"));
        assert!(accepted(
            "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\nraw"
        ));
        assert!(accepted("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n"));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert!(refused("GET / HTTP/1.1\nHost: a\n\n"));
        assert!(refused("GET / HTTP/1.1\r\nHost: a\n\r\n"));
        assert!(refused(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "zz\r\nabc\r\n0\r\n\r\n",
            "3;x=\"a\r\nabc\r\n0\r\n\r\n",
            "3;\r\nabc\r\n0\r\n\r\n",
            "3\nabc\r\n0\r\n\r\n",
            "3\r\nabcX\r\n0\r\n\r\n",
            "0\r\nX: 1\n\r\n",
            "11111111111111111\r\n",
        ] {
            assert!(refused(&format!("{chunked}{body}")), "{body:?}");
        }
    }

    #[test]
    fn the_offending_byte_is_the_one_poisoned_however_the_bytes_arrive() {
        let both_lengths =
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // (input, index of the byte that must be poisoned)
        let cases = [
            // A bare LF ending the request line.
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 14),
            // A bare LF in the second head of a keep-alive connection.
            ("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: a\n\r\n", 41),
            // Both lengths: the LF that completes the head.
            (both_lengths, both_lengths.len() - 1),
            // After empty lines between messages, a bare LF ending the request line.
            ("\r\n\r\nGET / HTTP/1.1\n\r\n", 18),
        ];
        for (input, at) in cases {
            assert_eq!(input.as_bytes().get(at), Some(&b'\n'), "{input:?}");
            for step in 1..=input.len() {
                assert_eq!(poisoned_at(input.as_bytes(), step), Some(at), "{input:?} in {step}s");
            }
        }
    }

    #[test]
    fn heads_over_the_limit_are_left_to_hyper_and_heads_at_it_are_guarded() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let bare = "GET / HTTP/1.1\r\nHost: a\n\r\n";
        let lf = bare.find("a\n").unwrap() + 1;
        for step in 1..=head.len() {
            assert_eq!(poisoned_with_limit(head.as_bytes(), step, head.len()), None);
            // With the bare LF as the limit's last byte the head is still guarded...
            assert_eq!(poisoned_with_limit(bare.as_bytes(), step, lf + 1), Some(lf));
            // ...one byte over, the guard gives up (hyper answers 431 on its own limit).
            assert_eq!(poisoned_with_limit(bare.as_bytes(), step, lf), None);
        }
    }
}
