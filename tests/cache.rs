//! The shared HTTP cache on reverse routes and on the forward proxy, against real origins that
//! count their requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::config::{ADMIN, FORWARD, listener, reverse_config, route};
use support::observe::{log_lines, sample, scrape_until, text_fields};
use support::proxy::TestProxy;
use support::upstream::{Origin, TestBody, full};
use support::within;

/// A route to `origin` with the cache on, plus `cache_keys` in it and `[cache]` lines `cache`.
fn cached(origin: &Origin, route_extra: &str, cache: &str) -> String {
    reverse_config(&format!(
        "{ADMIN}{}[cache]\n{cache}\n",
        route("/", &format!("http://{}", origin.addr), &format!("cache = true\n{route_extra}"))
    ))
}

/// An origin answering every request with `body` and the header fields `fields`, numbering
/// its responses in `x-n` (1, 2, ...).
async fn origin_with(
    fields: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Origin {
    let count = Arc::new(AtomicUsize::new(0));
    Origin::start(move |_request: Request<Incoming>| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut response = full(format!("{body}{n}"));
            for (name, value) in fields {
                response.headers_mut().append(*name, value.parse().unwrap());
            }
            response.headers_mut().insert("x-n", n.into());
            response
        }
    })
    .await
}

async fn get(
    proxy: &TestProxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{}{path}", proxy.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within(request.send()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, within(response.text()).await.unwrap())
}

#[tokio::test]
async fn fresh_responses_are_served_from_the_cache_with_age_and_cache_status() {
    let origin = origin_with(&[("cache-control", "max-age=3600")], "v").await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    let (status, headers, body) = get(&proxy, "/a?q=1", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert_eq!(headers["cache-status"], "sluice; fwd=uri-miss; fwd-status=200; stored");
    let (status, headers, body) = get(&proxy, "/a?q=1", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert!(
        headers["cache-status"].to_str().unwrap().starts_with("sluice; hit; ttl="),
        "{headers:?}"
    );
    assert!(headers.contains_key("age"));
    // Another query is another URI.
    assert_eq!(get(&proxy, "/a?q=2", &[]).await.2, "v2");
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn uncacheable_responses_and_other_routes_go_to_the_origin_every_time() {
    let origin = origin_with(&[("cache-control", "private, max-age=3600")], "p").await;
    let plain = origin_with(&[("cache-control", "max-age=3600")], "x").await;
    let config = reverse_config(&format!(
        "{}{}",
        route("/private", &format!("http://{}", origin.addr), "cache = true\n"),
        route("/plain", &format!("http://{}", plain.addr), "")
    ));
    let proxy = TestProxy::start(&config).await;
    for _ in 0..2 {
        let (_, headers, _) = get(&proxy, "/private", &[]).await;
        assert_eq!(headers["cache-status"], "sluice; fwd=uri-miss; fwd-status=200");
        let (_, headers, _) = get(&proxy, "/plain", &[]).await;
        assert!(!headers.contains_key("cache-status"), "a route without cache = true");
    }
    assert_eq!((origin.seen().len(), plain.seen().len()), (2, 2));
}

#[tokio::test]
async fn head_conditional_and_range_requests_are_answered_from_a_stored_get() {
    let origin =
        origin_with(&[("cache-control", "max-age=3600"), ("etag", "\"e1\"")], "0123456789-").await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    assert_eq!(get(&proxy, "/r", &[]).await.2, "0123456789-1");
    let client = reqwest::Client::new();
    let head = within(client.head(format!("{}/r", proxy.url())).send()).await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "12");
    let (status, headers, body) = get(&proxy, "/r", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(headers["etag"], "\"e1\"");
    let (status, headers, body) = get(&proxy, "/r", &[("range", "bytes=2-4")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::PARTIAL_CONTENT, "234"));
    assert_eq!(headers["content-range"], "bytes 2-4/12");
    let (status, headers, _) = get(&proxy, "/r", &[("range", "bytes=50-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */12");
    assert_eq!(origin.seen().len(), 1, "all of them from the one stored GET");
}

#[tokio::test]
async fn stale_responses_are_revalidated_with_the_stored_validators() {
    let origin = Origin::start(|request: Request<Incoming>| async move {
        let mut response =
            if request.headers().get("if-none-match").is_some_and(|tag| tag == "\"v1\"") {
                let mut response = full("");
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response.headers_mut().insert("x-updated", "yes".parse().unwrap());
                response
            } else {
                full("body")
            };
        response.headers_mut().insert("cache-control", "max-age=0".parse().unwrap());
        response.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
        response
    })
    .await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    assert_eq!(get(&proxy, "/v", &[]).await.2, "body");
    let (status, headers, body) = get(&proxy, "/v", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "body"));
    assert_eq!(headers["x-updated"], "yes", "the 304's fields update the stored response");
    assert_eq!(headers["cache-status"], "sluice; fwd=stale; fwd-status=304; ttl=0");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
}

#[tokio::test]
async fn one_hundred_concurrent_misses_make_one_upstream_request() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let body = Bytes::from(support::payload(256 * 1024, 7));
    let sent = body.clone();
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let gate = gate.clone();
        let body = sent.clone();
        async move {
            gate.notified().await;
            let mut response = full(body);
            response.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            response
        }
    })
    .await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/collapse", proxy.url());
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let request = client.get(&url).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                support::sha256(&response.bytes().await.unwrap())
            })
        })
        .collect();
    // Every request but the first waits for the first one's response.
    let admin = proxy.admin_url("/metrics");
    scrape_until(&admin, |samples| sample(samples, "sluice_cache_collapsed_waits_total") >= 99.0)
        .await;
    release.notify_one();
    let expected = support::sha256(&body);
    for request in requests {
        assert_eq!(within(request).await.unwrap(), expected);
    }
    assert_eq!(origin.seen().len(), 1);
    let samples = scrape_until(&admin, |samples| {
        sample(samples, "sluice_cache_requests_total{outcome=\"collapsed\"}") >= 99.0
    })
    .await;
    assert_eq!(sample(&samples, "sluice_cache_requests_total{outcome=\"miss\"}"), 1.0);
}

/// An origin that can be taken down: it answers with `fields` until then, and afterwards
/// nothing listens on its address. Responses close their connection, so no pooled
/// connection outlives it.
struct Downable {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Downable {
    async fn start(fields: &'static [(&'static str, &'static str)]) -> Downable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let mut response: Response<TestBody> = full(format!("origin {n}"));
                            for (name, value) in fields {
                                response.headers_mut().append(*name, value.parse().unwrap());
                            }
                            response.headers_mut().insert("connection", "close".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Downable { addr, requests, task }
    }

    async fn take_down(self) -> Arc<AtomicUsize> {
        self.task.abort();
        let _ = self.task.await;
        self.requests
    }
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_response_while_the_origin_is_down() {
    let origin =
        Downable::start(&[("cache-control", "max-age=0, stale-if-error=600"), ("etag", "\"s\"")])
            .await;
    let strict =
        Downable::start(&[("cache-control", "max-age=0, must-revalidate"), ("etag", "\"m\"")])
            .await;
    let config = reverse_config(&format!(
        "{}{}",
        route("/lenient", &format!("http://{}", origin.addr), "cache = true\n"),
        route(
            "/strict",
            &format!("http://{}", strict.addr),
            "cache = true\ncache_stale_when_down = \"1h\"\n"
        ),
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(get(&proxy, "/lenient", &[]).await.2, "origin 1");
    assert_eq!(get(&proxy, "/strict", &[]).await.2, "origin 1");
    let requests = origin.take_down().await;
    let _ = strict.take_down().await;
    let (status, headers, body) = get(&proxy, "/lenient", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "origin 1"));
    assert_eq!(headers["cache-status"], "sluice; fwd=stale; detail=stale-if-error");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // must-revalidate forbids it, whatever the route allows (RFC 9111 §5.2.2.2).
    let (status, _, _) = get(&proxy, "/strict", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn the_route_may_serve_stale_while_the_upstream_is_down() {
    let origin = Downable::start(&[("cache-control", "max-age=0"), ("etag", "\"d\"")]).await;
    let config = reverse_config(&route(
        "/",
        &format!("http://{}", origin.addr),
        "cache = true\ncache_stale_when_down = \"1h\"\n",
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(get(&proxy, "/down", &[]).await.2, "origin 1");
    let _ = origin.take_down().await;
    let (status, _, body) = get(&proxy, "/down", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "origin 1"));
}

#[tokio::test]
async fn a_64_mib_response_streams_to_two_clients_while_it_is_stored() {
    const SIZE: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let content = Bytes::from(support::payload(SIZE, 64));
    let release = Arc::new(tokio::sync::Notify::new());
    let (gate, served) = (release.clone(), content.clone());
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let (gate, content) = (gate.clone(), served.clone());
        async move {
            let (mut sender, mut response) = support::upstream::channel_response(4);
            response.headers_mut().insert("cache-control", "max-age=600".parse().unwrap());
            response.headers_mut().insert("content-length", SIZE.into());
            tokio::spawn(async move {
                // The first chunk, then the rest once both clients are reading.
                sender.send_data(content.slice(..CHUNK)).await.unwrap();
                gate.notified().await;
                for start in (CHUNK..SIZE).step_by(CHUNK) {
                    sender.send_data(content.slice(start..start + CHUNK)).await.unwrap();
                }
            });
            response
        }
    })
    .await;
    let proxy = TestProxy::start(&cached(
        &origin,
        "",
        "max_bytes = 268435456\nmax_object_bytes = 67108864\n",
    ))
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/big", proxy.url());
    let mut first = within(client.get(&url).send()).await.unwrap();
    let mut second = within(client.get(&url).send()).await.unwrap();
    assert!(second.headers()["cache-status"].to_str().unwrap().contains("hit"));
    let (mut a, mut b) = (Vec::with_capacity(SIZE), Vec::with_capacity(SIZE));
    a.extend_from_slice(&within(first.chunk()).await.unwrap().unwrap());
    b.extend_from_slice(&within(second.chunk()).await.unwrap().unwrap());
    release.notify_one();
    let read_rest = |mut response: reqwest::Response, mut into: Vec<u8>| async move {
        while let Some(chunk) = response.chunk().await.unwrap() {
            into.extend_from_slice(&chunk);
        }
        into
    };
    let (a, b) = tokio::join!(within(read_rest(first, a)), within(read_rest(second, b)));
    let expected = support::sha256(&content);
    assert_eq!(support::sha256(&a), expected);
    assert_eq!(support::sha256(&b), expected);
    // Stored whole: a third client is a hit with the same bytes.
    let third = within(client.get(&url).send()).await.unwrap();
    assert!(third.headers()["cache-status"].to_str().unwrap().contains("hit"));
    assert_eq!(support::sha256(&within(third.bytes()).await.unwrap()), expected);
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn a_response_over_the_object_limit_passes_through_unstored() {
    let big = "x".repeat(300 * 1024);
    let body: &'static str = Box::leak(big.into_boxed_str());
    let origin = origin_with(&[("cache-control", "max-age=600")], body).await;
    let proxy = TestProxy::start(&cached(&origin, "", "max_object_bytes = 262144\n")).await;
    for n in 1..=2 {
        let (status, headers, text) = get(&proxy, "/big", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text.len(), body.len() + 1);
        assert!(text.ends_with(&n.to_string()));
        assert!(!headers["cache-status"].to_str().unwrap().contains("stored"));
    }
    assert_eq!(origin.seen().len(), 2);
}

#[tokio::test]
async fn eviction_keeps_the_store_within_its_memory_bound() {
    let body: &'static str = Box::leak("e".repeat(64 * 1024).into_boxed_str());
    let origin = origin_with(&[("cache-control", "max-age=600")], body).await;
    let proxy =
        TestProxy::start(&cached(&origin, "", "max_bytes = 1048576\nmax_object_bytes = 131072\n"))
            .await;
    for n in 0..40 {
        assert_eq!(get(&proxy, &format!("/e{n}"), &[]).await.0, StatusCode::OK);
    }
    let samples = scrape_until(&proxy.admin_url("/metrics"), |samples| {
        sample(samples, "sluice_cache_evictions_total") > 0.0
    })
    .await;
    let stored = sample(&samples, "sluice_cache_stored_bytes");
    assert!(stored > 0.0 && stored <= 1_048_576.0, "stored {stored}");
    let objects = sample(&samples, "sluice_cache_objects");
    assert!((1.0..40.0).contains(&objects), "objects {objects}");
    assert_eq!(objects + sample(&samples, "sluice_cache_evictions_total"), 40.0);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = origin_with(
        &[("cache-control", "max-age=0, stale-while-revalidate=600"), ("etag", "\"w\"")],
        "r",
    )
    .await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    assert_eq!(get(&proxy, "/swr", &[]).await.2, "r1");
    let (status, headers, body) = get(&proxy, "/swr", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "r1"), "the stale response, at once");
    assert!(headers["cache-status"].to_str().unwrap().contains("detail=stale-while-revalidate"));
    // The background revalidation stores the origin's new response.
    within(async {
        loop {
            if get(&proxy, "/swr", &[]).await.2 == "r2" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let seen = origin.seen();
    assert_eq!(seen[1].headers["if-none-match"], "\"w\"");
}

#[tokio::test]
async fn vary_selects_variants_by_the_named_request_fields() {
    let origin =
        origin_with(&[("cache-control", "max-age=600"), ("vary", "Accept-Language")], "lang").await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    assert_eq!(get(&proxy, "/v", &[("accept-language", "en")]).await.2, "lang1");
    assert_eq!(get(&proxy, "/v", &[("accept-language", "de")]).await.2, "lang2");
    assert_eq!(get(&proxy, "/v", &[("accept-language", "EN")]).await.2, "lang1");
    assert_eq!(get(&proxy, "/v", &[("accept-language", "de")]).await.2, "lang2");
    let (_, headers, _) = get(&proxy, "/v", &[]).await;
    assert!(headers["cache-status"].to_str().unwrap().contains("fwd=vary-miss"));
    assert_eq!(origin.seen().len(), 3);
}

#[tokio::test]
async fn unsafe_requests_and_purges_invalidate_stored_responses() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "u").await;
    let proxy = TestProxy::start(&cached(&origin, "", "")).await;
    let client = reqwest::Client::new();
    assert_eq!(get(&proxy, "/doc", &[]).await.2, "u1");
    assert_eq!(get(&proxy, "/doc", &[]).await.2, "u1");
    within(client.post(format!("{}/doc", proxy.url())).body("x").send()).await.unwrap();
    assert_eq!(get(&proxy, "/doc", &[]).await.2, "u3", "the POST invalidated it");
    // Purge by URL, then by prefix (whole segments: /doc, not /docs).
    let host = proxy.addr;
    let purge = |query: String| {
        let client = client.clone();
        let url = proxy.admin_url(&format!("/cache/purge?{query}"));
        async move { within(within(client.post(url).send()).await.unwrap().text()).await.unwrap() }
    };
    assert_eq!(purge(format!("url=http://{host}/doc")).await, "purged 1 stored responses\n");
    assert_eq!(get(&proxy, "/doc", &[]).await.2, "u4");
    assert_eq!(get(&proxy, "/doc/a", &[]).await.2, "u5");
    assert_eq!(get(&proxy, "/docs", &[]).await.2, "u6");
    assert_eq!(
        purge(format!("prefix=http%3A%2F%2F{host}%2Fdoc")).await,
        "purged 2 stored responses\n"
    );
    assert_eq!(get(&proxy, "/docs", &[]).await.2, "u6", "not under the prefix");
    assert_eq!(get(&proxy, "/doc/a", &[]).await.2, "u7");
    let response =
        within(client.post(proxy.admin_url("/cache/purge?url=relative")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_forward_proxy_caches_plain_http_on_listeners_that_opt_in() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "f").await;
    let proxy =
        TestProxy::start(&listener(FORWARD, "allow_private_destinations = true\ncache = true\n"))
            .await;
    let client = support::client::via_proxy(proxy.addr);
    for _ in 0..2 {
        let response = within(client.get(origin.url("/fwd")).send()).await.unwrap();
        assert_eq!(within(response.text()).await.unwrap(), "f1");
    }
    assert_eq!(origin.seen().len(), 1);
    let plain = TestProxy::start(&listener(FORWARD, "allow_private_destinations = true\n")).await;
    let client = support::client::via_proxy(plain.addr);
    let response = within(client.get(origin.url("/fwd")).send()).await.unwrap();
    assert_eq!(within(response.text()).await.unwrap(), "f2");
}

#[tokio::test]
async fn the_access_log_names_what_the_cache_did() {
    let origin = origin_with(&[("cache-control", "max-age=600")], "l").await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache-access.log");
    let _ = std::fs::remove_file(&log);
    let config = format!(
        "{}[access_log]\nenabled = true\npath = {:?}\n",
        cached(&origin, "", ""),
        log.display().to_string()
    );
    let proxy = TestProxy::start(&config).await;
    get(&proxy, "/l", &[]).await;
    get(&proxy, "/l", &[]).await;
    let lines = log_lines(&log, 2).await;
    let outcomes: Vec<_> = lines.iter().map(|line| text_fields(line)["cache"].clone()).collect();
    assert_eq!(outcomes, ["miss", "hit"]);
}

/// A route caching the answers of an origin whose first response is stale at once under
/// `stale-while-revalidate`, and which holds every later request (the background refresh)
/// until `release` is notified, reporting its arrival on `arrived`.
async fn held_refresh(
    grace: &str,
) -> (Origin, TestProxy, tokio::sync::mpsc::Receiver<()>, Arc<tokio::sync::Notify>) {
    let count = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, arrived) = tokio::sync::mpsc::channel(4);
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
        async move {
            if n > 1 {
                let _ = arrived_tx.send(()).await;
                gate.notified().await;
            }
            let mut response = full(format!("r{n}"));
            let fields =
                [("cache-control", "max-age=0, stale-while-revalidate=600"), ("etag", "\"h\"")];
            for (name, value) in fields {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    })
    .await;
    let config = format!("{}[timeouts]\nshutdown_grace = \"{grace}\"\n", cached(&origin, "", ""));
    let proxy = TestProxy::start(&config).await;
    (origin, proxy, arrived, release)
}

#[tokio::test]
async fn shutdown_waits_for_a_background_refresh_until_the_grace_period_ends() {
    let (_origin, proxy, mut arrived, _release) = held_refresh("1s").await;
    assert_eq!(get(&proxy, "/held", &[]).await.2, "r1");
    let (_, headers, body) = get(&proxy, "/held", &[]).await;
    assert_eq!(body, "r1");
    assert!(headers["cache-status"].to_str().unwrap().contains("stale-while-revalidate"));
    within(arrived.recv()).await.unwrap();
    // The refresh never ends: the drain waits for it for the whole grace period.
    assert_eq!(proxy.shutdown().await, sluice::shutdown::Drained::GraceExpired);
}

#[tokio::test]
async fn shutdown_completes_once_a_background_refresh_has_finished() {
    let (origin, mut proxy, mut arrived, release) = held_refresh("30s").await;
    assert_eq!(get(&proxy, "/held", &[]).await.2, "r1");
    assert_eq!(get(&proxy, "/held", &[]).await.2, "r1");
    within(arrived.recv()).await.unwrap();
    proxy.signal_shutdown();
    release.notify_one();
    assert_eq!(proxy.finished().await, sluice::shutdown::Drained::Complete);
    assert_eq!(origin.seen().len(), 2);
}
