//! Upstream connections: the cap on connections to one upstream address, which keeps HTTP/2
//! streams (each needing its own HTTP/1.1 upstream connection) from taking every descriptor;
//! and pooled idle connections closed at `timeouts.upstream_idle`, within a small margin, by a
//! route's own pool and by the forward proxy's pool alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::client::{direct, raw_header_values, status_of, via_proxy};
use support::config::{REVERSE, listener, reverse_config, route};
use support::h2::{REFUSED_STREAM, Session};
use support::proxy::TestProxy;
use support::upstream::{raw_server, read_head};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// An origin that reads each request head and never answers, holding every connection open;
/// counts the connections it accepted.
async fn holding_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let addr = raw_server(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_head(&mut stream).await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    })
    .await;
    (addr, accepted)
}

/// Waits (bounded) until `count` reaches `expected`.
async fn until_count(count: &AtomicUsize, expected: usize) {
    within(async {
        while count.load(Ordering::SeqCst) < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Reads `session` in the background, counting streams refused (REFUSED_STREAM) and streams
/// answered with a response head.
fn count_answers(mut session: Session, refused: Arc<AtomicUsize>, answered: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Some(frame) = session.next_frame().await {
            if frame.reset_code() == Some(REFUSED_STREAM) {
                refused.fetch_add(1, Ordering::SeqCst);
            } else if frame.is_headers() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
}

/// A proxy with one h2c reverse listener whose route `/slow` goes to `origin`, then `rest`.
async fn h2c_route(origin: SocketAddr, rest: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}{}{rest}",
        listener(REVERSE, "h2c = true\n"),
        route("/slow", &format!("http://{origin}"), "")
    ))
    .await
}

/// The request every stream of these tests makes.
const SLOW: [(&str, &str); 4] =
    [(":method", "GET"), (":scheme", "http"), (":authority", "sluice.test"), (":path", "/slow/x")];

/// Waits up to ten seconds for `expected` streams to be refused or answered, then returns
/// (refused, answered, accepted by the origin).
async fn settle(
    refused: &AtomicUsize,
    answered: &AtomicUsize,
    accepted: &AtomicUsize,
    expected: usize,
) -> [usize; 3] {
    let all = async {
        while refused.load(Ordering::SeqCst) + answered.load(Ordering::SeqCst) < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
    [refused, answered, accepted].map(|count| count.load(Ordering::SeqCst))
}

/// Six HTTP/2 connections of 200 streams each to a slow route once exhausted a 1,024
/// descriptor limit: every stream was taken, and each opened its own upstream connection. A
/// connection now takes `max_concurrent_streams` (100) streams and refuses the rest at once.
#[tokio::test]
async fn an_http2_connection_takes_only_max_concurrent_streams() {
    let (origin, accepted) = holding_origin().await;
    let proxy = h2c_route(origin, "").await;
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut session = Session::open(proxy.addr, &[]).await;
    assert!(session.server_settings.contains(&(0x3, 100)), "{:?}", session.server_settings);
    session.requests((0..200).map(|i| 2 * i + 1), &SLOW).await;
    count_answers(session, refused.clone(), answered.clone());
    until_count(&accepted, 100).await;
    let counts = settle(&refused, &answered, &accepted, 100).await;
    assert_eq!(counts, [100, 0, 100], "refused, answered, reached the origin");
}

/// Each HTTP/2 stream to an HTTP/1.1 upstream needs an upstream connection of its own; the
/// route's upstream address takes `max_upstream_connections`, and every stream beyond is
/// answered (503) at once instead of opening more.
#[tokio::test]
async fn http2_streams_open_no_more_upstream_connections_than_the_cap() {
    let (origin, accepted) = holding_origin().await;
    let proxy = h2c_route(origin, "[limits]\nmax_upstream_connections = 20\n").await;
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..3 {
        let mut session = Session::open(proxy.addr, &[]).await;
        session.requests((0..100).map(|i| 2 * i + 1), &SLOW).await;
        count_answers(session, refused.clone(), answered.clone());
    }
    let counts = settle(&refused, &answered, &accepted, 280).await;
    assert_eq!(counts, [0, 280, 20], "refused, answered, reached the origin");
    // Another client is answered too, with why.
    let response =
        support::client::raw_get(proxy.addr, "/slow/y", "sluice.test", "Connection: close\r\n")
            .await;
    assert_eq!(status_of(&response), 503, "{response}");
    let proxy_status = raw_header_values(&response, "proxy-status");
    assert!(proxy_status[0].contains("error=connection_limit_reached"), "{proxy_status:?}");
    assert_eq!(raw_header_values(&response, "retry-after"), ["1"]);
    assert_eq!(accepted.load(Ordering::SeqCst), 20, "the origin accepted beyond the cap");
}

/// The forward proxy caps each origin address the same way.
#[tokio::test]
async fn forward_requests_open_no_more_connections_to_an_origin_than_the_cap() {
    let (origin, accepted) = holding_origin().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[limits]\nmax_upstream_connections = 3\n",
    )
    .await;
    let request = format!("GET http://{origin}/x HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        held.push(client);
    }
    until_count(&accepted, 3).await;
    let refused =
        format!("GET http://{origin}/y HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let response = support::client::raw_exchange(proxy.addr, refused.as_bytes()).await;
    assert_eq!(status_of(&response), 503, "{response}");
    assert!(response.contains("limits.max_upstream_connections"), "{response}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // A client that leaves frees its upstream connection for the next one.
    drop(held.pop());
    within(async {
        loop {
            let mut next = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            next.write_all(request.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            let wait = Duration::from_millis(200);
            match tokio::time::timeout(wait, next.read_exact(&mut head)).await {
                // Not answered: it is held at the origin.
                Err(_) => return held.push(next),
                // Refused while the freed connection was still closing: try again.
                Ok(read) => assert_eq!((read.unwrap(), &head), (12, b"HTTP/1.1 503")),
            }
        }
    })
    .await;
    until_count(&accepted, 4).await;
}

/// The idle timeout the idle-connection tests configure.
const IDLE: Duration = Duration::from_secs(2);

/// How late after its idle timeout a pooled connection may close (the sweep margin, plus
/// scheduling on a busy test machine).
const LATE: Duration = Duration::from_millis(500);

/// An origin that answers every request on a connection with `200 ok` and, when the proxy
/// closes the connection, reports how long it had been idle since its last response.
async fn timing_origin() -> (SocketAddr, mpsc::UnboundedReceiver<Duration>) {
    let (idle_tx, idle) = mpsc::unbounded_channel();
    let addr = raw_server(move |mut stream| {
        let idle_tx = idle_tx.clone();
        async move {
            let mut last_response = Instant::now();
            loop {
                if read_head(&mut stream).await.is_empty() {
                    let _ = idle_tx.send(last_response.elapsed());
                    return;
                }
                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
                last_response = Instant::now();
            }
        }
    })
    .await;
    (addr, idle)
}

/// Sends two requests with `get`, 200 ms apart (so the connection goes idle again after the
/// pool's first sweep would have started), and checks the pooled connection closes at the
/// idle timeout, not a sweep period later.
async fn closes_at_the_idle_timeout<F, Fut>(get: F, mut idle: mpsc::UnboundedReceiver<Duration>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    for _ in 0..2 {
        let response = get().await;
        assert_eq!(response.status(), 200);
        assert_eq!(within(response.text()).await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lived = within(idle.recv()).await.unwrap();
    assert!(lived >= IDLE - Duration::from_millis(50), "closed early, after {lived:?}");
    assert!(lived <= IDLE + LATE, "idle for {lived:?} with upstream_idle = {IDLE:?}");
    assert!(idle.try_recv().is_err(), "one connection served both requests");
}

#[tokio::test]
async fn a_routes_idle_upstream_connection_closes_at_the_idle_timeout() {
    let (origin, idle) = timing_origin().await;
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}[timeouts]\nupstream_idle = \"2s\"\n",
        route("/r", &format!("http://{origin}"), "")
    )))
    .await;
    let url = format!("http://{}/r/x", proxy.addr);
    closes_at_the_idle_timeout(|| async { within(direct().get(&url).send()).await.unwrap() }, idle)
        .await;
}

#[tokio::test]
async fn a_forward_idle_upstream_connection_closes_at_the_idle_timeout() {
    let (origin, idle) = timing_origin().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[timeouts]\nupstream_idle = \"2s\"\n",
    )
    .await;
    let client = via_proxy(proxy.addr);
    let url = format!("http://{origin}/x");
    closes_at_the_idle_timeout(|| async { within(client.get(&url).send()).await.unwrap() }, idle)
        .await;
}
