//! Server-sent events as an AI response streams them: reading lines as frames pass, without
//! keeping frames ([`SseReader`]), what the data of an event says about usage and the model
//! ([`StreamReport`]), and removing the usage-only chunk a client did not ask for
//! ([`UsageChunkFilter`]).
//!
//! The format is the WHATWG HTML Living Standard's "Server-sent events" (§9.2): lines end
//! with LF or CRLF, `field: value` with one optional space after the colon, and a blank line
//! dispatches the event.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::gateway::usage::WireUsage;

/// Longest line read for usage; a longer line (a huge tool-call argument, say) passes
/// through unread, and at most this much of it is copied while waiting for its end.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest event the usage-only filter holds while waiting for its end; a longer one is
/// passed on as it is.
pub const MAX_HELD_EVENT_BYTES: usize = 64 * 1024;

/// One line of the stream, as [`SseReader`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A `data:` line's value.
    Data(&'a [u8]),
    /// An `event:` line's value (the event's type).
    Event(&'a [u8]),
    /// The blank line that ends an event.
    End,
    /// Any other field, a comment, or a line too long to read.
    Other,
}

/// Splits a stream into lines as frames arrive; a line cut between two frames is copied
/// (up to [`MAX_LINE_BYTES`]) until its end arrives, everything else is read in place.
#[derive(Debug, Default)]
pub struct SseReader {
    partial: Vec<u8>,
    overflowed: bool,
}

impl SseReader {
    /// A reader at the start of a stream.
    pub fn new() -> SseReader {
        SseReader::default()
    }

    /// Reads `frame`, calling `sink` for each line it completes.
    pub fn feed(&mut self, frame: &[u8], mut sink: impl FnMut(Line<'_>)) {
        let mut rest = frame;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            if self.partial.is_empty() && !self.overflowed {
                sink(classify(line));
            } else {
                let complete =
                    !self.overflowed && self.partial.len() + line.len() <= MAX_LINE_BYTES;
                if complete {
                    self.partial.extend_from_slice(line);
                    sink(classify(&self.partial));
                } else {
                    sink(Line::Other);
                }
                self.partial.clear();
                self.overflowed = false;
            }
        }
        if !rest.is_empty() {
            if self.partial.len() + rest.len() <= MAX_LINE_BYTES && !self.overflowed {
                self.partial.extend_from_slice(rest);
            } else {
                self.partial.clear();
                self.overflowed = true;
            }
        }
    }
}

/// What a line is, without its line ending.
fn classify(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Line::End;
    }
    let value = |name: &[u8]| {
        let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
        Some(rest.strip_prefix(b" ").unwrap_or(rest))
    };
    if let Some(data) = value(b"data") {
        Line::Data(data)
    } else if let Some(event) = value(b"event") {
        Line::Event(event)
    } else {
        Line::Other
    }
}

/// Whether a JSON text has a `usage` member whose value is not `null`, found without
/// parsing it (OpenAI sends `"usage":null` in every chunk but the last when asked for usage).
pub fn has_usage(json: &[u8]) -> bool {
    memmem::find_iter(json, b"\"usage\"").any(|at| {
        let after = json.get(at + 7..).unwrap_or_default();
        let mut rest = after.iter().skip_while(|b| b.is_ascii_whitespace());
        if rest.next() != Some(&b':') {
            return false;
        }
        let value: Vec<u8> =
            rest.skip_while(|b| b.is_ascii_whitespace()).take(4).copied().collect();
        value != b"null"
    })
}

/// What one event's data says about the model and usage.
#[derive(Debug, Default, Deserialize)]
pub struct StreamReport {
    /// The model (OpenAI chunks).
    pub model: Option<String>,
    /// Usage (OpenAI's final chunk, Anthropic's `message_delta`).
    pub usage: Option<WireUsage>,
    /// Anthropic's `message_start` carries the message with its model and first usage.
    pub message: Option<Inner>,
    /// OpenAI's responses stream carries the response in `response.completed`.
    pub response: Option<Inner>,
}

/// A nested message or response object.
#[derive(Debug, Default, Deserialize)]
pub struct Inner {
    /// Its model.
    pub model: Option<String>,
    /// Its usage.
    pub usage: Option<WireUsage>,
}

impl StreamReport {
    /// Parses an event's data; `None` when it is not a JSON object (`[DONE]`, say).
    pub fn parse(data: &[u8]) -> Option<StreamReport> {
        serde_json::from_slice(data).ok()
    }

    /// The model named, at any level.
    pub fn model(&self) -> Option<&str> {
        fn nested(inner: &Option<Inner>) -> Option<&str> {
            inner.as_ref().and_then(|i| i.model.as_deref())
        }
        self.model.as_deref().or_else(|| nested(&self.message)).or_else(|| nested(&self.response))
    }

    /// Every usage report, outermost first.
    pub fn usages(&self) -> impl Iterator<Item = &WireUsage> {
        fn nested(inner: &Option<Inner>) -> Option<&WireUsage> {
            inner.as_ref().and_then(|i| i.usage.as_ref())
        }
        self.usage.iter().chain(nested(&self.message)).chain(nested(&self.response))
    }
}

/// Whether an event reports an error instead of an answer: Anthropic's `event: error`, or a
/// data object with a top-level `error` member, as OpenAI-compatible servers send mid-stream.
pub fn is_error_event(event: Option<&[u8]>, data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        error: Option<IgnoredAny>,
    }
    event == Some(b"error".as_slice())
        || (memmem::find(data, b"\"error\"").is_some()
            && serde_json::from_slice::<Probe>(data).is_ok_and(|probe| probe.error.is_some()))
}

/// Removes OpenAI's usage-only chunk (`"choices":[]` with a `usage` object), which a
/// stream carries only because sluice asked for `stream_options.include_usage` on the
/// client's behalf.
///
/// Frames that hold only whole events without a usage report pass through untouched (no
/// copy). Otherwise events are passed on as each one completes; only the incomplete tail of
/// an event is held until its end arrives, and at most [`MAX_HELD_EVENT_BYTES`] of it.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    held: BytesMut,
    /// Usage-only events removed so far.
    pub removed: u32,
}

impl UsageChunkFilter {
    /// A filter at the start of a stream.
    pub fn new() -> UsageChunkFilter {
        UsageChunkFilter::default()
    }

    /// The part of `frame` (and of held bytes) to send on now.
    pub fn filter(&mut self, frame: Bytes) -> Bytes {
        if self.held.is_empty() && ends_an_event(&frame) && !has_usage(&frame) {
            return frame;
        }
        self.held.extend_from_slice(&frame);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.held) {
            let event = self.held.split_to(end);
            if usage_only(&event) {
                self.removed += 1;
            } else {
                out.extend_from_slice(&event);
            }
        }
        if self.held.len() > MAX_HELD_EVENT_BYTES {
            out.extend_from_slice(&self.held.split());
        }
        out.freeze()
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whatever is still held when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| self.held.split().freeze())
    }
}

/// Whether `bytes` ends with a blank line (the end of an event).
fn ends_an_event(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n")
}

/// The length of the first complete event in `bytes`, its blank line included.
fn event_end(bytes: &[u8]) -> Option<usize> {
    let lf = memmem::find(bytes, b"\n\n").map(|at| at + 2);
    let crlf = memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether an event is a usage-only chunk: its data has `"choices":[]` and a usage object.
fn usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<IgnoredAny>>,
        usage: Option<IgnoredAny>,
    }
    if !has_usage(event) {
        return false;
    }
    let mut data = None;
    SseReader::new().feed(event, |line| {
        if let Line::Data(value) = line {
            data = Some(value.to_vec());
        }
    });
    data.and_then(|data| serde_json::from_slice::<Chunk>(&data).ok()).is_some_and(|chunk| {
        chunk.choices.is_some_and(|choices| choices.is_empty()) && chunk.usage.is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(frames: &[&[u8]]) -> Vec<String> {
        let mut reader = SseReader::new();
        let mut seen = Vec::new();
        for frame in frames {
            reader.feed(frame, |line| {
                seen.push(match line {
                    Line::Data(d) => format!("data={}", String::from_utf8_lossy(d)),
                    Line::Event(e) => format!("event={}", String::from_utf8_lossy(e)),
                    Line::End => "end".to_owned(),
                    Line::Other => "other".to_owned(),
                })
            });
        }
        seen
    }

    #[test]
    fn lines_are_read_however_frames_split_them() {
        let stream =
            b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\ndata:x\n\ndata: [DONE]\n\n";
        let expected = [
            "event=message_start",
            "data={\"a\":1}",
            "end",
            "other",
            "data=x",
            "end",
            "data=[DONE]",
            "end",
        ];
        for step in 1..stream.len() {
            let frames: Vec<&[u8]> = stream.chunks(step).collect();
            assert_eq!(lines(&frames), expected, "step {step}");
        }
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        let mut frame = b"data: ".to_vec();
        frame.extend_from_slice(&long);
        assert_eq!(lines(&[&frame, b"\ndata: y\n\n"]), ["other", "data=y", "end"]);
        assert_eq!(lines(&[&frame[..10], &frame[10..], b"\n\n"]), ["other", "end"]);
    }

    #[test]
    fn usage_is_told_from_null_usage() {
        let cases: &[(&[u8], bool)] = &[
            (br#"{"choices":[],"usage":{"prompt_tokens":1}}"#, true),
            (br#"{"choices":[{}],"usage":null}"#, false),
            (br#"{"choices":[{}],"usage" : null}"#, false),
            (br#"{"usage":null,"message":{"usage":{"input_tokens":3}}}"#, true),
            (br#"{"text":"the \"usage\" word"}"#, false),
            (br#"{"a":1}"#, false),
        ];
        for (json, expected) in cases {
            assert_eq!(has_usage(json), *expected, "{}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn reports_find_model_and_usage_at_any_level() {
        let openai = StreamReport::parse(
            br#"{"id":"c","model":"gpt-x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(openai.model(), Some("gpt-x"));
        assert_eq!(openai.usages().count(), 1);
        let anthropic = StreamReport::parse(
            br#"{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":9}}}"#,
        )
        .unwrap();
        assert_eq!(anthropic.model(), Some("claude-x"));
        assert_eq!(anthropic.usages().count(), 1);
        assert!(StreamReport::parse(b"[DONE]").is_none());
    }

    #[test]
    fn error_events_are_recognised() {
        assert!(is_error_event(Some(b"error"), b"{}"));
        assert!(is_error_event(None, br#"{"error":{"message":"overloaded"}}"#));
        assert!(!is_error_event(None, br#"{"choices":[{"delta":{"content":"\"error\""}}]}"#));
        assert!(!is_error_event(Some(b"message_start"), b"{}"));
    }

    const CHUNK: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn the_usage_only_chunk_is_removed_however_frames_split() {
        let stream = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let expected = format!("{CHUNK}{CHUNK}{DONE}");
        for step in 1..stream.len() {
            let mut filter = UsageChunkFilter::new();
            let mut out = Vec::new();
            for piece in stream.as_bytes().chunks(step) {
                out.extend_from_slice(&filter.filter(Bytes::copy_from_slice(piece)));
            }
            assert!(filter.finish().is_none());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "step {step}");
            assert_eq!(filter.removed, 1);
        }
    }

    #[test]
    fn whole_events_without_usage_pass_without_a_copy() {
        let mut filter = UsageChunkFilter::new();
        let frame = Bytes::from(format!("{CHUNK}{CHUNK}"));
        let out = filter.filter(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr());
        // A final chunk with choices and usage is kept.
        let kept = "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert_eq!(filter.filter(Bytes::from(kept)), kept);
        // An unterminated tail is returned at the end.
        assert_eq!(filter.filter(Bytes::from("data: {\"usage\":{}")), "");
        assert_eq!(filter.finish().unwrap(), "data: {\"usage\":{}");
    }
}
