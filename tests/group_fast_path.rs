//! Routes with several targets on the HTTP/1 fast path: their requests are counted there
//! (`sluice_requests_path_total{path="fast"}`), a `503` is tried again on another target with
//! that target's `Host`, header rules and the same body, and nothing is tried again once a
//! response byte has gone to the client. With `SLUICE_TEST_PATH=general` the same behaviour
//! is checked on the general path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::client::direct;
use support::config::{ADMIN, reverse_config};
use support::observe::{log_lines, sample, scrape_until, text_fields};
use support::proxy::TestProxy;
use support::upstream::{Origin, full, raw_server};
use support::{sha256, within};

/// The path this run's requests take: `fast`, or `general` when the run forces it.
fn expected_path() -> &'static str {
    if std::env::var("SLUICE_TEST_PATH").as_deref() == Ok("general") { "general" } else { "fast" }
}

/// Waits until `count` requests have been counted by path, and returns the samples.
async fn metrics_after(proxy: &TestProxy, count: f64) -> BTreeMap<String, f64> {
    let series = format!("sluice_requests_path_total{{path=\"{}\"}}", expected_path());
    scrape_until(&proxy.admin_url("/metrics"), |s| sample(s, &series) >= count).await
}

/// An origin that reads the request body and answers `503`.
async fn busy() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let _ = request.into_body().collect().await;
        let mut response = full("busy");
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await
}

/// An origin that answers `200` with the SHA-256 of the request body.
async fn hashing() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        full(sha256(&body))
    })
    .await
}

#[tokio::test]
async fn a_503_is_retried_on_the_fast_path_with_the_other_targets_host_rules_and_body() {
    let (first, second) = (busy().await, hashing().await);
    let dir = support::tls::test_dir("group-fast-path");
    let log = dir.join("access.log");
    let toml = reverse_config(&format!(
        "{ADMIN}\n[access_log]\npath = {log}\n\n[[route]]\nprefix = \"/\"\nname = \"api\"\n\
         [route.retry]\nmethods = [\"GET\", \"POST\"]\n\
         [[route.target]]\nname = \"first\"\nurl = \"{first}\"\n\
         [route.target.headers.request]\nset = {{ x-key = \"one\" }}\n\
         [[route.target]]\nname = \"second\"\nurl = \"{second}\"\ntier = 1\n\
         [route.target.headers.request]\nset = {{ x-key = \"two\" }}\n",
        log = support::tls::toml_path(&log),
        first = first.url(""),
        second = second.url(""),
    ));
    let proxy = TestProxy::start(&toml).await;

    let body = "a small body, held whole";
    let response =
        within(direct().post(format!("{}/upload", proxy.url())).body(body).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(within(response.text()).await.unwrap(), sha256(body.as_bytes()));

    // Each target got the same request with its own `Host` and rules.
    let (tried, answered) = (first.only_request(), second.only_request());
    assert_eq!(tried.headers["host"], first.addr.to_string());
    assert_eq!(tried.headers["x-key"], "one");
    assert_eq!(answered.headers["host"], second.addr.to_string());
    assert_eq!(answered.headers["x-key"], "two");
    assert_eq!(answered.headers["content-length"], body.len().to_string());

    let metrics = metrics_after(&proxy, 1.0).await;
    let path =
        |name: &str| sample(&metrics, &format!("sluice_requests_path_total{{path=\"{name}\"}}"));
    assert_eq!(path(expected_path()), 1.0, "{metrics:?}");
    let target = |family: &str, name: &str| {
        sample(
            &metrics,
            &format!("sluice_upstream_target_{family}{{route=\"api\",target=\"{name}\"}}"),
        )
    };
    assert_eq!(target("attempts_total", "first"), 1.0);
    assert_eq!(target("attempts_total", "second"), 1.0);
    assert_eq!(target("retries_total", "second"), 1.0);
    let fields = text_fields(&log_lines(&log, 1).await[0]);
    assert_eq!(fields["upstream_target"], "second");
    assert_eq!(fields["attempts"], "2");
}

#[tokio::test]
async fn nothing_is_retried_on_the_fast_path_once_a_response_byte_was_sent() {
    // "first" sends its head and part of its body, then closes.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let first = raw_server(move |mut stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npart").await;
        }
    })
    .await;
    let second = hashing().await;
    let toml = reverse_config(&format!(
        "{ADMIN}\n[[route]]\nprefix = \"/\"\nname = \"api\"\n\
         [[route.target]]\nname = \"first\"\nurl = \"http://{first}\"\n\
         [[route.target]]\nname = \"second\"\nurl = \"{}\"\ntier = 1\n",
        second.url("")
    ));
    let proxy = TestProxy::start(&toml).await;
    let response = within(direct().get(format!("{}/", proxy.url())).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(within(response.bytes()).await.is_err(), "the body is cut short, not replaced");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(second.seen().is_empty());
    let metrics = metrics_after(&proxy, 1.0).await;
    let series = format!("sluice_requests_path_total{{path=\"{}\"}}", expected_path());
    assert_eq!(sample(&metrics, &series), 1.0, "{metrics:?}");
    let attempts = "sluice_upstream_target_attempts_total{route=\"api\",target=\"first\"}";
    assert_eq!(sample(&metrics, attempts), 1.0);
    assert_eq!(
        sample(&metrics, "sluice_upstream_target_retries_total{route=\"api\",target=\"second\"}"),
        0.0
    );
}
