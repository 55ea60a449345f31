//! Bodies stream through reverse routes frame by frame, both ways: SSE events arrive as they
//! are produced, uploads reach the origin before they end, a 256 MiB download runs in flat
//! memory, trailers and encoded bodies pass unchanged, and a stalled body is aborted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use sha2::Digest;
use support::client::{direct, http1_conn};
use support::config::{reverse_config, route};
use support::process::Sluice;
use support::proxy::TestProxy;
use support::sse::Events;
use support::upstream::{Origin, TestBody, full, raw_server, read_head};
use support::{hex, payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const SSE_EVENTS: usize = 30;

fn sse_event(index: usize) -> String {
    support::sse::numbered_event(index, index)
}

#[tokio::test]
async fn sse_events_arrive_before_stream_ends() {
    let sent = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start({
        let sent = sent.clone();
        move |_request: Request<Incoming>| {
            let sent = sent.clone();
            async move {
                let (mut sender, mut response) = support::sse::response();
                response.headers_mut().insert("cache-control", "no-cache".parse().unwrap());
                tokio::spawn(async move {
                    for index in 0..SSE_EVENTS {
                        if index > 0 {
                            // The schedule an SSE source keeps; not synchronisation.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        if sender.send_data(Bytes::from(sse_event(index))).await.is_err() {
                            return;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                });
                response
            }
        }
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/sse", &origin.url(""), ""))).await;
    let response = within(
        direct()
            .get(format!("http://{}/sse/events", proxy.addr))
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let mut received = Events::new(response);
    let mut events = Vec::new();
    let mut sent_when_first_arrived = None;
    while let Some(event) = received.next().await {
        events.push(event);
        if sent_when_first_arrived.is_none() {
            sent_when_first_arrived = Some(sent.load(Ordering::SeqCst));
        }
    }
    let sent_when_first_arrived = sent_when_first_arrived.expect("no event arrived");
    assert!(
        sent_when_first_arrived < SSE_EVENTS,
        "the first event arrived only after all {SSE_EVENTS} were sent: buffered, not streamed"
    );
    received.assert_no_partial_event();
    let expected: Vec<String> = (0..SSE_EVENTS).map(sse_event).collect();
    assert_eq!(events, expected, "every event intact and in order");
}

#[tokio::test]
async fn request_body_reaches_the_origin_before_the_client_finishes_sending() {
    let (first_tx, first_rx) = oneshot::channel::<Bytes>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let origin = Origin::start(move |request: Request<Incoming>| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = request.into_body();
            let mut received = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.unwrap().into_data() else {
                    continue;
                };
                if let Some(tx) = first_tx.lock().unwrap().take() {
                    let _ = tx.send(data.clone());
                }
                received.extend_from_slice(&data);
            }
            full(format!("{} {}", received.len(), sha256(&received)))
        }
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/up", &origin.url(""), ""))).await;

    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(chunks_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let request = direct()
        .post(format!("http://{}/up/load", proxy.addr))
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let pending = tokio::spawn(request);

    let first = Bytes::from_static(b"first chunk of the upload;");
    let rest = payload(512 * 1024, 11);
    chunks_tx.send(first.clone()).await.unwrap();
    let first_seen = within(first_rx)
        .await
        .expect("the origin never saw the first chunk while the upload was still open");
    assert!(!first_seen.is_empty() && first.starts_with(&first_seen), "{first_seen:?}");
    // Only now does the client send the rest.
    for piece in rest.chunks(64 * 1024) {
        chunks_tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    drop(chunks_tx);

    let response = within(pending).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut whole = first.to_vec();
    whole.extend_from_slice(&rest);
    assert_eq!(
        within(response.text()).await.unwrap(),
        format!("{} {}", whole.len(), sha256(&whole))
    );
    let seen = origin.only_request();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
}

/// Resident set size of `pid` in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

const BIG_CHUNK: usize = 64 * 1024;
const BIG_CHUNKS: usize = 4096; // 256 MiB
const BIG_BLOCK: usize = 1 << 20;

/// Chunk `index` of the big body: a window into one pseudo-random block at an offset that
/// differs per chunk, so lost, repeated or reordered chunks change the hash.
fn big_chunk(block: &Bytes, index: usize) -> Bytes {
    let offset = (index * 7919) % BIG_BLOCK;
    block.slice(offset..offset + BIG_CHUNK)
}

#[tokio::test]
async fn a_256_mib_download_streams_in_flat_memory() {
    let block = Bytes::from(payload(BIG_BLOCK + BIG_CHUNK, 42));
    let origin = Origin::start({
        let block = block.clone();
        move |request: Request<Incoming>| {
            let block = block.clone();
            async move {
                if request.uri().path() == "/warm" {
                    return full("warm");
                }
                let frames = futures_util::stream::iter((0..BIG_CHUNKS).map(move |index| {
                    Ok::<_, hyper::Error>(Frame::data(big_chunk(&block, index)))
                }));
                Response::new(BodyExt::boxed(StreamBody::new(frames))) as Response<TestBody>
            }
        }
    })
    .await;
    let expected = tokio::task::spawn_blocking({
        let block = block.clone();
        move || {
            let mut hasher = sha2::Sha256::new();
            for index in 0..BIG_CHUNKS {
                hasher.update(big_chunk(&block, index));
            }
            hex(&hasher.finalize())
        }
    });

    let route = format!("/big={}", origin.url(""));
    let mut command = support::process::command("info");
    command.args(["--listen", "127.0.0.1:0", "--route", &route]);
    let sluice = Sluice::spawn(command).await;
    let pid = sluice.pid();
    let client = direct();
    let warm = within(client.get(format!("http://{}/big/warm", sluice.addr)).send()).await.unwrap();
    assert_eq!(within(warm.text()).await.unwrap(), "warm");
    let baseline = rss_bytes(pid);

    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        let done = done.clone();
        async move {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_bytes(pid), Ordering::SeqCst);
                // A sampling interval, not synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let mut response =
        within(client.get(format!("http://{}/big/data", sluice.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut hasher = sha2::Sha256::new();
    let mut length = 0usize;
    within(async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            length += chunk.len();
            hasher.update(&chunk);
        }
    })
    .await;
    done.store(true, Ordering::SeqCst);
    within(sampler).await.unwrap();
    peak.fetch_max(rss_bytes(pid), Ordering::SeqCst);

    assert_eq!(length, BIG_CHUNK * BIG_CHUNKS);
    assert_eq!(hex(&hasher.finalize()), within(expected).await.unwrap());
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    assert!(
        growth < 64 * 1024 * 1024,
        "resident memory grew by {} MiB while streaming 256 MiB",
        growth / (1024 * 1024)
    );
    assert_eq!(origin.seen().last().unwrap().uri, "/data");
    sluice.kill().await;
}

#[tokio::test]
async fn response_trailers_pass_through() {
    let upstream = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\
                  Content-Type: text/plain\r\n\r\n\
                  5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: sha256-of-hello-world\r\n\r\n",
            )
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/t", &format!("http://{upstream}"), ""))).await;
    let mut sender = http1_conn::<Empty<Bytes>>(proxy.addr).await;
    let request = Request::get("/t/x")
        .header("host", "front.test")
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["trailer"], "x-checksum");
    let mut body = response.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = within(body.frame()).await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
        }
    }
    assert_eq!(data, b"hello world");
    let trailers = trailers.expect("no trailers reached the client");
    assert_eq!(trailers["x-checksum"], "sha256-of-hello-world");
}

#[tokio::test]
async fn request_trailers_pass_through() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let collected = request.into_body().collect().await.unwrap();
        let trailer = collected
            .trailers()
            .and_then(|t| t.get("x-req-sum"))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| "none".to_owned());
        let body = collected.to_bytes();
        full(format!("{} {trailer}", sha256(&body)))
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/t", &origin.url(""), ""))).await;
    let body_bytes = payload(10_000, 5);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-req-sum", "abc123".parse().unwrap());
    let frames = futures_util::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(body_bytes.clone()))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut sender = http1_conn::<StreamBody<_>>(proxy.addr).await;
    let request = Request::post("/t/up")
        .header("host", "front.test")
        .header("trailer", "x-req-sum")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = within(response.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&text), format!("{} abc123", sha256(&body_bytes)));
}

#[tokio::test]
async fn encoded_body_and_content_length_pass_unchanged() {
    // Bytes that claim to be gzip: sluice must neither decode nor re-frame them.
    let mut encoded = vec![0x1f, 0x8b, 0x08, 0x00];
    encoded.extend(payload(100_000, 3));
    let origin = Origin::start({
        let encoded = encoded.clone();
        move |_request: Request<Incoming>| {
            let encoded = encoded.clone();
            async move {
                let mut response = full(encoded);
                response.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
                response.headers_mut().insert("vary", "accept-encoding".parse().unwrap());
                response
            }
        }
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/z", &origin.url(""), ""))).await;
    let response = within(
        direct()
            .get(format!("http://{}/z/file", proxy.addr))
            .header("accept-encoding", "gzip")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["content-length"], encoded.len().to_string().as_str());
    assert!(response.headers().get("transfer-encoding").is_none());
    let body = within(response.bytes()).await.unwrap();
    assert_eq!(sha256(&body), sha256(&encoded));
    assert_eq!(origin.only_request().headers["accept-encoding"], "gzip");
}

/// An upstream that sends a response head and half its body, then stalls with the
/// connection open.
async fn stalls_mid_body(chunked: bool) -> SocketAddr {
    raw_server(move |mut stream| async move {
        read_head(&mut stream).await;
        let head: &[u8] = if chunked {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"
        };
        let _ = stream.write_all(head).await;
        let _ = stream.write_all(&[b'h'; 1000]).await;
        if chunked {
            let _ = stream.write_all(b"\r\n").await;
        }
        let _ = stream.flush().await;
        // Hold the connection open until the proxy gives up on it.
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await;
    })
    .await
}

#[tokio::test]
async fn stalled_upstream_body_is_aborted_after_body_idle() {
    let sized = stalls_mid_body(false).await;
    let chunked = stalls_mid_body(true).await;
    let config = reverse_config(&format!(
        "[timeouts]\nbody_idle = \"300ms\"\n\n{}{}[route.timeouts]\nbody_idle = \"300ms\"\n",
        route("/chunked", &format!("http://{chunked}"), ""),
        route("/sized", &format!("http://{sized}"), ""),
    ));
    let proxy = TestProxy::start(&config).await;
    for path in ["/sized/x", "/chunked/x"] {
        let started = Instant::now();
        let response =
            within(direct().get(format!("http://{}{path}", proxy.addr)).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = within(response.bytes()).await;
        assert!(
            body.is_err(),
            "{path}: short body delivered as if complete: {:?}",
            body.map(|b| b.len())
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: aborted only after {:?}",
            started.elapsed()
        );
    }
}
