//! Live reload from the config file through the admin `POST /reload`: new routes apply to the
//! next request (keep-alive connections included) while streams, tunnels and WebSockets opened
//! before keep running; an invalid file changes nothing and says why; listeners come and go;
//! the access log is reopened, which is how it is rotated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use support::client::{connect_tunnel, direct, http1_conn, http1_over};
use support::config::route;
use support::observe::{log_lines, request_line, sample, scrape};
use support::proxy::TestProxy;
use support::tls::{test_dir, toml_path, write_atomically};
use support::upstream::{Origin, WsOrigin, full, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Streaming response bodies handed from an origin to the test.
type Streams = mpsc::UnboundedReceiver<http_body_util::channel::Sender<Bytes>>;

/// One `[[listener]]` table at `address` (`forward` and `reverse` as given).
fn listener(address: &str, forward: bool) -> String {
    format!("[[listener]]\naddress = \"{address}\"\nforward = {forward}\nreverse = true\n\n")
}

/// A whole config file: `body` (listeners and routes), the access log in `dir`, and the admin
/// listener on an ephemeral port.
fn config_file(dir: &Path, body: &str) -> String {
    format!(
        "{body}[access_log]\npath = {}\n\n[admin]\naddress = \"127.0.0.1:0\"\n",
        toml_path(&dir.join("access.log"))
    )
}

/// Writes `text` as the config file at `path` and starts the proxy from it.
async fn start(path: &Path, text: &str) -> TestProxy {
    write_atomically(path, text.as_bytes());
    TestProxy::from_file(path).await
}

/// Replaces the config file and asks the admin listener to reload it.
async fn reload_with(proxy: &TestProxy, path: &Path, text: &str) -> (StatusCode, String) {
    write_atomically(path, text.as_bytes());
    reload(proxy).await
}

/// `POST /reload`: status and body.
async fn reload(proxy: &TestProxy) -> (StatusCode, String) {
    let response = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    let status = response.status();
    (status, within(response.text()).await.unwrap())
}

/// A fresh test directory and the config file path in it.
fn config_path(name: &str) -> (PathBuf, PathBuf) {
    let dir = test_dir(&format!("reload-{name}"));
    let path = dir.join("sluice.toml");
    (dir, path)
}

/// An origin answering `name` to every request, except `.../stream` paths, which get a
/// streaming response whose sender is handed to the returned receiver.
async fn named_origin(name: &'static str) -> (Origin, Streams) {
    let (senders, streams) = mpsc::unbounded_channel();
    let origin = Origin::start(move |request: Request<Incoming>| {
        let senders = senders.clone();
        async move {
            if request.uri().path().ends_with("/stream") {
                let (sender, response) = support::sse::response();
                senders.send(sender).unwrap();
                response
            } else {
                full(name)
            }
        }
    })
    .await;
    (origin, streams)
}

/// GET `http://addr{path}` on a fresh connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let response = within(direct().get(format!("http://{addr}{path}")).send()).await.unwrap();
    let status = response.status();
    (status, within(response.text()).await.unwrap())
}

/// GET `path` on an open connection: status and body.
async fn get_on(conn: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr, path: &str) -> String {
    let request = Request::get(path).header("host", addr.to_string()).body(Empty::new()).unwrap();
    let response = within(conn.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let body = within(response.into_body().collect()).await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Paths an origin saw, in order.
fn paths(origin: &Origin) -> Vec<String> {
    origin.seen().iter().map(|seen| seen.uri.to_string()).collect()
}

/// Reads from an SSE response until `buffer` holds `expected` bytes in total.
async fn read_until(response: &mut reqwest::Response, buffer: &mut Vec<u8>, expected: usize) {
    while buffer.len() < expected {
        let chunk = within(response.chunk()).await.unwrap().expect("the stream ended early");
        buffer.extend_from_slice(&chunk);
    }
}

fn sse_event(index: usize) -> String {
    support::sse::numbered_event(index, index * 7)
}

#[tokio::test]
async fn reload_under_traffic_moves_new_requests_and_keeps_streams_tunnels_and_websockets() {
    let (dir, path) = config_path("traffic");
    let (a, mut a_streams) = named_origin("from A").await;
    let (b, _) = named_origin("from B").await;
    let ws_origin = WsOrigin::start().await;
    let echo = tcp_echo().await;
    let ws_upstream = format!("http://{}", ws_origin.addr);
    let routes = |v1: &Origin| {
        format!("{}{}", route("/v1", &v1.url(""), ""), route("/ws", &ws_upstream, ""))
    };
    let proxy = start(
        &path,
        &config_file(&dir, &format!("{}{}", listener("127.0.0.1:0", true), routes(&a))),
    )
    .await;
    let addr = proxy.addr;

    // A keep-alive connection, a stream, a tunnel and a WebSocket, all opened before the reload.
    let mut keep_alive = http1_conn::<Empty<Bytes>>(addr).await;
    assert_eq!(get_on(&mut keep_alive, addr, "/v1/before").await, "from A");

    let mut stream = within(direct().get(format!("http://{addr}/v1/stream")).send()).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut events = within(a_streams.recv()).await.unwrap();
    let mut received = Vec::new();
    within(events.send_data(Bytes::from(sse_event(0)))).await.unwrap();
    read_until(&mut stream, &mut received, sse_event(0).len()).await;
    assert_eq!(received, sse_event(0).as_bytes());

    let mut tunnel = connect_tunnel(addr, &echo.to_string()).await;
    tunnel.write_all(b"before the reload").await.unwrap();
    let mut echoed = [0u8; 17];
    within(tunnel.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&echoed, b"before the reload");

    let (mut ws, response) =
        within(tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    within(ws.send(Message::text("before the reload"))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("before the reload"));

    // "/v1" now goes to B; the listener is kept by its bound address.
    let moved = config_file(&dir, &format!("{}{}", listener(&addr.to_string(), true), routes(&b)));
    let (status, body) = reload_with(&proxy, &path, &moved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("reloaded: 2 routes; listening on {addr} (forward+reverse)\n"));

    // New requests reach B: on the connection opened before the reload, and on a new one.
    assert_eq!(get_on(&mut keep_alive, addr, "/v1/after").await, "from B");
    assert_eq!(get(addr, "/v1/fresh").await, (StatusCode::OK, "from B".to_owned()));
    assert_eq!(paths(&b), ["/after", "/fresh"]);

    // The stream opened under the old configuration delivers what A sends after the reload,
    // and ends cleanly.
    let mut expected = sse_event(0);
    for index in 1..20 {
        within(events.send_data(Bytes::from(sse_event(index)))).await.unwrap();
        expected.push_str(&sse_event(index));
    }
    drop(events);
    while let Some(chunk) = within(stream.chunk()).await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), expected.len());
    assert_eq!(sha256(&received), sha256(expected.as_bytes()));
    assert_eq!(paths(&a), ["/before", "/stream"], "A sees nothing after the reload");

    // The tunnel still echoes, byte for byte, and half-closes cleanly.
    let block = payload(256 * 1024, 7);
    let (mut read, mut write) = tunnel.into_split();
    let writer = {
        let block = block.clone();
        tokio::spawn(async move {
            write.write_all(&block).await.unwrap();
            write.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::new();
    within(read.read_to_end(&mut back)).await.unwrap();
    within(writer).await.unwrap();
    assert_eq!(back.len(), block.len());
    assert_eq!(sha256(&back), sha256(&block));

    // The WebSocket still echoes.
    within(ws.send(Message::text("after the reload"))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("after the reload"));
    let big = Bytes::from(payload(100_000, 8));
    within(ws.send(Message::binary(big.clone()))).await.unwrap();
    match within(ws.next()).await.unwrap().unwrap() {
        Message::Binary(data) => assert_eq!(sha256(&data), sha256(&big)),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    within(ws.close(None)).await.unwrap();
    assert_eq!(ws_origin.next_close().await, None);
    assert_eq!(ws_origin.handshakes().len(), 1);
}

#[tokio::test]
async fn invalid_reload_keeps_the_old_config_and_says_why() {
    let (dir, path) = config_path("invalid");
    let (a, _) = named_origin("from A").await;
    let (b, _) = named_origin("from B").await;
    let proxy = start(
        &path,
        &config_file(
            &dir,
            &format!("{}{}", listener("127.0.0.1:0", false), route("/v1", &a.url(""), "")),
        ),
    )
    .await;
    let addr = proxy.addr;

    // The route would move to B, but a timeout is not a duration.
    let broken = config_file(
        &dir,
        &format!(
            "{}{}[timeouts]\nconnect = \"soon\"\n\n",
            listener(&addr.to_string(), false),
            route("/v1", &b.url(""), "")
        ),
    );
    let line = broken.lines().position(|line| line == "connect = \"soon\"").unwrap() + 1;
    let (status, body) = reload_with(&proxy, &path, &broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.starts_with("reload refused, the running configuration is unchanged:\n"),
        "{body}"
    );
    let located = format!("{}:{line}: timeouts.connect:", path.display());
    assert!(body.contains(&located), "{body} lacks {located}");

    assert_eq!(get(addr, "/v1/still").await, (StatusCode::OK, "from A".to_owned()));
    assert!(b.seen().is_empty());
    let metrics = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&metrics, "sluice_config_reloads_total{result=\"refused\"}"), 1.0);
    assert_eq!(sample(&metrics, "sluice_config_reloads_total{result=\"applied\"}"), 0.0);

    let fixed = config_file(
        &dir,
        &format!("{}{}", listener(&addr.to_string(), false), route("/v1", &b.url(""), "")),
    );
    let (status, body) = reload_with(&proxy, &path, &fixed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("reloaded: 1 routes; listening on {addr} (reverse)\n"));
    assert_eq!(get(addr, "/v1/now").await, (StatusCode::OK, "from B".to_owned()));
    assert_eq!(paths(&a), ["/still"]);
    assert_eq!(paths(&b), ["/now"]);
    let metrics = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&metrics, "sluice_config_reloads_total{result=\"refused\"}"), 1.0);
    assert_eq!(sample(&metrics, "sluice_config_reloads_total{result=\"applied\"}"), 1.0);
}

#[tokio::test]
async fn reload_with_an_unknown_key_is_refused_with_file_line_and_key() {
    let (dir, path) = config_path("unknown-key");
    let (a, _) = named_origin("from A").await;
    let text = config_file(
        &dir,
        &format!("{}{}", listener("127.0.0.1:0", false), route("/v1", &a.url(""), "")),
    );
    let proxy = start(&path, &text).await;
    let typo = format!("{text}\n[limits]\nmax_conections = 5\n");
    let line = typo.lines().position(|line| line.starts_with("max_conections")).unwrap() + 1;
    let (status, body) = reload_with(&proxy, &path, &typo).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let located = format!("{}:{line}: limits.max_conections: unknown field", path.display());
    assert!(body.contains(&located), "{body} lacks {located}");
    assert_eq!(get(proxy.addr, "/v1/x").await, (StatusCode::OK, "from A".to_owned()));
}

/// A listener that cannot be bound fails the whole reload (500), and the route change that
/// came with it is not applied either.
#[tokio::test]
async fn reload_that_cannot_bind_changes_nothing() {
    let (dir, path) = config_path("bind-failure");
    let (a, _) = named_origin("from A").await;
    let (b, _) = named_origin("from B").await;
    let proxy = start(
        &path,
        &config_file(
            &dir,
            &format!("{}{}", listener("127.0.0.1:0", false), route("/v1", &a.url(""), "")),
        ),
    )
    .await;
    let addr = proxy.addr;
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = occupied.local_addr().unwrap();
    let text = config_file(
        &dir,
        &format!(
            "{}{}{}",
            listener(&addr.to_string(), false),
            listener(&taken.to_string(), false),
            route("/v1", &b.url(""), "")
        ),
    );
    let (status, body) = reload_with(&proxy, &path, &text).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.starts_with(&format!(
            "reload refused, the running configuration is unchanged:\ncannot listen on {taken}: "
        )),
        "{body}"
    );
    assert_eq!(get(addr, "/v1/x").await, (StatusCode::OK, "from A".to_owned()));
    assert!(b.seen().is_empty());
    let metrics = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&metrics, "sluice_config_reloads_total{result=\"refused\"}"), 1.0);
}

/// An HTTP/1.1 client connection whose end the test can wait for.
async fn watched_conn(
    addr: SocketAddr,
) -> (SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    http1_over(within(tokio::net::TcpStream::connect(addr)).await.unwrap()).await
}

#[tokio::test]
async fn listeners_added_and_removed_by_reload() {
    let (dir, path) = config_path("listeners");
    let (origin, mut streams) = named_origin("hello").await;
    let routes = route("/v1", &origin.url(""), "");
    let proxy =
        start(&path, &config_file(&dir, &format!("{}{routes}", listener("127.0.0.1:0", false))))
            .await;
    let first = proxy.addr;
    let only_first = config_file(&dir, &format!("{}{routes}", listener(&first.to_string(), false)));

    // Added: a second listener on an ephemeral port, reported with its bound address.
    let both = config_file(
        &dir,
        &format!(
            "{}{}{routes}",
            listener(&first.to_string(), false),
            listener("127.0.0.1:0", false)
        ),
    );
    let (status, body) = reload_with(&proxy, &path, &both).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prefix = format!("reloaded: 1 routes; listening on {first} (reverse), ");
    let second: SocketAddr = body
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" (reverse)\n"))
        .unwrap_or_else(|| panic!("unexpected reload report {body:?}"))
        .parse()
        .unwrap();
    assert_ne!(second, first);
    assert_eq!(second.ip(), first.ip());
    assert_ne!(second.port(), 0);
    assert_eq!(get(second, "/v1/on-second").await, (StatusCode::OK, "hello".to_owned()));

    // On the second listener: a response in flight and an idle keep-alive connection.
    let (mut streaming, streaming_conn) = watched_conn(second).await;
    let request = Request::get("/v1/stream").header("host", "x").body(Empty::new()).unwrap();
    let response = within(streaming.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut in_flight: http_body_util::combinators::BoxBody<Bytes, hyper::Error> =
        response.into_body().boxed();
    let mut sender = within(streams.recv()).await.unwrap();
    within(sender.send_data(Bytes::from("part one;"))).await.unwrap();
    let frame = within(in_flight.frame()).await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "part one;");
    let (mut idle, idle_conn) = watched_conn(second).await;
    assert_eq!(get_on(&mut idle, second, "/v1/idle").await, "hello");

    // Removed: the second listener stops accepting and its idle connection is closed; the
    // first still serves.
    let (status, body) = reload_with(&proxy, &path, &only_first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!("reloaded: 1 routes; listening on {first} (reverse); closed {second}\n")
    );
    within(async {
        loop {
            match tokio::net::TcpStream::connect(second).await {
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => break,
                _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    within(idle_conn).await.unwrap().unwrap();
    assert_eq!(get(first, "/v1/on-first").await, (StatusCode::OK, "hello".to_owned()));

    // The response in flight on the removed listener completes, then its connection closes.
    within(sender.send_data(Bytes::from("part two"))).await.unwrap();
    drop(sender);
    let rest = within(in_flight.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, "part two");
    within(streaming_conn).await.unwrap().unwrap();
    assert_eq!(paths(&origin), ["/on-second", "/stream", "/idle", "/on-first"]);
}

#[tokio::test]
async fn routes_removed_by_reload_are_404_and_added_ones_are_served() {
    let (dir, path) = config_path("routes");
    let (a, _) = named_origin("from A").await;
    let (b, _) = named_origin("from B").await;
    let (c, _) = named_origin("from C").await;
    let proxy = start(
        &path,
        &config_file(
            &dir,
            &format!(
                "{}{}{}",
                listener("127.0.0.1:0", false),
                route("/a", &a.url(""), ""),
                route("/b", &b.url(""), "")
            ),
        ),
    )
    .await;
    let addr = proxy.addr;
    assert_eq!(get(addr, "/b/x").await, (StatusCode::OK, "from B".to_owned()));
    assert_eq!(get(addr, "/c/x").await.0, StatusCode::NOT_FOUND);

    let text = config_file(
        &dir,
        &format!(
            "{}{}{}",
            listener(&addr.to_string(), false),
            route("/a", &a.url(""), ""),
            route("/c", &c.url(""), "")
        ),
    );
    let (status, body) = reload_with(&proxy, &path, &text).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(addr, "/b/x").await,
        (StatusCode::NOT_FOUND, "404 Not Found: no route matches this path\n".to_owned())
    );
    assert_eq!(get(addr, "/c/x").await, (StatusCode::OK, "from C".to_owned()));
    assert_eq!(get(addr, "/a/x").await, (StatusCode::OK, "from A".to_owned()));
    assert_eq!(paths(&b), ["/x"]);
    assert_eq!(paths(&c), ["/x"]);
    assert_eq!(paths(&a), ["/x"]);
}

#[tokio::test]
async fn reload_reopens_the_access_log_so_it_can_be_rotated() {
    let (dir, path) = config_path("rotation");
    let (origin, _) = named_origin("logged").await;
    // The file is unchanged across the reload: its port-0 listener is matched and kept.
    let proxy = start(
        &path,
        &config_file(
            &dir,
            &format!("{}{}", listener("127.0.0.1:0", false), route("/v1", &origin.url(""), "")),
        ),
    )
    .await;
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");

    assert_eq!(get(proxy.addr, "/v1/first").await.0, StatusCode::OK);
    assert_eq!(log_lines(&log, 1).await.len(), 1);
    std::fs::rename(&log, &rotated).unwrap();
    let (status, body) = reload(&proxy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("reloaded: 1 routes; listening on {} (reverse)\n", proxy.addr));
    assert_eq!(get(proxy.addr, "/v1/second").await.0, StatusCode::OK);

    let current = log_lines(&log, 1).await;
    assert_eq!(current.len(), 1, "{current:?}");
    assert_eq!(
        request_line(&current[0]),
        ("127.0.0.1".to_owned(), "GET /v1/second HTTP/1.1".to_owned(), 200)
    );
    let old = log_lines(&rotated, 1).await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(
        request_line(&old[0]),
        ("127.0.0.1".to_owned(), "GET /v1/first HTTP/1.1".to_owned(), 200)
    );
}

/// A listener kept by its bound address must be kept wherever it appears in the file, even
/// after a new port-0 listener whose configured address equals the kept one's original `:0`.
#[tokio::test]
async fn listener_kept_by_bound_address_regardless_of_its_position() {
    let (dir, path) = config_path("kept-by-bound");
    let (origin, _) = named_origin("hello").await;
    let routes = route("/v1", &origin.url(""), "");
    let proxy =
        start(&path, &config_file(&dir, &format!("{}{routes}", listener("127.0.0.1:0", false))))
            .await;
    let first = proxy.addr;
    let text = config_file(
        &dir,
        &format!(
            "{}{}{routes}",
            listener("127.0.0.1:0", false),
            listener(&first.to_string(), false)
        ),
    );
    let (status, body) = reload_with(&proxy, &path, &text).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second: SocketAddr = body
        .strip_prefix("reloaded: 1 routes; listening on ")
        .and_then(|rest| rest.strip_suffix(&format!(" (reverse), {first} (reverse)\n")))
        .unwrap_or_else(|| panic!("unexpected reload report {body:?}"))
        .parse()
        .unwrap();
    assert_ne!(second, first);
    assert_eq!(get(first, "/v1/kept").await, (StatusCode::OK, "hello".to_owned()));
    assert_eq!(get(second, "/v1/new").await, (StatusCode::OK, "hello".to_owned()));
}
