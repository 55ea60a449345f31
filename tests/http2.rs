//! HTTP/2 from clients: many streams multiplexed on one connection, SSE event by event,
//! CONNECT over HTTP/2 (RFC 9113 §8.5), h2c only when enabled, and routing and header rules
//! that behave as over HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::client::{direct, h2c_conn, h2c_direct};
use support::config::{REVERSE, listener, route};
use support::h2::Session;
use support::proxy::TestProxy;
use support::sse::Events;
use support::upstream::{Origin, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Barrier, mpsc};

/// A plain reverse-only listener with h2c (HTTP/2 prior knowledge) enabled, then `rest`.
fn h2c_reverse(rest: &str) -> String {
    format!("{}{rest}", listener(REVERSE, "h2c = true\n"))
}

const STREAMS: usize = 100;

#[tokio::test]
async fn hundred_concurrent_streams_on_one_connection_each_get_their_own_body() {
    // The origin answers only once all 100 requests have arrived, so they must all be in
    // flight through the proxy at the same time: multiplexed, not queued one by one.
    let all_arrived = Arc::new(Barrier::new(STREAMS));
    let origin = Origin::start(move |request: Request<Incoming>| {
        let all_arrived = all_arrived.clone();
        async move {
            all_arrived.wait().await;
            http::Response::new(request.into_body().boxed())
        }
    })
    .await;
    let proxy = TestProxy::start(&h2c_reverse(&route("/echo", &origin.url(""), ""))).await;
    // One TCP connection: every request below is a stream on it.
    let sender = h2c_conn::<Full<Bytes>>(proxy.addr).await;
    let streams = (0..STREAMS).map(|index| {
        let mut sender = sender.clone();
        let url = format!("http://{}/echo/{index}", proxy.addr);
        async move {
            let body = payload(1000 + index * 97, index as u64 + 1);
            let request = Request::post(url).body(Full::new(Bytes::from(body.clone()))).unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "stream {index}");
            assert_eq!(response.version(), Version::HTTP_2);
            let echoed = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(sha256(&echoed), sha256(&body), "stream {index} got another body");
        }
    });
    within(futures_util::future::join_all(streams)).await;
    let mut paths: Vec<_> = origin.seen().iter().map(|seen| seen.uri.to_string()).collect();
    paths.sort();
    let mut expected: Vec<_> = (0..STREAMS).map(|index| format!("/{index}")).collect();
    expected.sort();
    assert_eq!(paths, expected);
}

const SSE_EVENTS: usize = 20;

fn sse_event(index: usize) -> String {
    support::sse::numbered_event(index, index)
}

#[tokio::test]
async fn sse_over_h2_arrives_event_by_event() {
    // Lockstep: the origin sends event n+1 only after the client has received event n, so a
    // proxy that buffered the response would never deliver anything.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<usize>();
    let ack_rx = Arc::new(tokio::sync::Mutex::new(Some(ack_rx)));
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let ack_rx = ack_rx.clone();
        async move {
            let mut acks = ack_rx.lock().await.take().expect("one SSE request");
            let (mut sender, response) = support::sse::response();
            tokio::spawn(async move {
                for index in 0..SSE_EVENTS {
                    if index > 0 {
                        assert_eq!(acks.recv().await, Some(index - 1), "acks in order");
                    }
                    if sender.send_data(Bytes::from(sse_event(index))).await.is_err() {
                        return;
                    }
                }
            });
            response
        }
    })
    .await;
    let proxy = TestProxy::start(&h2c_reverse(&route("/sse", &origin.url(""), ""))).await;
    let response = within(
        h2c_direct()
            .get(format!("http://{}/sse/events", proxy.addr))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let mut received = Events::new(response);
    let mut events = Vec::new();
    while let Some(event) = received.next().await {
        events.push(event);
        let _ = ack_tx.send(events.len() - 1);
    }
    received.assert_no_partial_event();
    let expected: Vec<String> = (0..SSE_EVENTS).map(sse_event).collect();
    assert_eq!(events, expected, "every event intact and in order");
}

#[tokio::test]
async fn connect_over_h2_opens_a_tunnel() {
    let echo = tcp_echo().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = true\nreverse = false\nh2c = true\n",
    )
    .await;
    let mut sender = h2c_conn::<Empty<Bytes>>(proxy.addr).await;
    // RFC 9113 §8.5: :method CONNECT and :authority only, no :scheme or :path.
    let request = Request::connect(echo.to_string()).body(Empty::new()).unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let tunnel = within(hyper::upgrade::on(response)).await.expect("the stream becomes a tunnel");
    let mut tunnel = TokioIo::new(tunnel);

    tunnel.write_all(b"ping over h2").await.unwrap();
    let mut pong = [0u8; 12];
    within(tunnel.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping over h2");

    // A larger payload, then a half-close: the echo answers everything and closes too.
    let big = payload(256 * 1024, 5);
    let (mut read, mut write) = tokio::io::split(tunnel);
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    within(read.read_to_end(&mut back)).await.unwrap();
    within(writer).await.unwrap();
    assert_eq!(back.len(), big.len());
    assert_eq!(sha256(&back), sha256(&big), "every byte came back, in order");

    // The connection still carries other streams.
    let request = Request::connect(echo.to_string()).body(Empty::new()).unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn h2_prior_knowledge_is_refused_without_h2c_and_served_with_it() {
    let origin = Origin::echo().await;
    let routes = route("/app", &origin.url(""), "");
    let without = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = false\nreverse = true\n\n{routes}"
    ))
    .await;
    let with = TestProxy::start(&h2c_reverse(&routes)).await;
    let (plain, with_h2c) = (without.addr, with.addr);
    let h2 = h2c_direct();

    let refused = within(h2.get(format!("http://{plain}/app/refused")).send()).await;
    assert!(refused.is_err(), "h2c served without h2c = true: {refused:?}");
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // The same listener still serves HTTP/1.1.
    let response = within(direct().get(format!("http://{plain}/app/h1")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);

    let response = within(h2.get(format!("http://{with_h2c}/app/h2")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let paths: Vec<_> = origin.seen().iter().map(|seen| seen.uri.to_string()).collect();
    assert_eq!(paths, vec!["/h1", "/h2"]);
}

#[tokio::test]
async fn routing_and_header_rules_apply_to_h2_as_to_http1() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&h2c_reverse(&format!(
        "{}{}",
        route("/other", "http://127.0.0.1:9", ""),
        route(
            "/api",
            &origin.url("/base"),
            "[route.headers.request]\nset = { \"x-route\" = \"api\" }\nremove = [\"x-secret\"]\n"
        )
    )))
    .await;
    for client in [direct(), h2c_direct()] {
        let response = within(
            client
                .post(format!("http://{}/api/items?q=1", proxy.addr))
                .header("x-route", "from the client")
                .header("x-secret", "hidden")
                .header("x-kept", "kept")
                .body("payload")
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(within(response.text()).await.unwrap(), "payload");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    for (index, request) in seen.iter().enumerate() {
        let values = |name: &str| -> Vec<String> {
            request.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
        };
        assert_eq!(request.method, "POST", "request {index}");
        assert_eq!(request.uri, "/base/items?q=1", "request {index}");
        assert_eq!(values("x-route"), vec!["api"], "request {index}: set replaces");
        assert!(values("x-secret").is_empty(), "request {index}: removed");
        assert_eq!(values("x-kept"), vec!["kept"], "request {index}");
        assert_eq!(values("x-forwarded-proto"), vec!["http"], "request {index}");
    }
    // Everything else the origin saw that both clients control is the same.
    for name in ["host", "x-forwarded-host", "x-forwarded-for", "content-length"] {
        assert_eq!(
            seen[0].headers.get_all(name).iter().collect::<Vec<_>>(),
            seen[1].headers.get_all(name).iter().collect::<Vec<_>>(),
            "{name} differs between HTTP/1.1 and h2"
        );
    }
}

/// HTTP/2 stream `1` asking for `path` on `sluice.test`.
fn get_fields(path: &str) -> [(&str, &str); 4] {
    [(":method", "GET"), (":scheme", "http"), (":authority", "sluice.test"), (":path", path)]
}

/// hyper polls an HTTP/2 response body only while the client's window has room, so a client
/// that never opens its window used to keep the upstream connection under that body forever.
/// Now the stream is given up after `timeouts.client_send`, and the upstream connection closed.
#[tokio::test]
async fn a_stream_whose_window_never_opens_frees_its_upstream_after_client_send() {
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let origin = support::upstream::raw_server(move |mut stream| {
        let closed_tx = closed_tx.lock().unwrap().take();
        async move {
            support::upstream::read_head(&mut stream).await;
            let total = 64 << 20;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 16 * 1024];
            while stream.write_all(&chunk).await.is_ok() {}
            if let Some(closed_tx) = closed_tx {
                let _ = closed_tx.send(std::time::Instant::now());
            }
        }
    })
    .await;
    let proxy = TestProxy::start(&h2c_reverse(&format!(
        "{}[timeouts]\nclient_send = \"1s\"\n",
        route("/big", &format!("http://{origin}"), "")
    )))
    .await;
    // SETTINGS_INITIAL_WINDOW_SIZE 0: not one byte of any stream's body may be sent.
    let mut session = Session::open(proxy.addr, &[(0x4, 0)]).await;
    let asked = std::time::Instant::now();
    session.requests(std::iter::once(1), &get_fields("/big/file")).await;
    within(async {
        loop {
            let frame = session.next_frame().await.expect("the proxy closed the connection");
            if frame.is_headers() && frame.stream == 1 {
                return;
            }
            assert!(frame.data().is_none(), "DATA sent beyond the window: {frame:?}");
        }
    })
    .await;
    let closed = within(closed).await.unwrap();
    assert!(closed.duration_since(asked) >= std::time::Duration::from_millis(900));
}

/// hyper's HTTP/2 server has no idle timeout; sluice closes a connection that has had no
/// stream open for `timeouts.http2_idle` with GOAWAY, whether it never asked for anything or
/// its requests are done.
#[tokio::test]
async fn an_http2_connection_with_no_stream_open_is_closed_after_http2_idle() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&h2c_reverse(&format!(
        "{}[timeouts]\nhttp2_idle = \"1s\"\n",
        route("/app", &origin.url(""), "")
    )))
    .await;
    for requests in [0, 1] {
        let mut session = Session::open(proxy.addr, &[]).await;
        if requests > 0 {
            session.requests(std::iter::once(1), &get_fields("/app/x")).await;
        }
        let started = std::time::Instant::now();
        let goaway = within(async {
            loop {
                match session.next_frame().await {
                    Some(frame) if frame.goaway_code().is_some() => return frame.goaway_code(),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await;
        assert_eq!(goaway, Some(0), "GOAWAY NO_ERROR after {requests} requests");
        assert!(started.elapsed() >= std::time::Duration::from_millis(900));
        // Then (after the final GOAWAY of a graceful shutdown) the connection closes.
        within(async {
            while let Some(frame) = session.next_frame().await {
                assert!(frame.goaway_code().is_some(), "{frame:?}");
            }
        })
        .await;
    }
}
