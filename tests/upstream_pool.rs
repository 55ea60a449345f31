//! Pooled upstream connections: an idle one is closed at `timeouts.upstream_idle`, within a
//! small margin, by a route's own pool and by the forward proxy's pool alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::client::{direct, via_proxy};
use support::config::{reverse_config, route};
use support::proxy::TestProxy;
use support::upstream::{raw_server, read_head};
use support::within;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// The idle timeout the tests configure.
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
