//! [`UsageTap`]: a response body wrapper that reads the model, token usage and timing from
//! an AI response as its frames pass, handing each frame on in the same poll, so reading
//! usage never delays a byte. It can also remove the usage-only chunk of a stream whose
//! `include_usage` sluice added (see [`UsageChunkFilter`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::gateway::scanner::ObjectScanner;
use crate::gateway::sse::{Line, SseReader, StreamReport, UsageChunkFilter, has_usage};
use crate::gateway::usage::{Usage, UsageMeter, WireUsage};

/// Largest `usage` (or `model`) value of a JSON response that is copied to be read.
pub const MAX_USAGE_BYTES: usize = 8 * 1024;

/// The members of a JSON response the tap reads.
const RESPONSE_MEMBERS: &[&str] = &["model", "usage"];

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `text/event-stream`.
    EventStream,
    /// A single JSON document.
    Json,
}

impl ResponseFormat {
    /// The format a `Content-Type` value announces; `None` for anything else (passed on
    /// unread).
    pub fn of(content_type: Option<&http::HeaderValue>) -> Option<ResponseFormat> {
        let value = content_type?.to_str().ok()?;
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Some(ResponseFormat::EventStream)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(ResponseFormat::Json)
        } else {
            None
        }
    }
}

#[derive(Debug)]
enum Reader {
    Events(SseReader),
    Json(Box<ObjectScanner>),
}

/// A response body that reports what passes through it into a [`UsageMeter`].
#[derive(Debug)]
pub struct UsageTap<B> {
    inner: B,
    reader: Reader,
    meter: Arc<UsageMeter>,
    filter: Option<UsageChunkFilter>,
    usage: Option<Usage>,
    model_known: bool,
    first_seen: bool,
    ended: bool,
}

impl<B> UsageTap<B> {
    /// Taps `inner`, a response body in `format`, reporting into `meter`; with
    /// `remove_usage_chunk`, a stream's usage-only chunk is read but not passed on.
    pub fn new(
        inner: B,
        format: ResponseFormat,
        meter: Arc<UsageMeter>,
        remove_usage_chunk: bool,
    ) -> UsageTap<B> {
        let reader = match format {
            ResponseFormat::EventStream => Reader::Events(SseReader::new()),
            ResponseFormat::Json => {
                Reader::Json(Box::new(ObjectScanner::new(RESPONSE_MEMBERS, MAX_USAGE_BYTES)))
            }
        };
        let filter = (remove_usage_chunk && format == ResponseFormat::EventStream)
            .then(UsageChunkFilter::new);
        UsageTap {
            inner,
            reader,
            meter,
            filter,
            usage: None,
            model_known: false,
            first_seen: false,
            ended: false,
        }
    }

    /// Reads one data frame.
    fn read(&mut self, data: &[u8]) {
        let UsageTap { reader, meter, usage, model_known, first_seen, .. } = self;
        match reader {
            Reader::Events(lines) => lines.feed(data, |line| {
                let Line::Data(data) = line else { return };
                if !*first_seen {
                    *first_seen = true;
                    meter.update(|record| record.first_event = Some(Instant::now()));
                }
                if *model_known && !has_usage(data) {
                    return;
                }
                let Some(report) = StreamReport::parse(data) else { return };
                let model = (!*model_known).then(|| report.model().map(str::to_owned)).flatten();
                let mut updated = None;
                for wire in report.usages() {
                    let current = updated.get_or_insert(usage.unwrap_or_default());
                    wire.apply(current);
                }
                if let Some(new) = updated {
                    *usage = Some(new);
                }
                if model.is_some() || updated.is_some() {
                    *model_known |= model.is_some();
                    meter.update(|record| {
                        if model.is_some() {
                            record.model = model;
                        }
                        if updated.is_some() {
                            record.usage = updated;
                        }
                    });
                }
            }),
            Reader::Json(scanner) => {
                if !*first_seen && !data.is_empty() {
                    *first_seen = true;
                    meter.update(|record| record.first_event = Some(Instant::now()));
                }
                scanner.feed(data);
            }
        }
    }

    /// Records the end of the body, and what a JSON response said.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let now = Instant::now();
        let (model, usage) = match &self.reader {
            Reader::Json(scanner) => {
                let model = scanner
                    .member("model")
                    .and_then(|m| m.text())
                    .and_then(|text| serde_json::from_slice::<String>(text).ok());
                let usage = scanner.member("usage").and_then(|m| m.text()).and_then(|text| {
                    let wire = WireUsage::parse(text)?;
                    let mut usage = Usage::default();
                    wire.apply(&mut usage);
                    Some(usage)
                });
                (model, usage)
            }
            Reader::Events(_) => (None, None),
        };
        self.meter.update(|record| {
            record.last_byte = Some(now);
            if model.is_some() {
                record.model = model;
            }
            if usage.is_some() {
                record.usage = usage;
            }
        });
    }
}

impl<B> Body for UsageTap<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                let rest = this.filter.as_mut().and_then(UsageChunkFilter::finish);
                return Poll::Ready(rest.map(|rest| Ok(Frame::data(rest))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            this.read(&data);
                            if this.inner.is_end_stream() {
                                this.end();
                            }
                            match &mut this.filter {
                                Some(filter) => {
                                    let data = filter.filter(data);
                                    if data.is_empty() {
                                        continue;
                                    }
                                    Frame::data(data)
                                }
                                None => Frame::data(data),
                            }
                        }
                        Err(frame) => frame,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(err)) => {
                    this.end();
                    return Poll::Ready(Some(Err(err)));
                }
                None => this.end(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let held = self.filter.as_ref().is_some_and(|filter| !filter.is_empty());
        (self.ended || self.inner.is_end_stream()) && !held
    }

    fn size_hint(&self) -> SizeHint {
        match self.filter {
            // Removing a chunk changes the length.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn body(pieces: &[&str]) -> Frames {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            pieces.iter().map(|p| Ok(Frame::data(Bytes::copy_from_slice(p.as_bytes())))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn run(pieces: &[&str], format: ResponseFormat, strip: bool) -> (String, UsageMeter) {
        let meter = Arc::new(UsageMeter::new());
        let tap = UsageTap::new(body(pieces), format, meter.clone(), strip);
        let out = tap.collect().await.unwrap().to_bytes();
        let meter = Arc::try_unwrap(meter).unwrap();
        (String::from_utf8(out.to_vec()).unwrap(), meter)
    }

    const OPENAI: [&str; 4] = [
        "data: {\"model\":\"gpt-x\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"model\":\"gpt-x\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n",
        "data: [DONE]\n\n",
    ];

    #[tokio::test]
    async fn openai_stream_usage_is_read_and_bytes_pass_unchanged() {
        let (out, meter) = run(&OPENAI, ResponseFormat::EventStream, false).await;
        assert_eq!(out, OPENAI.concat());
        let record = meter.snapshot();
        assert_eq!(record.model.as_deref(), Some("gpt-x"));
        assert_eq!(
            record.usage,
            Some(Usage { input_tokens: 12, output_tokens: 2, cached_tokens: 3 })
        );
        assert!(record.first_event.is_some() && record.last_byte >= record.first_event);
    }

    #[tokio::test]
    async fn the_added_usage_chunk_is_read_then_removed() {
        let joined = OPENAI.concat();
        // Split at arbitrary places, not at event boundaries.
        let pieces: Vec<&str> = vec![&joined[..7], &joined[7..150], &joined[150..]];
        let (out, meter) = run(&pieces, ResponseFormat::EventStream, true).await;
        assert_eq!(out, [OPENAI[0], OPENAI[1], OPENAI[3]].concat());
        assert_eq!(meter.snapshot().usage.unwrap().total(), 14);
    }

    #[tokio::test]
    async fn anthropic_stream_usage_is_read() {
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":20,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let (out, meter) = run(&events, ResponseFormat::EventStream, false).await;
        assert_eq!(out, events.concat());
        let record = meter.snapshot();
        assert_eq!(record.model.as_deref(), Some("claude-x"));
        assert_eq!(
            record.usage,
            Some(Usage { input_tokens: 25, output_tokens: 9, cached_tokens: 5 })
        );
    }

    #[tokio::test]
    async fn json_usage_is_read_at_the_end() {
        let json = r#"{"id":"x","model":"gpt-y","choices":[{"message":{"content":"{\"usage\":1}"}}],"usage":{"prompt_tokens":4,"completion_tokens":6}}"#;
        let (out, meter) = run(&[&json[..30], &json[30..]], ResponseFormat::Json, true).await;
        assert_eq!(out, json);
        let record = meter.snapshot();
        assert_eq!(record.model.as_deref(), Some("gpt-y"));
        assert_eq!(record.usage.unwrap().total(), 10);
    }

    #[tokio::test]
    async fn frames_are_handed_on_as_they_arrive() {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes>::new(1);
        let meter = Arc::new(UsageMeter::new());
        let mut tap = UsageTap::new(rx, ResponseFormat::EventStream, meter, false);
        tx.send_data(Bytes::from_static(b"data: {\"a\"")).await.unwrap();
        let first = tap.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "data: {\"a\"", "a partial event is not held back");
    }

    #[test]
    fn formats_come_from_the_content_type() {
        let of = |v: &'static str| ResponseFormat::of(Some(&http::HeaderValue::from_static(v)));
        assert_eq!(of("text/event-stream; charset=utf-8"), Some(ResponseFormat::EventStream));
        assert_eq!(of("Application/JSON"), Some(ResponseFormat::Json));
        assert_eq!(of("text/plain"), None);
        assert_eq!(ResponseFormat::of(None), None);
    }
}
