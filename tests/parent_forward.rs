//! Plain `http://` forward requests through parent proxies: absolute-form with the parent's
//! credentials to an HTTP parent, a SOCKS5 `CONNECT` through a SOCKS5 parent, failover past a
//! parent that is down, and the destination guard on what the client asked for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use http::StatusCode;
use http::header::PROXY_AUTHORIZATION;
use sluice::config::Config;
use support::client::via_proxy;
use support::config::listener;
use support::parent::{basic, http_parent};
use support::proxy::TestProxy;
use support::upstream::{Origin, closed_port};
use support::{payload, sha256, within};

/// A forward proxy with `extra` listener keys and then `rest` (its `[[parent]]` rules), with
/// `PARENT_PASSWORD` in its environment.
async fn chained(extra: &str, rest: &str) -> TestProxy {
    let toml = format!("{}{rest}", listener("", extra));
    let env = |name: &str| (name == "PARENT_PASSWORD").then(|| "parent-secret".to_owned());
    TestProxy::with_config(Config::from_toml_with_env(&toml, "test.toml", &env).unwrap()).await
}

/// `POST url` through `proxy` with a 64 KiB body: the status, and whether the echoed body
/// came back intact.
async fn post_through(proxy: &TestProxy, url: &str) -> (StatusCode, bool) {
    let body = payload(64 * 1024, 41);
    let response = within(via_proxy(proxy.addr).post(url).body(body.clone()).send()).await.unwrap();
    let status = response.status();
    let back = within(response.bytes()).await.unwrap();
    (status, sha256(&back) == sha256(&body))
}

#[tokio::test]
async fn an_http_parent_gets_absolute_form_with_its_credentials_from_the_environment() {
    let origin = Origin::echo().await;
    let parent = http_parent(Some(basic("relay", "parent-secret"))).await;
    let first = chained(
        "",
        &format!(
            "[[parent]]\nvia = [\"http://{}\"]\nusername = \"relay\"\n\
             password = \"${{PARENT_PASSWORD}}\"\n",
            parent.addr
        ),
    )
    .await;
    let url = origin.url("/upload?part=1");
    assert_eq!(post_through(&first, &url).await, (StatusCode::OK, true));
    assert_eq!(post_through(&first, &url).await, (StatusCode::OK, true));
    let seen = parent.seen();
    assert_eq!(seen.len(), 2, "both requests passed through the parent");
    for request in &seen {
        assert_eq!(request.uri.to_string(), url, "absolute-form to the parent");
        assert_eq!(request.headers[PROXY_AUTHORIZATION], basic("relay", "parent-secret"));
    }
    for request in origin.seen() {
        assert_eq!(request.uri.to_string(), "/upload?part=1");
        assert!(request.headers.get(PROXY_AUTHORIZATION).is_none(), "consumed by the parent");
    }
    // Without the parent's credentials the parent refuses sluice: a gateway error for the
    // client, never the parent's challenge, and nothing reaches the origin.
    let before = origin.seen().len();
    let wrong = chained("", &format!("[[parent]]\nvia = [\"http://{}\"]\n", parent.addr)).await;
    let response = within(via_proxy(wrong.addr).get(origin.url("/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get("proxy-authenticate").is_none());
    assert_eq!(origin.seen().len(), before);
}

#[tokio::test]
async fn through_a_socks5_parent_the_parent_resolves_and_connects() {
    let origin = Origin::echo().await;
    // The SOCKS5 parent: another sluice, SOCKS only, with a user; only it knows origin.test.
    let parent = TestProxy::start(&format!(
        "{}[dns.hosts]\n\"origin.test\" = [\"127.0.0.1\"]\n\
         [auth]\n[[auth.user]]\nname = \"relay\"\npassword = \"parent-secret\"\n",
        listener("forward = false\nsocks = true\n", "")
    ))
    .await;
    let first = chained(
        "",
        &format!(
            "[[parent]]\nvia = [\"socks5://{}\"]\nusername = \"relay\"\n\
             password = \"${{PARENT_PASSWORD}}\"\n",
            parent.addr
        ),
    )
    .await;
    let url = format!("http://origin.test:{}/by-name", origin.addr.port());
    assert_eq!(post_through(&first, &url).await, (StatusCode::OK, true));
    let seen = origin.only_request();
    assert_eq!(seen.uri.to_string(), "/by-name", "origin-form through the SOCKS tunnel");
    assert_eq!(seen.headers["host"], format!("origin.test:{}", origin.addr.port()));
}

#[tokio::test]
async fn a_parent_that_is_down_is_failed_over_to_the_next() {
    let origin = Origin::echo().await;
    let parent = http_parent(None).await;
    let first = chained(
        "",
        &format!("[[parent]]\nvia = [\"http://{}\", \"http://{}\"]\n", closed_port(), parent.addr),
    )
    .await;
    assert_eq!(post_through(&first, &origin.url("/a")).await, (StatusCode::OK, true));
    assert_eq!(parent.only_request().uri.to_string(), origin.url("/a"));
    // Every parent down: the client gets a gateway error, not a hang.
    let dead = chained(
        "",
        &format!(
            "[[parent]]\nvia = [\"http://{}\", \"socks5://{}\"]\n",
            closed_port(),
            closed_port()
        ),
    )
    .await;
    let response = within(via_proxy(dead.addr).get(origin.url("/b")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn the_guard_still_refuses_a_private_destination_before_any_parent() {
    let origin = Origin::echo().await;
    let parent = http_parent(None).await;
    let first = chained(
        "allow_private_destinations = false\n",
        &format!("[[parent]]\nvia = [\"http://{}\"]\n", parent.addr),
    )
    .await;
    let response = within(via_proxy(first.addr).get(origin.url("/")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(parent.seen().is_empty(), "no parent was asked");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn a_direct_rule_keeps_plain_http_off_the_parent() {
    let origin = Origin::echo().await;
    let parent = http_parent(None).await;
    let first = chained(
        "",
        &format!(
            "[[parent]]\nhosts = [\"127.0.0.0/8\"]\ndirect = true\n\
             [[parent]]\nvia = [\"http://{}\"]\n",
            parent.addr
        ),
    )
    .await;
    assert_eq!(post_through(&first, &origin.url("/direct")).await, (StatusCode::OK, true));
    assert!(parent.seen().is_empty());
    assert_eq!(origin.only_request().uri.to_string(), "/direct");
}
