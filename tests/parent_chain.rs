//! Chaining through parent proxies: sluice → sluice → origin, sluice → SOCKS5 parent →
//! origin with failover to a second parent, the guard on what the client asked for, and rules
//! in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice::config::Config;
use support::client::{connect_tunnel, exchange_until_closed, status_of};
use support::config::listener;
use support::proxy::TestProxy;
use support::upstream::{closed_port, raw_server, read_head, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_socks::tcp::Socks5Stream;

/// `echo.test` is loopback, in sluice's static DNS.
const DNS: &str = "[dns.hosts]\n\"echo.test\" = [\"127.0.0.1\"]\n";

/// Sends 256 KiB through `stream` to an echo server and checks it comes back intact.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let sent = payload(256 * 1024, 23);
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = async {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let ((), read) = within(async { tokio::join!(writer, read.read_to_end(&mut back)) }).await;
    read.unwrap();
    assert_eq!(sha256(&back), sha256(&sent));
}

/// A proxy whose `[[parent]]` rules are `parents`, with `PARENT_PASSWORD` in its environment.
async fn chained(parents: &str) -> TestProxy {
    let toml =
        format!("{}[dns.hosts]\n\"echo.test\" = [\"127.0.0.1\"]\n{parents}", listener("", ""));
    let env = |name: &str| (name == "PARENT_PASSWORD").then(|| "parent-secret".to_owned());
    TestProxy::with_config(Config::from_toml_with_env(&toml, "test.toml", &env).unwrap()).await
}

/// A raw server that counts connections and answers every CONNECT with `answer`.
async fn counting_parent(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let at = raw_server(move |mut stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            read_head(&mut stream).await;
            let _ = stream.write_all(answer).await;
        }
    })
    .await;
    (at, count)
}

#[tokio::test]
async fn sluice_to_sluice_to_origin() {
    let echo = tcp_echo().await;
    // Names are resolved by the last hop: the second knows echo.test too.
    let second = TestProxy::start(&format!("{}{DNS}", listener("", ""))).await;
    let first = chained(&format!("[[parent]]\nvia = [\"http://{}\"]\n", second.addr)).await;
    // CONNECT and SOCKS clients of the first both leave through the second.
    echoes(connect_tunnel(first.addr, &echo.to_string()).await).await;
    echoes(within(Socks5Stream::connect(first.addr, echo)).await.unwrap()).await;
    echoes(within(Socks5Stream::connect(first.addr, ("echo.test", echo.port()))).await.unwrap())
        .await;
}

#[tokio::test]
async fn through_a_socks5_parent_with_failover_to_the_second() {
    let echo = tcp_echo().await;
    // The SOCKS5 parent: another sluice, SOCKS only, with a user.
    let parent = TestProxy::start(&format!(
        "{}{DNS}[auth]\n[[auth.user]]\nname = \"relay\"\npassword = \"parent-secret\"\n",
        listener("forward = false\nsocks = true\n", "")
    ))
    .await;
    let (refusing, refusals) = counting_parent(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
    let rules = format!(
        "[[parent]]\nvia = [\"socks5://{}\", \"http://{refusing}\", \"socks5://{}\"]\n\
         username = \"relay\"\npassword = \"${{PARENT_PASSWORD}}\"\n",
        closed_port(),
        parent.addr
    );
    let first = chained(&rules).await;
    echoes(connect_tunnel(first.addr, &echo.to_string()).await).await;
    echoes(within(Socks5Stream::connect(first.addr, ("echo.test", echo.port()))).await.unwrap())
        .await;
    assert_eq!(refusals.load(Ordering::SeqCst), 2, "the refusing parent was tried, then skipped");
}

#[tokio::test]
async fn a_destination_failure_is_not_failed_over() {
    let parent = TestProxy::forward().await;
    let (second, tried) = counting_parent(b"HTTP/1.1 200 OK\r\n\r\n").await;
    let rules = format!("[[parent]]\nvia = [\"http://{}\", \"http://{second}\"]\n", parent.addr);
    let first = chained(&rules).await;
    // The first parent reaches a verdict on the destination (refused: 502); asking the next
    // one would only repeat it.
    let request = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", closed_port());
    let answer = exchange_until_closed(first.addr, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert_eq!(tried.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_guard_still_judges_what_the_client_asked_for() {
    let (parent, tried) = counting_parent(b"HTTP/1.1 200 OK\r\n\r\n").await;
    let toml = format!(
        "{}[[parent]]\nvia = [\"http://{parent}\"]\n",
        listener("", "allow_private_destinations = false\n")
    );
    let first = TestProxy::start(&toml).await;
    let echo = tcp_echo().await;
    let request = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", echo);
    let answer = exchange_until_closed(first.addr, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    let socks = within(Socks5Stream::connect(first.addr, echo)).await;
    assert!(socks.is_err());
    assert_eq!(tried.load(Ordering::SeqCst), 0, "no parent was asked");
}

#[tokio::test]
async fn rules_apply_in_order_and_direct_wins_where_it_matches() {
    let echo = tcp_echo().await;
    let (parent, tried) = counting_parent(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
    let rules = format!(
        "[[parent]]\nhosts = [\"echo.test\", \"127.0.0.0/8\"]\ndirect = true\n\
         [[parent]]\nvia = [\"http://{parent}\"]\n"
    );
    let first = chained(&rules).await;
    echoes(within(Socks5Stream::connect(first.addr, ("echo.test", echo.port()))).await.unwrap())
        .await;
    echoes(connect_tunnel(first.addr, &echo.to_string()).await).await;
    assert_eq!(tried.load(Ordering::SeqCst), 0);
    // Anything else goes to the parent, which refuses it.
    let other = within(Socks5Stream::connect(first.addr, ("elsewhere.test", 80))).await;
    assert!(other.is_err());
    assert_eq!(tried.load(Ordering::SeqCst), 1);
}
