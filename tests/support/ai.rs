//! A mock AI provider on 127.0.0.1:0 that speaks OpenAI's chat completions and embeddings
//! and Anthropic's messages, plain and streamed, with controlled timing; and misbehaves on
//! request: 429 with `Retry-After`, 401, 500, a 200 stream that fails before its first event
//! or starts with an error event, a stream that stalls, one that breaks after some events.
//! It counts requests and records the key and body of each.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::upstream::{Origin, TestBody, channel_response, full};

/// How the mock answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// A completion: JSON, or an event stream when the request asks for `stream: true`.
    Answer,
    /// 429 with `Retry-After: seconds` (and OpenAI's `x-ratelimit-reset-requests`).
    RateLimited {
        /// Seconds until the key may be used again.
        retry_after: u64,
    },
    /// 401: the key is not valid.
    Unauthorized,
    /// 500.
    ServerError,
    /// 200 `text/event-stream` whose body ends (after the script's first delay) before any
    /// event.
    FailsBeforeFirstEvent,
    /// 200 `text/event-stream` whose first event is an error event.
    ErrorEvent,
    /// 200 `text/event-stream` that never sends an event.
    Stalls,
    /// A stream that ends, without its last events, after this many.
    BreaksAfter(usize),
}

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The request path.
    pub path: String,
    /// The provider key it carried (`Authorization: Bearer` or `x-api-key`).
    pub key: Option<String>,
    /// Its header fields.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl SeenRequest {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The API a request is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `…/chat/completions`.
    OpenAiChat,
    /// `…/embeddings`.
    OpenAiEmbeddings,
    /// `…/messages`.
    Anthropic,
}

impl Format {
    fn of(path: &str) -> Option<Format> {
        if path.ends_with("/chat/completions") {
            Some(Format::OpenAiChat)
        } else if path.ends_with("/embeddings") {
            Some(Format::OpenAiEmbeddings)
        } else if path.ends_with("/messages") {
            Some(Format::Anthropic)
        } else {
            None
        }
    }
}

/// The content and usage of the mock's answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// The pieces of the answer: one stream event each.
    pub pieces: Vec<String>,
    /// Pause before the first event of a stream (or before a JSON answer).
    pub first_delay: Duration,
    /// Pause between two events of a stream.
    pub gap: Duration,
    /// Prompt tokens reported (cached ones included).
    pub input_tokens: u64,
    /// Cached prompt tokens reported.
    pub cached_tokens: u64,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            pieces: ["Hel", "lo", " from", " the", " mock"].map(String::from).to_vec(),
            first_delay: Duration::ZERO,
            gap: Duration::from_millis(5),
            input_tokens: 12,
            cached_tokens: 4,
        }
    }
}

impl Script {
    /// Output tokens reported: one per piece.
    pub fn output_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
}

struct State {
    name: String,
    default: Mutex<Behaviour>,
    by_key: Mutex<HashMap<String, Behaviour>>,
    queue: Mutex<VecDeque<Behaviour>>,
    script: Mutex<Script>,
    requests: AtomicUsize,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A running mock provider.
#[derive(Clone)]
pub struct MockProvider {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The underlying origin (connection counts, raw request heads).
    pub origin: Origin,
    state: Arc<State>,
}

impl MockProvider {
    /// Starts a mock that answers every request; `name` appears in its ids, so two mocks'
    /// answers differ.
    pub async fn start(name: &str) -> MockProvider {
        let state = Arc::new(State {
            name: name.to_owned(),
            default: Mutex::new(Behaviour::Answer),
            by_key: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            script: Mutex::new(Script::default()),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let origin = Origin::start({
            let state = state.clone();
            move |request| serve(state.clone(), request)
        })
        .await;
        MockProvider { addr: origin.addr, origin, state }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How every request is answered unless a key or the queue says otherwise.
    pub fn set_default(&self, behaviour: Behaviour) {
        *self.state.default.lock().unwrap() = behaviour;
    }

    /// How requests with provider key `key` are answered.
    pub fn on_key(&self, key: &str, behaviour: Behaviour) {
        self.state.by_key.lock().unwrap().insert(key.to_owned(), behaviour);
    }

    /// How the next request is answered (queued behaviours come first, in order).
    pub fn then(&self, behaviour: Behaviour) {
        self.state.queue.lock().unwrap().push_back(behaviour);
    }

    /// Changes the answers' content, timing or usage.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.state.script.lock().unwrap());
    }

    /// The current script.
    pub fn current_script(&self) -> Script {
        self.state.script.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The provider key of every request, in order.
    pub fn keys(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|seen| seen.key).collect()
    }

    /// The exact bytes of a successful stream in `format` for `model`, with the usage chunk
    /// when `include_usage` (OpenAI) is set.
    pub fn stream_body(&self, format: Format, model: &str, include_usage: bool) -> String {
        let script = self.current_script();
        events(&self.state.name, &script, format, model, include_usage).concat()
    }

    /// The exact JSON of a plain answer in `format` for `model`.
    pub fn json_body(&self, format: Format, model: &str) -> String {
        json_answer(&self.state.name, &self.current_script(), format, model)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
}

async fn serve(state: Arc<State>, request: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let key = presented_key(&parts.headers);
    let path = parts.uri.path().to_owned();
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(SeenRequest {
        path: path.clone(),
        key: key.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let behaviour = state.queue.lock().unwrap().pop_front().unwrap_or_else(|| {
        let by_key = key.as_ref().and_then(|k| state.by_key.lock().unwrap().get(k).cloned());
        by_key.unwrap_or_else(|| state.default.lock().unwrap().clone())
    });
    let Some(format) = Format::of(&path) else {
        return status(StatusCode::NOT_FOUND, "{\"error\":{\"message\":\"no such path\"}}");
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = json["model"].as_str().unwrap_or("unknown").to_owned();
    let stream = json["stream"] == true;
    let include_usage = json["stream_options"]["include_usage"] == true;
    let script = state.script.lock().unwrap().clone();
    let error = |code: StatusCode, kind: &str, message: &str| {
        let body = match format {
            Format::Anthropic => serde_json::json!({
                "type": "error", "error": {"type": kind, "message": message}
            }),
            _ => serde_json::json!({
                "error": {"message": message, "type": kind, "param": null, "code": kind}
            }),
        };
        status(code, &body.to_string())
    };
    match behaviour {
        Behaviour::RateLimited { retry_after } => {
            let mut response =
                error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "Rate limit reached");
            let headers = response.headers_mut();
            headers.insert("retry-after", retry_after.into());
            headers
                .insert("x-ratelimit-reset-requests", format!("{retry_after}s").parse().unwrap());
            response
        }
        Behaviour::Unauthorized => {
            error(StatusCode::UNAUTHORIZED, "authentication_error", "Incorrect API key provided")
        }
        Behaviour::ServerError => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "The server had an error")
        }
        Behaviour::FailsBeforeFirstEvent => {
            let (sender, response) = event_stream();
            tokio::spawn(async move {
                tokio::time::sleep(script.first_delay).await;
                drop(sender);
            });
            response
        }
        Behaviour::ErrorEvent => {
            let (mut sender, response) = event_stream();
            let event = match format {
                Format::Anthropic => {
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
                }
                _ => {
                    "data: {\"error\":{\"message\":\"The server is overloaded\",\"type\":\"server_error\"}}\n\n"
                }
            };
            tokio::spawn(async move {
                let _ = sender.send_data(Bytes::from_static(event.as_bytes())).await;
            });
            response
        }
        Behaviour::Stalls => {
            let (sender, response) = event_stream();
            tokio::spawn(async move {
                // Holds the stream open without a byte; a test's timeouts end it sooner.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(sender);
            });
            response
        }
        Behaviour::Answer | Behaviour::BreaksAfter(_) if stream => {
            let events = events(&state.name, &script, format, &model, include_usage);
            let breaks_after = match behaviour {
                Behaviour::BreaksAfter(count) => Some(count),
                _ => None,
            };
            let (mut sender, response) = event_stream();
            tokio::spawn(async move {
                tokio::time::sleep(script.first_delay).await;
                for (index, event) in events.into_iter().enumerate() {
                    if breaks_after == Some(index) {
                        return;
                    }
                    if index > 0 {
                        tokio::time::sleep(script.gap).await;
                    }
                    if sender.send_data(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
            });
            response
        }
        Behaviour::Answer | Behaviour::BreaksAfter(_) => {
            tokio::time::sleep(script.first_delay).await;
            let mut response = full(json_answer(&state.name, &script, format, &model));
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            response
        }
    }
}

fn status(code: StatusCode, body: &str) -> Response<TestBody> {
    let mut response = full(body.to_owned());
    *response.status_mut() = code;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

fn event_stream() -> (http_body_util::channel::Sender<Bytes>, Response<TestBody>) {
    let (sender, mut response) = channel_response(1);
    response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    (sender, response)
}

/// The events of a successful stream.
fn events(
    name: &str,
    script: &Script,
    format: Format,
    model: &str,
    include_usage: bool,
) -> Vec<String> {
    let input = script.input_tokens;
    let cached = script.cached_tokens;
    let output = script.output_tokens();
    let model = serde_json::Value::String(model.to_owned());
    match format {
        Format::Anthropic => {
            let mut events = vec![
                format!(
                    "event: message_start\ndata: {}\n\n",
                    serde_json::json!({"type":"message_start","message":{
                        "id": format!("msg_{name}"), "type":"message", "role":"assistant",
                        "model": model, "content": [], "stop_reason": null,
                        "usage": {"input_tokens": input - cached, "output_tokens": 1,
                                  "cache_read_input_tokens": cached}}})
                ),
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
            ];
            for piece in &script.pieces {
                events.push(format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    serde_json::json!({"type":"content_block_delta","index":0,
                        "delta":{"type":"text_delta","text": piece}})
                ));
            }
            events.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_owned());
            events.push(format!(
                "event: message_delta\ndata: {}\n\n",
                serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},
                    "usage":{"output_tokens": output}})
            ));
            events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned());
            events
        }
        Format::OpenAiChat | Format::OpenAiEmbeddings => {
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                let mut chunk = serde_json::json!({
                    "id": format!("chatcmpl-{name}"), "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                });
                if include_usage {
                    chunk["usage"] = serde_json::Value::Null;
                }
                format!("data: {chunk}\n\n")
            };
            let mut events = vec![chunk(
                serde_json::json!({"role":"assistant","content":""}),
                serde_json::Value::Null,
            )];
            for piece in &script.pieces {
                events.push(chunk(serde_json::json!({"content": piece}), serde_json::Value::Null));
            }
            events.push(chunk(serde_json::json!({}), "stop".into()));
            if include_usage {
                let usage = serde_json::json!({
                    "id": format!("chatcmpl-{name}"), "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model, "choices": [],
                    "usage": {"prompt_tokens": input, "completion_tokens": output,
                              "total_tokens": input + output,
                              "prompt_tokens_details": {"cached_tokens": cached}},
                });
                events.push(format!("data: {usage}\n\n"));
            }
            events.push("data: [DONE]\n\n".to_owned());
            events
        }
    }
}

/// A plain (not streamed) answer.
fn json_answer(name: &str, script: &Script, format: Format, model: &str) -> String {
    let input = script.input_tokens;
    let cached = script.cached_tokens;
    let output = script.output_tokens();
    let text = script.pieces.concat();
    let body = match format {
        Format::Anthropic => serde_json::json!({
            "id": format!("msg_{name}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": input - cached, "output_tokens": output,
                      "cache_read_input_tokens": cached},
        }),
        Format::OpenAiChat => serde_json::json!({
            "id": format!("chatcmpl-{name}"), "object": "chat.completion",
            "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output,
                      "total_tokens": input + output,
                      "prompt_tokens_details": {"cached_tokens": cached}},
        }),
        Format::OpenAiEmbeddings => serde_json::json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "usage": {"prompt_tokens": input, "total_tokens": input},
        }),
    };
    body.to_string()
}
