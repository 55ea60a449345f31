//! Routes with several targets, against real origins on 127.0.0.1:0: balancing, stickiness,
//! failover when an origin dies, retries of replayable bodies (and not of others), the retry
//! budget, cooling after `Retry-After`, active checks, tiers, caps, and health that survives a
//! reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use support::client::direct;
use support::config::{ADMIN, reverse_config};
use support::proxy::TestProxy;
use support::{payload, sha256, within};

/// An origin whose answers come from a handler, which records the path of every request and
/// can be killed: its listener and every open connection close at once.
struct Backend {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

type Answer = Response<Full<Bytes>>;

impl Backend {
    async fn start<H, F>(handler: H) -> Backend
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Answer> + Send + 'static,
    {
        Backend::start_at("127.0.0.1:0".parse().unwrap(), handler).await
    }

    async fn start_at<H, F>(addr: SocketAddr, handler: H) -> Backend
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Answer> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let seen = paths.clone();
        let server = tokio::spawn(async move {
            // Owned by this task: aborting it drops every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let seen = seen.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock().unwrap().push(request.uri().path().to_owned());
                        let answer = handler(request);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, paths, server }
    }

    /// An origin that answers every request `200` with `name` as the body.
    async fn named(name: &'static str) -> Backend {
        Backend::start(move |_| async move { text(StatusCode::OK, name) }).await
    }

    /// Requests seen, health checks left out.
    fn hits(&self) -> usize {
        self.paths.lock().unwrap().iter().filter(|path| *path != "/health").count()
    }

    /// Health checks seen.
    fn checks(&self) -> usize {
        self.paths.lock().unwrap().iter().filter(|path| *path == "/health").count()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every connection, as a crashed process would.
    fn kill(&self) {
        self.server.abort();
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// `[[route.target]]` for `backend` named `name`, with further keys `extra`.
fn target(name: &str, backend: &Backend, extra: &str) -> String {
    format!("[[route.target]]\nname = \"{name}\"\nurl = \"{}\"\n{extra}\n", backend.url())
}

/// A reverse proxy with an admin listener and one route `/` whose route-level keys are `keys`
/// and whose targets (and sub-tables) are `targets`.
async fn proxy(keys: &str, targets: &str) -> TestProxy {
    TestProxy::start(&config(keys, targets)).await
}

fn config(keys: &str, targets: &str) -> String {
    reverse_config(&format!(
        "{ADMIN}\n[access_log]\nenabled = false\n\n[[route]]\nprefix = \"/\"\nname = \"api\"\n\
         {keys}\n{targets}"
    ))
}

/// `GET path` through the proxy: status and body.
async fn get(proxy: &TestProxy, path: &str) -> (StatusCode, String) {
    let response = within(direct().get(format!("{}{path}", proxy.url())).send()).await.unwrap();
    let status = response.status();
    (status, within(response.text()).await.unwrap())
}

/// `GET path` with `header: value`: the body.
async fn get_with(proxy: &TestProxy, path: &str, header: &str, value: &str) -> String {
    let request = direct().get(format!("{}{path}", proxy.url())).header(header, value);
    within(within(request.send()).await.unwrap().text()).await.unwrap()
}

/// The proxy's `GET /upstreams` view of target `name` of the route.
async fn upstream(proxy: &TestProxy, name: &str) -> serde_json::Value {
    let body = within(direct().get(proxy.admin_url("/upstreams")).send()).await.unwrap();
    let view: serde_json::Value =
        serde_json::from_str(&within(body.text()).await.unwrap()).unwrap();
    let targets = view["routes"][0]["targets"].as_array().unwrap().clone();
    targets.into_iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn weights_are_honoured_over_many_requests() {
    let (a, b, c) =
        (Backend::named("a").await, Backend::named("b").await, Backend::named("c").await);
    let targets = [
        target("a", &a, "weight = 1"),
        target("b", &b, "weight = 2"),
        target("c", &c, "weight = 3"),
    ]
    .concat();
    for balance in ["round_robin", "random", "least_request"] {
        let proxy = proxy(&format!("balance = \"{balance}\""), &targets).await;
        let before = [a.hits(), b.hits(), c.hits()];
        let n = 600;
        for _ in 0..n {
            assert_eq!(get(&proxy, "/").await.0, StatusCode::OK);
        }
        let counts = [a.hits() - before[0], b.hits() - before[1], c.hits() - before[2]];
        for (count, weight) in counts.iter().zip([1.0, 2.0, 3.0]) {
            let share = *count as f64 / f64::from(n);
            let expected = weight / 6.0;
            // Round robin is exact; the random draws are within a few standard deviations.
            let tolerance = if balance == "round_robin" { 0.002 } else { 0.07 };
            assert!((share - expected).abs() <= tolerance, "{balance}: {counts:?}");
        }
    }
}

#[tokio::test]
async fn least_request_prefers_the_less_loaded_target() {
    // "slow" holds every request until released; "fast" answers at once.
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let slow = Backend::start(move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            text(StatusCode::OK, "slow")
        }
    })
    .await;
    let fast = Backend::named("fast").await;
    let proxy = proxy(
        "balance = \"least_request\"",
        &[target("slow", &slow, ""), target("fast", &fast, "")].concat(),
    )
    .await;
    // Until one request is held by "slow" (an idle pair is a tie, drawn at random).
    let mut held = Vec::new();
    while slow.hits() == 0 {
        let url = format!("{}/", proxy.url());
        held.push(tokio::spawn(async move { direct().get(url).send().await }));
        within(async {
            while slow.hits() == 0 && fast.hits() < held.len() {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    // With one request in flight at "slow", every new one goes to the idle "fast".
    let fast_before = fast.hits();
    for _ in 0..30 {
        assert_eq!(get(&proxy, "/").await.1, "fast");
    }
    assert_eq!(fast.hits(), fast_before + 30);
    assert_eq!(slow.hits(), 1);
    release.notify_waiters();
    release.notify_one();
}

#[tokio::test]
async fn hashing_is_sticky_and_adding_a_target_moves_about_one_in_n_keys() {
    let backends = [
        Backend::named("t0").await,
        Backend::named("t1").await,
        Backend::named("t2").await,
        Backend::named("t3").await,
        Backend::named("t4").await,
    ];
    let keys = "balance = \"hash\"\nhash_on = \"header:x-user\"";
    let targets = |n: usize| -> String {
        backends.iter().take(n).enumerate().map(|(i, b)| target(&format!("t{i}"), b, "")).collect()
    };
    let dir = support::tls::test_dir("groups-hash");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config(keys, &targets(4))).unwrap();
    let proxy = TestProxy::from_file(&path).await;
    let users = 400;
    let mut before = BTreeMap::new();
    for user in 0..users {
        let served = get_with(&proxy, "/", "x-user", &format!("user-{user}")).await;
        before.insert(user, served);
    }
    // Sticky: the same key, the same target.
    for user in 0..40 {
        assert_eq!(get_with(&proxy, "/", "x-user", &format!("user-{user}")).await, before[&user]);
    }
    // A fifth target: about a fifth of the keys move, all of them to it.
    std::fs::write(&path, config(keys, &targets(5))).unwrap();
    let reloaded = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(reloaded.status(), StatusCode::OK);
    let mut moved = 0;
    for user in 0..users {
        let served = get_with(&proxy, "/", "x-user", &format!("user-{user}")).await;
        if served != before[&user] {
            assert_eq!(served, "t4", "user-{user} moved between two old targets");
            moved += 1;
        }
    }
    let share = f64::from(moved) / f64::from(users);
    assert!((0.1..=0.3).contains(&share), "{moved} of {users} keys moved");
}

#[tokio::test]
async fn one_of_three_origins_killed_under_load_fails_no_get() {
    let (a, b, c) =
        (Backend::named("a").await, Backend::named("b").await, Backend::named("c").await);
    let proxy =
        proxy("", &[target("a", &a, ""), target("b", &b, ""), target("c", &c, "")].concat()).await;
    let url = format!("{}/", proxy.url());
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..4 {
        let (url, done) = (url.clone(), done.clone());
        clients.spawn(async move {
            let client = direct();
            let mut failed = Vec::new();
            for _ in 0..150 {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == StatusCode::OK => {
                        if response.bytes().await.is_err() {
                            failed.push("body".to_owned());
                        }
                    }
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(err) => failed.push(err.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        });
    }
    // Kill "b" once the load is under way.
    within(async {
        while done.load(Ordering::SeqCst) < 100 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    b.kill();
    let b_at_kill = b.hits();
    let mut failed = Vec::new();
    while let Some(result) = within(clients.join_next()).await {
        failed.extend(result.unwrap());
    }
    assert!(failed.is_empty(), "failed GETs: {failed:?}");
    assert_eq!(done.load(Ordering::SeqCst), 600);
    assert!(b_at_kill > 0, "b served before it died");
    assert!(a.hits() + c.hits() + b_at_kill >= 600);
}

/// An origin that reads the whole request body and answers `503`.
async fn refusing() -> Backend {
    Backend::start(|request: Request<Incoming>| async move {
        let _ = request.into_body().collect().await;
        text(StatusCode::SERVICE_UNAVAILABLE, "busy")
    })
    .await
}

/// An origin that answers with the SHA-256 of the request body.
async fn hashing() -> Backend {
    Backend::start(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(StatusCode::OK, sha256(&body))
    })
    .await
}

#[tokio::test]
async fn a_64_kib_post_is_retried_byte_identical_and_a_1_mib_post_is_not() {
    let (first, second) = (refusing().await, hashing().await);
    let proxy = proxy(
        "[route.retry]\nmethods = [\"GET\", \"POST\"]",
        &[target("first", &first, "tier = 0"), target("second", &second, "tier = 1")].concat(),
    )
    .await;
    let body = payload(64 * 1024, 7);
    let response =
        within(direct().post(format!("{}/upload", proxy.url())).body(body.clone()).send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(within(response.text()).await.unwrap(), sha256(&body));
    assert_eq!((first.hits(), second.hits()), (1, 1));

    // Past the 64 KiB buffer: the first answer stands.
    let big = payload(1024 * 1024, 9);
    let response =
        within(direct().post(format!("{}/upload", proxy.url())).body(big).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((first.hits(), second.hits()), (2, 1));
}

#[tokio::test]
async fn a_post_is_not_retried_unless_the_route_allows_it() {
    let (first, second) = (refusing().await, hashing().await);
    let proxy = proxy(
        "",
        &[target("first", &first, "tier = 0"), target("second", &second, "tier = 1")].concat(),
    )
    .await;
    let response =
        within(direct().post(format!("{}/x", proxy.url())).body("data").send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((first.hits(), second.hits()), (1, 0));
    // A GET is.
    assert_eq!(get(&proxy, "/y").await.0, StatusCode::OK);
    assert_eq!((first.hits(), second.hits()), (2, 1));
}

#[tokio::test]
async fn nothing_is_retried_once_a_response_byte_was_sent() {
    // "first" sends its head and part of the body, then dies.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = listener.local_addr().unwrap();
    let first_hits = Arc::new(AtomicUsize::new(0));
    let counted = first_hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            let _ =
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial").await;
            drop(stream);
        }
    });
    let second = Backend::named("second").await;
    let targets = format!(
        "[[route.target]]\nname = \"first\"\nurl = \"http://{first_addr}\"\n\n{}",
        target("second", &second, "tier = 1")
    );
    let proxy = proxy("", &targets).await;
    let response = within(direct().get(format!("{}/", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(within(response.bytes()).await.is_err(), "the body is cut short, not replaced");
    assert_eq!(first_hits.load(Ordering::SeqCst), 1);
    assert_eq!(second.hits(), 0);
}

#[tokio::test]
async fn when_every_target_fails_retries_stay_within_the_budget() {
    let backends = [refusing().await, refusing().await, refusing().await];
    let targets: String =
        backends.iter().enumerate().map(|(i, b)| target(&format!("t{i}"), b, "")).collect();
    // Ejection off, so every attempt reaches an origin; 20 % of requests plus 1 a second.
    let keys = "[route.retry]\nattempts = 3\nbudget_percent = 20\nbudget_min_per_second = 1\n\
                [route.passive_health]\nconsecutive_failures = 0";
    let proxy = proxy(keys, &targets).await;
    let requests = 100;
    for _ in 0..requests {
        assert_eq!(get(&proxy, "/").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    let attempts: usize = backends.iter().map(Backend::hits).sum();
    // Without a budget: 300. With it: the requests, 20 of them again, and the floor of 10.
    assert!(attempts <= requests + 20 + 10, "{attempts} attempts reached the origins");
    assert!(attempts > requests, "some retries were allowed");
    let metrics = support::observe::scrape(&proxy.admin_url("/metrics")).await;
    let exhausted = support::observe::sample(
        &metrics,
        "sluice_upstream_retry_budget_exhausted_total{route=\"api\"}",
    );
    assert!(exhausted > 0.0, "{metrics:?}");
}

#[tokio::test]
async fn a_429_with_retry_after_cools_exactly_that_target() {
    let limited = Backend::start(|_| async {
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, "slow down");
        response.headers_mut().insert("retry-after", "60".parse().unwrap());
        response
    })
    .await;
    let open = Backend::named("open").await;
    let proxy =
        proxy("", &[target("limited", &limited, ""), target("open", &open, "")].concat()).await;
    // Round robin: one of the first two requests meets the limit (429 is not retried by
    // default, so the client sees it).
    let first_two = [get(&proxy, "/").await.0, get(&proxy, "/").await.0];
    assert!(first_two.contains(&StatusCode::TOO_MANY_REQUESTS), "{first_two:?}");
    for _ in 0..20 {
        assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "open".to_owned()));
    }
    assert_eq!(limited.hits(), 1);
    let cooling = upstream(&proxy, "limited").await;
    assert_eq!(cooling["healthy"], false);
    let left = cooling["cooling_for_ms"].as_u64().unwrap();
    assert!((50_000..=60_000).contains(&left), "{cooling}");
    let other = upstream(&proxy, "open").await;
    assert_eq!(other["healthy"], true);
    assert!(other["cooling_for_ms"].is_null(), "{other}");
}

/// An origin whose `/health` answers with the status in `health`, and everything else `200`
/// with `name`.
async fn checked(name: &'static str, health: Arc<AtomicU16>) -> Backend {
    Backend::start(move |request: Request<Incoming>| {
        let status = StatusCode::from_u16(health.load(Ordering::SeqCst)).unwrap();
        async move {
            if request.uri().path() == "/health" {
                text(status, "")
            } else {
                text(StatusCode::OK, name)
            }
        }
    })
    .await
}

/// Waits until `backend` has answered `count` more health checks.
async fn checks_seen(backend: &Backend, count: usize) {
    let target = backend.checks() + count;
    within(async {
        while backend.checks() < target {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

const CHECKS: &str = "[route.health_check]\npath = \"/health\"\ninterval = \"20ms\"\n\
                      jitter = \"0s\"\nhealthy_threshold = 2\nunhealthy_threshold = 2";

#[tokio::test]
async fn health_checks_take_a_target_out_and_bring_it_back() {
    let health = Arc::new(AtomicU16::new(200));
    let (a, b) = (checked("a", health.clone()).await, Backend::named("b").await);
    let proxy = proxy(CHECKS, &[target("a", &a, ""), target("b", &b, "")].concat()).await;
    checks_seen(&a, 1).await;
    health.store(500, Ordering::SeqCst);
    // Two failures take it out; the third check proves the second was recorded.
    checks_seen(&a, 3).await;
    assert_eq!(upstream(&proxy, "a").await["checks"], "down");
    let before = a.hits();
    for _ in 0..20 {
        assert_eq!(get(&proxy, "/").await.1, "b");
    }
    assert_eq!(a.hits(), before);
    health.store(200, Ordering::SeqCst);
    checks_seen(&a, 3).await;
    assert_eq!(upstream(&proxy, "a").await["checks"], "up");
    for _ in 0..20 {
        get(&proxy, "/").await;
    }
    assert_eq!(a.hits(), before + 10, "round robin again");
}

#[tokio::test]
async fn tier_one_serves_only_when_tier_zero_is_down() {
    let (a, b, backup) =
        (Backend::named("a").await, Backend::named("b").await, Backend::named("backup").await);
    // The backup is listed first: tiers, not the order, decide.
    let targets = [
        target("backup", &backup, "tier = 1"),
        target("a", &a, "tier = 0"),
        target("b", &b, "tier = 0"),
    ]
    .concat();
    let proxy = proxy("", &targets).await;
    for _ in 0..20 {
        assert_ne!(get(&proxy, "/").await.1, "backup");
    }
    assert_eq!(backup.hits(), 0);
    a.kill();
    // One of tier 0 left: still no backup.
    for _ in 0..10 {
        assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "b".to_owned()));
    }
    assert_eq!(backup.hits(), 0);
    b.kill();
    for _ in 0..10 {
        assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "backup".to_owned()));
    }
}

#[tokio::test]
async fn targets_at_their_cap_get_a_fast_503_with_proxy_status() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let slow = Backend::start(move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            text(StatusCode::OK, "slow")
        }
    })
    .await;
    let proxy = proxy("", &target("slow", &slow, "max_in_flight = 1")).await;
    let url = format!("{}/", proxy.url());
    let held = tokio::spawn(async move { direct().get(url).send().await.unwrap().status() });
    within(async {
        while slow.hits() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let response = within(direct().get(format!("{}/", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status.contains("error=connection_limit_reached"), "{status}");
    assert_eq!(slow.hits(), 1);
    release.notify_one();
    assert_eq!(within(held).await.unwrap(), StatusCode::OK);
}

/// An origin that answers `200` with `name` once `gate` is notified.
async fn gated(name: &'static str, gate: Arc<Notify>) -> Backend {
    Backend::start(move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            text(StatusCode::OK, name)
        }
    })
    .await
}

#[tokio::test]
async fn a_target_with_all_its_connections_busy_is_skipped_then_a_fast_503() {
    let (gate_a, gate_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let a = gated("a", gate_a.clone()).await;
    let b = gated("b", gate_b.clone()).await;
    let proxy = proxy(
        "",
        &format!(
            "{}{}",
            target("a", &a, "max_connections = 1"),
            target("b", &b, "max_connections = 1")
        ),
    )
    .await;
    let url = format!("{}/", proxy.url());
    let first = tokio::spawn(direct().get(url.clone()).send());
    within(async {
        while a.hits() + b.hits() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Whichever took the first request has its one connection busy: the second goes to the
    // other target.
    let second = tokio::spawn(direct().get(url.clone()).send());
    within(async {
        while a.hits() + b.hits() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!((a.hits(), b.hits()), (1, 1));
    assert_eq!(upstream(&proxy, "a").await["connections"], 1);
    assert_eq!(upstream(&proxy, "a").await["max_connections"], 1);
    // Both full: refused at once, never queued behind the busy connections.
    let response = within(direct().get(url.clone()).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status.contains("error=connection_limit_reached"), "{status}");
    assert_eq!(a.hits() + b.hits(), 2);
    gate_a.notify_one();
    gate_b.notify_one();
    for held in [first, second] {
        assert_eq!(within(held).await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // Once answered, each connection is idle in its pool and serves the next request: still
    // one connection per target.
    gate_a.notify_one();
    gate_b.notify_one();
    assert_eq!(get(&proxy, "/").await.0, StatusCode::OK);
    assert_eq!(upstream(&proxy, "a").await["connections"], 1);
    assert_eq!(upstream(&proxy, "b").await["connections"], 1);
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_unchanged_targets() {
    let failing = Backend::start(|_| async { text(StatusCode::BAD_GATEWAY, "broken") }).await;
    let fine = Backend::named("fine").await;
    let keys = "[route.retry]\nattempts = 1\n[route.passive_health]\nconsecutive_failures = 1\n\
                base_ejection = \"1h\"\nmax_ejection = \"2h\"";
    let targets = [target("failing", &failing, ""), target("fine", &fine, "")].concat();
    let dir = support::tls::test_dir("groups-reload");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config(keys, &targets)).unwrap();
    let proxy = TestProxy::from_file(&path).await;
    while failing.hits() == 0 {
        get(&proxy, "/").await;
    }
    assert!(upstream(&proxy, "failing").await["ejected_for_ms"].as_u64().is_some());
    // The same targets, one route setting changed.
    std::fs::write(&path, config(&format!("{keys}\nmax_ejected_percent = 60"), &targets)).unwrap();
    let reloaded = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(reloaded.status(), StatusCode::OK);
    let view = upstream(&proxy, "failing").await;
    assert!(view["ejected_for_ms"].as_u64().unwrap() > 3_000_000, "{view}");
    for _ in 0..20 {
        assert_eq!(get(&proxy, "/").await.1, "fine");
    }
    assert_eq!(failing.hits(), 1);
}

#[tokio::test]
async fn the_access_log_and_metrics_name_the_target_and_the_attempts() {
    let broken = Backend::start(|_| async { text(StatusCode::BAD_GATEWAY, "broken") }).await;
    let fine = Backend::named("fine").await;
    let dir = support::tls::test_dir("groups-log");
    let log = dir.join("access.log");
    let logging = format!("[access_log]\npath = {}\n", support::tls::toml_path(&log));
    let targets =
        [target("broken", &broken, "tier = 0"), target("fine", &fine, "tier = 1")].concat();
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{ADMIN}\n{logging}\n[[route]]\nprefix = \"/\"\nname = \"api\"\n\
         [route.passive_health]\nconsecutive_failures = 0\n{targets}"
    )))
    .await;
    assert_eq!(get(&proxy, "/").await, (StatusCode::OK, "fine".to_owned()));
    let lines = support::observe::log_lines(&log, 1).await;
    let fields = support::observe::text_fields(&lines[0]);
    assert_eq!(fields["upstream_target"], "fine");
    assert_eq!(fields["attempts"], "2");
    let metrics = support::observe::scrape(&proxy.admin_url("/metrics")).await;
    let sample = |series: &str| support::observe::sample(&metrics, series);
    assert_eq!(
        sample("sluice_upstream_target_attempts_total{route=\"api\",target=\"broken\"}"),
        1.0
    );
    assert_eq!(
        sample(
            "sluice_upstream_target_errors_total{route=\"api\",target=\"broken\",kind=\"http_5xx\"}"
        ),
        1.0
    );
    assert_eq!(sample("sluice_upstream_target_retries_total{route=\"api\",target=\"fine\"}"), 1.0);
    assert_eq!(sample("sluice_upstream_target_healthy{route=\"api\",target=\"fine\"}"), 1.0);
}

#[tokio::test]
async fn a_host_name_expands_into_one_target_per_address() {
    // Two origins on one port, at 127.0.0.1 and 127.0.0.2, behind one name.
    let first = Backend::named("first").await;
    let port = first.addr.port();
    let second_addr = SocketAddr::from(([127, 0, 0, 2], port));
    let second = Backend::start_at(second_addr, |_| async { text(StatusCode::OK, "second") }).await;
    let toml = reverse_config(&format!(
        "{ADMIN}\n[access_log]\nenabled = false\n[dns]\nhosts = {{ \"svc.test\" = [\"127.0.0.2\", \"127.0.0.1\"] }}\n\
         [[route]]\nprefix = \"/\"\nname = \"api\"\n\
         [[route.target]]\nname = \"svc\"\nurl = \"http://svc.test:{port}\"\nexpand_dns = true\n"
    ));
    let proxy = TestProxy::start(&toml).await;
    // The first lookup runs as the route starts; until it is done the name is one target.
    let names = within(async {
        loop {
            let body = direct().get(proxy.admin_url("/upstreams")).send().await.unwrap();
            let view: serde_json::Value =
                serde_json::from_str(&body.text().await.unwrap()).unwrap();
            let names: Vec<String> = view["routes"][0]["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            if names.len() == 2 {
                return names;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(names, [format!("svc@127.0.0.1:{port}"), format!("svc@127.0.0.2:{port}")]);
    let mut served = BTreeMap::new();
    for _ in 0..10 {
        *served.entry(get(&proxy, "/").await.1).or_insert(0) += 1;
    }
    assert_eq!(served, BTreeMap::from([("first".to_owned(), 5), ("second".to_owned(), 5)]));
    assert_eq!((first.hits(), second.hits()), (5, 5));
}
