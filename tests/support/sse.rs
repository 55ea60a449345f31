//! Server-sent events (`text/event-stream`) as the tests produce and read them: numbered
//! events an origin sends, and the events a client receives, split at their blank lines
//! however the bytes were chunked on the way.

use bytes::Bytes;
use http::Response;

use super::upstream::{TestBody, channel_response};
use super::within;

/// Event `index` of a numbered stream: an `id:` line and a JSON `data:` line padded with
/// `pad` bytes, so events differ in length and a lost, repeated or reordered one shows.
pub fn numbered_event(index: usize, pad: usize) -> String {
    format!("id: {index}\ndata: {{\"n\":{index},\"pad\":\"{}\"}}\n\n", "x".repeat(pad))
}

/// A `200 OK` `text/event-stream` response for an origin to return, and the sender its
/// events go through, one body frame per `send_data`, with room for one frame in flight; the
/// stream ends when the sender is dropped.
pub fn response() -> (http_body_util::channel::Sender<Bytes>, Response<TestBody>) {
    let (sender, mut response) = channel_response(1);
    response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    (sender, response)
}

/// The events of a response body, one at a time, each as soon as its blank line arrived.
pub struct Events {
    response: reqwest::Response,
    /// Bytes received after the last complete event.
    buffer: Vec<u8>,
}

impl Events {
    /// Reads the events of `response`'s body.
    pub fn new(response: reqwest::Response) -> Events {
        Events { response, buffer: Vec::new() }
    }

    /// The next complete event, with its terminating blank line, reading more of the body
    /// only when no complete event is left (each read bounded by [`within`]); `None` once the
    /// body has ended.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(String::from_utf8(event).unwrap());
            }
            let chunk = within(self.response.chunk()).await.unwrap()?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Asserts that nothing followed the last complete event.
    pub fn assert_no_partial_event(&self) {
        let buffer = &self.buffer;
        assert!(buffer.is_empty(), "trailing partial event: {buffer:?}");
    }
}
