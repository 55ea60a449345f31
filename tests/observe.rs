//! Operating sluice: the access log (text and JSON lines for requests, tunnels, WebSockets and
//! failures, with secrets hidden), request ids, and the Prometheus metrics on the admin
//! listener (counters, histograms, gauges, rejections, TLS handshake failures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice::config::Config;
use support::client::{
    connect_tunnel, direct, http1_conn, https_direct, raw_exchange, status_of, via_proxy,
};
use support::config::{ADMIN, BOTH, REVERSE, listener, named_route, tls_listener};
use support::observe::{log_lines, request_line, sample, scrape, scrape_until, text_fields};
use support::proxy::TestProxy;
use support::tls::{TestCa, test_dir, toml_path};
use support::upstream::{Origin, TestBody, WsOrigin, black_hole, closed_port, full, tcp_echo};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// What the answering origin sends for every request: a fixed, known-length body.
const ANSWER: &str = "answer from the origin\n";

/// A fresh access-log path for test `name`.
fn log_path(name: &str) -> PathBuf {
    test_dir(&format!("observe-{name}")).join("access.log")
}

/// `[access_log]` writing to `path`, with extra keys `extra`.
fn access_log(path: &Path, extra: &str) -> String {
    format!("[access_log]\npath = {}\n{extra}\n", toml_path(path))
}

/// An origin that reads the whole request body and answers [`ANSWER`].
async fn answering_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let _ = request.into_body().collect().await;
        full(ANSWER)
    })
    .await
}

/// The whole access log as text.
fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Waits for the log's `count`-th line and returns every line, checking there are exactly
/// `count`.
async fn exactly_lines(path: &Path, count: usize) -> Vec<String> {
    let lines = log_lines(path, count).await;
    assert_eq!(lines.len(), count, "log lines: {lines:#?}");
    lines
}

/// A generated request id: 20 lowercase hex digits.
fn assert_generated_id(id: &str) {
    assert_eq!(id.len(), 20, "id {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "id {id:?}");
}

/// The value of header `name` in a response, as text.
fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers()))
        .to_str()
        .unwrap()
}

/// Every non-zero sample of metric family `name` (series starting `name{`, or exactly
/// `name`). Some series exist from the start at zero; leaving those out lets a comparison with
/// the expected non-zero series be exact.
fn family(samples: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|(series, _)| *series == name || series.starts_with(&format!("{name}{{")))
        .filter(|(_, value)| **value != 0.0)
        .map(|(series, value)| (series.clone(), *value))
        .collect()
}

/// The sum of every sample of family `name`.
fn family_total(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    family(samples, name).values().sum()
}

/// `(series, value)` pairs as a map, for comparing whole families.
fn expected(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(series, value)| (series.to_string(), *value)).collect()
}

// ---------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reverse_request_is_logged_with_id_bytes_upstream_and_hidden_secrets() {
    let origin = answering_origin().await;
    let path = log_path("reverse");
    let proxy = TestProxy::start(&format!(
        "{}{}{}",
        access_log(&path, "headers = [\"authorization\", \"cookie\", \"user-agent\"]"),
        listener(BOTH, ""),
        named_route("api", "/api", &origin.url(""), ""),
    ))
    .await;
    let body = "twenty-one bytes long";
    let response = within(
        direct()
            .post(format!("{}/api/items?page=2", proxy.url()))
            .header("authorization", "Bearer secret-token-123")
            .header("cookie", "session=abc")
            .header("user-agent", "observe-test/1.0")
            .body(body)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response_id = header(&response, "x-request-id").to_owned();
    assert_eq!(within(response.text()).await.unwrap(), ANSWER);

    let lines = exactly_lines(&path, 1).await;
    let line = &lines[0];
    let (client, request, status) = request_line(line);
    assert_eq!(client, "127.0.0.1");
    assert_eq!(request, "POST /api/items?page=2 HTTP/1.1");
    assert_eq!(status, 200);
    // The combined-log bytes field is the response body length.
    let after_status = line.split('"').nth(2).unwrap().split_whitespace().nth(1).unwrap();
    assert_eq!(after_status, ANSWER.len().to_string());

    let fields = text_fields(line);
    let id = &fields["id"];
    assert_generated_id(id);
    let seen = origin.only_request();
    assert_eq!(seen.headers["x-request-id"], id.as_str(), "the origin got the logged id");
    assert_eq!(&response_id, id, "the client got the logged id");
    assert_eq!(fields["mode"], "reverse");
    assert_eq!(fields["route"], "api");
    assert_eq!(fields["in"], body.len().to_string());
    assert_eq!(fields["out"], ANSWER.len().to_string());
    assert_eq!(fields["upstream"], origin.addr.to_string());
    let ttfb: f64 = fields["ttfb_ms"].parse().expect("ttfb_ms is a number");
    let duration: f64 = fields["duration_ms"].parse().expect("duration_ms is a number");
    assert!(ttfb >= 0.0 && ttfb <= duration, "ttfb {ttfb} duration {duration}");
    assert_eq!(fields["error"], "-");
    assert!(!fields.contains_key("close"), "only sessions have close=: {line}");
    assert_eq!(fields["authorization"], "***");
    assert_eq!(fields["cookie"], "***");
    assert_eq!(fields["user-agent"], "observe-test/1.0");
    assert!(line.contains(" authorization=\"***\""), "{line}");

    // The secrets reached the origin but never the log.
    assert_eq!(seen.headers["authorization"], "Bearer secret-token-123");
    let text = log_text(&path);
    for secret in ["secret-token-123", "session=abc", "abc\""] {
        assert!(!text.contains(secret), "{secret:?} leaked into the log: {text}");
    }
}

#[tokio::test]
async fn header_set_from_the_environment_is_logged_as_stars() {
    let origin = answering_origin().await;
    let path = log_path("env-header");
    let text = format!(
        "{}{}{}[route.headers.request.set]\n\"x-api-key\" = \"${{SLUICE_OBSERVE_TEST_KEY}}\"\n",
        access_log(&path, "headers = [\"x-api-key\", \"x-plain\"]"),
        listener(BOTH, ""),
        named_route("keyed", "/keyed", &origin.url(""), ""),
    );
    let env = |name: &str| {
        (name == "SLUICE_OBSERVE_TEST_KEY").then(|| "key-from-the-environment".to_owned())
    };
    let config = Config::from_toml_with_env(&text, "observe.toml", &env).unwrap();
    let proxy = TestProxy::with_config(config).await;

    let response = within(
        direct()
            .get(format!("{}/keyed/models", proxy.url()))
            .header("x-api-key", "client-sent-key-value")
            .header("x-plain", "shown-in-clear")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    within(response.text()).await.unwrap();
    assert_eq!(origin.only_request().headers["x-api-key"], "key-from-the-environment");

    let lines = exactly_lines(&path, 1).await;
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["x-api-key"], "***");
    assert_eq!(fields["x-plain"], "shown-in-clear");
    let text = log_text(&path);
    assert!(!text.contains("client-sent-key-value"), "{text}");
    assert!(!text.contains("key-from-the-environment"), "{text}");
}

#[tokio::test]
async fn forward_request_is_a_json_line_with_null_route_and_absolute_target() {
    let origin = answering_origin().await;
    let path = log_path("forward-json");
    let proxy = TestProxy::start(&format!(
        "{}{}",
        access_log(&path, "format = \"json\"\nheaders = [\"user-agent\"]"),
        listener(BOTH, "")
    ))
    .await;
    let target = origin.url("/page?x=1");
    let response =
        within(via_proxy(proxy.addr).get(&target).header("user-agent", "json-test/2").send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("x-request-id").is_none(),
        "no id is added to forward-proxy responses"
    );
    assert_eq!(within(response.text()).await.unwrap(), ANSWER);
    assert!(
        origin.only_request().headers.get("x-request-id").is_none(),
        "no id is added to forward-proxy requests"
    );

    let lines = exactly_lines(&path, 1).await;
    let json: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(json["mode"], "forward");
    assert!(json["route"].is_null(), "{json}");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["target"], target.as_str());
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["status"], 200);
    assert_eq!(json["bytes_in"], 0);
    assert_eq!(json["bytes_out"], ANSWER.len());
    assert_eq!(json["upstream"], origin.addr.to_string());
    assert!(json["upstream_ttfb_ms"].is_f64(), "{json}");
    assert!(json["duration_ms"].is_f64(), "{json}");
    assert!(json["error"].is_null(), "{json}");
    assert!(json.get("close").is_none(), "only sessions have close: {json}");
    assert_eq!(json["headers"], serde_json::json!({ "user-agent": "json-test/2" }));
    assert_generated_id(json["request_id"].as_str().unwrap());
    let client = json["client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1"), "{json}");
    assert!(json["time"].as_str().unwrap().ends_with('Z'), "{json}");
}

#[tokio::test]
async fn tunnel_is_logged_once_when_it_closes_with_bytes_each_way() {
    let echo = tcp_echo().await;
    let path = log_path("tunnel");
    let proxy = TestProxy::start(&format!("{}{}", access_log(&path, ""), listener(BOTH, ""))).await;
    let mut tunnel = connect_tunnel(proxy.addr, &echo.to_string()).await;
    const N: usize = 12_345;
    let data = support::payload(N, 7);
    within(tunnel.write_all(&data)).await.unwrap();
    let mut back = vec![0u8; N];
    within(tunnel.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, data);
    within(tunnel.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    within(tunnel.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());

    let lines = exactly_lines(&path, 1).await;
    let (_, request, status) = request_line(&lines[0]);
    assert_eq!(request, format!("CONNECT {echo} HTTP/1.1"));
    assert_eq!(status, 200);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["mode"], "tunnel");
    assert_eq!(fields["route"], "-");
    assert_eq!(fields["in"], N.to_string());
    assert_eq!(fields["out"], N.to_string());
    assert_eq!(fields["close"], "closed");
    assert_eq!(fields["upstream"], echo.to_string());
    assert_eq!(fields["error"], "-");

    // A later request adds one line: the tunnel was logged exactly once.
    let origin = answering_origin().await;
    let response = within(via_proxy(proxy.addr).get(origin.url("/after")).send()).await.unwrap();
    within(response.text()).await.unwrap();
    let lines = exactly_lines(&path, 2).await;
    assert_eq!(text_fields(&lines[1])["mode"], "forward");
}

#[tokio::test]
async fn websocket_session_is_logged_once_with_frame_bytes_each_way() {
    let origin = WsOrigin::start().await;
    let path = log_path("websocket");
    let proxy = TestProxy::start(&format!(
        "{}{}{}",
        access_log(&path, ""),
        listener(BOTH, ""),
        named_route(
            "ws",
            "/ws",
            &format!("http://{}", origin.addr),
            "allow_upgrades = [\"websocket\"]"
        ),
    ))
    .await;
    let (mut ws, response) =
        within(tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", proxy.addr)))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    within(ws.send(Message::text("hello"))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("hello"));
    let binary = support::payload(100, 3);
    within(ws.send(Message::binary(binary.clone()))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::binary(binary));
    within(ws.close(None)).await.unwrap();
    assert_eq!(origin.next_close().await, None);
    // Read the close reply and the end of the stream.
    while let Some(message) = within(ws.next()).await {
        if message.is_err() {
            break;
        }
    }
    drop(ws);

    let lines = exactly_lines(&path, 1).await;
    let (_, request, status) = request_line(&lines[0]);
    assert_eq!(request, "GET /ws/chat HTTP/1.1");
    assert_eq!(status, 101);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["mode"], "websocket");
    assert_eq!(fields["route"], "ws");
    assert_eq!(fields["upstream"], origin.addr.to_string());
    assert_eq!(fields["close"], "closed");
    assert_eq!(fields["error"], "-");
    // Client frames are masked (2-byte header + 4-byte mask + payload): "hello", 100 bytes,
    // and an empty close. The origin's are not: the two echoes and an empty close reply.
    assert_eq!(fields["in"], ((2 + 4 + 5) + (2 + 4 + 100) + (2 + 4)).to_string());
    assert_eq!(fields["out"], ((2 + 5) + (2 + 100) + 2).to_string());

    // A later request adds one line: the session was logged exactly once.
    let other = answering_origin().await;
    let response = within(via_proxy(proxy.addr).get(other.url("/after")).send()).await.unwrap();
    within(response.text()).await.unwrap();
    let lines = exactly_lines(&path, 2).await;
    assert_eq!(text_fields(&lines[1])["mode"], "forward");
}

#[tokio::test]
async fn refused_upstream_is_logged_as_connection_refused_without_an_upstream() {
    let path = log_path("refused");
    let dead = closed_port();
    let proxy = TestProxy::start(&format!(
        "{}{}{}",
        access_log(&path, ""),
        listener(BOTH, ""),
        named_route("dead", "/dead", &format!("http://{dead}"), ""),
    ))
    .await;
    let response = within(direct().get(format!("{}/dead/x", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let response_id = header(&response, "x-request-id").to_owned();
    let body = within(response.text()).await.unwrap();

    let lines = exactly_lines(&path, 1).await;
    let (_, request, status) = request_line(&lines[0]);
    assert_eq!(request, "GET /dead/x HTTP/1.1");
    assert_eq!(status, 502);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["id"], response_id);
    assert_eq!(fields["mode"], "reverse");
    assert_eq!(fields["route"], "dead");
    assert_eq!(fields["error"], "connection_refused");
    assert_eq!(fields["upstream"], "-");
    assert_eq!(fields["ttfb_ms"], "-");
    assert_eq!(fields["out"], body.len().to_string());
}

#[tokio::test]
async fn silent_forward_upstream_is_logged_as_http_response_timeout() {
    let silent = black_hole().await;
    let path = log_path("timeout");
    let proxy = TestProxy::start(&format!(
        "{}{}[timeouts]\nresponse_header = \"200ms\"\n",
        access_log(&path, ""),
        listener(BOTH, "")
    ))
    .await;
    let target = format!("http://{silent}/slow");
    let response = within(via_proxy(proxy.addr).get(&target).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    within(response.text()).await.unwrap();

    let lines = exactly_lines(&path, 1).await;
    let (_, request, status) = request_line(&lines[0]);
    assert_eq!(request, format!("GET {target} HTTP/1.1"));
    assert_eq!(status, 504);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["mode"], "forward");
    assert_eq!(fields["route"], "-");
    assert_eq!(fields["error"], "http_response_timeout");
    assert_eq!(fields["upstream"], "-");
    assert_eq!(fields["ttfb_ms"], "-");
}

#[tokio::test]
async fn drop_query_leaves_query_strings_out_of_the_log() {
    let origin = answering_origin().await;
    let path = log_path("drop-query");
    let proxy = TestProxy::start(&format!(
        "{}{}{}",
        access_log(&path, "drop_query = true"),
        listener(BOTH, ""),
        named_route("api", "/api", &origin.url(""), ""),
    ))
    .await;
    let reverse = format!("{}/api/search?token=reverse-secret-1&q=a", proxy.url());
    let response = within(direct().get(&reverse).send()).await.unwrap();
    within(response.text()).await.unwrap();
    let lines = exactly_lines(&path, 1).await;
    assert_eq!(request_line(&lines[0]).1, "GET /api/search HTTP/1.1");

    let forward = origin.url("/fwd?token=forward-secret-2");
    let response = within(via_proxy(proxy.addr).get(&forward).send()).await.unwrap();
    within(response.text()).await.unwrap();
    let lines = exactly_lines(&path, 2).await;
    assert_eq!(request_line(&lines[1]).1, format!("GET {} HTTP/1.1", origin.url("/fwd")));

    // The queries still went upstream; only the log leaves them out.
    let seen: Vec<String> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(seen[0], "/search?token=reverse-secret-1&q=a");
    assert!(seen[1].ends_with("/fwd?token=forward-secret-2"), "{seen:?}");
    let text = log_text(&path);
    assert!(!text.contains("reverse-secret-1"), "{text}");
    assert!(!text.contains("forward-secret-2"), "{text}");
}

#[tokio::test]
async fn upstream_dying_mid_body_is_logged_and_counted_as_connection_terminated() {
    let dying = support::upstream::dies_mid_response().await;
    let path = log_path("terminated");
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}{}{}",
        access_log(&path, ""),
        listener(BOTH, ""),
        named_route("dying", "/dying", &format!("http://{dying}"), ""),
    ))
    .await;
    let response = within(direct().get(format!("{}/dying/x", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(within(response.bytes()).await.is_err(), "the body is cut short");

    let lines = exactly_lines(&path, 1).await;
    assert_eq!(request_line(&lines[0]).2, 200);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["error"], "connection_terminated");
    assert_eq!(fields["out"], "1000");
    assert_eq!(fields["upstream"], dying.to_string());
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        family_total(s, "sluice_requests_total") == 1.0
    })
    .await;
    assert_eq!(
        family(&samples, "sluice_upstream_errors_total"),
        expected(&[("sluice_upstream_errors_total{kind=\"connection_terminated\"}", 1.0)])
    );
    assert_eq!(
        sample(&samples, "sluice_sent_bytes_total{mode=\"reverse\",route=\"dying\"}"),
        1000.0
    );
    assert_eq!(family_total(&samples, "sluice_rejections_total"), 0.0);
}

#[tokio::test]
async fn userinfo_in_a_forward_target_is_hidden_in_the_log() {
    let origin = answering_origin().await;
    let path = log_path("userinfo");
    let proxy = TestProxy::start(&format!("{}{}", access_log(&path, ""), listener(BOTH, ""))).await;
    let target = format!("http://bob:hunter2-pw@{}/private", origin.addr);
    let response = raw_exchange(
        proxy.addr,
        format!("GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", origin.addr)
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let lines = exactly_lines(&path, 1).await;
    assert_eq!(
        request_line(&lines[0]).1,
        format!("GET http://***@{}/private HTTP/1.1", origin.addr)
    );
    assert!(!log_text(&path).contains("hunter2-pw"));
}

#[tokio::test]
async fn logged_header_values_cannot_forge_fields_or_lines() {
    let origin = answering_origin().await;
    let path = log_path("escape");
    let proxy = TestProxy::start(&format!(
        "{}{}",
        access_log(&path, "headers = [\"user-agent\"]"),
        listener(BOTH, "")
    ))
    .await;
    let mut request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n", origin.url("/ua"), origin.addr).into_bytes();
    request.extend_from_slice(b"User-Agent: x\" error=forged \\ \xff\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(proxy.addr, &request).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let lines = exactly_lines(&path, 1).await;
    // Quote and backslash escaped, the non-ASCII byte as \xNN: still one field.
    assert!(
        lines[0].ends_with(" error=- user-agent=\"x\\\" error=forged \\\\ \\xff\""),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn client_leaving_mid_response_is_logged_as_client_closed() {
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let started = started.clone();
        async move {
            let (mut sender, response) = support::upstream::channel_response(1);
            tokio::spawn(async move {
                let _ = sender.send_data(bytes::Bytes::from_static(b"first part;")).await;
                let _ = started.send(());
                // Hold the body open until the proxy drops it.
                while sender.send_data(bytes::Bytes::from_static(b"")).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            response
        }
    })
    .await;
    let path = log_path("client-closed");
    let proxy = TestProxy::start(&format!(
        "{}{}{}",
        access_log(&path, ""),
        listener(BOTH, ""),
        named_route("stream", "/stream", &origin.url(""), ""),
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    within(stream.write_all(b"GET /stream/ HTTP/1.1\r\nHost: x\r\n\r\n")).await.unwrap();
    within(started_rx.recv()).await.unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("first part;") {
        let mut buffer = [0u8; 1024];
        let n = within(stream.read(&mut buffer)).await.unwrap();
        assert_ne!(n, 0);
        received.extend_from_slice(&buffer[..n]);
    }
    drop(stream);

    let lines = exactly_lines(&path, 1).await;
    let (_, request, status) = request_line(&lines[0]);
    assert_eq!(request, "GET /stream/ HTTP/1.1");
    assert_eq!(status, 200);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["error"], "client_closed");
    assert_eq!(fields["out"], "first part;".len().to_string());
    assert_eq!(fields["upstream"], origin.addr.to_string());
}

/// A proxy with route `/api` to `origin`, logging to `path`, with `[request_id]` lines `ids`.
async fn id_proxy(origin: &Origin, path: &Path, ids: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[request_id]\n{ids}\n{}{}",
        access_log(path, ""),
        listener(BOTH, ""),
        named_route("api", "/api", &origin.url(""), ""),
    ))
    .await
}

/// GETs `/api/id` through `proxy` with the extra header `sent`, and returns the response.
async fn get_with(proxy: &TestProxy, sent: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = direct().get(format!("{}/api/id", proxy.url()));
    if let Some((name, value)) = sent {
        request = request.header(name, value);
    }
    let response = within(request.send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

#[tokio::test]
async fn trusted_incoming_request_id_is_kept_everywhere() {
    let origin = answering_origin().await;
    let path = log_path("id-trusted");
    let proxy = id_proxy(&origin, &path, "trust_incoming = true").await;
    let response = get_with(&proxy, Some(("x-request-id", "abc-123"))).await;
    assert_eq!(header(&response, "x-request-id"), "abc-123");
    let lines = exactly_lines(&path, 1).await;
    assert_eq!(text_fields(&lines[0])["id"], "abc-123");
    assert_eq!(origin.seen()[0].headers["x-request-id"], "abc-123");

    // Even when trusted, an id that could break a log line or header is replaced.
    let long = "a".repeat(129);
    let response = get_with(&proxy, Some(("x-request-id", &long))).await;
    let replaced = header(&response, "x-request-id").to_owned();
    assert_generated_id(&replaced);
    let lines = exactly_lines(&path, 2).await;
    assert_eq!(text_fields(&lines[1])["id"], replaced);
    assert_eq!(origin.seen()[1].headers["x-request-id"], replaced.as_str());
}

#[tokio::test]
async fn untrusted_incoming_request_id_is_replaced_upstream_and_in_the_log() {
    let origin = answering_origin().await;
    let path = log_path("id-untrusted");
    let proxy = id_proxy(&origin, &path, "").await;
    let response = get_with(&proxy, Some(("x-request-id", "spoofed"))).await;
    let id = header(&response, "x-request-id").to_owned();
    assert_generated_id(&id);
    let lines = exactly_lines(&path, 1).await;
    assert_eq!(text_fields(&lines[0])["id"], id);
    let seen = origin.only_request();
    let upstream: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
    assert_eq!(upstream, [id.as_str()], "only the proxy's id goes upstream");
    assert!(!log_text(&path).contains("spoofed"));
}

#[tokio::test]
async fn custom_request_id_header_carries_the_id() {
    let origin = answering_origin().await;
    let path = log_path("id-custom");
    let proxy = id_proxy(&origin, &path, "header = \"x-trace\"").await;
    let response = get_with(&proxy, Some(("x-trace", "client-trace"))).await;
    let id = header(&response, "x-trace").to_owned();
    assert_generated_id(&id);
    assert!(response.headers().get("x-request-id").is_none(), "{:?}", response.headers());
    let lines = exactly_lines(&path, 1).await;
    assert_eq!(text_fields(&lines[0])["id"], id);
    let seen = origin.only_request();
    assert_eq!(seen.headers["x-trace"], id.as_str());
    assert!(seen.headers.get("x-request-id").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn upstreams_own_response_request_id_is_kept() {
    let origin = Origin::start(|_request: Request<Incoming>| async {
        let mut response: Response<TestBody> = full(ANSWER);
        response.headers_mut().insert("x-request-id", "upstream-id-7".parse().unwrap());
        response
    })
    .await;
    let path = log_path("id-upstream");
    let proxy = id_proxy(&origin, &path, "").await;
    let response = get_with(&proxy, None).await;
    let ids: Vec<_> = response.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["upstream-id-7"]);
    let lines = exactly_lines(&path, 1).await;
    let logged = text_fields(&lines[0])["id"].clone();
    assert_generated_id(&logged);
    assert_eq!(origin.only_request().headers["x-request-id"], logged.as_str());
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_a_known_mix_of_requests_exactly() {
    let origin = answering_origin().await;
    let dead = closed_port();
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}{}{}",
        listener(BOTH, ""),
        named_route("api", "/api", &origin.url(""), ""),
        named_route("dead", "/dead", &format!("http://{dead}"), ""),
    ))
    .await;
    let client = direct();
    let mut sent_api = 0;
    for i in 0..3 {
        let response =
            within(client.get(format!("{}/api/get/{i}", proxy.url())).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sent_api += within(response.bytes()).await.unwrap().len();
    }
    let upload = support::payload(1000, 9);
    let response = within(client.post(format!("{}/api/upload", proxy.url())).body(upload).send())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    sent_api += within(response.bytes()).await.unwrap().len();
    let mut sent_forward = 0;
    for i in 0..2 {
        let response = within(via_proxy(proxy.addr).get(origin.url(&format!("/fwd/{i}"))).send())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sent_forward += within(response.bytes()).await.unwrap().len();
    }
    let response = within(client.get(format!("{}/unknown", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let sent_not_found = within(response.bytes()).await.unwrap().len();
    let response = within(client.get(format!("{}/dead/x", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let sent_dead = within(response.bytes()).await.unwrap().len();
    assert_eq!(sent_api, 4 * ANSWER.len());
    assert_eq!(sent_forward, 2 * ANSWER.len());
    assert!(sent_not_found > 0 && sent_dead > 0, "error responses have bodies");

    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        family_total(s, "sluice_requests_total") >= 8.0
    })
    .await;
    assert_eq!(
        family(&samples, "sluice_requests_total"),
        expected(&[
            (
                "sluice_requests_total{mode=\"reverse\",route=\"api\",method=\"GET\",status=\"2xx\"}",
                3.0
            ),
            (
                "sluice_requests_total{mode=\"reverse\",route=\"api\",method=\"POST\",status=\"2xx\"}",
                1.0
            ),
            (
                "sluice_requests_total{mode=\"forward\",route=\"\",method=\"GET\",status=\"2xx\"}",
                2.0
            ),
            (
                "sluice_requests_total{mode=\"reverse\",route=\"\",method=\"GET\",status=\"4xx\"}",
                1.0
            ),
            (
                "sluice_requests_total{mode=\"reverse\",route=\"dead\",method=\"GET\",status=\"5xx\"}",
                1.0
            ),
        ])
    );
    assert_eq!(
        family(&samples, "sluice_received_bytes_total"),
        expected(&[("sluice_received_bytes_total{mode=\"reverse\",route=\"api\"}", 1000.0)])
    );
    assert_eq!(
        family(&samples, "sluice_sent_bytes_total"),
        expected(&[
            ("sluice_sent_bytes_total{mode=\"reverse\",route=\"api\"}", sent_api as f64),
            ("sluice_sent_bytes_total{mode=\"forward\",route=\"\"}", sent_forward as f64),
            ("sluice_sent_bytes_total{mode=\"reverse\",route=\"\"}", sent_not_found as f64),
            ("sluice_sent_bytes_total{mode=\"reverse\",route=\"dead\"}", sent_dead as f64),
        ])
    );
    assert_eq!(
        family(&samples, "sluice_upstream_errors_total"),
        expected(&[("sluice_upstream_errors_total{kind=\"connection_refused\"}", 1.0)])
    );
    assert_eq!(
        family(&samples, "sluice_rejections_total"),
        expected(&[("sluice_rejections_total{kind=\"destination_not_found\"}", 1.0)])
    );
    assert_eq!(
        family(&samples, "sluice_request_duration_seconds_count"),
        expected(&[
            ("sluice_request_duration_seconds_count{mode=\"reverse\",route=\"api\"}", 4.0),
            ("sluice_request_duration_seconds_count{mode=\"forward\",route=\"\"}", 2.0),
            ("sluice_request_duration_seconds_count{mode=\"reverse\",route=\"\"}", 1.0),
            ("sluice_request_duration_seconds_count{mode=\"reverse\",route=\"dead\"}", 1.0),
        ])
    );
    // Only requests an upstream answered have a time to first byte.
    assert_eq!(
        family(&samples, "sluice_upstream_ttfb_seconds_count"),
        expected(&[
            ("sluice_upstream_ttfb_seconds_count{mode=\"reverse\",route=\"api\"}", 4.0),
            ("sluice_upstream_ttfb_seconds_count{mode=\"forward\",route=\"\"}", 2.0),
        ])
    );
    assert_eq!(
        sample(
            &samples,
            "sluice_request_duration_seconds_bucket{le=\"+Inf\",mode=\"reverse\",route=\"api\"}"
        ),
        4.0,
        "{samples:#?}"
    );
    assert_eq!(sample(&samples, "sluice_tls_handshake_failures_total"), 0.0);
    assert_eq!(sample(&samples, "sluice_access_log_dropped_total"), 0.0);
}

#[tokio::test]
async fn metrics_endpoint_speaks_openmetrics() {
    let origin = answering_origin().await;
    let proxy = TestProxy::start(&format!("{ADMIN}{}", listener(BOTH, ""))).await;
    let response = within(via_proxy(proxy.addr).get(origin.url("/")).send()).await.unwrap();
    within(response.text()).await.unwrap();
    scrape_until(&proxy.admin_url("/metrics"), |s| family_total(s, "sluice_requests_total") == 1.0)
        .await;
    let response = within(reqwest::get(proxy.admin_url("/metrics"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = within(response.text()).await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for family in [
        "# TYPE sluice_requests counter",
        "# TYPE sluice_request_duration_seconds histogram",
        "# TYPE sluice_upstream_ttfb_seconds histogram",
        "# TYPE sluice_sent_bytes counter",
        "# TYPE sluice_tls_handshake_failures counter",
        "# TYPE sluice_connections_active gauge",
        "# TYPE sluice_tunnels_active gauge",
        "# TYPE sluice_websockets_active gauge",
    ] {
        assert!(text.contains(family), "{family:?} missing from {text}");
    }
}

#[tokio::test]
async fn tunnel_gauge_is_one_while_open_and_zero_after() {
    let echo = tcp_echo().await;
    let proxy = TestProxy::start(&format!("{ADMIN}{}", listener(BOTH, ""))).await;
    let mut tunnel = connect_tunnel(proxy.addr, &echo.to_string()).await;
    within(tunnel.write_all(b"ping")).await.unwrap();
    let mut back = [0u8; 4];
    within(tunnel.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"ping");
    // Bytes moved, so the relay (and its gauge) is running.
    let samples = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&samples, "sluice_tunnels_active"), 1.0);
    assert_eq!(sample(&samples, "sluice_websockets_active"), 0.0);
    assert_eq!(sample(&samples, "sluice_connections_active"), 1.0);

    drop(tunnel);
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, "sluice_tunnels_active") == 0.0 && sample(s, "sluice_connections_active") == 0.0
    })
    .await;
    assert_eq!(
        sample(
            &samples,
            "sluice_requests_total{mode=\"tunnel\",route=\"\",method=\"CONNECT\",status=\"2xx\"}"
        ),
        1.0,
        "{samples:#?}"
    );
}

#[tokio::test]
async fn websocket_gauge_is_one_while_open_and_zero_after() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}{}",
        listener(BOTH, ""),
        named_route("ws", "/ws", &format!("http://{}", origin.addr), ""),
    ))
    .await;
    let (mut ws, _) =
        within(tokio_tungstenite::connect_async(format!("ws://{}/ws/", proxy.addr))).await.unwrap();
    within(ws.send(Message::text("ping"))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("ping"));
    let samples = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&samples, "sluice_websockets_active"), 1.0);
    assert_eq!(sample(&samples, "sluice_tunnels_active"), 0.0);
    assert_eq!(sample(&samples, "sluice_connections_active"), 1.0);

    within(ws.close(None)).await.unwrap();
    while let Some(message) = within(ws.next()).await {
        if message.is_err() {
            break;
        }
    }
    drop(ws);
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, "sluice_websockets_active") == 0.0
            && sample(s, "sluice_connections_active") == 0.0
    })
    .await;
    assert_eq!(
        sample(
            &samples,
            "sluice_requests_total{mode=\"websocket\",route=\"ws\",method=\"GET\",status=\"1xx\"}"
        ),
        1.0,
        "{samples:#?}"
    );
}

/// Waits until some rejection is counted and returns the whole `sluice_rejections_total`
/// family.
async fn rejections(proxy: &TestProxy) -> BTreeMap<String, f64> {
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        family_total(s, "sluice_rejections_total") > 0.0
    })
    .await;
    family(&samples, "sluice_rejections_total")
}

#[tokio::test]
async fn connection_over_the_per_ip_cap_is_counted_as_too_many_connections() {
    let origin = answering_origin().await;
    let proxy =
        TestProxy::start(&format!("{ADMIN}{}", listener(BOTH, "max_connections_per_ip = 1"))).await;
    // The first connection is served and kept open.
    let mut first = http1_conn::<http_body_util::Empty<bytes::Bytes>>(proxy.addr).await;
    let request = Request::get(origin.url("/first"))
        .header("host", origin.addr.to_string())
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = within(first.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    within(response.into_body().collect()).await.unwrap();

    let refused = raw_exchange(
        proxy.addr,
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.url("/second"), origin.addr)
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"too_many_connections\"}", 1.0)])
    );
    drop(first);
}

#[tokio::test]
async fn oversized_request_head_is_counted_as_request_head_too_large() {
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}[limits]\nmax_request_head_bytes = 8192\n",
        listener(BOTH, "")
    ))
    .await;
    let request = format!(
        "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "{response}");
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"request_head_too_large\"}", 1.0)])
    );
}

#[tokio::test]
async fn missing_proxy_credentials_are_counted_as_proxy_auth_required() {
    let origin = answering_origin().await;
    let text = format!(
        "{ADMIN}{}[auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"${{OBSERVE_ALICE}}\"\n",
        listener(BOTH, "")
    );
    let env = |name: &str| (name == "OBSERVE_ALICE").then(|| "alice secret".to_owned());
    let proxy =
        TestProxy::with_config(Config::from_toml_with_env(&text, "auth.toml", &env).unwrap()).await;
    let response = within(via_proxy(proxy.addr).get(origin.url("/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    within(response.text()).await.unwrap();
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"proxy_auth_required\"}", 1.0)])
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn denied_client_is_counted_as_http_request_denied() {
    let origin = answering_origin().await;
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}[access]\ndeny = [\"127.0.0.0/8\"]\n",
        listener(BOTH, "")
    ))
    .await;
    let response = within(via_proxy(proxy.addr).get(origin.url("/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    within(response.text()).await.unwrap();
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"http_request_denied\"}", 1.0)])
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn bare_lf_request_head_is_counted_as_malformed_request() {
    let proxy = TestProxy::start(&format!("{ADMIN}{}", listener(BOTH, ""))).await;
    let response =
        raw_exchange(proxy.addr, b"GET http://127.0.0.1:1/ HTTP/1.1\nHost: 127.0.0.1:1\n\n").await;
    assert_eq!(status_of(&response), 400, "{response}");
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"malformed_request\"}", 1.0)])
    );
}

/// The metrics once a rejection is counted, or after 2 s if none is (the connection is already
/// closed, so one is never expected later).
async fn settled_rejections(proxy: &TestProxy) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let samples = scrape(&proxy.admin_url("/metrics")).await;
        if family_total(&samples, "sluice_rejections_total") > 0.0
            || tokio::time::Instant::now() >= deadline
        {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy whose clients have 300 ms to send a request head.
async fn impatient_proxy() -> TestProxy {
    TestProxy::start(&format!(
        "{ADMIN}{}[timeouts]\nrequest_header = \"300ms\"\n",
        listener(BOTH, "")
    ))
    .await
}

#[tokio::test]
async fn incomplete_request_head_is_counted_as_request_head_timeout() {
    let proxy = impatient_proxy().await;
    // More than the 24 bytes that show which protocol the client speaks, but no end of head.
    raw_exchange(proxy.addr, b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n").await;
    assert_eq!(
        rejections(&proxy).await,
        expected(&[("sluice_rejections_total{kind=\"request_head_timeout\"}", 1.0)])
    );
}

#[tokio::test]
async fn silent_client_is_counted_as_request_head_timeout() {
    let proxy = impatient_proxy().await;
    // Connects and sends nothing; the proxy closes the connection at the deadline.
    let response = raw_exchange(proxy.addr, b"").await;
    assert_eq!(response, "");
    let samples = settled_rejections(&proxy).await;
    assert_eq!(
        family(&samples, "sluice_rejections_total"),
        expected(&[("sluice_rejections_total{kind=\"request_head_timeout\"}", 1.0)])
    );
}

#[tokio::test]
async fn short_incomplete_request_head_is_counted_as_request_head_timeout() {
    let proxy = impatient_proxy().await;
    // Fewer than 24 bytes: the client has not yet shown which protocol it speaks.
    let response = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\n").await;
    let samples = settled_rejections(&proxy).await;
    assert_eq!(
        family(&samples, "sluice_rejections_total"),
        expected(&[("sluice_rejections_total{kind=\"request_head_timeout\"}", 1.0)]),
        "response {response:?}"
    );
}

#[tokio::test]
async fn failed_tls_handshake_is_counted_and_good_ones_are_not() {
    let ca = TestCa::new();
    let dir = test_dir("observe-tls-handshake");
    let leaf = ca.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    let origin = answering_origin().await;
    let proxy = TestProxy::start(&format!(
        "{ADMIN}{}{}",
        tls_listener(&leaf, REVERSE, ""),
        named_route("api", "/api", &origin.url(""), ""),
    ))
    .await;
    // A good handshake and request first.
    let response =
        within(https_direct(&ca.cert_pem()).get(format!("https://{}/api/ok", proxy.addr)).send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    within(response.text()).await.unwrap();

    // Plain HTTP to a TLS listener is not a ClientHello.
    raw_exchange(proxy.addr, b"GET /api/ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        sample(s, "sluice_tls_handshake_failures_total") > 0.0
    })
    .await;
    assert_eq!(sample(&samples, "sluice_tls_handshake_failures_total"), 1.0);
    assert_eq!(family_total(&samples, "sluice_requests_total"), 1.0);
}
