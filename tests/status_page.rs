//! The status page on the admin listener: `GET /status.json` against the schema documented in
//! docs/OPERATIONS.md, the server-rendered page (readable without script, every value
//! escaped, no secret), the latest reload's outcome, and the live page in a real headless
//! Chromium with traffic flowing, saved as a screenshot under `target/test-artifacts/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;
use sluice::config::Config;
use sluice::gateway::virtual_key::hash;
use support::ai::{Behaviour, MockProvider};
use support::browser::{Browser, artifacts_dir};
use support::client::{connect_tunnel, direct, via_proxy};
use support::config::{ADMIN, BOTH, REVERSE, listener, named_route, write_config};
use support::proxy::TestProxy;
use support::upstream::{Origin, WsOrigin, closed_port, full};
use support::within;
use tokio::task::JoinHandle;

// ------------------------------------------------------------------ the documented schema
// These mirror docs/OPERATIONS.md ("The status page"), not the crate's types: a field the
// server adds, drops or renames without the documentation fails here.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    schema: u32,
    version: String,
    generated_unix_ms: u64,
    started_unix_ms: u64,
    state: String,
    listeners: Vec<Listener>,
    routes: Vec<Route>,
    connections: Connections,
    reload: Option<Reload>,
    traffic: Traffic,
    ai_usage: Option<AiUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AiUsage {
    models: Vec<AiModel>,
    virtual_keys: Vec<AiVirtualKey>,
    routes: Vec<AiRoute>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AiModel {
    model: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AiVirtualKey {
    name: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AiRoute {
    route: String,
    fallbacks: u64,
    keys: Vec<AiProviderKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AiProviderKey {
    key_id: String,
    state: String,
    back_in_ms: Option<u64>,
    cooldowns: u64,
    removals: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    address: SocketAddr,
    modes: String,
    protocol: String,
    tls: bool,
    auth: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    name: String,
    host: Option<String>,
    prefix: String,
    upstream: String,
    protocol: String,
    upgrades: Vec<String>,
    rate_limit: Option<RateLimit>,
    balance: Option<String>,
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    name: String,
    url: String,
    tier: u8,
    weight: u32,
    state: String,
    checks: Option<String>,
    ejected_for_ms: Option<u64>,
    cooling_for_ms: Option<u64>,
    consecutive_failures: u32,
    in_flight: u32,
    max_in_flight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimit {
    rate: f64,
    burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Connections {
    open: u64,
    parked: u64,
    tunnels: u64,
    websockets: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reload {
    at_unix_ms: u64,
    result: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Traffic {
    interval_seconds: u64,
    history_seconds: u64,
    samples: usize,
    end_unix_ms: Option<u64>,
    series: Vec<Series>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Series {
    route: Option<String>,
    requests: Vec<u32>,
    errors: Vec<u32>,
    p50_ms: Vec<Option<f64>>,
    p99_ms: Vec<Option<f64>>,
    recent: Recent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recent {
    window_seconds: u64,
    requests_per_second: f64,
    error_ratio: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The keys every object of the document must have, even when their value is `null`
/// (`Option` fields above would also accept a missing key).
const REQUIRED_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "ai_usage",
            "connections",
            "generated_unix_ms",
            "listeners",
            "reload",
            "routes",
            "schema",
            "started_unix_ms",
            "state",
            "traffic",
            "version",
        ],
    ),
    ("traffic", &["end_unix_ms", "history_seconds", "interval_seconds", "samples", "series"]),
    ("series", &["errors", "p50_ms", "p99_ms", "recent", "requests", "route"]),
    ("recent", &["error_ratio", "p50_ms", "p99_ms", "requests_per_second", "window_seconds"]),
    (
        "routes",
        &[
            "balance",
            "host",
            "name",
            "prefix",
            "protocol",
            "rate_limit",
            "targets",
            "upgrades",
            "upstream",
        ],
    ),
    (
        "targets",
        &[
            "checks",
            "consecutive_failures",
            "cooling_for_ms",
            "ejected_for_ms",
            "in_flight",
            "max_in_flight",
            "name",
            "state",
            "tier",
            "url",
            "weight",
        ],
    ),
];

/// The same for `ai_usage`, present only when a route serves an AI provider.
const AI_REQUIRED_KEYS: &[(&str, &[&str])] = &[
    ("ai_usage", &["models", "routes", "virtual_keys"]),
    ("ai_models", &["cached_tokens", "input_tokens", "model", "output_tokens", "requests"]),
    ("ai_virtual_keys", &["cached_tokens", "input_tokens", "name", "output_tokens", "requests"]),
    ("ai_routes", &["fallbacks", "keys", "route"]),
    ("ai_keys", &["back_in_ms", "cooldowns", "key_id", "removals", "state"]),
];

/// The objects of `document` at `place` (a name in [`REQUIRED_KEYS`] or [`AI_REQUIRED_KEYS`]).
fn objects<'a>(document: &'a Value, place: &str) -> Vec<&'a Value> {
    let each = |value: &'a Value| value.as_array().unwrap().iter().collect::<Vec<_>>();
    match place {
        "" => vec![document],
        "traffic" => vec![&document["traffic"]],
        "series" => each(&document["traffic"]["series"]),
        "recent" => objects(document, "series").into_iter().map(|s| &s["recent"]).collect(),
        "routes" => each(&document["routes"]),
        "targets" => {
            objects(document, "routes").into_iter().flat_map(|r| each(&r["targets"])).collect()
        }
        "ai_usage" => vec![&document["ai_usage"]],
        "ai_models" => each(&document["ai_usage"]["models"]),
        "ai_virtual_keys" => each(&document["ai_usage"]["virtual_keys"]),
        "ai_routes" => each(&document["ai_usage"]["routes"]),
        "ai_keys" => {
            objects(document, "ai_routes").into_iter().flat_map(|r| each(&r["keys"])).collect()
        }
        other => panic!("no place {other}"),
    }
}

/// Fails unless every object has exactly the documented keys.
fn assert_documented_keys(document: &Value) {
    assert_keys(document, REQUIRED_KEYS);
}

/// Fails unless every object at the places of `required` has exactly its keys.
fn assert_keys(document: &Value, required: &[(&str, &[&str])]) {
    for (place, keys) in required {
        let found = objects(document, place);
        assert!(!found.is_empty(), "no object at {place:?}");
        for object in found {
            let have: BTreeSet<&str> =
                object.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(have, keys.iter().copied().collect(), "keys at {place:?}");
        }
    }
}

// ------------------------------------------------------------------ the proxy under test

/// A small deterministic sequence for the origins' latencies and answers.
fn next(counter: &AtomicU64) -> u64 {
    let mut x = counter.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x
}

/// An origin answering after 1 to `spread_ms` milliseconds (occasionally 40 ms), with a 503
/// for one request in `fail_one_in` (0: never).
async fn origin(spread_ms: u64, fail_one_in: u64) -> Origin {
    let counter = Arc::new(AtomicU64::new(1));
    Origin::start(move |_request: Request<Incoming>| {
        let roll = next(&counter);
        async move {
            let millis = if roll.is_multiple_of(50) { 40 } else { 1 + roll % spread_ms.max(1) };
            tokio::time::sleep(Duration::from_millis(millis)).await;
            let mut response = full("ok\n");
            if fail_one_in > 0 && roll.is_multiple_of(fail_one_in) {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .await
}

/// An origin that passes its health checks (`.../health`) and answers everything else 502.
async fn failing_origin() -> Origin {
    Origin::start(|request: Request<Incoming>| async move {
        let mut response = full("no\n");
        if !request.uri().path().ends_with("/health") {
            *response.status_mut() = StatusCode::BAD_GATEWAY;
        }
        response
    })
    .await
}

/// The origins behind the routes, kept alive for the test.
struct Upstreams {
    api: Origin,
    api_b: Origin,
    failing: Origin,
    gone: SocketAddr,
    payments: Origin,
    live: WsOrigin,
}

impl Upstreams {
    async fn start() -> Upstreams {
        Upstreams {
            api: origin(12, 0).await,
            api_b: origin(12, 0).await,
            failing: failing_origin().await,
            gone: closed_port(),
            payments: origin(30, 8).await,
            live: WsOrigin::start().await,
        }
    }

    /// The `api` route: four targets over two tiers with health checks, one of them gone (its
    /// checks fail: `down`) and one that answers 502 (ejected by passive health); `a_extra`
    /// goes into the first target.
    fn api_route(&self, a_extra: &str) -> String {
        let target = |name: &str, url: &str, extra: &str| {
            format!("[[route.target]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
        };
        format!(
            "[[route]]\nname = \"api\"\nprefix = \"/api\"\n\
             [route.passive_health]\nconsecutive_failures = 2\n\
             [route.health_check]\npath = \"/health\"\ninterval = \"100ms\"\njitter = \"0s\"\n\
             unhealthy_threshold = 2\n\n{}{}{}{}",
            target("api-a", &self.api.url("/v1"), &format!("weight = 2\n{a_extra}")),
            target("api-failing", &self.failing.url("/v1"), ""),
            target("api-gone", &format!("http://{}/v1", self.gone), ""),
            target("api-b", &self.api_b.url("/v1"), "tier = 1"),
        )
    }

    /// A listener serving forward and reverse traffic, four routes (one with targets, one
    /// limited to a host, one for WebSockets), and the admin listener; `api_a_extra` goes
    /// into the first target of `api`.
    fn config(&self, api_a_extra: &str) -> String {
        format!(
            "{}{}{}{}{}{ADMIN}[access_log]\nenabled = false\n",
            listener(BOTH, ""),
            self.api_route(api_a_extra),
            named_route(
                "payments",
                "/payments",
                &self.payments.url(""),
                "[route.rate_limit]\nrate = 500\nburst = 100\n"
            ),
            named_route("assets", "/", &self.api.url("/static"), "host = \"cdn.example\"\n"),
            named_route("live", "/live", &format!("http://{}", self.live.addr), ""),
        )
    }
}

/// Sends requests through `proxy` until aborted: to every route, and through its forward
/// proxy, one at a time per loop.
fn traffic(proxy: &TestProxy, origin: &Origin) -> JoinHandle<()> {
    let (addr, forward_target) = (proxy.addr, origin.url("/fwd"));
    tokio::spawn(async move {
        let (client, forward) = (direct(), via_proxy(addr));
        for i in 0u64.. {
            let request = match i % 6 {
                0..=2 => client.get(format!("http://{addr}/api/items/{i}")),
                3 => client.post(format!("http://{addr}/payments/charge")).body("{}"),
                4 => client.get(format!("http://{addr}/logo.svg")).header("host", "cdn.example"),
                _ => forward.get(&forward_target),
            };
            // Failures (a 503, a refused rate) are part of the traffic being shown.
            let _ = request.send().await;
        }
    })
}

/// `GET /status.json` as the raw document.
async fn status_json(proxy: &TestProxy) -> Value {
    let response = within(direct().get(proxy.admin_url("/status.json")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    serde_json::from_str(&within(response.text()).await.unwrap()).unwrap()
}

/// Polls `/status.json` until `ready` holds.
async fn status_when(proxy: &TestProxy, ready: impl Fn(&Status) -> bool) -> (Status, Value) {
    within(async {
        loop {
            let raw = status_json(proxy).await;
            let status: Status = serde_json::from_value(raw.clone()).unwrap();
            if ready(&status) {
                return (status, raw);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn series<'a>(status: &'a Status, route: Option<&str>) -> &'a Series {
    status.traffic.series.iter().find(|s| s.route.as_deref() == route).unwrap()
}

// ------------------------------------------------------------------ tests

/// The document has every documented key and no other, and its figures follow the traffic:
/// per-route samples of equal length, 5xx counted, latencies within the origins' delays,
/// the forward proxy as its own series, open tunnels counted, and no secret anywhere.
#[tokio::test]
async fn status_json_follows_its_documented_schema_and_the_traffic() {
    const SECRET: &str = "sk-status-test-3c9f1e";
    let upstreams = Upstreams::start().await;
    let text = upstreams.config(
        "[route.target.headers.request]\n\
         set = { authorization = \"Bearer ${SLUICE_STATUS_KEY}\" }\n",
    );
    let env = |name: &str| (name == "SLUICE_STATUS_KEY").then(|| SECRET.to_owned());
    let proxy =
        TestProxy::with_config(Config::from_toml_with_env(&text, "status.toml", &env).unwrap())
            .await;

    let before = status_json(&proxy).await;
    assert_documented_keys(&before);
    let status: Status = serde_json::from_value(before).unwrap();
    assert_eq!((status.schema, status.state.as_str()), (1, "serving"));
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.started_unix_ms <= status.generated_unix_ms);
    assert!(status.reload.is_none() && status.ai_usage.is_none());
    assert_eq!(status.listeners.len(), 1);
    let listener = &status.listeners[0];
    assert_eq!(listener.address, proxy.addr, "the bound address, not port 0");
    assert_eq!(
        (listener.modes.as_str(), listener.protocol.as_str(), listener.tls, listener.auth),
        ("forward+reverse", "http (http/1.1)", false, false)
    );
    let names: Vec<_> = status.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api", "payments", "assets", "live"]);
    let api = &status.routes[0];
    assert_eq!((api.prefix.as_str(), api.host.as_deref()), ("/api", None));
    assert_eq!(api.upstream, upstreams.api.url("/v1"), "the first target's");
    assert_eq!(api.balance.as_deref(), Some("round_robin"));
    let targets: Vec<_> = api.targets.iter().map(|t| (t.name.as_str(), t.tier, t.weight)).collect();
    assert_eq!(
        targets,
        [("api-a", 0, 2), ("api-failing", 0, 1), ("api-gone", 0, 1), ("api-b", 1, 1)],
        "by tier"
    );
    assert_eq!(api.targets[3].url, upstreams.api_b.url("/v1"));
    for target in &api.targets {
        assert_eq!(target.max_in_flight, 1024);
        assert!(target.checks.is_some(), "the route checks its targets");
    }
    let payments = &status.routes[1];
    assert!(payments.balance.is_none() && payments.targets.is_empty());
    assert_eq!(
        (api.protocol.as_str(), api.upgrades.as_slice()),
        ("auto", &["websocket".to_owned()][..])
    );
    assert!(api.rate_limit.is_none());
    let limit = status.routes[1].rate_limit.as_ref().unwrap();
    assert_eq!((limit.rate, limit.burst), (500.0, 100));
    assert_eq!(status.routes[2].host.as_deref(), Some("cdn.example"));
    assert_eq!((status.traffic.interval_seconds, status.traffic.history_seconds), (1, 300));
    let order: Vec<_> = status.traffic.series.iter().map(|s| s.route.as_deref()).collect();
    assert_eq!(order, [Some("api"), Some("payments"), Some("assets"), Some("live"), None]);

    let _tunnel = connect_tunnel(proxy.addr, &upstreams.api.addr.to_string()).await;
    let load = traffic(&proxy, &upstreams.api);
    let (status, raw) = status_when(&proxy, |status| {
        let api = &status.routes[0].targets;
        status.traffic.samples >= 3
            && api.iter().any(|t| t.name == "api-gone" && t.state == "down")
            && api.iter().any(|t| t.name == "api-failing" && t.state == "ejected")
            && status.connections.tunnels == 1
            && series(status, Some("payments")).recent.requests_per_second > 0.0
            && series(status, Some("payments")).errors.iter().sum::<u32>() > 0
            && series(status, None).recent.requests_per_second > 0.0
    })
    .await;
    load.abort();
    assert!(status.connections.open >= 1);
    assert_eq!(status.connections.websockets, 0);
    assert!(status.connections.parked <= status.connections.open);
    let end = status.traffic.end_unix_ms.unwrap();
    assert!(end <= status.generated_unix_ms && end + 2_000 > status.generated_unix_ms);
    for series in &status.traffic.series {
        let len = status.traffic.samples;
        assert_eq!(
            (series.requests.len(), series.errors.len(), series.p50_ms.len(), series.p99_ms.len()),
            (len, len, len, len),
            "{series:?}"
        );
        for (i, &requests) in series.requests.iter().enumerate() {
            assert!(series.errors[i] <= requests);
            assert_eq!(series.p50_ms[i].is_some(), requests > 0, "{series:?}");
            assert_eq!(series.p99_ms[i].is_some(), requests > 0, "{series:?}");
            if let (Some(p50), Some(p99)) = (series.p50_ms[i], series.p99_ms[i]) {
                assert!(p50 > 0.0 && p50 <= p99, "{series:?}");
            }
        }
        assert!(series.recent.window_seconds >= 1 && series.recent.window_seconds <= 70);
    }
    assert_documented_keys(&raw);
    let by_name = |name: &str| status.routes[0].targets.iter().find(|t| t.name == name).unwrap();
    let (gone, failing, a) = (by_name("api-gone"), by_name("api-failing"), by_name("api-a"));
    assert_eq!((gone.state.as_str(), gone.checks.as_deref()), ("down", Some("down")));
    assert_eq!((failing.state.as_str(), failing.checks.as_deref()), ("ejected", Some("up")));
    let left = failing.ejected_for_ms.unwrap();
    assert!(left > 0 && left <= 30_000, "a first ejection lasts 30 s: {left} ms left");
    assert_eq!(
        (a.state.as_str(), a.ejected_for_ms, a.cooling_for_ms, a.consecutive_failures),
        ("healthy", None, None, 0)
    );
    for target in &status.routes[0].targets {
        assert!(target.in_flight <= target.max_in_flight);
    }
    // Failed attempts were tried again on a healthy target.
    let api = series(&status, Some("api"));
    assert!(api.recent.error_ratio.unwrap() < 0.05, "{:?}", api.recent);
    let p50 = api.recent.p50_ms.unwrap();
    assert!(api.recent.p99_ms.unwrap() >= p50);
    assert!((0.9..45.0).contains(&p50), "the origin answers in 1-12 ms, sometimes 40: {p50}");
    let payments = series(&status, Some("payments"));
    let ratio = payments.recent.error_ratio.unwrap();
    assert!(ratio > 0.0 && ratio < 0.5, "one in eight is a 503: {ratio}");
    assert_eq!(series(&status, Some("live")).requests.iter().sum::<u32>(), 0, "no WebSocket yet");
    assert_eq!(series(&status, Some("live")).recent.error_ratio, None);

    let document = raw.to_string();
    let page = within(within(direct().get(proxy.admin_url("/")).send()).await.unwrap().text())
        .await
        .unwrap();
    for text in [&document, &page] {
        assert!(!text.contains(SECRET), "a secret on the status page");
        assert!(!text.contains("SLUICE_STATUS_KEY"), "not even the variable's name");
    }
}

/// Without script the page is complete HTML: the same tables, values escaped, under a
/// Content-Security-Policy that lets nothing load and only its own inline script run. A
/// refused reload is shown with its reason, which never repeats credentials.
#[tokio::test]
async fn the_page_reads_without_script_and_shows_a_refused_reload_without_its_credentials() {
    let upstreams = Upstreams::start().await;
    let odd_name = "<img src=x onerror=alert(1)>";
    let text = upstreams.config("").replace("name = \"assets\"", &format!("name = \"{odd_name}\""));
    let path = write_config("status-page-reload.toml", &text);
    let proxy = TestProxy::from_file(&path).await;

    let response = within(direct().get(proxy.admin_url("/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
    assert!(policy.contains("connect-src 'self'") && !policy.contains("unsafe"), "{policy}");
    let page = within(response.text()).await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    for external in ["href=\"http", "src=\"", "<img", "<iframe", "@import", "url("] {
        assert!(!page.contains(external), "the page loads something: {external}");
    }
    for expected in [
        format!("<td class=\"name mono\">{}</td>", proxy.addr),
        "<div class=\"name\">api</div><div class=\"match mono\">/api</div>".to_owned(),
        "<div class=\"name\">&lt;img src=x onerror=alert(1)&gt;</div>\
         <div class=\"match mono\">cdn.example/</div>"
            .to_owned(),
        "<div class=\"name\">forward proxy</div>".to_owned(),
        "4 targets, round_robin".to_owned(),
        "<div class=\"target-name\">api-gone</div>".to_owned(),
        "<span class=\"tag\">tier 1</span>".to_owned(),
        "id=\"t-targets\" class=\"value\">4 / 4</div>".to_owned(),
        "<span id=\"state\" class=\"pill ok\">serving</span>".to_owned(),
        "No reload since start".to_owned(),
        "The charts need JavaScript".to_owned(),
    ] {
        assert!(page.contains(&expected), "no {expected:?} in the page:\n{page}");
    }
    assert!(!page.contains(odd_name), "an unescaped route name");

    // A reload refused because an upstream URL carries credentials.
    let bad = text.replace(&upstreams.api.url("/v1"), "http://deploy:hunter2@127.0.0.1:9/v1");
    std::fs::write(&path, bad).unwrap();
    let refused = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let status: Status = serde_json::from_value(status_json(&proxy).await).unwrap();
    let reload = status.reload.unwrap();
    assert_eq!(reload.result, "refused");
    assert!(
        reload.at_unix_ms >= status.started_unix_ms
            && reload.at_unix_ms <= status.generated_unix_ms
    );
    assert!(
        reload.message.contains("`http://***@127.0.0.1:9/v1` must not contain credentials"),
        "{}",
        reload.message
    );
    let page = within(within(direct().get(proxy.admin_url("/")).send()).await.unwrap().text())
        .await
        .unwrap();
    assert!(page.contains("<span class=\"pill bad\">refused</span>"), "{page}");
    assert!(page.contains("must not contain credentials"));
    for text in [&reload.message, &page] {
        assert!(!text.contains("hunter2"), "a password on the status page");
    }

    // Put right, it applies.
    std::fs::write(&path, &text).unwrap();
    let applied = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(applied.status(), StatusCode::OK);
    let status: Status = serde_json::from_value(status_json(&proxy).await).unwrap();
    let reload = status.reload.unwrap();
    assert_eq!(reload.result, "applied");
    assert!(reload.message.starts_with("reloaded: 4 routes; listening on"), "{}", reload.message);
}

/// In a real browser, with traffic on every route, the forward proxy, an open tunnel and a
/// WebSocket: the script runs under the page's policy with no error, draws three charts per
/// route from `status.json` and keeps the tables current; the page fits a phone's width.
/// Screenshots: `target/test-artifacts/status.png` and `status-narrow.png`.
#[tokio::test]
async fn the_live_page_in_a_browser_charts_the_traffic_and_fits_a_phone() {
    let upstreams = Upstreams::start().await;
    // A short history, so the seconds of traffic the test waits for fill the charts.
    let text = upstreams.config("").replace(ADMIN, &format!("{ADMIN}history = \"15s\"\n"));
    let path = write_config("status-page-browser.toml", &text);
    let proxy = TestProxy::from_file(&path).await;
    let applied = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(applied.status(), StatusCode::OK);
    let _tunnel = connect_tunnel(proxy.addr, &upstreams.api.addr.to_string()).await;
    let (_websocket, _) =
        within(tokio_tungstenite::connect_async(format!("ws://{}/live/feed", proxy.addr)))
            .await
            .unwrap();
    let load = traffic(&proxy, &upstreams.api);

    let mut browser = Browser::launch(1280, 900).await;
    browser.goto(&proxy.admin_url("/")).await;
    // Live once the script has fetched and rendered; then wait for some seconds of history.
    browser.wait_for("document.body.dataset.live === 'yes'").await;
    browser
        .wait_for(
            "+document.getElementById('charts').dataset.samples >= 5 && \
                   document.getElementById('t-tunnels').textContent === '1' && \
                   document.getElementById('t-websockets').textContent === '1' && \
                   document.getElementById('t-targets').textContent === '2 / 4'",
        )
        .await;
    load.abort();

    let text = browser.eval("document.body.textContent").await;
    let text = text.as_str().unwrap();
    for expected in [
        "serving",
        "last 15s · 1 s samples",
        "Requests/s",
        "5xx rate",
        "Traffic",
        "Routes",
        "Listeners",
        "Last reload",
        "applied",
        "reloaded: 4 routes",
        "api",
        "payments",
        "assets",
        "live",
        "forward proxy",
        "cdn.example/",
        &proxy.addr.to_string(),
    ] {
        assert!(text.contains(expected), "no {expected:?} on the page:\n{text}");
    }
    let cards = browser.eval("document.querySelectorAll('#charts .route').length").await;
    assert_eq!(cards, 5, "four routes and the forward proxy");
    let charts = browser.eval("document.querySelectorAll('#charts .route svg').length").await;
    assert_eq!(charts, 15, "three charts each");
    let lines = browser
        .eval(
            "[...document.querySelectorAll('#charts .route')].map(card => \
               card.querySelectorAll('path[fill=none]').length)",
        )
        .await;
    // Requests, 5xx, p99 and p50 lines; `live` only carries a WebSocket session, which is
    // not a request: a flat requests line and nothing else.
    assert_eq!(lines, serde_json::json!([4, 4, 4, 1, 4]));
    let rps = browser.eval("document.getElementById('t-rps').textContent").await;
    let rps: f64 = rps.as_str().unwrap().replace(',', "").parse().unwrap();
    assert!(rps > 0.0, "requests per second on the page: {rps}");
    let failing = browser
        .eval(
            "[...document.querySelectorAll('#routes-body tr')].filter(row => \
         row.querySelector('.bad-text')).map(row => row.querySelector('.name').textContent)",
        )
        .await;
    assert_eq!(failing, serde_json::json!(["payments"]), "only payments answers 5xx");
    let health = browser
        .eval("[...document.querySelectorAll('#routes-body tr.target')].map(row => \
               row.querySelector('.target-name').textContent + ' ' + \
               row.querySelector('.pill').className + ' ' + row.querySelector('.pill').textContent)")
        .await;
    assert_eq!(
        health,
        serde_json::json!([
            "api-a pill ok healthy",
            "api-failing pill warn ejected",
            "api-gone pill bad down",
            "api-b pill ok healthy"
        ])
    );
    let strip =
        browser.eval("document.querySelectorAll('#charts .route .health .pill').length").await;
    assert_eq!(strip, 4, "the api card shows its targets");
    assert!(browser.problems.is_empty(), "problems on the page: {:?}", browser.problems);
    browser.screenshot(&artifacts_dir().join("status.png")).await;

    // A phone: nothing wider than the screen, the charts one above the other.
    browser.resize(390, 844, true).await;
    browser.wait_for("document.documentElement.scrollWidth <= window.innerWidth").await;
    let tables_fit = browser
        .eval(
            "[...document.querySelectorAll('.scroll')].every(s => s.scrollWidth <= s.clientWidth)",
        )
        .await;
    assert_eq!(tables_fit, true, "the tables fit without scrolling sideways");
    let columns = browser
        .eval("getComputedStyle(document.getElementById('charts')).gridTemplateColumns.split(' ').length")
        .await;
    assert_eq!(columns, 1);
    browser.screenshot(&artifacts_dir().join("status-narrow.png")).await;
    assert!(browser.problems.is_empty(), "problems on the page: {:?}", browser.problems);
    browser.close().await;
}

// ------------------------------------------------------------------ the AI gateway's usage

const ALICE: &str = "sk-virtual-alice-5e0c21d7";
const BOB: &str = "sk-virtual-bob-9a4f7730";
/// The provider keys behind the AI route: (key id, key, tier).
const PROVIDER_KEYS: [(&str, &str, u8); 3] = [
    ("primary", "sk-provider-primary-41c2", 0),
    ("revoked", "sk-provider-revoked-8d07", 0),
    ("spare", "sk-provider-spare-c3b9", 1),
];

/// An AI route `chat` on the mock over [`PROVIDER_KEYS`], virtual keys alice and bob, and
/// the admin listener with `admin_extra`.
fn ai_config(mock: &MockProvider, admin_extra: &str) -> String {
    let mut text = format!(
        "{}{ADMIN}{admin_extra}[access_log]\nenabled = false\n\
         [[gateway.virtual_key]]\nname = \"alice\"\nhash = \"{}\"\n\
         [[gateway.virtual_key]]\nname = \"bob\"\nhash = \"{}\"\n\
         [[route]]\nname = \"chat\"\nprefix = \"/v1\"\n[route.ai]\nprovider = \"openai\"\n",
        listener(REVERSE, ""),
        hash(ALICE),
        hash(BOB),
    );
    for (name, key, tier) in PROVIDER_KEYS {
        text.push_str(&format!(
            "[[route.target]]\nname = \"{name}\"\nurl = \"{}\"\ntier = {tier}\n\
             [route.target.headers.request]\nset = {{ authorization = \"Bearer {key}\" }}\n",
            mock.url("/v1")
        ));
    }
    text
}

/// A mock on which `primary` is rate limited for a minute and `revoked` is refused, so the
/// first completion falls back twice and lands on `spare`.
async fn ai_mock() -> MockProvider {
    let mock = MockProvider::start("status").await;
    mock.on_key(PROVIDER_KEYS[0].1, Behaviour::RateLimited { retry_after: 60 });
    mock.on_key(PROVIDER_KEYS[1].1, Behaviour::Unauthorized);
    mock
}

/// Two plain completions for alice and a streamed one for bob.
async fn completions(proxy: &TestProxy) {
    completions_for(proxy, &[ALICE, ALICE, BOB]).await;
}

/// A completion per virtual key of `keys`: bob's streamed, alice's plain.
async fn completions_for(proxy: &TestProxy, keys: &[&str]) {
    let plain = r#"{"model":"gpt-test","messages":[{"role":"user","content":"Hi"}]}"#;
    let stream =
        r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    for &key in keys {
        let body = if key == BOB { stream } else { plain };
        let response = within(
            direct()
                .post(format!("http://{}/v1/chat/completions", proxy.addr))
                .header("content-type", "application/json")
                .bearer_auth(key)
                .body(body)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        within(response.text()).await.unwrap();
    }
}

/// Secrets that must appear nowhere on the status page or in its document.
fn ai_secrets() -> Vec<String> {
    let mut secrets = vec![ALICE.to_owned(), BOB.to_owned(), hash(ALICE), hash(BOB)];
    secrets.extend(PROVIDER_KEYS.iter().map(|(_, key, _)| (*key).to_owned()));
    secrets
}

/// After a few completions, `ai_usage` counts them per model and per virtual key with the
/// tokens the provider reported, shows the provider keys set aside by id, and follows its
/// documented schema; neither the document nor the page holds a key.
#[tokio::test]
async fn ai_usage_counts_models_and_virtual_keys_and_shows_provider_keys_without_secrets() {
    let mock = ai_mock().await;
    let proxy = TestProxy::start(&ai_config(&mock, "")).await;
    let idle: Status = serde_json::from_value(status_json(&proxy).await).unwrap();
    let idle = idle.ai_usage.expect("an AI route is configured");
    assert!(idle.models.is_empty() && idle.virtual_keys.is_empty());

    completions(&proxy).await;
    let script = mock.current_script();
    let (input, output, cached) =
        (script.input_tokens, script.output_tokens(), script.cached_tokens);
    let (status, raw) = status_when(&proxy, |status| {
        status
            .ai_usage
            .as_ref()
            .is_some_and(|ai| ai.models.iter().map(|m| m.requests).sum::<u64>() == 3)
    })
    .await;
    assert_documented_keys(&raw);
    assert_keys(&raw, AI_REQUIRED_KEYS);
    let ai = status.ai_usage.unwrap();
    let model = AiModel {
        model: "gpt-test".to_owned(),
        requests: 3,
        input_tokens: 3 * input,
        output_tokens: 3 * output,
        cached_tokens: 3 * cached,
    };
    assert_eq!(ai.models, [model]);
    let key = |name: &str, n: u64| AiVirtualKey {
        name: name.to_owned(),
        requests: n,
        input_tokens: n * input,
        output_tokens: n * output,
        cached_tokens: n * cached,
    };
    assert_eq!(ai.virtual_keys, [key("alice", 2), key("bob", 1)], "busiest first");
    assert_eq!(ai.routes.len(), 1);
    let route = &ai.routes[0];
    assert_eq!((route.route.as_str(), route.fallbacks), ("chat", 2));
    let keys: Vec<_> = route
        .keys
        .iter()
        .map(|k| (k.key_id.as_str(), k.state.as_str(), k.cooldowns, k.removals))
        .collect();
    assert_eq!(
        keys,
        [("primary", "resting", 1, 0), ("revoked", "removed", 0, 1), ("spare", "ready", 0, 0)]
    );
    let resting = route.keys[0].back_in_ms.unwrap();
    assert!(resting > 0 && resting <= 60_000, "Retry-After: 60, {resting} ms left");
    assert!(route.keys[1].back_in_ms.unwrap() > 3_600_000, "out for a day by default");
    assert_eq!(route.keys[2].back_in_ms, None);

    let page = within(within(direct().get(proxy.admin_url("/")).send()).await.unwrap().text())
        .await
        .unwrap();
    for expected in [
        "<h2 id=\"ai-title\">AI usage</h2>",
        "<td class=\"name\">gpt-test</td><td class=\"num\">3</td>",
        "<td class=\"name\">alice</td><td class=\"num\">2</td>",
        "<td class=\"name\">chat</td><td class=\"muted small\" colspan=\"2\">2 fallbacks</td>",
        "<td class=\"mono\">primary</td>",
        "<span class=\"pill bad\">removed</span>",
    ] {
        assert!(page.contains(expected), "no {expected:?} in the page:\n{page}");
    }
    let document = raw.to_string();
    for secret in ai_secrets() {
        assert!(!document.contains(&secret) && !page.contains(&secret), "{secret} shown");
    }
}

/// In a real browser the AI usage card is drawn from `status.json` (the script replaces the
/// server's tables) and fits a phone's width. Screenshots:
/// `target/test-artifacts/status-ai.png` and `status-ai-narrow.png`.
#[tokio::test]
async fn the_live_page_in_a_browser_shows_ai_usage() {
    let mock = ai_mock().await;
    let proxy = TestProxy::start(&ai_config(&mock, "")).await;
    completions(&proxy).await;

    let mut browser = Browser::launch(1280, 900).await;
    browser.goto(&proxy.admin_url("/")).await;
    browser.wait_for("document.body.dataset.live === 'yes'").await;
    // Shown once the script has drawn the card from `status.json`.
    browser
        .wait_for(
            "(() => { const card = document.getElementById('ai-card'); \
               return card && !card.hidden && card.textContent.includes('bob'); })()",
        )
        .await;
    let rows = browser
        .eval(
            "[...document.querySelectorAll('#ai-body tbody tr')].map(row => \
               [...row.cells].map(cell => cell.textContent).join('|'))",
        )
        .await;
    let output = mock.current_script().output_tokens();
    let input = mock.current_script().input_tokens;
    let cached = mock.current_script().cached_tokens;
    let line =
        |name: &str, n: u64| format!("{name}|{n}|{}|{}|{}", n * input, n * output, n * cached);
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(&rows[..3], [line("gpt-test", 3), line("alice", 2), line("bob", 1)], "{rows:?}");
    assert_eq!(rows[3], "chat|2 fallbacks");
    assert!(rows[4].starts_with("|primary|resting back in "), "{rows:?}");
    assert!(rows[4].ends_with(" · 1 rest · 0 removals"), "{rows:?}");
    assert!(rows[5].starts_with("|revoked|removed back in "), "{rows:?}");
    assert!(rows[5].ends_with(" · 0 rests · 1 removal"), "{rows:?}");
    assert_eq!(rows[6], "|spare|ready 0 rests · 0 removals");
    // The script keeps it current: one more completion shows without a reload.
    completions_for(&proxy, &[ALICE]).await;
    browser
        .wait_for("document.querySelector('#ai-body tbody tr').cells[1].textContent === '4'")
        .await;
    let text = browser.eval("document.documentElement.outerHTML").await;
    for secret in ai_secrets() {
        assert!(!text.as_str().unwrap().contains(&secret), "{secret} on the page");
    }
    assert!(browser.problems.is_empty(), "problems on the page: {:?}", browser.problems);
    browser.screenshot(&artifacts_dir().join("status-ai.png")).await;

    browser.resize(390, 844, true).await;
    browser.wait_for("document.documentElement.scrollWidth <= window.innerWidth").await;
    browser.screenshot(&artifacts_dir().join("status-ai-narrow.png")).await;
    let fits = browser
        .eval("[...document.querySelectorAll('#ai-body .scroll')].every(s => s.scrollWidth <= s.clientWidth)")
        .await;
    assert_eq!(fits, true, "the AI tables fit a phone without scrolling sideways");
    assert!(browser.problems.is_empty(), "problems on the page: {:?}", browser.problems);
    browser.close().await;
}
