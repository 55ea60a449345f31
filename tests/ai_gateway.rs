//! AI routes end to end, in process, against the mock provider: virtual keys and their
//! refusals in each provider's error shape, budgets in requests and tokens, usage read from
//! streams (with `include_usage` added and its chunk removed), fallback across a key pool and
//! provider tiers before the first byte and never after it, model aliases per tier, and the
//! exact response cache; virtual keys issued and withdrawn through the key file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use http::StatusCode;
use sluice::gateway::virtual_key::hash;
use support::ai::{Behaviour, Format, MockProvider};
use support::client::direct;
use support::config::{ADMIN, REVERSE, listener};
use support::observe::{sample, scrape_until};
use support::proxy::TestProxy;
use support::within;

const ALICE: &str = "sk-virtual-alice-0123456789";
const BOB: &str = "sk-virtual-bob-0123456789";

/// A reverse listener, the admin listener, virtual keys alice (any route or model) and bob
/// (`keys` adds his limits), then `routes`.
fn config(bob: &str, routes: &str) -> String {
    format!(
        "{}{ADMIN}\
         [[gateway.virtual_key]]\nname = \"alice\"\nhash = \"{}\"\n\
         [[gateway.virtual_key]]\nname = \"bob\"\nhash = \"{}\"\n{bob}\n{routes}",
        listener(REVERSE, ""),
        hash(ALICE),
        hash(BOB),
    )
}

/// An OpenAI route `/v1` on one provider key at `mock`, with extra `[route.ai]` lines.
fn single(mock: &MockProvider, ai: &str) -> String {
    format!(
        "[[route]]\nname = \"chat\"\nprefix = \"/v1\"\nupstream = \"{}\"\n\
         [route.headers.request]\nset = {{ authorization = \"Bearer sk-provider\" }}\n\
         [route.ai]\nprovider = \"openai\"\n{ai}\n",
        mock.url("/v1")
    )
}

/// An OpenAI route `/v1` over targets `(name, mock, tier, key)`, with extra `[route.ai]` lines.
fn pool(targets: &[(&str, &MockProvider, u8, &str)], ai: &str) -> String {
    let mut text = format!(
        "[[route]]\nname = \"chat\"\nprefix = \"/v1\"\n[route.ai]\nprovider = \"openai\"\n{ai}\n"
    );
    for (name, mock, tier, key) in targets {
        text.push_str(&format!(
            "[[route.target]]\nname = \"{name}\"\nurl = \"{}\"\ntier = {tier}\n\
             [route.target.headers.request]\nset = {{ authorization = \"Bearer {key}\" }}\n",
            mock.url("/v1")
        ));
    }
    text
}

async fn chat(proxy: &TestProxy, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = direct()
        .post(format!("http://{}/v1/chat/completions", proxy.addr))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    within(request.send()).await.unwrap()
}

const STREAM: &str =
    r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
const PLAIN: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"Hi"}]}"#;

async fn text(response: reqwest::Response) -> String {
    within(response.text()).await.unwrap()
}

#[tokio::test]
async fn missing_or_unknown_virtual_keys_get_401_in_the_providers_shape() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, ""))).await;
    for key in [None, Some("sk-guess")] {
        let response = chat(&proxy, key, PLAIN).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    assert_eq!(mock.requests(), 0);

    // Anthropic's shape, and its x-api-key header.
    let anthropic = format!(
        "[[route]]\nname = \"claude\"\nprefix = \"/anthropic\"\nupstream = \"{}\"\n\
         [route.ai]\nprovider = \"anthropic\"\n",
        mock.url("/v1")
    );
    let proxy = TestProxy::start(&config("", &anthropic)).await;
    let url = format!("http://{}/anthropic/messages", proxy.addr);
    let response = within(direct().post(&url).header("x-api-key", "sk-guess").body("{}").send())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let body = r#"{"model":"claude-test","max_tokens":10,"messages":[]}"#;
    let response =
        within(direct().post(&url).header("x-api-key", ALICE).body(body).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(mock.seen()[0].path, "/v1/messages");
    assert!(!mock.seen()[0].headers.contains_key("x-api-key"), "the virtual key stays here");
}

#[tokio::test]
async fn the_virtual_key_stays_here_and_the_provider_key_goes_upstream() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, ""))).await;
    let response = chat(&proxy, Some(ALICE), PLAIN).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, mock.json_body(Format::OpenAiChat, "gpt-test"));
    assert_eq!(mock.keys(), [Some("sk-provider".to_owned())]);
    let seen = mock.seen();
    let all: String = seen[0].headers.iter().map(|(_, v)| v.to_str().unwrap_or("")).collect();
    assert!(!all.contains(ALICE), "{all}");
}

#[tokio::test]
async fn keys_are_held_to_their_routes_and_models() {
    let mock = MockProvider::start("a").await;
    let bob = "routes = [\"chat\"]\nmodels = [\"gpt-small*\"]\n";
    let proxy = TestProxy::start(&config(bob, &single(&mock, ""))).await;
    let response = chat(&proxy, Some(BOB), PLAIN).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let error: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(error["error"]["code"], "model_not_allowed");
    let allowed = r#"{"model":"gpt-small-1","messages":[]}"#;
    assert_eq!(chat(&proxy, Some(BOB), allowed).await.status(), StatusCode::OK);
    // A model given twice is refused: the provider might read the other one.
    let smuggled = r#"{"model":"gpt-small-1","messages":[],"model":"gpt-test"}"#;
    let response = chat(&proxy, Some(BOB), smuggled).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn a_spent_request_budget_is_refused_with_retry_after() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("requests_per_minute = 2\n", &single(&mock, ""))).await;
    for _ in 0..2 {
        assert_eq!(chat(&proxy, Some(BOB), PLAIN).await.status(), StatusCode::OK);
    }
    let refused = chat(&proxy, Some(BOB), PLAIN).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let error: serde_json::Value = serde_json::from_str(&text(refused).await).unwrap();
    assert_eq!(error["error"]["code"], "requests_per_minute_exceeded");
    assert_eq!(error["error"]["type"], "requests");
    // Alice has no budget.
    assert_eq!(chat(&proxy, Some(ALICE), PLAIN).await.status(), StatusCode::OK);
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn tokens_are_charged_from_the_usage_the_provider_reported() {
    let mock = MockProvider::start("a").await;
    // 12 prompt + 5 completion tokens per answer: the second answer spends the 30.
    let proxy = TestProxy::start(&config("tokens_per_day = 30\n", &single(&mock, ""))).await;
    assert!(!text(chat(&proxy, Some(BOB), STREAM).await).await.is_empty());
    assert_eq!(chat(&proxy, Some(BOB), PLAIN).await.status(), StatusCode::OK);
    let refused = chat(&proxy, Some(BOB), PLAIN).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let error: serde_json::Value = serde_json::from_str(&text(refused).await).unwrap();
    assert_eq!(error["error"]["code"], "tokens_per_day_exceeded");
    assert_eq!(error["error"]["type"], "tokens");
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn include_usage_is_added_and_its_chunk_never_reaches_the_client() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, ""))).await;
    let received = text(chat(&proxy, Some(ALICE), STREAM).await).await;
    assert_eq!(mock.seen()[0].json()["stream_options"]["include_usage"], true);
    let upstream = mock.stream_body(Format::OpenAiChat, "gpt-test", true);
    let usage_chunk =
        upstream.split_inclusive("\n\n").find(|e| e.contains("\"choices\":[]")).unwrap();
    assert_eq!(received, upstream.replace(usage_chunk, ""));

    // The usage still reached the metrics.
    let admin = proxy.admin_url("/metrics");
    let labels = r#"route="chat",model="gpt-test",virtual_key="alice",key_id="""#;
    let samples = scrape_until(&admin, |s| {
        sample(s, &format!("sluice_ai_tokens_total{{{labels},kind=\"output\"}}")) > 0.0
    })
    .await;
    let script = mock.current_script();
    let tokens = |kind: &str| {
        sample(&samples, &format!("sluice_ai_tokens_total{{{labels},kind=\"{kind}\"}}"))
    };
    assert_eq!(tokens("input"), script.input_tokens as f64);
    assert_eq!(tokens("output"), script.output_tokens() as f64);
    assert_eq!(tokens("cached"), script.cached_tokens as f64);

    // A client that asked for usage itself gets the stream exactly as the provider sent it.
    let asked = r#"{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true}}"#;
    let received = text(chat(&proxy, Some(ALICE), asked).await).await;
    assert_eq!(received, upstream);
}

#[tokio::test]
async fn a_429_moves_to_the_next_key_and_rests_the_key() {
    let mock = MockProvider::start("a").await;
    mock.on_key("sk-a", Behaviour::RateLimited { retry_after: 30 });
    let targets = [("key-a", &mock, 0, "sk-a"), ("key-b", &mock, 0, "sk-b")];
    let proxy = TestProxy::start(&config("", &pool(&targets, ""))).await;
    for _ in 0..3 {
        let response = chat(&proxy, Some(ALICE), STREAM).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = text(response).await;
        assert_eq!(body, strip_usage(&mock.stream_body(Format::OpenAiChat, "gpt-test", true)));
    }
    let keys: Vec<String> = mock.keys().into_iter().flatten().collect();
    // Round robin starts somewhere; key-a is tried at most once, then rests.
    assert_eq!(keys.iter().filter(|k| *k == "sk-a").count(), 1, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| *k == "sk-b").count(), 3, "{keys:?}");
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, r#"sluice_ai_key_cooldowns_total{route="chat",key_id="key-a"}"#) == 1.0
    })
    .await;
    assert_eq!(
        sample(&samples, r#"sluice_ai_fallbacks_total{route="chat",reason="rate_limited"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_key_the_provider_refuses_is_taken_out() {
    let mock = MockProvider::start("a").await;
    mock.on_key("sk-revoked", Behaviour::Unauthorized);
    let targets = [("old", &mock, 0, "sk-revoked"), ("new", &mock, 0, "sk-good")];
    let proxy = TestProxy::start(&config("", &pool(&targets, ""))).await;
    for _ in 0..4 {
        assert_eq!(chat(&proxy, Some(ALICE), PLAIN).await.status(), StatusCode::OK);
    }
    let keys: Vec<String> = mock.keys().into_iter().flatten().collect();
    assert!(keys.iter().filter(|k| *k == "sk-revoked").count() <= 1, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| *k == "sk-good").count(), 4, "{keys:?}");
}

#[tokio::test]
async fn a_refused_key_is_said_loudly_without_the_key() {
    let mock = MockProvider::start("a").await;
    mock.on_key("sk-revoked", Behaviour::Unauthorized);
    // The refused key alone in tier 0: every request tries it until it is out.
    let targets = [("old", &mock, 0, "sk-revoked"), ("new", &mock, 1, "sk-good")];
    let proxy = TestProxy::start(&config("", &pool(&targets, ""))).await;
    for _ in 0..3 {
        assert_eq!(chat(&proxy, Some(ALICE), PLAIN).await.status(), StatusCode::OK);
    }
    let keys: Vec<String> = mock.keys().into_iter().flatten().collect();
    assert_eq!(keys, ["sk-revoked", "sk-good", "sk-good", "sk-good"]);
    // Counted by the key's id (the key itself is never a label), with the fallback it caused.
    let series = r#"sluice_ai_key_removals_total{route="chat",key_id="old"}"#;
    let admin = proxy.admin_url("/metrics");
    let samples = scrape_until(&admin, |s| sample(s, series) == 1.0).await;
    let fallbacks = r#"sluice_ai_fallbacks_total{route="chat",reason="key_refused"}"#;
    assert_eq!(sample(&samples, fallbacks), 1.0);
    assert!(
        !within(direct().get(&admin).send())
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("sk-revoked")
    );
}

#[tokio::test]
async fn a_routes_own_budget_holds_across_its_clients() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, "requests_per_minute = 2\n"))).await;
    assert_eq!(chat(&proxy, Some(ALICE), PLAIN).await.status(), StatusCode::OK);
    assert_eq!(chat(&proxy, Some(BOB), PLAIN).await.status(), StatusCode::OK);
    let refused = chat(&proxy, Some(ALICE), PLAIN).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let series = r#"sluice_ai_budget_refusals_total{route="chat",holder="route",name="chat",limit="requests_per_minute"}"#;
    scrape_until(&proxy.admin_url("/metrics"), |s| sample(s, series) == 1.0).await;
    assert_eq!(mock.requests(), 2);
}

/// The stream as the client sees it when sluice added `include_usage`.
fn strip_usage(stream: &str) -> String {
    stream.split_inclusive("\n\n").filter(|e| !e.contains("\"choices\":[]")).collect()
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_falls_back_to_the_next_tier() {
    for failure in [Behaviour::FailsBeforeFirstEvent, Behaviour::ErrorEvent, Behaviour::Stalls] {
        let first = MockProvider::start("first").await;
        let second = MockProvider::start("second").await;
        first.set_default(failure.clone());
        let targets = [("primary", &first, 0, "sk-1"), ("backup", &second, 1, "sk-2")];
        let ai = "first_event_timeout = \"300ms\"\n";
        let proxy = TestProxy::start(&config("", &pool(&targets, ai))).await;
        let response = chat(&proxy, Some(ALICE), STREAM).await;
        assert_eq!(response.status(), StatusCode::OK, "{failure:?}");
        // Byte for byte the second provider's stream: nothing of the first reached the client.
        let expected = strip_usage(&second.stream_body(Format::OpenAiChat, "gpt-test", true));
        assert_eq!(text(response).await, expected, "{failure:?}");
        assert_eq!((first.requests(), second.requests()), (1, 1), "{failure:?}");
    }
}

#[tokio::test]
async fn nothing_is_tried_again_once_the_first_byte_went_out() {
    let first = MockProvider::start("first").await;
    let second = MockProvider::start("second").await;
    first.set_default(Behaviour::BreaksAfter(3));
    let targets = [("primary", &first, 0, "sk-1"), ("backup", &second, 1, "sk-2")];
    let proxy = TestProxy::start(&config("", &pool(&targets, ""))).await;
    let response = chat(&proxy, Some(ALICE), STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = text(response).await;
    let full = first.stream_body(Format::OpenAiChat, "gpt-test", true);
    let events: Vec<&str> = full.split_inclusive("\n\n").take(3).collect();
    assert_eq!(received, events.concat());
    assert_eq!(second.requests(), 0);
}

#[tokio::test]
async fn aliases_name_each_tiers_own_model() {
    let first = MockProvider::start("first").await;
    let second = MockProvider::start("second").await;
    first.set_default(Behaviour::ServerError);
    let targets = [("primary", &first, 0, "sk-1"), ("backup", &second, 1, "sk-2")];
    let ai = "models = { fast = \"gpt-small\" }\n\
              [[route.ai.tier]]\ntier = 1\nprovider = \"openai-compatible\"\n\
              models = { fast = \"llama-small\" }\n";
    let proxy = TestProxy::start(&config("", &pool(&targets, ai))).await;
    let body = r#"{"model":"fast","messages":[{"role":"user","content":"Hi"}]}"#;
    let response = chat(&proxy, Some(ALICE), body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, second.json_body(Format::OpenAiChat, "llama-small"));
    assert_eq!(first.seen()[0].json()["model"], "gpt-small");
    assert_eq!(second.seen()[0].json()["model"], "llama-small");
    assert_eq!(second.seen()[0].json()["messages"][0]["content"], "Hi");
}

#[tokio::test]
async fn when_every_key_fails_the_last_answer_stands() {
    let mock = MockProvider::start("a").await;
    mock.set_default(Behaviour::RateLimited { retry_after: 5 });
    let targets = [("key-a", &mock, 0, "sk-a"), ("key-b", &mock, 0, "sk-b")];
    let proxy = TestProxy::start(&config("", &pool(&targets, ""))).await;
    let response = chat(&proxy, Some(ALICE), PLAIN).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(mock.requests(), 2);
    // Both keys rest now: the next request is refused at once in the provider's shape.
    let response = chat(&proxy, Some(ALICE), PLAIN).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(error["error"]["code"], "no_healthy_upstream");
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn an_exact_repeat_is_answered_from_the_cache_as_a_stream() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, "cache = true\n"))).await;
    let first = chat(&proxy, Some(ALICE), STREAM).await;
    assert_eq!(first.headers()["cache-status"], "sluice; fwd=miss; stored");
    let first = text(first).await;
    // The same request written differently is the same request.
    let again =
        r#"{ "stream": true, "messages": [{"content":"Hi","role":"user"}], "model": "gpt-test" }"#;
    let second = chat(&proxy, Some(ALICE), again).await;
    assert_eq!(second.headers()["cache-status"], "sluice; hit");
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    assert_eq!(text(second).await, first);
    assert_eq!(mock.requests(), 1);
    // Another body is another answer.
    let other = chat(&proxy, Some(ALICE), PLAIN).await;
    assert_eq!(other.headers()["cache-status"], "sluice; fwd=miss; stored");
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_anything_is_sent() {
    let mock = MockProvider::start("a").await;
    let proxy = TestProxy::start(&config("", &single(&mock, "max_request_bytes = 2048\n"))).await;
    let big = format!(
        r#"{{"model":"gpt-test","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let response = chat(&proxy, Some(ALICE), &big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn events_reach_the_client_as_the_provider_sends_them() {
    let mock = MockProvider::start("a").await;
    mock.script(|s| s.gap = Duration::from_millis(150));
    let proxy = TestProxy::start(&config("", &single(&mock, ""))).await;
    let started = std::time::Instant::now();
    let response = chat(&proxy, Some(ALICE), STREAM).await;
    let mut events = support::sse::Events::new(response);
    let first = events.next().await.unwrap();
    let first_at = started.elapsed();
    assert!(first.contains("\"role\":\"assistant\""), "{first}");
    let mut count = 1;
    while events.next().await.is_some() {
        count += 1;
    }
    // Role chunk, five pieces, the final chunk and [DONE]; the usage chunk was removed.
    assert_eq!(count, mock.current_script().pieces.len() + 3);
    // The provider paused 150 ms before each of the 7 later events: the first was not held
    // back until the end.
    assert!(started.elapsed() >= first_at + Duration::from_millis(150 * 6), "{first_at:?}");
}

#[tokio::test]
async fn keys_issued_in_the_key_file_come_and_go_without_a_reload() {
    let mock = MockProvider::start("a").await;
    let dir = support::tls::test_dir("ai-key-file");
    let file = dir.join("keys.toml");
    let entry =
        |name: &str, key: &str| format!("[[key]]\nname = \"{name}\"\nhash = \"{}\"\n", hash(key));
    std::fs::write(&file, entry("carol", "sk-virtual-carol-0123456789")).unwrap();
    let gateway = format!(
        "[gateway]\nvirtual_keys_file = {}\nvirtual_keys_check_interval = \"20ms\"\n",
        support::tls::toml_path(&file)
    );
    let proxy =
        TestProxy::start(&format!("{}{gateway}{}", listener(REVERSE, ""), single(&mock, ""))).await;
    let carol = "sk-virtual-carol-0123456789";
    let dave = "sk-virtual-dave-0123456789";
    assert_eq!(chat(&proxy, Some(carol), PLAIN).await.status(), StatusCode::OK);
    assert_eq!(chat(&proxy, Some(dave), PLAIN).await.status(), StatusCode::UNAUTHORIZED);

    // Carol's key is withdrawn and Dave's issued: the file is read again when it changes.
    std::fs::write(&file, format!("{}\n# v2\n", entry("dave", dave))).unwrap();
    within(async {
        while chat(&proxy, Some(dave), PLAIN).await.status() != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(chat(&proxy, Some(carol), PLAIN).await.status(), StatusCode::UNAUTHORIZED);
}
