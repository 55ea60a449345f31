//! The keep-alive race: an upstream closes a pooled connection just as a request goes out on
//! it. An idempotent request lost that way is sent once more; others are not.
//!
//! The race is made deterministic by an origin that, on the connections it marks, reads the
//! next request head and closes without answering, as a server does whose keep-alive timeout
//! strikes while the request is on its way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use support::config::{FORWARD, listener, reverse_config, route};
use support::proxy::TestProxy;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which request on each connection the origin reads and then closes the connection on,
/// without answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drops {
    /// The second: the first request of a connection is answered, the next one (on the
    /// connection the proxy reuses) is lost.
    Second,
    /// The first: every connection closes under its first request.
    First,
}

/// An origin on 127.0.0.1:0 that loses requests as `drops` says; counts what it saw.
struct RacyOrigin {
    addr: SocketAddr,
    /// Request heads read, answered or not.
    heads: Arc<AtomicUsize>,
    /// Request heads read on connections then closed without an answer.
    lost: Arc<AtomicUsize>,
    /// Of those, requests with a method other than GET.
    lost_other: Arc<AtomicUsize>,
}

impl RacyOrigin {
    async fn start(drops: Drops) -> RacyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicUsize::new(0));
        let lost_other = Arc::new(AtomicUsize::new(0));
        let counters = (heads.clone(), lost.clone(), lost_other.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, drops, counters.clone()));
            }
        });
        RacyOrigin { addr, heads, lost, lost_other }
    }
}

async fn serve(
    mut stream: TcpStream,
    drops: Drops,
    (heads, lost, lost_other): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let mut buffer = Vec::new();
    for index in 1.. {
        let Some(head) = read_head(&mut stream, &mut buffer).await else { return };
        heads.fetch_add(1, Ordering::SeqCst);
        let length = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
            })
            .map_or(0, |value| value.trim().parse::<usize>().unwrap());
        while buffer.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..length);
        let drop_this = match drops {
            Drops::Second => index == 2,
            Drops::First => index == 1,
        };
        if drop_this {
            lost.fetch_add(1, Ordering::SeqCst);
            if !head.starts_with("GET ") {
                lost_other.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        let body = format!("answered request {index}");
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request head from `stream` (bytes after it stay in `buffer`).
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends GETs through `client` to `url` until the origin has lost three of them on reused
/// connections; every one must be answered.
async fn every_lost_get_is_answered(client: &reqwest::Client, url: &str, origin: &RacyOrigin) {
    within(async {
        while origin.lost.load(Ordering::SeqCst) < 3 {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.text().await.unwrap(), "answered request 1");
        }
    })
    .await;
}

#[tokio::test]
async fn a_route_sends_a_get_lost_on_a_reused_connection_again() {
    let origin = RacyOrigin::start(Drops::Second).await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/", &format!("http://{}", origin.addr), "")))
            .await;
    every_lost_get_is_answered(&reqwest::Client::new(), &format!("{}/r", proxy.url()), &origin)
        .await;
}

#[tokio::test]
async fn the_forward_proxy_sends_a_get_lost_on_a_reused_connection_again() {
    let origin = RacyOrigin::start(Drops::Second).await;
    let proxy = TestProxy::start(&listener(FORWARD, "allow_private_destinations = true\n")).await;
    let client = support::client::via_proxy(proxy.addr);
    every_lost_get_is_answered(&client, &format!("http://{}/f", origin.addr), &origin).await;
}

#[tokio::test]
async fn a_route_sends_a_get_its_http_upstream_proxy_lost_on_a_reused_connection_again() {
    // The racy server is the parent here: it takes the absolute-form requests and answers them
    // itself, so it is the parent's keep-alive connection that closes under the request.
    let parent = RacyOrigin::start(Drops::Second).await;
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}[route.upstream_proxy]\nvia = [\"http://{}\"]\n",
        route("/", "http://origin.test", ""),
        parent.addr
    )))
    .await;
    every_lost_get_is_answered(&reqwest::Client::new(), &format!("{}/h", proxy.url()), &parent)
        .await;
}

#[tokio::test]
async fn a_route_sends_a_get_lost_on_a_reused_tunnel_through_a_socks5_parent_again() {
    let origin = RacyOrigin::start(Drops::Second).await;
    let parent = TestProxy::start(&format!(
        "{}[dns.hosts]\n\"origin.test\" = [\"127.0.0.1\"]\n",
        listener("forward = false\nsocks = true\n", "")
    ))
    .await;
    let upstream = format!("http://origin.test:{}", origin.addr.port());
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}[route.upstream_proxy]\nvia = [\"socks5://{}\"]\n",
        route("/", &upstream, ""),
        parent.addr
    )))
    .await;
    every_lost_get_is_answered(&reqwest::Client::new(), &format!("{}/s", proxy.url()), &origin)
        .await;
}

#[tokio::test]
async fn a_post_lost_on_a_reused_connection_is_not_sent_again() {
    let origin = RacyOrigin::start(Drops::Second).await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/", &format!("http://{}", origin.addr), "")))
            .await;
    let client = reqwest::Client::new();
    let url = format!("{}/p", proxy.url());
    let status = within(async {
        loop {
            // The GET opens a connection; the POST may go out on it again.
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.bytes().await.unwrap();
            let response = client.post(&url).body("once").send().await.unwrap();
            if origin.lost_other.load(Ordering::SeqCst) > 0 {
                return response.status();
            }
        }
    })
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.lost_other.load(Ordering::SeqCst), 1, "the POST went out once");
}

#[tokio::test]
async fn a_get_lost_on_a_new_connection_is_not_sent_again() {
    for forward in [false, true] {
        let origin = RacyOrigin::start(Drops::First).await;
        let (proxy, client, url) = if forward {
            let proxy =
                TestProxy::start(&listener(FORWARD, "allow_private_destinations = true\n")).await;
            let client = support::client::via_proxy(proxy.addr);
            (proxy, client, format!("http://{}/n", origin.addr))
        } else {
            let upstream = format!("http://{}", origin.addr);
            let proxy = TestProxy::start(&reverse_config(&route("/", &upstream, ""))).await;
            let url = format!("{}/n", proxy.url());
            (proxy, reqwest::Client::new(), url)
        };
        let response = within(client.get(&url).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "forward: {forward}");
        assert_eq!(origin.heads.load(Ordering::SeqCst), 1, "forward: {forward}");
        drop(proxy);
    }
}
