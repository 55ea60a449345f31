//! AI routes as their users see them: OpenAI's own client library (`async-openai`) and curl
//! streaming through sluice with a virtual key, Anthropic's messages streamed with
//! `x-api-key`, the usage of each in the access log and the metrics, and a client kept on one
//! provider key (for the provider's prompt cache) while that key answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use futures_util::StreamExt;
use http::StatusCode;
use sluice::gateway::virtual_key::hash;
use support::ai::{Behaviour, Format, MockProvider};
use support::client::direct;
use support::config::{ADMIN, REVERSE, listener};
use support::observe::{log_lines, sample, scrape_until, text_fields};
use support::proxy::TestProxy;
use support::tls::toml_path;
use support::within;

const ALICE: &str = "sk-virtual-alice-0123456789";
const BOB: &str = "sk-virtual-bob-0123456789";

fn log_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ai-clients-{name}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A reverse listener, the admin listener, an access log at `log`, virtual keys alice and
/// bob, then `routes`.
fn config(log: &std::path::Path, routes: &str) -> String {
    format!(
        "{}{ADMIN}[access_log]\npath = {}\n\
         [[gateway.virtual_key]]\nname = \"alice\"\nhash = \"{}\"\n\
         [[gateway.virtual_key]]\nname = \"bob\"\nhash = \"{}\"\n{routes}",
        listener(REVERSE, ""),
        toml_path(log),
        hash(ALICE),
        hash(BOB),
    )
}

/// An OpenAI route `/v1` over provider keys `(name, key)` at `mock`, with extra route lines.
fn openai_pool(mock: &MockProvider, keys: &[(&str, &str)], extra: &str) -> String {
    let mut text = format!(
        "[[route]]\nname = \"chat\"\nprefix = \"/v1\"\n{extra}\n[route.ai]\nprovider = \"openai\"\n"
    );
    for (name, key) in keys {
        text.push_str(&format!(
            "[[route.target]]\nname = \"{name}\"\nurl = \"{}\"\n\
             [route.target.headers.request]\nset = {{ authorization = \"Bearer {key}\" }}\n",
            mock.url("/v1")
        ));
    }
    text
}

#[tokio::test]
async fn the_openai_client_library_streams_through_sluice_and_its_usage_is_logged() {
    let mock = MockProvider::start("a").await;
    let log = log_path("sdk");
    let routes = openai_pool(&mock, &[("key-1", "sk-provider-1")], "");
    let proxy = TestProxy::start(&config(&log, &routes)).await;

    let client = Client::with_config(
        OpenAIConfig::new().with_api_base(format!("http://{}/v1", proxy.addr)).with_api_key(ALICE),
    );
    let request = CreateChatCompletionRequestArgs::default()
        .model("gpt-test")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Hi")
            .build()
            .unwrap()
            .into()])
        .stream(true)
        .build()
        .unwrap();
    let mut stream = within(client.chat().create_stream(request)).await.unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(chunk) = within(stream.next()).await {
        let chunk = chunk.unwrap();
        // sluice asked for usage; the chunk that carries only usage is not the client's.
        assert!(chunk.usage.is_none(), "{chunk:?}");
        chunks += 1;
        for choice in chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    let script = mock.current_script();
    assert_eq!(text, script.pieces.concat());
    assert_eq!(chunks, script.pieces.len() + 2);
    // The provider saw its own key, never the virtual one.
    assert_eq!(mock.keys(), vec![Some("sk-provider-1".to_owned())]);

    let line = log_lines(&log, 1).await.remove(0);
    assert!(!line.contains(ALICE) && !line.contains("sk-provider-1"), "{line}");
    let fields = text_fields(&line);
    assert_eq!(fields["model"], "gpt-test");
    assert_eq!(fields["vkey"], "alice");
    assert_eq!(fields["key"], "key-1");
    assert_eq!(fields["tokens_in"], script.input_tokens.to_string());
    assert_eq!(fields["tokens_out"], script.output_tokens().to_string());
    assert_eq!(fields["tokens_cached"], script.cached_tokens.to_string());
    assert_eq!(fields["fallbacks"], "0");
    let ttft: f64 = fields["ttft_ms"].parse().unwrap();
    assert!(ttft > 0.0, "{line}");
    assert_ne!(fields["tps"], "-", "{line}");

    let labels = r#"route="chat",model="gpt-test",virtual_key="alice",key_id="key-1""#;
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, &format!("sluice_ai_requests_total{{{labels},status=\"2xx\"}}")) == 1.0
    })
    .await;
    let output = format!("sluice_ai_tokens_total{{{labels},kind=\"output\"}}");
    assert_eq!(sample(&samples, &output), script.output_tokens() as f64);
    let ttft = r#"sluice_ai_time_to_first_token_seconds_count{route="chat",model="gpt-test"}"#;
    assert_eq!(sample(&samples, ttft), 1.0);
}

#[tokio::test]
async fn the_openai_client_library_reads_refusals_in_openais_shape() {
    let mock = MockProvider::start("a").await;
    let log = log_path("sdk-refusal");
    let routes = openai_pool(&mock, &[("key-1", "sk-provider-1")], "");
    let proxy = TestProxy::start(&config(&log, &routes)).await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{}/v1", proxy.addr))
            .with_api_key("sk-not-issued-here"),
    );
    let request = CreateChatCompletionRequestArgs::default()
        .model("gpt-test")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let error = within(client.chat().create(request)).await.unwrap_err();
    let async_openai::error::OpenAIError::ApiError(api) = error else { panic!("{error:?}") };
    assert_eq!(api.code.as_deref(), Some("invalid_api_key"), "{api:?}");
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn anthropic_messages_stream_through_with_their_usage_counted() {
    let mock = MockProvider::start("a").await;
    let log = log_path("anthropic");
    let routes = format!(
        "[[route]]\nname = \"claude\"\nprefix = \"/anthropic\"\nupstream = \"{}\"\n\
         [route.headers.request]\nset = {{ x-api-key = \"sk-ant-provider\" }}\n\
         [route.ai]\nprovider = \"anthropic\"\n",
        mock.url("/v1")
    );
    let proxy = TestProxy::start(&config(&log, &routes)).await;
    let body = r#"{"model":"claude-test","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let response = within(
        direct()
            .post(format!("http://{}/anthropic/messages", proxy.addr))
            .header("x-api-key", BOB)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = within(response.text()).await.unwrap();
    // Byte for byte what the provider sent: nothing added, nothing held back.
    assert_eq!(received, mock.stream_body(Format::Anthropic, "claude-test", false));
    let seen = &mock.seen()[0];
    assert_eq!(seen.key.as_deref(), Some("sk-ant-provider"));
    assert!(seen.json().get("stream_options").is_none());

    let script = mock.current_script();
    let fields = text_fields(&log_lines(&log, 1).await[0]);
    assert_eq!(fields["vkey"], "bob");
    assert_eq!(fields["tokens_in"], script.input_tokens.to_string());
    assert_eq!(fields["tokens_out"], script.output_tokens().to_string());
    assert_eq!(fields["tokens_cached"], script.cached_tokens.to_string());
    let labels = r#"route="claude",model="claude-test",virtual_key="bob",key_id="""#;
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, &format!("sluice_ai_tokens_total{{{labels},kind=\"output\"}}")) > 0.0
    })
    .await;
    let input = format!("sluice_ai_tokens_total{{{labels},kind=\"input\"}}");
    assert_eq!(sample(&samples, &input), script.input_tokens as f64);
}

#[tokio::test]
async fn each_client_keeps_its_provider_key_while_that_key_answers() {
    let mock = MockProvider::start("a").await;
    let log = log_path("sticky");
    let keys = [("key-1", "sk-1"), ("key-2", "sk-2"), ("key-3", "sk-3"), ("key-4", "sk-4")];
    let routes = openai_pool(&mock, &keys, "balance = \"hash\"\nhash_on = \"virtual_key\"");
    let proxy = TestProxy::start(&config(&log, &routes)).await;
    let chat = |key: &'static str| {
        let url = format!("http://{}/v1/chat/completions", proxy.addr);
        async move {
            let response = within(
                direct()
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(r#"{"model":"gpt-test","messages":[]}"#)
                    .send(),
            )
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    for _ in 0..4 {
        chat(ALICE).await;
        chat(BOB).await;
    }
    let seen = mock.keys();
    let alice: Vec<_> = seen.iter().step_by(2).collect();
    let bob: Vec<_> = seen.iter().skip(1).step_by(2).collect();
    assert!(alice.iter().all(|k| *k == alice[0]), "{seen:?}");
    assert!(bob.iter().all(|k| *k == bob[0]), "{seen:?}");

    // When alice's key is rate limited she moves to another one, and stays there.
    let first = alice[0].clone().unwrap();
    mock.on_key(&first, Behaviour::RateLimited { retry_after: 60 });
    let before = mock.keys().len();
    for _ in 0..3 {
        chat(ALICE).await;
    }
    let after: Vec<_> = mock.keys()[before..].to_vec();
    assert_eq!(after[0].as_deref(), Some(first.as_str()), "{after:?}");
    let moved = &after[1];
    assert_ne!(moved.as_deref(), Some(first.as_str()));
    assert!(after[2..].iter().all(|k| k == moved), "{after:?}");
}

#[tokio::test]
async fn curl_streams_a_completion_through_sluice_as_the_provider_sent_it() {
    let mock = MockProvider::start("a").await;
    let log = log_path("curl");
    let routes = openai_pool(&mock, &[("key-1", "sk-provider-1")], "");
    let proxy = TestProxy::start(&config(&log, &routes)).await;
    let output = within(
        tokio::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "10", "-H", "content-type: application/json"])
            .arg("-H")
            .arg(format!("authorization: Bearer {ALICE}"))
            .args(["-d", r#"{"model":"gpt-test","stream":true,"messages":[]}"#])
            .arg(format!("http://{}/v1/chat/completions", proxy.addr))
            .output(),
    )
    .await
    .expect("curl is installed (tools/test installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The provider's stream without the usage chunk sluice asked for, byte for byte.
    let sent = mock.stream_body(Format::OpenAiChat, "gpt-test", true);
    let expected: String =
        sent.split_inclusive("\n\n").filter(|e| !e.contains("\"choices\":[]")).collect();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
}
