//! Request smuggling: every ambiguous or malformed framing is refused (400, or a close with no
//! response) and the connection closed, and the smuggled request never reaches the origin.
//! One test per vector, each sent as raw bytes to a forward proxy, then a normal request on a
//! new connection proves the proxy still serves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::client::{exchange_until_closed, h2c_conn, via_proxy};
use support::h2;
use support::proxy::TestProxy;
use support::upstream::{Collector, Complete};
use support::within;

/// No request, not even a head, reached the origin.
fn assert_untouched(counting: &Collector, vector: &str) {
    let seen = counting.origin.seen();
    assert!(seen.is_empty(), "{vector}: the origin saw {seen:?}");
}

/// At most one request head reached the origin, no request to `/smuggled` did, and no
/// request arrived complete (the body was cut when the bad framing was found).
fn assert_no_complete_request(counting: &Collector, vector: &str) {
    let seen = counting.origin.seen();
    assert!(seen.len() <= 1, "{vector}: the origin saw {seen:?}");
    assert!(seen.iter().all(|s| s.uri.path() != "/smuggled"), "{vector}: smuggled: {seen:?}");
    let complete = counting.complete();
    assert!(complete.is_empty(), "{vector}: the origin received {complete:?}");
}

/// The request a smuggler hides inside another one's body.
fn smuggled(origin: SocketAddr) -> String {
    format!("GET http://{origin}/smuggled HTTP/1.1\r\nHost: {origin}\r\n\r\n")
}

/// A forward proxy on loopback (h2c enabled, so HTTP/2 vectors can use it too).
async fn proxy() -> TestProxy {
    TestProxy::start("[[listener]]\naddress = \"127.0.0.1:0\"\nh2c = true\n").await
}

/// Sends the vector and asserts the proxy answered 400 (or closed without answering), sent
/// no other response, and closed the connection.
async fn assert_refused(proxy: &TestProxy, vector: &str, bytes: &[u8]) {
    let response = exchange_until_closed(proxy.addr, bytes).await;
    let responses = response.matches("HTTP/1.1 ").count();
    assert!(responses <= 1, "{vector}: {responses} responses: {response}");
    if !response.is_empty() {
        assert!(!response.starts_with("HTTP/1.1 200"), "{vector}: served: {response}");
        assert!(response.starts_with("HTTP/1.1 400 "), "{vector}: expected 400, got {response}");
    }
}

/// A normal request on a new connection still succeeds and reaches the origin intact.
async fn still_serves(proxy: &TestProxy, counting: &Collector) {
    let before = counting.complete().len();
    let response =
        within(via_proxy(proxy.addr).post(counting.origin.url("/normal")).body("fine").send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let complete = counting.complete();
    assert_eq!(complete.len(), before + 1);
    assert_eq!(
        complete.last().unwrap(),
        &Complete { path: "/normal".to_owned(), body: b"fine".to_vec() }
    );
}

/// A head-level vector: refused, the origin untouched, the proxy still serving.
async fn head_vector(vector: &str, build: impl FnOnce(SocketAddr) -> String) {
    let counting = Collector::start().await;
    let proxy = proxy().await;
    let request = build(counting.addr());
    assert_refused(&proxy, vector, request.as_bytes()).await;
    assert_untouched(&counting, vector);
    still_serves(&proxy, &counting).await;
}

/// `POST http://origin/first` with the given extra header lines, then `body` bytes.
fn post(o: SocketAddr, headers: &str, body: &str) -> String {
    format!("POST http://{o}/first HTTP/1.1\r\nHost: {o}\r\n{headers}\r\n{body}")
}

/// A chunked body carrying `data` in one chunk.
fn chunked(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

#[tokio::test]
async fn cl_te_is_refused() {
    head_vector("CL.TE", |o| {
        // Content-Length covers the smuggled request; chunked framing ends before it.
        let body = format!("0\r\n\r\n{}", smuggled(o));
        post(o, &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", body.len()), &body)
    })
    .await;
}

#[tokio::test]
async fn te_cl_is_refused() {
    head_vector("TE.CL", |o| {
        // Chunked framing covers the smuggled request; Content-Length ends inside the chunk.
        post(o, "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", &chunked(&smuggled(o)))
    })
    .await;
}

#[tokio::test]
async fn te_te_with_an_obfuscated_second_transfer_encoding_is_refused() {
    head_vector("TE.TE", |o| {
        post(o, "Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n", &chunked(&smuggled(o)))
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_chunked_twice_is_refused() {
    head_vector("chunked twice", |o| {
        post(
            o,
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &chunked(&smuggled(o)),
        )
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_xchunked_is_refused() {
    head_vector("xchunked", |o| post(o, "Transfer-Encoding: xchunked\r\n", &chunked(&smuggled(o))))
        .await;
}

#[tokio::test]
async fn transfer_encoding_chunked_then_identity_is_refused() {
    head_vector("chunked, identity", |o| {
        post(o, "Transfer-Encoding: chunked, identity\r\n", &chunked(&smuggled(o)))
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_gzip_then_chunked_is_refused() {
    head_vector("gzip, chunked", |o| {
        post(o, "Transfer-Encoding: gzip, chunked\r\n", &chunked(&smuggled(o)))
    })
    .await;
}

#[tokio::test]
async fn duplicate_identical_content_length_is_refused() {
    head_vector("duplicate Content-Length", |o| {
        let body = smuggled(o);
        let n = body.len();
        post(o, &format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"), &body)
    })
    .await;
}

#[tokio::test]
async fn differing_content_lengths_are_refused() {
    head_vector("differing Content-Length", |o| {
        let body = smuggled(o);
        post(o, &format!("Content-Length: 0\r\nContent-Length: {}\r\n", body.len()), &body)
    })
    .await;
}

#[tokio::test]
async fn space_before_the_colon_is_refused() {
    head_vector("space before colon", |o| {
        post(o, "Content-Length: 4\r\nTransfer-Encoding : chunked\r\n", &chunked(&smuggled(o)))
    })
    .await;
}

#[tokio::test]
async fn bare_lf_line_endings_are_refused() {
    head_vector("bare LF", |o| {
        let body = smuggled(o);
        format!(
            "POST http://{o}/first HTTP/1.1\nHost: {o}\nContent-Length: {}\n\n{body}",
            body.len()
        )
    })
    .await;
}

#[tokio::test]
async fn bare_lf_ending_one_header_line_is_refused() {
    head_vector("bare LF in a CRLF head", |o| {
        // A parser that accepts the bare LF sees a Content-Length; one that does not sees a
        // single X-Pad field and no body.
        let body = smuggled(o);
        post(o, &format!("X-Pad: a\nContent-Length: {}\r\n", body.len()), &body)
    })
    .await;
}

#[tokio::test]
async fn obs_fold_is_refused() {
    head_vector("obs-fold", |o| {
        let body = smuggled(o);
        post(o, &format!("Content-Length: {}\r\nX-Folded: a\r\n b\r\n", body.len()), &body)
    })
    .await;
}

#[tokio::test]
async fn nul_in_a_header_value_is_refused() {
    head_vector("NUL in a header value", |o| post(o, "X-Nul: a\0b\r\nContent-Length: 0\r\n", ""))
        .await;
}

/// A body-level vector (the head is valid, the chunked body is not): refused or cut, the
/// connection closed, nothing reaching the origin whole, the smuggled request never.
async fn body_vector(vector: &str, build: impl FnOnce(SocketAddr) -> String) {
    let counting = Collector::start().await;
    let proxy = proxy().await;
    let request = build(counting.addr());
    assert_refused(&proxy, vector, request.as_bytes()).await;
    assert_no_complete_request(&counting, vector);
    still_serves(&proxy, &counting).await;
}

#[tokio::test]
async fn invalid_chunk_size_is_refused() {
    body_vector("invalid chunk size", |o| {
        post(
            o,
            "Transfer-Encoding: chunked\r\n",
            &format!("zz\r\nhello\r\n0\r\n\r\n{}", smuggled(o)),
        )
    })
    .await;
}

#[tokio::test]
async fn invalid_chunk_extension_is_refused() {
    body_vector("unterminated quoted chunk extension", |o| {
        // A parser that honours the quote reads past the CRLF; one that skips extensions to
        // the line end sees a 3-byte chunk, the end, and then the smuggled request.
        post(
            o,
            "Transfer-Encoding: chunked\r\n",
            &format!("3;x=\"a\r\nabc\r\n0\r\n\r\n{}", smuggled(o)),
        )
    })
    .await;
}

#[tokio::test]
async fn cl_0_body_of_a_get_is_forwarded_as_its_body_not_as_a_request() {
    let counting = Collector::start().await;
    let proxy = proxy().await;
    let o = counting.addr();
    let body = smuggled(o);
    // A GET with a Content-Length body, then a last request that closes the connection: the
    // body must stay the GET's body, never become a request of its own.
    let request = format!(
        "GET http://{o}/first HTTP/1.1\r\nHost: {o}\r\nContent-Length: {}\r\n\r\n{body}\
         GET http://{o}/last HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = exchange_until_closed(proxy.addr, request.as_bytes()).await;
    let seen: Vec<String> =
        counting.origin.seen().iter().map(|s| s.uri.path().to_owned()).collect();
    assert!(!seen.contains(&"/smuggled".to_owned()), "smuggled: {seen:?}\n{response}");
    if response.starts_with("HTTP/1.1 400 ") {
        // Refusing a GET with a body outright is also safe.
        assert!(seen.is_empty(), "{seen:?}");
    } else {
        assert_eq!(response.matches("HTTP/1.1 200 ").count(), 2, "{response}");
        assert_eq!(
            counting.complete(),
            [
                Complete { path: "/first".to_owned(), body: body.into_bytes() },
                Complete { path: "/last".to_owned(), body: Vec::new() },
            ]
        );
    }
    still_serves(&proxy, &counting).await;
}

#[tokio::test]
async fn h2_cl_mismatch_never_smuggles_a_request() {
    let counting = Collector::start().await;
    let proxy = proxy().await;
    let o = counting.addr();
    let mut sender = h2c_conn::<Full<Bytes>>(proxy.addr).await;
    // `content-length: 0` but a body: a downgrade to HTTP/1.1 that trusted the header would
    // leave the body on the upstream connection as the next request.
    let request = Request::post(format!("http://{o}/first"))
        .header("content-length", "0")
        .body(Full::new(Bytes::from(smuggled(o))))
        .unwrap();
    let outcome = within(async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await;
    let seen = counting.origin.seen();
    assert!(seen.len() <= 1, "{seen:?}");
    assert!(seen.iter().all(|s| s.uri.path() != "/smuggled"), "smuggled: {seen:?}");
    // Whatever reached the origin was a well-formed request with an empty body.
    for complete in counting.complete() {
        assert_eq!(complete, Complete { path: "/first".to_owned(), body: Vec::new() });
    }
    if let Ok((status, body)) = &outcome {
        assert!(
            *status != StatusCode::OK || counting.complete().len() == 1,
            "200 without a clean request at the origin: {body:?}"
        );
    }
    // The same, frame by frame, so the DATA frame certainly goes out (hyper's client might
    // trim a body that contradicts its content-length).
    let authority = o.to_string();
    let answer = h2::request(
        proxy.addr,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", &authority),
            (":path", "/first"),
            ("content-length", "0"),
        ],
        smuggled(o).as_bytes(),
    )
    .await;
    let seen = counting.origin.seen();
    assert!(seen.len() <= 2, "{answer:?}: {seen:?}");
    assert!(seen.iter().all(|s| s.uri.path() != "/smuggled"), "{answer:?}: smuggled: {seen:?}");
    for complete in counting.complete() {
        assert_eq!(complete, Complete { path: "/first".to_owned(), body: Vec::new() });
    }
    // A normal HTTP/2 request on a new connection succeeds.
    let mut sender = h2c_conn::<Full<Bytes>>(proxy.addr).await;
    let response = within(sender.send_request(
        Request::post(format!("http://{o}/normal")).body(Full::new(Bytes::from("fine"))).unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    still_serves(&proxy, &counting).await;
}

#[tokio::test]
async fn h2_te_is_refused_and_never_smuggles_a_request() {
    let counting = Collector::start().await;
    let proxy = proxy().await;
    let o = counting.addr();
    let authority = o.to_string();
    // First, the same request without `transfer-encoding` is served: the raw client works.
    let plain = h2::request(
        proxy.addr,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", &authority),
            (":path", "/plain"),
        ],
        b"hello",
    )
    .await;
    assert_eq!(plain, h2::Answer::Status(Some(200)));
    assert_eq!(
        counting.complete(),
        [Complete { path: "/plain".to_owned(), body: b"hello".to_vec() }]
    );

    // `transfer-encoding` is a connection-specific field, malformed in HTTP/2 (RFC 9113
    // §8.2.2); a downgrade that kept it would let the origin read the body as chunked and
    // the smuggled request after the last chunk.
    let body = format!("0\r\n\r\n{}", smuggled(o));
    let answer = h2::request(
        proxy.addr,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", &authority),
            (":path", "/first"),
            ("transfer-encoding", "chunked"),
        ],
        body.as_bytes(),
    )
    .await;
    assert!(
        matches!(answer, h2::Answer::Reset(_) | h2::Answer::GoAway(_) | h2::Answer::Closed)
            || matches!(answer, h2::Answer::Status(Some(400))),
        "expected a stream error or 400, got {answer:?}"
    );
    let seen = counting.origin.seen();
    assert_eq!(seen.len(), 1, "only the plain request reached the origin: {seen:?}");
    assert!(seen.iter().all(|s| s.uri.path() != "/smuggled"), "smuggled: {seen:?}");
    still_serves(&proxy, &counting).await;
}
