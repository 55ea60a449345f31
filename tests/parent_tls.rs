//! HTTPS parent proxies with an internal CA: sluice → sluice over TLS, the parent's
//! certificate verified against the rule's `ca` files, for tunnels, plain `http://` forward
//! requests and a route's (or a target's) `upstream_proxy`; without the `ca`, a clear 502.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;

use http::StatusCode;
use support::client::{
    direct, exchange_until_closed, https_builder, raw_header_values, status_of, via_proxy,
};
use support::config::{FORWARD, listener, reverse_config, route, tls_listener};
use support::proxy::TestProxy;
use support::tls::{TestCa, test_dir, toml_path};
use support::upstream::Origin;
use support::{payload, sha256, within};

/// A forward proxy serving HTTPS (a leaf for 127.0.0.1 from `ca`): the parent. Only it knows
/// `origin.test`, so whatever reaches an origin by that name went through it. It has its own
/// `Via` pseudonym: in one process every instance would otherwise share one, and the parent
/// would take a forwarded request for a loop.
async fn https_parent(ca: &TestCa, test: &str) -> (TestProxy, PathBuf) {
    let dir = test_dir(test);
    let leaf = ca.leaf_pem(&["127.0.0.1"]).write(&dir, "parent");
    let ca_file = ca.write_cert(&dir, "ca");
    let parent = TestProxy::start(&format!(
        "{}[headers]\nvia_pseudonym = \"parent\"\n[dns.hosts]\n\"origin.test\" = [\"127.0.0.1\"]\n",
        tls_listener(&leaf, FORWARD, "")
    ))
    .await;
    (parent, ca_file)
}

/// A forward proxy whose one `[[parent]]` rule is `via = ["https://PARENT"]` plus `extra`.
async fn chained(parent: &TestProxy, extra: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{}[[parent]]\nvia = [\"https://{}\"]\n{extra}",
        listener("", ""),
        parent.addr
    ))
    .await
}

/// `POST url` with a 64 KiB body by `client`: the status, and whether the echoed body came
/// back intact.
async fn post(client: &reqwest::Client, url: &str) -> (StatusCode, bool) {
    let body = payload(64 * 1024, 19);
    let response = within(client.post(url).body(body.clone()).send()).await.unwrap();
    let status = response.status();
    let back = within(response.bytes()).await.unwrap();
    (status, sha256(&back) == sha256(&body))
}

#[tokio::test]
async fn tunnels_and_plain_requests_go_through_an_https_parent_verified_by_the_rules_ca() {
    let ca = TestCa::new();
    let (parent, ca_file) = https_parent(&ca, "parent_tls_trusted").await;
    let first = chained(&parent, &format!("ca = [{}]\n", toml_path(&ca_file))).await;

    // CONNECT to the first, which opens its tunnel by CONNECT inside TLS to the parent; the
    // client's own TLS to the origin runs inside both.
    let tls_origin = Origin::echo_tls(ca.server_config(&["origin.test"])).await;
    let client = https_builder(&ca.cert_pem())
        .proxy(reqwest::Proxy::all(format!("http://{}", first.addr)).unwrap())
        .build()
        .unwrap();
    let url = format!("https://origin.test:{}/tunnelled", tls_origin.addr.port());
    assert_eq!(post(&client, &url).await, (StatusCode::OK, true));
    assert_eq!(tls_origin.only_request().uri.path(), "/tunnelled");

    // A plain http:// request goes to the parent in absolute-form inside TLS.
    let origin = Origin::echo().await;
    let url = format!("http://origin.test:{}/plain?x=1", origin.addr.port());
    assert_eq!(post(&via_proxy(first.addr), &url).await, (StatusCode::OK, true));
    assert_eq!(post(&via_proxy(first.addr), &url).await, (StatusCode::OK, true));
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.uri == "/plain?x=1"));
}

#[tokio::test]
async fn without_the_ca_the_parents_certificate_is_refused_with_502() {
    let ca = TestCa::new();
    let (parent, _) = https_parent(&ca, "parent_tls_untrusted").await;
    let first = chained(&parent, "").await;
    let origin = Origin::echo().await;

    let url = format!("http://origin.test:{}/plain", origin.addr.port());
    let response = within(via_proxy(first.addr).get(url).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let proxy_status = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(proxy_status.contains("error=tls_certificate_error"), "{proxy_status}");
    assert!(proxy_status.contains("TLS to the parent failed"), "{proxy_status}");
    assert!(proxy_status.contains(&parent.addr.to_string()), "names the parent: {proxy_status}");

    let target = format!("origin.test:{}", origin.addr.port());
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let answer = exchange_until_closed(first.addr, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    let proxy_status = raw_header_values(&answer, "proxy-status").join(", ");
    assert!(proxy_status.contains("error=tls_certificate_error"), "{proxy_status}");
    assert!(origin.seen().is_empty(), "nothing passed the unverified parent");
}

#[tokio::test]
async fn a_routes_and_a_targets_upstream_proxy_trust_their_ca() {
    let ca = TestCa::new();
    let (parent, ca_file) = https_parent(&ca, "parent_tls_upstream_proxy").await;
    let origin = Origin::echo().await;
    let upstream = format!("http://origin.test:{}", origin.addr.port());
    let proxy_table = |table: &str| {
        format!(
            "[{table}.upstream_proxy]\nvia = [\"https://{}\"]\nca = [{}]\n",
            parent.addr,
            toml_path(&ca_file)
        )
    };
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}\
         [[route]]\nprefix = \"/target\"\n[[route.target]]\nurl = \"{upstream}\"\n{}\
         {}",
        route("/route", &upstream, ""),
        proxy_table("route"),
        proxy_table("route.target"),
        route(
            "/untrusted",
            &upstream,
            &format!("[route.upstream_proxy]\nvia = [\"https://{}\"]\n", parent.addr)
        ),
    )))
    .await;
    let base = proxy.url();
    assert_eq!(post(&direct(), &format!("{base}/route/a")).await, (StatusCode::OK, true));
    assert_eq!(post(&direct(), &format!("{base}/target/b")).await, (StatusCode::OK, true));
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.to_string()).collect();
    // The prefix is stripped, as without a proxy.
    assert_eq!(paths, ["/a", "/b"]);

    let response = within(direct().get(format!("{base}/untrusted/c")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let proxy_status = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(proxy_status.contains("error=tls_certificate_error"), "{proxy_status}");
    assert_eq!(origin.seen().len(), 2);
}
