//! What sluice reads from an AI request's JSON body (`model`, `stream`, `max_tokens`), read
//! from its first bytes by [`peek`] (bounded), and the edits it may make before the body goes
//! upstream: a model alias replaced by the real name ([`replace_model`]), and
//! `stream_options.include_usage` added to a stream that lacks it ([`add_include_usage`]).

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::gateway::scanner::{Member, ObjectScanner};

/// The top-level members of a request body sluice reads.
pub const REQUEST_MEMBERS: &[&str] =
    &["model", "stream", "max_tokens", "max_completion_tokens", "stream_options"];

/// Longest value of a read member that is copied (a model name, a number, a small object).
pub const MAX_MEMBER_BYTES: usize = 1024;

/// What is added before the closing `}` of a streamed OpenAI request to have the provider
/// report usage in its last chunk.
pub const INCLUDE_USAGE: &[u8] = b",\"stream_options\":{\"include_usage\":true}";

/// What an AI request's body says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFields {
    /// `model`.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `max_tokens` (or OpenAI's newer `max_completion_tokens`).
    pub max_tokens: Option<u64>,
    /// Whether the body has a `stream_options` member.
    pub has_stream_options: bool,
}

/// A request body that sluice cannot read as an AI request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not a JSON object.
    #[error("the request body is not a JSON object")]
    NotAnObject,
    /// A member sluice reads is given twice; the provider might read the other one.
    #[error("`{0}` is given twice")]
    Duplicate(&'static str),
    /// `model` is not a string (or is too long).
    #[error("`model` must be a string of at most {MAX_MEMBER_BYTES} bytes")]
    Model,
    /// `stream` is not a boolean.
    #[error("`stream` must be true or false")]
    Stream,
    /// `max_tokens` is not a whole number.
    #[error("`max_tokens` must be a whole number")]
    MaxTokens,
    /// The body broke off before its end.
    #[error("the request body ended abnormally")]
    Broken,
}

impl RequestFields {
    /// The fields `scanner` found. Members it has not seen (yet) are absent.
    pub fn read(scanner: &ObjectScanner) -> Result<RequestFields, FieldError> {
        if scanner.invalid() {
            return Err(FieldError::NotAnObject);
        }
        if let Some(name) = scanner.duplicate() {
            return Err(FieldError::Duplicate(name));
        }
        let text = |name| scanner.member(name).map(|m: &Member| m.text().unwrap_or_default());
        let model = match text("model") {
            None | Some(b"null") => None,
            Some(raw) => {
                Some(serde_json::from_slice::<String>(raw).map_err(|_| FieldError::Model)?)
            }
        };
        let stream = match text("stream") {
            None | Some(b"null") | Some(b"false") => false,
            Some(b"true") => true,
            Some(_) => return Err(FieldError::Stream),
        };
        let max_tokens = match text("max_tokens").or_else(|| text("max_completion_tokens")) {
            None | Some(b"null") => None,
            Some(raw) => Some(
                std::str::from_utf8(raw)
                    .ok()
                    .and_then(|digits| digits.parse::<u64>().ok())
                    .ok_or(FieldError::MaxTokens)?,
            ),
        };
        Ok(RequestFields {
            model,
            stream,
            max_tokens,
            has_stream_options: scanner.member("stream_options").is_some(),
        })
    }
}

/// The first bytes of a request body, read by [`peek`], and the rest of it.
#[derive(Debug)]
pub struct Peeked<B> {
    /// The bytes read, in order.
    pub head: Bytes,
    /// What the scanner found in them.
    pub scanner: ObjectScanner,
    /// The rest of the body; `None` when it has all been read.
    pub rest: Option<B>,
}

impl<B> Peeked<B> {
    /// The fields found.
    pub fn fields(&self) -> Result<RequestFields, FieldError> {
        RequestFields::read(&self.scanner)
    }
}

/// When [`peek`] may stop reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekUntil {
    /// Once `model` and `stream` are both known.
    ModelAndStream,
    /// Once the top-level object has closed: every member is known, duplicates included.
    ObjectEnd,
}

/// Reads `body` until `until` is met, the body ends, or `limit` bytes have been read (a frame
/// may take it past `limit`; the bytes are never split). A trailers frame ends the peek; the
/// trailers are dropped (no AI API uses request trailers).
pub async fn peek<B>(mut body: B, until: PeekUntil, limit: usize) -> Result<Peeked<B>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut scanner = ObjectScanner::new(REQUEST_MEMBERS, MAX_MEMBER_BYTES);
    let mut head = BytesMut::new();
    let mut first: Option<Bytes> = None;
    loop {
        let enough = match until {
            PeekUntil::ModelAndStream => {
                scanner.done() || (scanner.complete("model") && scanner.complete("stream"))
            }
            PeekUntil::ObjectEnd => scanner.done(),
        };
        let read = first.as_ref().map_or(head.len(), Bytes::len);
        if enough || read >= limit || body.is_end_stream() {
            break;
        }
        let Some(frame) = body.frame().await.transpose()? else {
            return Ok(Peeked { head: collected(first, head), scanner, rest: None });
        };
        let Ok(data) = frame.into_data() else { break };
        scanner.feed(&data);
        // The common case of a body in one frame costs no copy.
        match first.take() {
            None if head.is_empty() => first = Some(data),
            None => head.extend_from_slice(&data),
            Some(earlier) => {
                head.extend_from_slice(&earlier);
                head.extend_from_slice(&data);
            }
        }
    }
    let ended = body.is_end_stream();
    Ok(Peeked { head: collected(first, head), scanner, rest: (!ended).then_some(body) })
}

fn collected(first: Option<Bytes>, head: BytesMut) -> Bytes {
    first.unwrap_or_else(|| head.freeze())
}

/// `head` with the value of `model` (found by the scanner at `member`) replaced by `model`.
/// `None` when the value is not wholly inside `head`.
pub fn replace_model(head: &Bytes, member: &Member, model: &str) -> Option<Bytes> {
    let start = usize::try_from(member.start).ok()?;
    let end = usize::try_from(member.end?).ok()?;
    let (before, after) = (head.get(..start)?, head.get(end..)?);
    let value = serde_json::to_vec(model).ok()?;
    let mut out = BytesMut::with_capacity(before.len() + value.len() + after.len());
    out.extend_from_slice(before);
    out.extend_from_slice(&value);
    out.extend_from_slice(after);
    Some(out.freeze())
}

/// `head` with [`INCLUDE_USAGE`] added before the object's closing `}` at `closed_at`.
/// `None` when the closing brace is not inside `head`.
pub fn add_include_usage(head: &Bytes, closed_at: u64) -> Option<Bytes> {
    let at = usize::try_from(closed_at).ok()?;
    let (before, after) = (head.get(..at)?, head.get(at..)?);
    if after.first() != Some(&b'}') {
        return None;
    }
    let mut out = BytesMut::with_capacity(head.len() + INCLUDE_USAGE.len());
    out.extend_from_slice(before);
    out.extend_from_slice(INCLUDE_USAGE);
    out.extend_from_slice(after);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    fn fields(json: &str) -> Result<RequestFields, FieldError> {
        let mut scanner = ObjectScanner::new(REQUEST_MEMBERS, MAX_MEMBER_BYTES);
        scanner.feed(json.as_bytes());
        RequestFields::read(&scanner)
    }

    #[test]
    fn fields_are_read_and_bad_ones_named() {
        let ok = |model: Option<&str>, stream, max_tokens, has_stream_options| {
            Ok(RequestFields {
                model: model.map(str::to_owned),
                stream,
                max_tokens,
                has_stream_options,
            })
        };
        let cases = [
            (
                r#"{"model":"gpt-4o","stream":true,"max_tokens":100}"#,
                ok(Some("gpt-4o"), true, Some(100), false),
            ),
            (r#"{"messages":[],"model":"a\u00e9"}"#, ok(Some("aé"), false, None, false)),
            (
                r#"{"model":null,"stream":false,"max_completion_tokens":5}"#,
                ok(None, false, Some(5), false),
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
                ok(None, true, None, true),
            ),
            ("{}", ok(None, false, None, false)),
            ("[]", Err(FieldError::NotAnObject)),
            ("model=x", Err(FieldError::NotAnObject)),
            (r#"{"model":"a","model":"b"}"#, Err(FieldError::Duplicate("model"))),
            (r#"{"model":1}"#, Err(FieldError::Model)),
            (r#"{"stream":"yes"}"#, Err(FieldError::Stream)),
            (r#"{"max_tokens":-1}"#, Err(FieldError::MaxTokens)),
            (r#"{"max_tokens":1.5}"#, Err(FieldError::MaxTokens)),
        ];
        for (json, expected) in cases {
            assert_eq!(fields(json), expected, "{json}");
        }
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MEMBER_BYTES));
        assert_eq!(fields(&long), Err(FieldError::Model));
    }

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    fn body(pieces: &[&str]) -> StreamBody<Frames> {
        let frames: Vec<_> =
            pieces.iter().map(|p| Ok(Frame::data(Bytes::copy_from_slice(p.as_bytes())))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn peeking_stops_as_soon_as_it_may() {
        let pieces = [r#"{"model":"m","#, r#""stream":true,"#, r#""messages":[]"#, "}"];
        let peeked = peek(body(&pieces), PeekUntil::ModelAndStream, 1 << 20).await.unwrap();
        assert_eq!(peeked.head, r#"{"model":"m","stream":true,"#);
        assert!(peeked.rest.is_some());
        assert_eq!(peeked.fields().unwrap().model.as_deref(), Some("m"));

        let peeked = peek(body(&pieces), PeekUntil::ObjectEnd, 1 << 20).await.unwrap();
        assert_eq!(peeked.head, pieces.concat());
        assert_eq!(peeked.scanner.closed_at(), Some(pieces.concat().len() as u64 - 1));

        // The limit stops it, between frames.
        let peeked = peek(body(&pieces), PeekUntil::ObjectEnd, 5).await.unwrap();
        assert_eq!(peeked.head, pieces[0]);
        assert!(peeked.rest.is_some());
        let fields = peeked.fields().unwrap();
        assert_eq!(fields.model.as_deref(), Some("m"));
        assert!(!fields.stream, "not seen yet");
    }

    #[tokio::test]
    async fn a_body_in_one_frame_is_not_copied() {
        let json = r#"{"model":"m"}"#;
        let peeked = peek(body(&[json]), PeekUntil::ObjectEnd, 1 << 20).await.unwrap();
        assert_eq!(peeked.head, json);
        let peeked = peek(body(&[]), PeekUntil::ObjectEnd, 1 << 20).await.unwrap();
        assert!(peeked.head.is_empty() && peeked.rest.is_none());
    }

    #[test]
    fn models_are_replaced_and_usage_is_asked_for() {
        let json = Bytes::from_static(br#"{"model" : "fast", "stream":true}"#);
        let mut scanner = ObjectScanner::new(REQUEST_MEMBERS, MAX_MEMBER_BYTES);
        scanner.feed(&json);
        let replaced =
            replace_model(&json, scanner.member("model").unwrap(), "gpt-4o-\"mini\"").unwrap();
        assert_eq!(replaced, r#"{"model" : "gpt-4o-\"mini\"", "stream":true}"#);
        let added = add_include_usage(&json, scanner.closed_at().unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&added).unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["model"], "fast");
        assert!(add_include_usage(&json, 3).is_none());
        assert!(add_include_usage(&json, 1000).is_none());
    }
}
