//! Protocol edges found in review: a declined upgrade must not leave the connection open, an
//! HTTP/2 extended CONNECT for a protocol the route does not allow is refused, a silent client
//! is disconnected even where HTTP/2 is possible, HTTP/2 cookies reach an HTTP/1.1 origin as
//! one field, and requests with a missing or repeated Host are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use support::client::{h2c_conn, raw_exchange, status_of};
use support::config::{REVERSE, listener, route};
use support::proxy::TestProxy;
use support::upstream::Origin;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reverse-only listener with further keys `extra` and route `/api` to `origin`.
fn reverse(origin: &Origin, extra: &str) -> String {
    format!("{}{}", listener(REVERSE, extra), route("/api", &origin.url(""), ""))
}

#[tokio::test]
async fn a_declined_upgrade_closes_the_connection_so_no_unguarded_request_follows() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse(&origin, "")).await;
    // `Upgrade: foo` is not allowed on the route: it is served as a plain request, and the
    // bare-LF request pipelined after it must never be served.
    let response = raw_exchange(
        proxy.addr,
        b"GET /api/a HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n\
          GET /api/smuggled HTTP/1.1\nHost: x\n\n",
    )
    .await;
    assert_eq!(status_of(&response), 200);
    assert!(response.to_lowercase().contains("connection: close"), "{response}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "only one response: {response}");
    let paths: Vec<_> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/a"]);
}

#[tokio::test]
async fn a_refused_connect_closes_the_connection() {
    let proxy =
        TestProxy::start("[[listener]]\naddress = \"127.0.0.1:0\"\nconnect_ports = [443]\n").await;
    let origin = Origin::echo().await;
    let request = format!(
        "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\nGET {1} HTTP/1.1\nHost: x\n\n",
        origin.addr,
        origin.url("/smuggled")
    );
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 403, "{response}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn extended_connect_for_a_protocol_the_route_refuses_is_403() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse(&origin, "h2c = true")).await;
    let mut sender = h2c_conn::<Empty<Bytes>>(proxy.addr).await;
    let mut request =
        http::Request::connect(format!("http://{}/api/x", proxy.addr)).body(Empty::new()).unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("not-allowed"));
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(origin.seen().is_empty(), "no CONNECT reached the backend");
}

#[tokio::test]
async fn a_silent_client_is_disconnected_on_an_h2c_listener() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start(&reverse(&origin, "h2c = true\n[timeouts]\nrequest_header = \"300ms\""))
            .await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = within(silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "the proxy closed the silent connection");
}

#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_origin_as_one() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse(&origin, "h2c = true")).await;
    let mut sender = h2c_conn::<Empty<Bytes>>(proxy.addr).await;
    let request = http::Request::get(format!("http://{}/api/c", proxy.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<_> = origin.only_request().headers.get_all("cookie").iter().cloned().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

#[tokio::test]
async fn missing_repeated_or_invalid_host_is_400() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse(&origin, "")).await;
    for request in [
        "GET /api/a HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/a HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET /api/a HTTP/1.1\r\nHost: a/b@c\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{request:?} -> {response}");
    }
    assert!(origin.seen().is_empty());
    let ok = raw_exchange(proxy.addr, b"GET /api/a HTTP/1.0\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&ok), 200, "HTTP/1.0 may omit Host");
}

#[tokio::test]
async fn an_oversized_streamed_body_is_413() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!("{}max_body_bytes = 10\n", reverse(&origin, ""))).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              14\r\n01234567890123456789\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = within(stream.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), 413, "{out}");
}
