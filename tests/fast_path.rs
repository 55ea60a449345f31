//! The HTTP/1 fast path: which requests it takes (counted by
//! `sluice_requests_path_total{path}`), that what it sends both ways is what the general path
//! sends, that its upstream connections are reused, and that `http1_fast_path = false` sends
//! everything through the general path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::client::{raw_body, raw_exchange, raw_header_values, status_of};
use support::config::{ADMIN, reverse_config, route};
use support::observe::scrape_until;
use support::proxy::TestProxy;
use support::upstream::{Origin, raw_server, read_head};
use support::within;

fn paths(samples: &BTreeMap<String, f64>) -> (f64, f64) {
    let get = |path: &str| {
        samples.get(&format!("sluice_requests_path_total{{path=\"{path}\"}}")).copied()
    };
    (get("fast").unwrap_or(0.0), get("general").unwrap_or(0.0))
}

/// Whether this run forces the general path (`SLUICE_TEST_PATH=general`, see the support
/// proxy): the counts then all go to `general`.
fn forced_general() -> bool {
    std::env::var("SLUICE_TEST_PATH").as_deref() == Ok("general")
}

/// Waits until `fast` and `general` requests have been counted, and checks the split.
async fn expect_paths(proxy: &TestProxy, fast: f64, general: f64) {
    let (fast, general) = if forced_general() { (0.0, fast + general) } else { (fast, general) };
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        let (f, g) = paths(s);
        f + g >= fast + general
    })
    .await;
    assert_eq!(paths(&samples), (fast, general));
}

/// Reads one response with a Content-Length body from `stream`.
async fn read_response(stream: &mut TcpStream) -> String {
    let head = String::from_utf8(read_head(stream).await).unwrap();
    let length: usize =
        raw_header_values(&head, "content-length").first().map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; length];
    within(stream.read_exact(&mut body)).await.unwrap();
    format!("{head}{}", String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn keep_alive_requests_take_the_fast_path_over_one_upstream_connection() {
    let origin = Origin::echo().await;
    let config = format!("{}{ADMIN}", reverse_config(&route("/api", &origin.url("/base"), "")));
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /api/a?x=1 HTTP/1.1\r\nHost: front.test\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert_eq!(status_of(&first), 200, "{first}");
    assert!(!raw_header_values(&first, "date").is_empty(), "{first}");
    assert!(!raw_header_values(&first, "x-request-id").is_empty(), "{first}");
    stream
        .write_all(b"POST /api/b HTTP/1.1\r\nHost: front.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert_eq!(status_of(&second), 200, "{second}");
    assert_eq!(raw_body(&second), "hello");
    assert_eq!(raw_header_values(&second, "x-method"), ["POST"]);
    stream.write_all(b"HEAD /api/c HTTP/1.1\r\nHost: front.test\r\n\r\n").await.unwrap();
    let third = String::from_utf8(read_head(&mut stream).await).unwrap();
    assert_eq!(status_of(&third), 200, "{third}");

    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].uri, "/base/a?x=1");
    let twos: Vec<_> = seen[0].headers.get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"], "repeated fields keep their order");
    assert_eq!(seen[0].headers["host"], origin.addr.to_string());
    assert!(seen[0].headers.contains_key("x-forwarded-for"));
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[2].method, "HEAD");
    assert_eq!(origin.connections(), 1, "the upstream connection is reused");
    expect_paths(&proxy, 3.0, 0.0).await;
}

#[tokio::test]
async fn requests_it_does_not_take_go_to_the_general_path_on_the_same_connection() {
    let origin = Origin::echo().await;
    let config = format!("{}{ADMIN}", reverse_config(&route("/api", &origin.url(""), "")));
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Fast, then a chunked request body (general), then a plain GET: served by hyper, which
    // has the connection from the chunked request on.
    stream.write_all(b"GET /api/1 HTTP/1.1\r\nHost: front.test\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&read_response(&mut stream).await), 200);
    stream
        .write_all(
            b"POST /api/2 HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let head = String::from_utf8(read_head(&mut stream).await).unwrap();
    assert_eq!(status_of(&head), 200, "{head}");
    let mut body = [0u8; 13];
    within(stream.read_exact(&mut body)).await.unwrap();
    assert_eq!(&body, b"3\r\nabc\r\n0\r\n\r\n");
    stream
        .write_all(b"GET /api/3 HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    within(stream.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&rest)), 200);
    // Expect, on a fresh connection.
    let expect = raw_exchange(
        proxy.addr,
        b"POST /api/4 HTTP/1.1\r\nHost: front.test\r\nExpect: 100-continue\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert!(expect.contains("200 OK"), "{expect}");
    expect_paths(&proxy, 1.0, 3.0).await;
}

#[tokio::test]
async fn http10_clients_are_answered_in_http10_and_kept_alive_when_they_ask() {
    let origin = Origin::echo().await;
    let config = format!("{}{ADMIN}", reverse_config(&route("/", &origin.url(""), "")));
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for body in ["one", "two"] {
        let request = format!(
            "POST /x HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
        assert_eq!(raw_header_values(&response, "connection"), ["keep-alive"], "{response}");
        assert_eq!(raw_body(&response), body);
    }
    // Without keep-alive the connection closes after the response.
    let once = raw_exchange(proxy.addr, b"GET /y HTTP/1.0\r\n\r\n").await;
    assert!(once.starts_with("HTTP/1.0 200 OK\r\n"), "{once}");
    assert_eq!(origin.seen()[0].version, http::Version::HTTP_11, "HTTP/1.1 upstream");
    expect_paths(&proxy, 3.0, 0.0).await;
}

#[tokio::test]
async fn connection_close_is_honoured_and_answered_with_close() {
    let origin = Origin::echo().await;
    let config = format!("{}{ADMIN}", reverse_config(&route("/", &origin.url(""), "")));
    let proxy = TestProxy::start(&config).await;
    let response =
        raw_exchange(proxy.addr, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(raw_header_values(&response, "connection"), ["close"]);
    expect_paths(&proxy, 1.0, 0.0).await;
}

#[tokio::test]
async fn response_bodies_are_relayed_by_their_framing() {
    // Answers by path: a close-delimited body, a chunked one with a trailer, a 204; then
    // closes the connection.
    let upstream = raw_server(|mut stream| async move {
        let head = String::from_utf8(read_head(&mut stream).await).unwrap();
        let reply: &[u8] = if head.starts_with("GET /close") {
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
        } else if head.starts_with("GET /chunked") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n\
              4\r\nwiki\r\n0\r\nx-t: 1\r\n\r\n"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        stream.write_all(reply).await.unwrap();
        // One response per connection: a kept-alive one is closed while idle in the pool.
        let _ = stream.shutdown().await;
    })
    .await;
    let config =
        format!("{}{ADMIN}", reverse_config(&route("/", &format!("http://{upstream}"), "")));
    let proxy = TestProxy::start(&config).await;
    let close =
        raw_exchange(proxy.addr, b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(status_of(&close), 200, "{close}");
    assert_eq!(raw_header_values(&close, "transfer-encoding"), ["chunked"], "{close}");
    assert_eq!(raw_body(&close), "D\r\nuntil the end\r\n0\r\n\r\n");
    let chunked = raw_exchange(
        proxy.addr,
        b"GET /chunked HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_body(&chunked), "4\r\nwiki\r\n0\r\nx-t: 1\r\n\r\n", "{chunked}");
    let without =
        raw_exchange(proxy.addr, b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(raw_body(&without), "4\r\nwiki\r\n0\r\n\r\n", "trailers only when accepted");
    let empty =
        raw_exchange(proxy.addr, b"GET /none HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(status_of(&empty), 204, "{empty}");
    assert_eq!(raw_body(&empty), "");
    expect_paths(&proxy, 4.0, 0.0).await;
}

#[tokio::test]
async fn the_switch_sends_every_request_through_the_general_path() {
    let origin = Origin::echo().await;
    let config = format!(
        "http1_fast_path = false\n{}{ADMIN}",
        reverse_config(&route("/api", &origin.url(""), ""))
    );
    let proxy = TestProxy::start(&config).await;
    let response = raw_exchange(
        proxy.addr,
        b"GET /api/x HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| paths(s).1 >= 1.0).await;
    assert_eq!(paths(&samples), (0.0, 1.0));
}

#[tokio::test]
async fn refusals_on_the_fast_path_are_rendered_as_on_the_general_path() {
    let origin = Origin::echo().await;
    let config = format!(
        "{}{ADMIN}",
        reverse_config(&route("/api", &origin.url(""), "rate_limit = { rate = 0.001, burst = 1 }"))
    );
    let proxy = TestProxy::start(&config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /api/1 HTTP/1.1\r\nHost: front.test\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&read_response(&mut stream).await), 200);
    stream.write_all(b"GET /api/2 HTTP/1.1\r\nHost: front.test\r\n\r\n").await.unwrap();
    let limited = read_response(&mut stream).await;
    assert_eq!(status_of(&limited), 429, "{limited}");
    assert!(!raw_header_values(&limited, "retry-after").is_empty(), "{limited}");
    assert!(!raw_header_values(&limited, "x-request-id").is_empty(), "{limited}");
    assert_eq!(origin.seen().len(), 1);
}
