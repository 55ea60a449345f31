//! A route's `upstream_proxy`: its upstream reached through an egress proxy, in absolute-form
//! for an `http://` upstream, by `CONNECT` for an `https://` one, or through a SOCKS5 parent;
//! and a group target's own `upstream_proxy`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use http::StatusCode;
use http::header::PROXY_AUTHORIZATION;
use sluice::config::Config;
use support::client::direct;
use support::config::{listener, reverse_config, route};
use support::parent::{basic, http_parent};
use support::proxy::TestProxy;
use support::tls::{TestCa, test_dir, toml_path};
use support::upstream::Origin;
use support::{payload, sha256, within};

/// A reverse proxy with routes (and other tables) `rest`, with `PARENT_PASSWORD` in its
/// environment.
async fn reverse(rest: &str) -> TestProxy {
    let toml = reverse_config(rest);
    let env = |name: &str| (name == "PARENT_PASSWORD").then(|| "parent-secret".to_owned());
    TestProxy::with_config(Config::from_toml_with_env(&toml, "test.toml", &env).unwrap()).await
}

/// Another sluice on 127.0.0.1:0 serving `modes`, the only one that knows `origin.test`.
async fn sluice_parent(modes: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[dns.hosts]\n\"origin.test\" = [\"127.0.0.1\"]\n",
        listener(modes, "")
    ))
    .await
}

/// `POST path` to `proxy` with a 32 KiB body: the status, and whether the echoed body came
/// back intact.
async fn post(proxy: &TestProxy, path: &str) -> (StatusCode, bool) {
    let body = payload(32 * 1024, 7);
    let url = format!("{}{path}", proxy.url());
    let response = within(direct().post(url).body(body.clone()).send()).await.unwrap();
    let status = response.status();
    let back = within(response.bytes()).await.unwrap();
    (status, sha256(&back) == sha256(&body))
}

#[tokio::test]
async fn an_http_upstream_goes_to_an_http_parent_in_absolute_form_with_its_credentials() {
    let origin = Origin::echo().await;
    let parent = http_parent(Some(basic("relay", "parent-secret"))).await;
    let proxy = reverse(&format!(
        "{}[route.upstream_proxy]\nvia = [\"http://{}\"]\nusername = \"relay\"\n\
         password = \"${{PARENT_PASSWORD}}\"\n",
        route("/", &origin.url(""), ""),
        parent.addr
    ))
    .await;
    assert_eq!(post(&proxy, "/api/x?y=1").await, (StatusCode::OK, true));
    assert_eq!(post(&proxy, "/api/z").await, (StatusCode::OK, true));
    let seen = parent.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri.to_string(), origin.url("/api/x?y=1"));
    assert_eq!(seen[1].uri.to_string(), origin.url("/api/z"));
    assert!(seen.iter().all(|s| s.headers[PROXY_AUTHORIZATION] == basic("relay", "parent-secret")));
    let at_origin: Vec<String> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(at_origin, ["/api/x?y=1", "/api/z"]);
    assert!(origin.seen().iter().all(|s| s.headers.get(PROXY_AUTHORIZATION).is_none()));
}

#[tokio::test]
async fn an_https_upstream_is_reached_by_connect_through_the_parent() {
    let ca = TestCa::new();
    let dir = test_dir("upstream_proxy_https");
    let ca_file = ca.write_cert(&dir, "ca");
    let origin = Origin::echo_tls(ca.server_config(&["origin.test"])).await;
    // Only the parent resolves origin.test: the request can only have gone through it.
    let parent = sluice_parent("").await;
    let upstream = format!("https://origin.test:{}", origin.addr.port());
    let proxy = reverse(&format!(
        "{}[route.tls]\nca = [{}]\n[route.upstream_proxy]\nvia = [\"http://{}\"]\n",
        route("/", &upstream, ""),
        toml_path(&ca_file),
        parent.addr
    ))
    .await;
    assert_eq!(post(&proxy, "/secure").await, (StatusCode::OK, true));
    assert_eq!(origin.only_request().uri.path(), "/secure");
}

#[tokio::test]
async fn an_upstream_is_reached_through_a_socks5_parent() {
    let origin = Origin::echo().await;
    let parent = sluice_parent("forward = false\nsocks = true\n").await;
    let upstream = format!("http://origin.test:{}", origin.addr.port());
    let proxy = reverse(&format!(
        "{}[route.upstream_proxy]\nvia = [\"socks5://{}\"]\n",
        route("/", &upstream, ""),
        parent.addr
    ))
    .await;
    assert_eq!(post(&proxy, "/via-socks").await, (StatusCode::OK, true));
    assert_eq!(post(&proxy, "/again").await, (StatusCode::OK, true));
    let at_origin: Vec<String> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(at_origin, ["/via-socks", "/again"], "origin-form inside the tunnel");
}

#[tokio::test]
async fn a_target_takes_its_own_upstream_proxy_and_the_others_go_direct() {
    let proxied = Origin::start(|_| async { support::upstream::full("proxied") }).await;
    let straight = Origin::start(|_| async { support::upstream::full("straight") }).await;
    let parent = http_parent(None).await;
    let proxy = reverse(&format!(
        "[[route]]\nprefix = \"/\"\n\
         [[route.target]]\nname = \"proxied\"\nurl = \"{}\"\n\
         [route.target.upstream_proxy]\nvia = [\"http://{}\"]\n\
         [[route.target]]\nname = \"straight\"\nurl = \"{}\"\n",
        proxied.url(""),
        parent.addr,
        straight.url("")
    ))
    .await;
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let response = within(direct().get(format!("{}/t", proxy.url())).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(within(response.text()).await.unwrap());
    }
    let through_parent = bodies.iter().filter(|b| *b == "proxied").count();
    assert_eq!(through_parent, 2, "round robin over the two: {bodies:?}");
    let seen = parent.seen();
    assert_eq!(seen.len(), through_parent, "only the proxied target's requests");
    assert!(seen.iter().all(|s| s.uri.to_string() == proxied.url("/t")));
    assert!(straight.seen().iter().all(|s| s.uri == "/t"));
}

#[tokio::test]
async fn connections_through_the_upstream_proxy_count_toward_max_connections() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let origin = Origin::start(move |_| {
        let held = held.clone();
        async move {
            held.notified().await;
            support::upstream::full("done")
        }
    })
    .await;
    let parent = http_parent(None).await;
    let proxy = reverse(&format!(
        "[[route]]\nprefix = \"/\"\n\
         [[route.target]]\nname = \"only\"\nurl = \"{}\"\nmax_connections = 1\n\
         [route.target.upstream_proxy]\nvia = [\"http://{}\"]\n",
        origin.url(""),
        parent.addr
    ))
    .await;
    let url = format!("{}/slow", proxy.url());
    let first = tokio::spawn(direct().get(url.clone()).send());
    within(async {
        while origin.seen().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Its one connection (to the parent) is busy: refused at once.
    let response = within(direct().get(url).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status.contains("error=connection_limit_reached"), "{status}");
    gate.notify_one();
    assert_eq!(within(first).await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(parent.seen().len(), 1);
}
