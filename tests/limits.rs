//! Size, rate, connection and time limits: 414/431/413, per-IP and per-route rate limits,
//! per-IP connection caps, slowloris, requests per connection and tunnel lifetime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::client::{
    assert_still_serves, connect_tunnel, exchange_until_closed, forward_get, http1_over,
    raw_exchange, raw_exchange_from, raw_header_values, status_of,
};
use support::config::{reverse_config, route};
use support::observe::{sample, scrape_until};
use support::proxy::TestProxy;
use support::upstream::{Collector, Origin, full, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A second loopback address, for a second client address.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Reads one HTTP/1.1 response (head and a Content-Length or chunked body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let head = support::client::read_response_head(stream).await;
    let length = raw_header_values(&head, "content-length").first().map(|v| v.parse().unwrap());
    let chunked = raw_header_values(&head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if let Some(length) = length {
        body.resize(length, 0);
        stream.read_exact(&mut body).await.unwrap();
    } else if chunked {
        loop {
            let line = read_line(stream).await;
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (head, body)
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_ne!(stream.read(&mut byte).await.unwrap(), 0, "closed inside a chunk size line");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// A forward proxy on loopback with `rest` appended to the config.
async fn forward_proxy(rest: &str) -> TestProxy {
    TestProxy::start(&format!("[[listener]]\naddress = \"127.0.0.1:0\"\n{rest}")).await
}

#[tokio::test]
async fn request_line_over_the_limit_is_414() {
    let origin = Origin::echo().await;
    let proxy = forward_proxy("[limits]\nmax_request_line_bytes = 1024\n").await;
    let long = format!("/{}", "a".repeat(2000));
    let response = raw_exchange(proxy.addr, forward_get(origin.addr, &long).as_bytes()).await;
    assert_eq!(status_of(&response), 414, "{response}");
    assert!(origin.seen().is_empty(), "the long request reached the origin");
    // Just under the limit is served.
    let fits = format!("/{}", "a".repeat(900));
    let response = raw_exchange(proxy.addr, forward_get(origin.addr, &fits).as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(origin.only_request().uri.path(), fits);
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn head_over_the_byte_or_field_limit_is_431() {
    let origin = Origin::echo().await;
    let proxy =
        forward_proxy("[limits]\nmax_request_head_bytes = 8192\nmax_request_headers = 20\n").await;
    let o = origin.addr;
    let big = format!(
        "GET http://{o}/big HTTP/1.1\r\nHost: {o}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(10_000)
    );
    let response = exchange_until_closed(proxy.addr, big.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "head bytes: {response}");
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request =
        format!("GET http://{o}/many HTTP/1.1\r\nHost: {o}\r\n{many}Connection: close\r\n\r\n");
    let response = exchange_until_closed(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "header count: {response}");
    assert!(origin.seen().is_empty(), "an oversized head reached the origin");
    // Within both limits is served.
    let few: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request =
        format!("GET http://{o}/few HTTP/1.1\r\nHost: {o}\r\n{few}Connection: close\r\n\r\n");
    assert_eq!(status_of(&raw_exchange(proxy.addr, request.as_bytes()).await), 200);
    assert_still_serves(proxy.addr).await;
}

/// `Content-Length` framed POST of `body` to `target` (absolute- or origin-form).
fn post_with_length(target: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Chunked POST of `body` to `target`, in chunks of 500 bytes.
fn post_chunked(target: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Asserts the body limit of 1000 bytes on `target` with `Content-Length`: over it is 413
/// before the origin sees anything; bodies at the limit (either framing) pass intact.
async fn assert_length_limit(proxy: &TestProxy, collector: &Collector, target: &str, host: &str) {
    let too_big = payload(2000, 1);
    let response =
        exchange_until_closed(proxy.addr, &post_with_length(target, host, &too_big)).await;
    assert_eq!(status_of(&response), 413, "Content-Length over the limit: {response}");
    assert!(collector.origin.seen().is_empty(), "the 413 request reached the origin");

    for (body, framing) in [
        (post_with_length(target, host, &payload(1000, 3)), "Content-Length"),
        (post_chunked(target, host, &payload(1000, 4)), "chunked"),
    ] {
        let response = raw_exchange(proxy.addr, &body).await;
        assert_eq!(status_of(&response), 200, "{framing} body at the limit: {response}");
    }
    assert_eq!(collector.bodies(), [payload(1000, 3), payload(1000, 4)]);
}

/// Asserts the body limit of 1000 bytes on `target` for a chunked body of 5000 bytes: the
/// origin may see the start of it, but never all of it, and the client gets 413 or an
/// aborted response, never a 200.
async fn assert_streamed_limit(proxy: &TestProxy, collector: &Collector, target: &str, host: &str) {
    let streamed = payload(5000, 2);
    let response = exchange_until_closed(proxy.addr, &post_chunked(target, host, &streamed)).await;
    assert_eq!(collector.complete().len(), 0, "an over-limit body arrived whole");
    if !response.is_empty() {
        assert_ne!(status_of(&response), 200, "chunked body over the limit: {response}");
        assert_eq!(status_of(&response), 413, "chunked body over the limit: {response}");
    }
}

/// A reverse listener with `/api` routed to `collector`, limited to 1000-byte bodies.
async fn limited_route(collector: &Collector) -> TestProxy {
    let upstream = collector.origin.url("");
    TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/api", &upstream, "max_body_bytes = 1000"),
        route("/echo", &upstream, "")
    )))
    .await
}

/// A normal request through the reverse listener's unlimited route still succeeds.
async fn route_still_serves(proxy: &TestProxy) {
    let body = payload(3000, 9);
    let response =
        raw_exchange(proxy.addr, &post_with_length("/echo/x", "front.test", &body)).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.ends_with(&format!("3000 {}", sha256(&body))), "{response}");
}

#[tokio::test]
async fn route_body_with_content_length_over_max_body_bytes_is_413_before_the_origin() {
    let collector = Collector::start().await;
    let proxy = limited_route(&collector).await;
    assert_length_limit(&proxy, &collector, "/api/upload", "front.test").await;
    route_still_serves(&proxy).await;
}

#[tokio::test]
async fn route_chunked_body_over_max_body_bytes_is_cut_with_413() {
    let collector = Collector::start().await;
    let proxy = limited_route(&collector).await;
    assert_streamed_limit(&proxy, &collector, "/api/upload", "front.test").await;
    route_still_serves(&proxy).await;
}

#[tokio::test]
async fn forward_body_with_content_length_over_max_request_body_bytes_is_413() {
    let collector = Collector::start().await;
    let proxy = forward_proxy("[limits]\nmax_request_body_bytes = 1000\n").await;
    let target = collector.origin.url("/upload");
    let host = collector.origin.addr.to_string();
    assert_length_limit(&proxy, &collector, &target, &host).await;
    assert_still_serves(proxy.addr).await;
}

#[tokio::test]
async fn forward_chunked_body_over_max_request_body_bytes_is_cut_with_413() {
    let collector = Collector::start().await;
    let proxy = forward_proxy("[limits]\nmax_request_body_bytes = 1000\n").await;
    let target = collector.origin.url("/upload");
    let host = collector.origin.addr.to_string();
    assert_streamed_limit(&proxy, &collector, &target, &host).await;
    assert_still_serves(proxy.addr).await;
}

/// The `Retry-After` seconds of a 429 response.
fn retry_after(response: &str) -> u64 {
    assert_eq!(status_of(response), 429, "{response}");
    let values = raw_header_values(response, "retry-after");
    assert_eq!(values.len(), 1, "one Retry-After: {response}");
    values[0].parse().unwrap_or_else(|_| panic!("Retry-After in seconds: {response}"))
}

#[tokio::test]
async fn per_ip_rate_limit_answers_429_with_retry_after_after_the_burst() {
    let origin = Origin::echo().await;
    let proxy = forward_proxy("[rate_limit]\nper_ip = { rate = 1.0, burst = 3 }\n").await;
    let request = forward_get(origin.addr, "/r");
    for i in 0..3 {
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "request {i} is within the burst: {response}");
    }
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    let wait = retry_after(&response);
    assert!(wait >= 1, "{response}");
    assert_eq!(origin.seen().len(), 3, "the limited request reached the origin");

    // Another client address has its own bucket.
    let response = raw_exchange_from(OTHER_CLIENT, proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    // The limited client is served again once the bucket refills (pacing, not sync).
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "after Retry-After: {response}");
    assert_eq!(origin.seen().len(), 5);
}

#[tokio::test]
async fn per_route_rate_limit_is_shared_by_all_clients_and_spares_other_routes() {
    let limited = Origin::echo().await;
    let free = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = false\nreverse = true\n\n\
         [[route]]\nprefix = \"/limited\"\nupstream = \"{}\"\nrate_limit = {{ rate = 1.0, burst = 3 }}\n\n\
         [[route]]\nprefix = \"/free\"\nupstream = \"{}\"\n",
        limited.url(""),
        free.url("")
    ))
    .await;
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
    };
    for i in 0..3 {
        let response = raw_exchange(proxy.addr, request("/limited/x").as_bytes()).await;
        assert_eq!(status_of(&response), 200, "request {i}: {response}");
    }
    let response = raw_exchange(proxy.addr, request("/limited/x").as_bytes()).await;
    assert!(retry_after(&response) >= 1, "{response}");
    // The route's bucket is shared: another client address is limited too.
    let response =
        raw_exchange_from(OTHER_CLIENT, proxy.addr, request("/limited/y").as_bytes()).await;
    assert!(retry_after(&response) >= 1, "{response}");
    assert_eq!(limited.seen().len(), 3, "a limited request reached the origin");
    // Another route is unaffected.
    for _ in 0..5 {
        let response = raw_exchange(proxy.addr, request("/free/z").as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{response}");
    }
    assert_eq!(free.seen().len(), 5);
}

/// Sends `GET uri` on `sender` and returns the status.
async fn send_get(
    sender: &mut hyper::client::conn::http1::SendRequest<String>,
    uri: &str,
    close: bool,
) -> StatusCode {
    within(sender.ready()).await.unwrap();
    let mut request = Request::get(uri).header("host", "x");
    if close {
        request = request.header("connection", "close");
    }
    let response = within(sender.send_request(request.body(String::new()).unwrap())).await.unwrap();
    let status = response.status();
    within(response.into_body().collect()).await.unwrap();
    status
}

/// Tries a fresh `GET` until it is served, for the moment after a connection closed when the
/// proxy may not have released its slot yet; fails if it is never served within the bound.
async fn served_again(proxy: SocketAddr, origin: SocketAddr) {
    within(async {
        loop {
            let response =
                exchange_until_closed(proxy, forward_get(origin, "/again").as_bytes()).await;
            if !response.is_empty() && status_of(&response) == 200 {
                return;
            }
            assert!(response.is_empty() || status_of(&response) == 503, "{response}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn sixth_connection_from_one_address_gets_503_until_one_closes() {
    let origin = Origin::echo().await;
    let proxy = forward_proxy("max_connections_per_ip = 5\n").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let stream = within(TcpStream::connect(proxy.addr)).await.unwrap();
        held.push(stream);
    }
    // Accepted in order: the sixth is over the cap.
    let mut sixth = within(TcpStream::connect(proxy.addr)).await.unwrap();
    let mut refusal = Vec::new();
    within(sixth.read_to_end(&mut refusal)).await.unwrap();
    let refusal = String::from_utf8(refusal).unwrap();
    assert_eq!(status_of(&refusal), 503, "{refusal}");
    assert!(refusal.contains("too many connections"), "{refusal}");
    assert!(origin.seen().is_empty());

    // The five held connections are being served.
    let mut senders = Vec::new();
    for stream in held {
        let (mut sender, task) = http1_over::<String>(stream).await;
        assert_eq!(send_get(&mut sender, &origin.url("/held"), false).await, StatusCode::OK);
        senders.push((sender, task));
    }
    assert_eq!(origin.seen().len(), 5);
    // Still full: another one is refused.
    let response =
        exchange_until_closed(proxy.addr, forward_get(origin.addr, "/x").as_bytes()).await;
    assert_eq!(status_of(&response), 503, "{response}");

    // One closes (the proxy closes it after `Connection: close`): a new connection is served.
    let (mut sender, task) = senders.pop().unwrap();
    assert_eq!(send_get(&mut sender, &origin.url("/bye"), true).await, StatusCode::OK);
    // The connection's own outcome does not matter here, only that it ended.
    let _ = within(task).await.unwrap();
    served_again(proxy.addr, origin.addr).await;
    drop(senders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connections_from_one_address_hold_exactly_the_per_ip_cap() {
    const CONNECTIONS: usize = 1000;
    const CAP: usize = 200;
    let origin = Origin::echo().await;
    let proxy = forward_proxy(&format!("max_connections_per_ip = {CAP}\n")).await;
    let (refused_tx, mut refused_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    // Connection attempts go out 25 at a time: under a burst of 1,000 SYNs the sandbox's
    // loopback (gVisor) loses accept readiness for some connections, even for a bare tokio
    // accept loop. Every connection still stays open until the count is done, so all 1,000
    // are concurrent and only the cap decides which are held.
    let attempts = Arc::new(tokio::sync::Semaphore::new(25));

    enum Outcome {
        Refused(String),
        Served(String),
    }
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let refused_tx = refused_tx.clone();
            let attempts = attempts.clone();
            let mut go_rx = go_rx.clone();
            let addr = proxy.addr;
            let origin = origin.addr;
            tokio::spawn(async move {
                let attempt = attempts.acquire_owned().await.unwrap();
                let mut stream = TcpStream::connect(addr).await.unwrap();
                drop(attempt);
                let mut received = Vec::new();
                // A refused connection is answered at once; a held one hears nothing until
                // it sends a request, which it does once every refusal has arrived.
                tokio::select! {
                    _ = stream.read_to_end(&mut received) => {
                        let _ = refused_tx.send(());
                        return Outcome::Refused(String::from_utf8_lossy(&received).into_owned());
                    }
                    _ = go_rx.wait_for(|go| *go) => {}
                }
                stream.write_all(forward_get(origin, "/held").as_bytes()).await.unwrap();
                let mut response = Vec::new();
                let _ = stream.read_to_end(&mut response).await;
                Outcome::Served(String::from_utf8_lossy(&response).into_owned())
            })
        })
        .collect();
    drop(refused_tx);
    within(async {
        for _ in 0..CONNECTIONS - CAP {
            refused_rx.recv().await.expect("every task reports");
        }
    })
    .await;
    go_tx.send(true).unwrap();
    let outcomes = within(futures_util::future::join_all(tasks)).await;
    let (mut refused, mut served) = (0, 0);
    for outcome in outcomes {
        match outcome.unwrap() {
            Outcome::Refused(text) => {
                assert_eq!(status_of(&text), 503, "{text}");
                refused += 1;
            }
            Outcome::Served(text) => {
                assert_eq!(status_of(&text), 200, "a held connection was not served: {text}");
                served += 1;
            }
        }
    }
    assert_eq!((served, refused), (CAP, CONNECTIONS - CAP));
    assert_eq!(origin.seen().len(), CAP);
    served_again(proxy.addr, origin.addr).await;
}

#[tokio::test]
async fn slowloris_client_is_disconnected_while_others_are_served() {
    let origin = Origin::echo().await;
    let proxy = forward_proxy("[timeouts]\nrequest_header = \"1s\"\n").await;
    let slow = within(TcpStream::connect(proxy.addr)).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let started = Instant::now();
    // A head that never ends, one byte every 300 ms (the client's pacing).
    let o = origin.addr;
    let endless = format!("GET http://{o}/slow HTTP/1.1\r\nHost: {o}\r\nX-Slow: ")
        .into_bytes()
        .into_iter()
        .chain(std::iter::repeat(b'a'));
    let writer = tokio::spawn(async move {
        for byte in endless {
            if slow_write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let disconnected = tokio::spawn(async move {
        let mut sink = Vec::new();
        // Either EOF or a reset ends it.
        let _ = within(slow_read.read_to_end(&mut sink)).await;
        started.elapsed()
    });

    // Meanwhile 50 other clients, each on its own connection, are served promptly.
    let others_started = Instant::now();
    let addr = proxy.addr;
    let others = (0..50).map(|i| {
        let request = forward_get(o, &format!("/other/{i}"));
        async move { raw_exchange(addr, request.as_bytes()).await }
    });
    let responses = within(futures_util::future::join_all(others)).await;
    let others_took = others_started.elapsed();
    for response in &responses {
        assert_eq!(status_of(response), 200, "{response}");
    }
    assert!(others_took < Duration::from_secs(5), "50 clients took {others_took:?}");

    let lived = within(disconnected).await.unwrap();
    writer.abort();
    assert!(lived >= Duration::from_millis(900), "cut before the timeout: {lived:?}");
    assert!(lived < Duration::from_secs(5), "slow client lived {lived:?}");
    assert_eq!(origin.seen().len(), 50, "the slow request never reached the origin");
}

#[tokio::test]
async fn response_reaching_max_requests_per_connection_closes_the_connection() {
    let origin = Origin::start(|_request| async { full("ok") }).await;
    let proxy = forward_proxy("[limits]\nmax_requests_per_connection = 3\n").await;
    let mut stream = within(TcpStream::connect(proxy.addr)).await.unwrap();
    let o = origin.addr;
    for i in 1..=3 {
        let request = format!("GET http://{o}/{i} HTTP/1.1\r\nHost: {o}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = within(read_response(&mut stream)).await;
        assert_eq!(status_of(&head), 200, "{head}");
        assert_eq!(body, b"ok");
        let connection = raw_header_values(&head, "connection");
        if i < 3 {
            assert!(
                !connection.iter().any(|v| v.eq_ignore_ascii_case("close")),
                "request {i}: {head}"
            );
        } else {
            assert!(connection.iter().any(|v| v.eq_ignore_ascii_case("close")), "{head}");
        }
    }
    // The proxy closes the connection: a fourth request gets no answer.
    let _ = stream
        .write_all(format!("GET http://{o}/4 HTTP/1.1\r\nHost: {o}\r\n\r\n").as_bytes())
        .await;
    let mut rest = Vec::new();
    let _ = within(stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "answered after the limit: {}", String::from_utf8_lossy(&rest));
    assert_eq!(origin.seen().len(), 3);
    // A new connection is served.
    let response = raw_exchange(proxy.addr, forward_get(o, "/new").as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test]
async fn busy_tunnel_is_closed_at_its_max_lifetime() {
    let echo = tcp_echo().await;
    let proxy =
        forward_proxy("[timeouts]\ntunnel_idle = \"10s\"\ntunnel_max_lifetime = \"300ms\"\n").await;
    let mut tunnel = connect_tunnel(proxy.addr, &echo.to_string()).await;
    let opened = Instant::now();
    let mut pings = 0;
    within(async {
        loop {
            if tunnel.write_all(b"ping").await.is_err() {
                break;
            }
            let mut pong = [0u8; 4];
            match tunnel.read_exact(&mut pong).await {
                Ok(_) => assert_eq!(&pong, b"ping"),
                Err(_) => break,
            }
            pings += 1;
            // The client's pacing: busy, never idle for long.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let lived = opened.elapsed();
    assert!(pings >= 3, "the tunnel was busy: {pings} round trips");
    assert!(lived >= Duration::from_millis(250), "closed before the lifetime: {lived:?}");
    assert!(lived < Duration::from_secs(3), "lived {lived:?}");
    // A new tunnel works.
    let mut tunnel = connect_tunnel(proxy.addr, &echo.to_string()).await;
    tunnel.write_all(b"next").await.unwrap();
    let mut answer = [0u8; 4];
    within(tunnel.read_exact(&mut answer)).await.unwrap();
    assert_eq!(&answer, b"next");
}

/// Polls the admin `/metrics` until `series` has `value`, bounded by the suite's wait.
async fn await_sample(proxy: &TestProxy, series: &str, value: f64) {
    scrape_until(&proxy.admin_url("/metrics"), |samples| sample(samples, series) == value).await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_parked_and_serves_its_next_request() {
    let origin = Origin::echo().await;
    let proxy = forward_proxy("[admin]\naddress = \"127.0.0.1:0\"\n").await;
    let target = origin.addr;
    let keep_alive =
        |path: &str| format!("GET http://{target}{path} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    // Waiting for its first request, the connection holds only its socket.
    await_sample(&proxy, "sluice_connections_parked", 1.0).await;
    client.write_all(keep_alive("/first").as_bytes()).await.unwrap();
    let (head, _) = within(read_response(&mut client)).await;
    assert_eq!(status_of(&head), 200, "{head}");
    // Idle after its response, it is parked again ...
    await_sample(&proxy, "sluice_connections_parked", 1.0).await;
    // ... and the same connection serves the next request, a request sent in two pieces
    // included (the second piece reaches a freshly built HTTP session).
    let second = keep_alive("/second");
    let (start, rest) = second.split_at(10);
    client.write_all(start.as_bytes()).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(rest.as_bytes()).await.unwrap();
    let (head, _) = within(read_response(&mut client)).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let paths: Vec<String> = origin.seen().iter().map(|seen| seen.uri.to_string()).collect();
    assert_eq!(paths, ["/first", "/second"]);
    // A parked connection the client closes is gone at once.
    await_sample(&proxy, "sluice_connections_parked", 1.0).await;
    drop(client);
    await_sample(&proxy, "sluice_connections_active", 0.0).await;
    await_sample(&proxy, "sluice_connections_parked", 0.0).await;
}

#[tokio::test]
async fn tunnel_from_a_parked_connection_still_relays() {
    let echo = tcp_echo().await;
    let proxy = forward_proxy("[admin]\naddress = \"127.0.0.1:0\"\n").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    await_sample(&proxy, "sluice_connections_parked", 1.0).await;
    client
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = within(support::client::read_response_head(&mut client)).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let data = payload(300_000, 7);
    let (mut read, mut write) = client.into_split();
    let sender = tokio::spawn(async move {
        write.write_all(&data).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    within(read.read_to_end(&mut back)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(sha256(&back), sha256(&payload(300_000, 7)));
}
