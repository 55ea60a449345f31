//! Usage read from a real provider exchange (the mock AI provider over loopback, hyper's
//! client): what the tap counts matches what the mock sent, for OpenAI and Anthropic, plain
//! and streamed, and the bytes the reader receives are the provider's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice::gateway::tap::{ResponseFormat, UsageTap};
use sluice::gateway::usage::{Usage, UsageMeter};
use support::ai::{Behaviour, Format, MockProvider};
use support::within;

/// Posts `body` to the mock at `path` and reads the answer through a tap; returns the bytes
/// received and what the tap recorded.
async fn exchange(
    mock: &MockProvider,
    path: &str,
    body: &str,
    strip: bool,
) -> (String, sluice::gateway::usage::UsageRecord) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(mock.url(path))
        .header("authorization", "Bearer sk-provider")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = within(client.request(request)).await.unwrap();
    let format = ResponseFormat::of(response.headers().get("content-type")).unwrap();
    let meter = Arc::new(UsageMeter::new());
    let tap = UsageTap::new(response.into_body(), format, meter.clone(), strip);
    let bytes = within(tap.collect()).await.unwrap().to_bytes();
    (String::from_utf8(bytes.to_vec()).unwrap(), meter.snapshot())
}

fn expected(mock: &MockProvider) -> Usage {
    let script = mock.current_script();
    Usage {
        input_tokens: script.input_tokens,
        output_tokens: script.output_tokens(),
        cached_tokens: script.cached_tokens,
    }
}

#[tokio::test]
async fn openai_stream_usage_matches_what_the_provider_sent() {
    let mock = MockProvider::start("a").await;
    let body = r#"{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let (received, record) = exchange(&mock, "/v1/chat/completions", body, false).await;
    assert_eq!(received, mock.stream_body(Format::OpenAiChat, "gpt-test", true));
    assert_eq!(record.usage, Some(expected(&mock)));
    assert_eq!(record.model.as_deref(), Some("gpt-test"));
    assert!(record.first_event.is_some() && record.last_byte.is_some());
    assert_eq!(mock.keys(), [Some("sk-provider".to_owned())]);
}

#[tokio::test]
async fn the_added_usage_chunk_is_counted_but_not_delivered() {
    let mock = MockProvider::start("a").await;
    let body = r#"{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true}}"#;
    let (received, record) = exchange(&mock, "/v1/chat/completions", body, true).await;
    let full = mock.stream_body(Format::OpenAiChat, "gpt-test", true);
    let usage_event = full.split_inclusive("\n\n").find(|e| e.contains("\"choices\":[]")).unwrap();
    assert_eq!(received, full.replace(usage_event, ""));
    assert_eq!(record.usage, Some(expected(&mock)));
}

#[tokio::test]
async fn anthropic_stream_usage_matches_what_the_provider_sent() {
    let mock = MockProvider::start("b").await;
    mock.script(|s| s.pieces = (0..40).map(|i| format!("t{i} ")).collect());
    let body = r#"{"model":"claude-test","max_tokens":100,"stream":true,"messages":[]}"#;
    let (received, record) = exchange(&mock, "/v1/messages", body, false).await;
    assert_eq!(received, mock.stream_body(Format::Anthropic, "claude-test", false));
    assert_eq!(record.usage, Some(expected(&mock)));
    assert_eq!(record.usage.unwrap().output_tokens, 40);
    assert_eq!(record.model.as_deref(), Some("claude-test"));
    assert!(record.tokens_per_second().is_some());
}

#[tokio::test]
async fn json_usage_matches_for_every_format() {
    let mock = MockProvider::start("c").await;
    let cases = [
        ("/v1/chat/completions", Format::OpenAiChat, "gpt-test"),
        ("/v1/messages", Format::Anthropic, "claude-test"),
    ];
    for (path, format, model) in cases {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let (received, record) = exchange(&mock, path, &body, false).await;
        assert_eq!(received, mock.json_body(format, model));
        assert_eq!(record.usage, Some(expected(&mock)), "{path}");
    }
    let (_, record) =
        exchange(&mock, "/v1/embeddings", r#"{"model":"e","input":"x"}"#, false).await;
    assert_eq!(record.usage.unwrap().input_tokens, mock.current_script().input_tokens);
}

#[tokio::test]
async fn the_mock_misbehaves_on_request() {
    let mock = MockProvider::start("d").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |key: &str, body: &'static str| {
        Request::post(mock.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    mock.on_key("sk-limited", Behaviour::RateLimited { retry_after: 7 });
    mock.on_key("sk-revoked", Behaviour::Unauthorized);
    mock.then(Behaviour::ServerError);
    let response = within(client.request(post("sk-ok", "{}"))).await.unwrap();
    assert_eq!(response.status(), 500);
    let response = within(client.request(post("sk-limited", "{}"))).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let response = within(client.request(post("sk-revoked", "{}"))).await.unwrap();
    assert_eq!(response.status(), 401);

    // A 200 stream that ends before its first event, and one that stalls.
    mock.then(Behaviour::FailsBeforeFirstEvent);
    let response = within(client.request(post("sk-ok", r#"{"stream":true}"#))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(within(response.into_body().collect()).await.unwrap().to_bytes().is_empty());
    mock.then(Behaviour::Stalls);
    let response = within(client.request(post("sk-ok", r#"{"stream":true}"#))).await.unwrap();
    let mut body = response.into_body();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), body.frame()).await;
    assert!(waited.is_err(), "a stalled stream sends nothing");
    assert_eq!(mock.requests(), 5);
}
