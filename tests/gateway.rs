//! The AI-gateway scenario end to end with the real binary: a route injects an API key from
//! sluice's environment, SSE completions stream through event by event, and the key never
//! reaches a log line or `sluice check` output. Also the `--route` command-line form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::client::{direct, raw_get, status_of};
use support::config::write_config;
use support::process::{SLUICE, Sluice};
use support::sse::Events;
use support::upstream::{Origin, full};
use support::within;
use tokio::sync::mpsc;

const KEY: &str = "sk-test-123";

/// The gateway config: one reverse-only listener and an `/defm` route that sets the key.
fn gateway_config(upstream: SocketAddr) -> String {
    format!(
        "[[listener]]\n\
         address = \"127.0.0.1:0\"\n\
         forward = false\n\
         reverse = true\n\n\
         [[route]]\n\
         name = \"openai\"\n\
         prefix = \"/defm\"\n\
         upstream = \"http://{upstream}/v1\"\n\
         [route.headers.request]\n\
         set = {{ authorization = \"Bearer ${{OPENAI_API_KEY}}\" }}\n"
    )
}

/// The sluice binary running as a child with `args`, logging at debug level, with
/// `OPENAI_API_KEY` only when `env` sets it.
async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Sluice {
    let mut command = support::process::command("debug");
    command.args(args).env_remove("OPENAI_API_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    Sluice::spawn(command).await
}

const COMPLETION_PIECES: [&str; 5] = ["Hel", "lo", ", wor", "ld", "!"];

fn completion_event(index: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        COMPLETION_PIECES[index]
    )
}

/// A local OpenAI-compatible server: `POST /v1/chat/completions` with the right key streams
/// one SSE event per completion piece, then `data: [DONE]`. After each event it waits for the
/// test to acknowledge that the client received it, so a proxy that buffers deadlocks the
/// exchange instead of passing it.
struct FakeOpenAi {
    origin: Origin,
    /// Events handed to the connection so far.
    produced: Arc<AtomicUsize>,
    /// One message per event the client has received.
    acks: mpsc::UnboundedSender<()>,
    /// Request bodies received.
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl FakeOpenAi {
    async fn start() -> FakeOpenAi {
        let produced = Arc::new(AtomicUsize::new(0));
        let (acks, ack_rx) = mpsc::unbounded_channel::<()>();
        let ack_rx = Arc::new(tokio::sync::Mutex::new(ack_rx));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let origin = Origin::start({
            let produced = produced.clone();
            let bodies = bodies.clone();
            move |request: Request<Incoming>| {
                let produced = produced.clone();
                let ack_rx = ack_rx.clone();
                let bodies = bodies.clone();
                async move {
                    let authorized = request
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == format!("Bearer {KEY}").as_str());
                    if !authorized {
                        let mut response = full("{\"error\":{\"message\":\"invalid api key\"}}");
                        *response.status_mut() = StatusCode::UNAUTHORIZED;
                        return response;
                    }
                    if request.method() != "POST" || request.uri() != "/v1/chat/completions" {
                        let mut response = full("not found");
                        *response.status_mut() = StatusCode::NOT_FOUND;
                        return response;
                    }
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    bodies.lock().unwrap().push(body);
                    let (mut sender, response) = support::sse::response();
                    tokio::spawn(async move {
                        let mut ack_rx = ack_rx.lock().await;
                        for index in 0..COMPLETION_PIECES.len() {
                            // A model's pace between tokens; ordering is proven by the acks.
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let event = Bytes::from(completion_event(index));
                            if sender.send_data(event).await.is_err() {
                                return;
                            }
                            produced.fetch_add(1, Ordering::SeqCst);
                            if ack_rx.recv().await.is_none() {
                                return;
                            }
                        }
                        let _ = sender.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
                    });
                    response
                }
            }
        })
        .await;
        FakeOpenAi { origin, produced, acks, bodies }
    }
}

#[tokio::test]
async fn gateway_injects_the_key_and_streams_completions_event_by_event() {
    let fake = FakeOpenAi::start().await;
    // The fake really checks the key: without it, 401.
    let unauthenticated =
        within(direct().post(fake.origin.url("/v1/chat/completions")).body("{}").send())
            .await
            .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    let config = write_config("gateway-stream.toml", &gateway_config(fake.origin.addr));
    let sluice = spawn(&["--config", config.to_str().unwrap()], &[("OPENAI_API_KEY", KEY)]).await;
    assert!(sluice.listening_line.contains("modes=reverse"), "{}", sluice.listening_line);

    let request_body =
        r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let response = within(
        direct()
            .post(format!("http://{}/defm/chat/completions", sluice.addr))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(request_body)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let mut received = Events::new(response);
    let mut events = Vec::new();
    while let Some(event) = received.next().await {
        if event != "data: [DONE]\n\n" {
            // The server has produced exactly this event and no later one.
            assert_eq!(
                fake.produced.load(Ordering::SeqCst),
                events.len() + 1,
                "event {} arrived out of step",
                events.len()
            );
            fake.acks.send(()).unwrap();
        }
        events.push(event);
    }
    let mut expected: Vec<String> = (0..COMPLETION_PIECES.len()).map(completion_event).collect();
    expected.push("data: [DONE]\n\n".to_owned());
    assert_eq!(events, expected);

    let seen = fake.origin.seen();
    assert_eq!(seen.len(), 2, "the direct 401 probe, then the proxied request: {seen:?}");
    let seen = &seen[1];
    assert_eq!(seen.uri, "/v1/chat/completions");
    let authorizations: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(authorizations, [format!("Bearer {KEY}").as_str()]);
    assert_eq!(seen.headers["host"], fake.origin.addr.to_string());
    assert_eq!(
        fake.bodies.lock().unwrap().as_slice(),
        [Bytes::from_static(request_body.as_bytes())]
    );

    let stderr = sluice.stop().await;
    assert!(stderr.contains("listening"), "stderr was captured: {stderr}");
    assert!(!stderr.contains(KEY), "the API key reached the log:\n{stderr}");
}

#[tokio::test]
async fn client_supplied_authorization_is_replaced_by_the_key() {
    let fake = FakeOpenAi::start().await;
    let config = write_config("gateway-replace.toml", &gateway_config(fake.origin.addr));
    let sluice = spawn(&["--config", config.to_str().unwrap()], &[("OPENAI_API_KEY", KEY)]).await;
    // A wrong path on the fake answers 404 after the key check, without streaming.
    let response = within(
        direct()
            .get(format!("http://{}/defm/models", sluice.addr))
            .header("authorization", "Bearer client-guess")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "the key check passed");
    let seen = fake.origin.only_request();
    let authorizations: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(authorizations, [format!("Bearer {KEY}").as_str()]);
    assert_eq!(seen.uri, "/v1/models");
    let stderr = sluice.stop().await;
    assert!(!stderr.contains(KEY), "the API key reached the log:\n{stderr}");
}

#[test]
fn check_prints_the_route_but_never_the_key() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write_config("gateway-check.toml", &gateway_config(upstream));
    let out = Command::new(SLUICE)
        .args(["check", "--config", config.to_str().unwrap()])
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("/defm"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9"), "{stdout}");
    assert!(!stdout.contains(KEY), "check printed the key: {stdout}");
    assert!(!stderr.contains(KEY), "check printed the key: {stderr}");
}

#[test]
fn check_without_the_env_var_fails_naming_it() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write_config("gateway-check-unset.toml", &gateway_config(upstream));
    let out = Command::new(SLUICE)
        .args(["check", "--config", config.to_str().unwrap()])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "accepted without the key: {stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
}

#[tokio::test]
async fn serving_without_the_env_var_fails_before_binding() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write_config("gateway-serve-unset.toml", &gateway_config(upstream));
    let out = within(
        tokio::process::Command::new(SLUICE)
            .args(["--config", config.to_str().unwrap()])
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
    assert!(!stderr.contains("listening"), "nothing may be bound: {stderr}");
}

#[tokio::test]
async fn cli_route_flag_serves_the_route_and_does_not_forward() {
    let origin = Origin::echo().await;
    let forward_target = Origin::echo().await;
    let route = format!("/defm/={}", origin.url(""));
    let sluice = spawn(&["--listen", "127.0.0.1:0", "--route", &route], &[]).await;
    assert!(sluice.listening_line.contains("modes=reverse"), "{}", sluice.listening_line);

    let response =
        within(direct().post(format!("http://{}/defm/x?y=1", sluice.addr)).body("routed").send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(within(response.text()).await.unwrap(), "routed");
    assert_eq!(origin.only_request().uri, "/x?y=1");

    // Absolute-form to another origin: no --forward, so it is not forwarded there.
    let target = forward_target.url("/elsewhere");
    let response = raw_get(sluice.addr, &target, &forward_target.addr.to_string(), "").await;
    assert_ne!(status_of(&response), 200, "{response}");
    assert!(forward_target.seen().is_empty(), "the request was forwarded");
    assert_eq!(forward_target.connections(), 0);
    assert_eq!(origin.seen().len(), 1);
    sluice.stop().await;
}
