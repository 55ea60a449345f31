//! Absolute-form forward proxying: methods, bodies, keep-alive, pooling, Expect, bodiless
//! responses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use support::client::{raw_exchange, read_response_head, status_of, via_proxy};
use support::proxy::TestProxy;
use support::upstream::{Origin, full, raw_server, read_head};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn every_method_reaches_the_origin_in_origin_form() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let client = via_proxy(proxy.addr);
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"];
    for method in methods {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response =
            within(client.request(method.clone(), origin.url("/p/a%2Fb?q=1&r=%20")).send())
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(response.headers()["x-method"], method.as_str());
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), methods.len());
    for (request, method) in seen.iter().zip(methods) {
        assert_eq!(request.method.as_str(), method);
        assert_eq!(request.uri.to_string(), "/p/a%2Fb?q=1&r=%20", "origin-form, byte-exact");
        assert_eq!(request.headers["host"], origin.addr.to_string());
        let via = request.headers["via"].to_str().unwrap();
        assert!(via.starts_with("1.1 sluice-"), "went through the proxy: {via}");
    }
}

#[tokio::test]
async fn bodies_keep_their_bytes_both_ways() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let client = via_proxy(proxy.addr);
    for (len, seed) in [(0, 1), (1, 2), (64 * 1024, 3), (8 * 1024 * 1024, 4)] {
        let body = payload(len, seed);
        let response =
            within(client.post(origin.url("/upload")).body(body.clone()).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = within(response.bytes()).await.unwrap();
        assert_eq!(echoed.len(), len);
        assert_eq!(sha256(&echoed), sha256(&body), "{len} bytes");
    }
}

#[tokio::test]
async fn chunked_upload_streams_through() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let client = via_proxy(proxy.addr);
    let body = payload(3 * 1024 * 1024 + 7, 9);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stream = futures_util::stream::iter(chunks);
    let response =
        within(client.put(origin.url("/chunked")).body(reqwest::Body::wrap_stream(stream)).send())
            .await
            .unwrap();
    let echoed = within(response.bytes()).await.unwrap();
    assert_eq!(sha256(&echoed), sha256(&body));
    let seen = origin.only_request();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(seen.headers.get("content-length").is_none());
}

#[tokio::test]
async fn each_request_on_one_connection_goes_to_its_own_origin() {
    let first = Origin::echo().await;
    let second = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    // One client connection, two absolute-form requests to two different origins.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for (origin, body) in [(&first, "to first"), (&second, "to second"), (&first, "again")] {
        let request = Request::post(origin.url("/who"))
            .header("host", origin.addr.to_string())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = within(sender.send_request(request)).await.unwrap();
        let bytes = within(response.into_body().collect()).await.unwrap().to_bytes();
        assert_eq!(bytes, body);
    }
    assert_eq!(first.seen().len(), 2);
    assert_eq!(second.seen().len(), 1);
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let client = via_proxy(proxy.addr);
    for _ in 0..5 {
        let response = within(client.get(origin.url("/")).send()).await.unwrap();
        within(response.bytes()).await.unwrap();
    }
    assert_eq!(origin.seen().len(), 5);
    assert_eq!(origin.connections(), 1, "sequential requests reuse one upstream connection");
}

#[tokio::test]
async fn host_header_comes_from_the_target_not_the_client() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let request = format!(
        "GET http://user:secret@{}/x HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        origin.addr
    );
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&response), 200);
    let seen = origin.only_request();
    assert_eq!(seen.headers["host"], origin.addr.to_string());
    assert_eq!(seen.uri, "/x");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        origin.url("/continue")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The client holds the body back until the interim response arrives.
    let interim = within(read_response_head(&mut stream)).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");
    stream.write_all(b"hello").await.unwrap();
    let head = within(read_response_head(&mut stream)).await;
    assert_eq!(status_of(&head), 200);
    let mut body = [0u8; 5];
    within(stream.read_exact(&mut body)).await.unwrap();
    assert_eq!(&body, b"hello");
}

#[tokio::test]
async fn head_204_and_304_responses_carry_no_body() {
    let origin = Origin::start(|request: Request<hyper::body::Incoming>| async move {
        let mut response = full("body that must not be sent for HEAD");
        match request.uri().path() {
            "/204" => {
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.body_mut() = Empty::new().map_err(|never| match never {}).boxed();
            }
            "/304" => {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                *response.body_mut() = Empty::new().map_err(|never| match never {}).boxed();
            }
            _ => {}
        }
        response
    })
    .await;
    let proxy = TestProxy::forward().await;
    for (method, path, status) in [("HEAD", "/", 200), ("GET", "/204", 204), ("GET", "/304", 304)] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let request = format!("{method} {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url(path));
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = within(read_response_head(&mut stream)).await;
        assert_eq!(status_of(&head), status, "{head}");
        if method == "HEAD" {
            assert!(
                head.to_lowercase().contains("content-length: 35"),
                "HEAD keeps length: {head}"
            );
        }
        // Nothing follows the head: a second request on the same connection is answered next.
        let again =
            format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", origin.url("/"));
        stream.write_all(again.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        within(stream.read_to_end(&mut rest)).await.unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "no stray body bytes: {rest:?}");
    }
}

#[tokio::test]
async fn close_delimited_response_body_arrives_whole() {
    let body = payload(200_000, 5);
    let expected = sha256(&body);
    let body = std::sync::Arc::new(body);
    let origin = raw_server(move |mut stream| {
        let body = body.clone();
        async move {
            read_head(&mut stream).await;
            // HTTP/1.0 style: no length, the end of the body is the end of the connection.
            stream
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
                .await
                .unwrap();
            stream.write_all(&body).await.unwrap();
            stream.shutdown().await.unwrap();
        }
    })
    .await;
    let proxy = TestProxy::forward().await;
    let client = via_proxy(proxy.addr);
    let response = within(client.get(format!("http://{origin}/")).send()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11, "the status line is the proxy's own");
    let received = within(response.bytes()).await.unwrap();
    assert_eq!(sha256(&received), expected);
}

#[tokio::test]
async fn a_port_beyond_65535_is_400_not_the_default_port() {
    let proxy = TestProxy::forward().await;
    for target in ["http://127.0.0.1:99999/", "http://127.0.0.1:65536/x", "https://[::1]:70000/"] {
        let response = raw_exchange(
            proxy.addr,
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:99999\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{target}: {response}");
        assert!(response.contains("not a number from 1 to 65535"), "{target}: {response}");
    }
}
