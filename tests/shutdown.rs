//! Graceful shutdown: stop accepting, let in-flight requests and tunnels finish, then return.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::sync::{Arc, Mutex};

use http::Request;
use hyper::body::Incoming;
use sluice::shutdown::Drained;
use support::client::{connect_tunnel, via_proxy};
use support::proxy::TestProxy;
use support::upstream::{Origin, full, tcp_echo};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

/// An origin that holds its response until released, and reports when a request arrives.
async fn held_origin() -> (Origin, oneshot::Receiver<()>, Arc<Notify>) {
    let (arrived_tx, arrived) = oneshot::channel();
    let arrived_tx = Arc::new(Mutex::new(Some(arrived_tx)));
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        let gate = gate.clone();
        async move {
            if let Some(tx) = arrived_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            gate.notified().await;
            full("finished after shutdown began")
        }
    })
    .await;
    (origin, arrived, release)
}

#[tokio::test]
async fn in_flight_request_finishes_and_new_connections_are_refused() {
    let (origin, arrived, release) = held_origin().await;
    let mut proxy = TestProxy::forward().await;
    let addr = proxy.addr;
    let client = via_proxy(addr);
    let url = origin.url("/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await?.text().await });
    within(arrived).await.unwrap();

    proxy.signal_shutdown();
    // Once shutdown has begun the listener stops accepting.
    within(async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(mut stream) => {
                    // Accepted by the kernel backlog before the listener closed: the proxy must
                    // not serve it.
                    let _ = stream.write_all(b"GET http://127.0.0.1:1/ HTTP/1.1\r\n\r\n").await;
                    let mut out = Vec::new();
                    let _ = stream.read_to_end(&mut out).await;
                    if out.is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await;

    release.notify_one();
    let body = within(in_flight).await.unwrap().unwrap();
    assert_eq!(body, "finished after shutdown began");
    assert_eq!(proxy.finished().await, Drained::Complete);
}

#[tokio::test]
async fn open_tunnel_keeps_working_during_the_grace_period() {
    let origin = tcp_echo().await;
    let mut proxy = TestProxy::forward().await;
    let mut tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    proxy.signal_shutdown();
    tunnel.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    within(tunnel.read_exact(&mut echo)).await.unwrap();
    assert_eq!(&echo, b"still here");
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(tunnel.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(proxy.finished().await, Drained::Complete);
}

#[tokio::test]
async fn grace_period_bounds_the_drain() {
    let origin = tcp_echo().await;
    let mut proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[timeouts]\nshutdown_grace = \"200ms\"\n",
    )
    .await;
    // A tunnel that never closes by itself.
    let _tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    proxy.signal_shutdown();
    assert_eq!(proxy.finished().await, Drained::GraceExpired);
}

/// The shutdown line counts the client work still running (connections, tunnels, upgrades),
/// not the accept loops and signal watchers that stop with it.
#[tokio::test]
async fn the_shutdown_log_counts_only_work_in_flight() {
    let mut command = support::process::command("info");
    command.args(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--workers", "1"]);
    let mut sluice = support::process::Sluice::spawn(command).await;
    sluice.signal("TERM", support::process::SIGTERM).await;
    let line = sluice.line_containing("shutting down").await;
    assert!(line.contains("in_flight=0"), "nothing is in flight: {line}");
    sluice.exited().await;

    let (origin, arrived, release) = held_origin().await;
    let mut command = support::process::command("info");
    command.args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let mut sluice = support::process::Sluice::spawn(command).await;
    let client = via_proxy(sluice.addr);
    let url = origin.url("/held");
    let in_flight = tokio::spawn(async move { client.get(url).send().await?.text().await });
    within(arrived).await.unwrap();
    sluice.signal("TERM", support::process::SIGTERM).await;
    let line = sluice.line_containing("shutting down").await;
    assert!(line.contains("in_flight=1"), "one request is in flight: {line}");
    release.notify_one();
    assert_eq!(within(in_flight).await.unwrap().unwrap(), "finished after shutdown began");
    sluice.exited().await;
}
