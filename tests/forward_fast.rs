//! The forward proxy on the HTTP/1 fast path: plain `http://` absolute-form requests are served
//! there (`sluice_requests_path_total{path="fast"}`), each origin over its own reused upstream
//! connection, and what the origin receives, what the client gets back, the refusals and the
//! access-log line are those of the general path (a twin proxy with `http1_fast_path = false`
//! answers the same requests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::client::{raw_exchange, raw_header_values, status_of};
use support::config::{ADMIN, FORWARD, listener};
use support::observe::{log_lines, scrape_until};
use support::proxy::TestProxy;
use support::upstream::{Origin, Seen, read_head};
use support::within;

fn paths(samples: &BTreeMap<String, f64>) -> (f64, f64) {
    let get = |path: &str| {
        samples.get(&format!("sluice_requests_path_total{{path=\"{path}\"}}")).copied()
    };
    (get("fast").unwrap_or(0.0), get("general").unwrap_or(0.0))
}

/// Waits until `fast` and `general` requests have been counted, and checks the split; with
/// `SLUICE_TEST_PATH=general` every request is counted as general.
async fn expect_paths(proxy: &TestProxy, fast: f64, general: f64) {
    let forced = std::env::var("SLUICE_TEST_PATH").as_deref() == Ok("general");
    let (fast, general) = if forced { (0.0, fast + general) } else { (fast, general) };
    let samples = scrape_until(&proxy.admin_url("/metrics"), |s| {
        let (f, g) = paths(s);
        f + g >= fast + general
    })
    .await;
    assert_eq!(paths(&samples), (fast, general));
}

/// The same configuration twice: as given (fast path on), and with the fast path off.
async fn twins(config: &str) -> (TestProxy, TestProxy) {
    let fast = TestProxy::start(config).await;
    let general = TestProxy::start(&format!("http1_fast_path = false\n{config}")).await;
    (fast, general)
}

/// Reads one response with a Content-Length body (or none, after a HEAD) from `stream`.
async fn read_response(stream: &mut TcpStream, head_only: bool) -> String {
    let head = String::from_utf8(read_head(stream).await).unwrap();
    let length: usize = match raw_header_values(&head, "content-length").first() {
        Some(value) if !head_only => value.parse().unwrap(),
        _ => 0,
    };
    let mut body = vec![0u8; length];
    within(stream.read_exact(&mut body)).await.unwrap();
    format!("{head}{}", String::from_utf8(body).unwrap())
}

/// A response as compared across the paths: the status line, the field lines (names
/// lowercased, sorted, `Date` left out: it is the time) and the body.
fn normalised(response: &str) -> (String, Vec<String>, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let mut fields: Vec<String> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            format!("{}:{}", name.to_ascii_lowercase(), value.trim())
        })
        .filter(|line| !line.starts_with("date:"))
        .collect();
    fields.sort();
    (status, fields, body.to_owned())
}

/// A request as an origin saw it, for comparing: method, target, version and every field,
/// by name (the values of one name in their order; the two paths write names in different
/// orders, as they write the reverse proxy's).
fn seen_text(seen: &Seen) -> String {
    let mut fields: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (name, value) in &seen.headers {
        fields.entry(name.as_str()).or_default().push(value.as_bytes());
    }
    format!("{} {} {:?} {fields:?}", seen.method, seen.uri, seen.version)
}

#[tokio::test]
async fn forward_gets_take_the_fast_path_with_one_reused_connection_per_origin() {
    let (first, second) = (Origin::echo().await, Origin::echo().await);
    let proxy = TestProxy::start(&format!("{}{ADMIN}", listener(FORWARD, ""))).await;
    // One client connection, requests alternating between two origins.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for (origin, path) in [(&first, "/a"), (&second, "/b"), (&first, "/c"), (&second, "/d")] {
        let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.url(path), origin.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream, false).await;
        assert_eq!(status_of(&response), 200, "{response}");
        assert_eq!(raw_header_values(&response, "x-method"), ["GET"], "{response}");
    }
    let uris =
        |origin: &Origin| origin.seen().iter().map(|s| s.uri.to_string()).collect::<Vec<_>>();
    assert_eq!(uris(&first), ["/a", "/c"]);
    assert_eq!(uris(&second), ["/b", "/d"]);
    assert_eq!(first.connections(), 1, "the first origin's connection is reused");
    assert_eq!(second.connections(), 1, "the second origin has a connection of its own");
    expect_paths(&proxy, 4.0, 0.0).await;
}

#[tokio::test]
async fn the_origin_and_the_client_see_what_the_general_path_gives_them() {
    let origin = Origin::echo().await;
    let config = format!(
        "{}[auth]\nrealm = \"test\"\n[[auth.user]]\nname = \"alice\"\npassword = \"secret\"\n",
        listener(FORWARD, "")
    );
    let (fast, general) = twins(&config).await;
    let at = origin.addr;
    // alice:secret
    let auth = "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n";
    let requests = [
        format!(
            "GET http://{at}/p/a%2Fb?q=1&r=%20 HTTP/1.1\r\nHost: elsewhere.test\r\n{auth}\
             User-Agent: t/1\r\nX-Two: 1\r\nx-two: 2\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: gone\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
             TE: trailers\r\nVia: 1.0 other\r\nCookie: a=1\r\n\r\n"
        ),
        format!(
            "POST http://user:pw@{at}/upload HTTP/1.1\r\nHost: {at}\r\n{auth}\
             Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        ),
        format!("HEAD http://{at}/head HTTP/1.1\r\nHost: {at}\r\n{auth}\r\n"),
        format!("GET http://{at}?only=query HTTP/1.1\r\nHost: {at}\r\n{auth}\r\n"),
        format!("DELETE http://{at} HTTP/1.0\r\n{auth}Connection: keep-alive\r\n\r\n"),
    ];
    let mut answers = Vec::new();
    for proxy in [&fast, &general] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut responses = Vec::new();
        for request in &requests {
            stream.write_all(request.as_bytes()).await.unwrap();
            let response = read_response(&mut stream, request.starts_with("HEAD")).await;
            assert_eq!(status_of(&response), 200, "{request}: {response}");
            responses.push(normalised(&response));
        }
        answers.push(responses);
    }
    assert_eq!(answers[0], answers[1], "the client's responses");
    let seen: Vec<String> = origin.seen().iter().map(seen_text).collect();
    assert_eq!(seen.len(), 2 * requests.len());
    let (on_fast, on_general) = seen.split_at(requests.len());
    for (fast, general) in on_fast.iter().zip(on_general) {
        assert_eq!(fast, general, "what the origin received");
    }
    let first = &origin.seen()[0];
    assert_eq!(first.uri, "/p/a%2Fb?q=1&r=%20", "origin-form, byte-exact");
    assert_eq!(first.headers["host"], at.to_string(), "Host is the target's");
    for gone in ["proxy-authorization", "x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(first.headers.get(gone).is_none(), "{gone} reached the origin");
    }
    assert_eq!(origin.connections(), 2, "one upstream connection per proxy");
}

/// The refusals of admission and of the connect guard, and upstream failures, rendered the
/// same on both paths.
#[tokio::test]
async fn refusals_and_failures_are_the_general_paths() {
    let origin = Origin::echo().await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let config = format!(
        "{}{}{}[auth]\nrealm = \"test\"\n[[auth.user]]\nname = \"bob\"\npassword = \"pw\"\n\n\
         [access]\ndeny = [\"127.0.0.2/32\"]\n\n\
         [destinations]\ndeny_hosts = [\"*.internal.test\"]\n\n\
         [dns.hosts]\n\"rebind.test\" = [\"127.0.0.1\"]\n\"api.internal.test\" = [\"127.0.0.1\"]\n\
         {ADMIN}",
        listener(FORWARD, "auth = false\n"),
        listener(FORWARD, "auth = false\nallow_private_destinations = false\n"),
        listener(FORWARD, ""),
    );
    let (fast, general) = twins(&config).await;
    let port = origin.addr.port();
    let get = |target: String| {
        format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").into_bytes()
    };
    // (listener, request): 403 denied host, 502 refused, 400 bad port; 403 prohibited by the
    // guard, by name and by address; 407 without credentials.
    let cases: Vec<(usize, Vec<u8>)> = vec![
        (0, get(format!("http://api.internal.test:{port}/"))),
        (0, get(format!("http://{closed}/"))),
        (0, get("http://127.0.0.1:99999/".to_owned())),
        (1, get(format!("http://rebind.test:{port}/"))),
        (1, get(format!("http://{}/", origin.addr))),
        (2, get(format!("http://{}/", origin.addr))),
    ];
    let mut statuses = Vec::new();
    for (index, request) in &cases {
        let on_fast = raw_exchange(fast.addrs[*index], request).await;
        let on_general = raw_exchange(general.addrs[*index], request).await;
        assert_eq!(normalised(&on_fast), normalised(&on_general), "{on_fast}\n{on_general}");
        statuses.push(status_of(&on_fast));
    }
    assert_eq!(statuses, [403, 502, 400, 403, 403, 407]);
    expect_paths(&fast, 6.0, 0.0).await;
    // A client the ACL refuses, from 127.0.0.2.
    let mut refusals = Vec::new();
    for proxy in [&fast, &general] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
        let mut stream = within(socket.connect(proxy.addr)).await.unwrap();
        stream.write_all(&get(origin.url("/"))).await.unwrap();
        let mut refused = Vec::new();
        within(stream.read_to_end(&mut refused)).await.unwrap();
        refusals.push(normalised(&String::from_utf8_lossy(&refused)));
    }
    assert_eq!(refusals[0].0, "HTTP/1.1 403 Forbidden", "{refusals:?}");
    assert_eq!(refusals[0], refusals[1]);
    assert_eq!(origin.connections(), 0, "a refused request reached the origin");
    // The same requests, errors and bytes counted.
    let families = ["sluice_requests_total", "sluice_upstream_errors_total", "sluice_sent_bytes"];
    let counted = |samples: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        samples
            .iter()
            .filter(|(name, _)| families.iter().any(|family| name.starts_with(family)))
            .map(|(name, value)| (name.clone(), *value))
            .collect()
    };
    let requests = |samples: &BTreeMap<String, f64>| -> f64 {
        samples.iter().filter(|(name, _)| name.starts_with(families[0])).map(|(_, v)| v).sum()
    };
    let mut metrics = Vec::new();
    for proxy in [&fast, &general] {
        let samples = scrape_until(&proxy.admin_url("/metrics"), |s| requests(s) >= 7.0).await;
        metrics.push(counted(&samples));
    }
    assert_eq!(metrics[0], metrics[1]);
}

#[tokio::test]
async fn the_access_log_line_is_the_general_paths() {
    let origin = Origin::echo().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("forward-fast-log");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = Vec::new();
    for (name, switch) in [("fast", ""), ("general", "http1_fast_path = false\n")] {
        let path = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&path);
        let config = format!(
            "{switch}{}[access_log]\npath = \"{}\"\nformat = \"json\"\nheaders = [\"user-agent\"]\n",
            listener(FORWARD, ""),
            path.display()
        );
        let proxy = TestProxy::start(&config).await;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nUser-Agent: log/1\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nabc",
            origin.url("/logged?x=1")
        );
        let response = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{response}");
        let line = log_lines(&path, 1).await.remove(0);
        let mut json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields["upstream_ttfb_ms"].is_number(), "{line}");
        for volatile in ["time", "duration_ms", "upstream_ttfb_ms", "request_id", "client"] {
            fields.remove(volatile);
        }
        lines.push(json);
    }
    assert_eq!(lines[0], lines[1]);
    assert_eq!(lines[0]["mode"], "forward");
    assert_eq!(lines[0]["bytes_in"], 3);
}
