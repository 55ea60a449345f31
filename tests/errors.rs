//! Failures are answered, never hung, and never stop the proxy serving others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use support::client::assert_still_serves;

use http::StatusCode;
use support::client::{raw_exchange, status_of, via_proxy};
use support::proxy::TestProxy;
use support::upstream::{black_hole, dies_mid_response, unanswered_connect};
use support::within;

#[tokio::test]
async fn malformed_request_is_400() {
    let proxy = TestProxy::forward().await;
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        b"GET http://a/ HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET http://a/ HTTP/9.9\r\n\r\n",
    ] {
        let response = raw_exchange(proxy.addr, garbage).await;
        assert_eq!(status_of(&response), 400, "{response}");
    }
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn unsupported_scheme_is_400_with_a_reason() {
    let proxy = TestProxy::forward().await;
    let response = raw_exchange(
        proxy.addr,
        b"GET ftp://example.com/file HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 400);
    assert!(response.contains("scheme `ftp` is not supported"), "{response}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn oversized_head_is_431() {
    let proxy = TestProxy::forward().await;
    let big = "a".repeat(70 * 1024);
    let request = format!("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "{response}");

    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "too many fields: {response}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn head_limit_is_configurable() {
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[limits]\nmax_request_head_bytes = 8192\n",
    )
    .await;
    let request =
        format!("GET http://127.0.0.1:1/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(10_000));
    assert_eq!(status_of(&raw_exchange(proxy.addr, request.as_bytes()).await), 431);
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn refused_connection_is_502_naming_target_and_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = TestProxy::forward().await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{closed}/x")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.starts_with("sluice; error=connection_refused"), "{status_header}");
    let body = within(response.text()).await.unwrap();
    assert_eq!(
        body,
        format!("502 Bad Gateway: cannot connect to {closed}: connection refused by {closed}\n")
    );
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn dns_failure_is_502() {
    let proxy = TestProxy::forward().await;
    // `.invalid` is reserved (RFC 6761 §6.4): it never resolves.
    let response =
        within(via_proxy(proxy.addr).get("http://no-such-host.invalid/").send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("error=dns_error"), "{status_header}");
    let body = within(response.text()).await.unwrap();
    assert!(body.contains("DNS lookup of no-such-host.invalid failed"), "{body}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let (stalled, _guard) = unanswered_connect().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[timeouts]\nconnect = \"300ms\"\n",
    )
    .await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{stalled}/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = within(response.text()).await.unwrap();
    assert!(
        body.contains(&format!("cannot connect to {stalled}: no connection within 300ms")),
        "{body}"
    );
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn silent_upstream_is_504() {
    let silent = black_hole().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[timeouts]\nresponse_header = \"300ms\"\n",
    )
    .await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{silent}/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("error=http_response_timeout"), "{status_header}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn upstream_dying_mid_response_aborts_the_client_response() {
    let dying = dies_mid_response().await;
    let proxy = TestProxy::forward().await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{dying}/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(100_000));
    // The client must see an error, never a clean-looking short body.
    let body = within(response.bytes()).await;
    assert!(body.is_err(), "short body delivered as if complete: {:?}", body.map(|b| b.len()));
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn upstream_closing_before_a_response_is_502() {
    let closes = support::upstream::raw_server(|mut stream| async move {
        support::upstream::read_head(&mut stream).await;
    })
    .await;
    let proxy = TestProxy::forward().await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{closes}/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("error=connection_terminated"), "{status_header}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn invalid_upstream_response_is_502() {
    let garbage = support::upstream::raw_server(|mut stream| async move {
        use tokio::io::AsyncWriteExt;
        support::upstream::read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
            .await;
    })
    .await;
    let proxy = TestProxy::forward().await;
    let response =
        within(via_proxy(proxy.addr).get(format!("http://{garbage}/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("error=http_protocol_error"), "{status_header}");
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn origin_form_on_a_forward_listener_is_400_with_an_explanation() {
    let proxy = TestProxy::forward().await;
    let response =
        raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&response), 400);
    assert!(response.contains("absolute-form"), "{response}");
}
