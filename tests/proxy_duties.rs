//! The small duties every proxy has: `Max-Forwards` on `TRACE` and `OPTIONS` (RFC 9110
//! §7.6.2), and recognising its own `Via` entry on a request that came round in a loop (508).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use support::client::{raw_body, raw_exchange, raw_header_values, status_of, via_proxy};
use support::config::{REVERSE, listener, route};
use support::proxy::TestProxy;
use support::upstream::Origin;
use support::within;

/// A raw request for `target` through `proxy` with `Max-Forwards: <hops>`, closed after.
async fn with_max_forwards(
    proxy: std::net::SocketAddr,
    method: &str,
    target: &str,
    hops: &str,
) -> String {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: origin.test\r\nMax-Forwards: {hops}\r\n\
         Cookie: session=secret\r\nX-Probe: yes\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(proxy, request.as_bytes()).await
}

#[tokio::test]
async fn options_at_zero_is_answered_by_sluice_with_allow() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let response = with_max_forwards(proxy.addr, "OPTIONS", &origin.url("/x"), "0").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let allow = raw_header_values(&response, "allow").join(",");
    assert!(allow.contains("OPTIONS") && allow.contains("CONNECT"), "{allow}");
    assert!(!allow.contains("TRACE"), "TRACE is off by default: {allow}");
    assert_eq!(origin.connections(), 0, "the request went nowhere");
}

#[tokio::test]
async fn trace_at_zero_is_refused_unless_enabled() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let response = with_max_forwards(proxy.addr, "TRACE", &origin.url("/x"), "0").await;
    assert_eq!(status_of(&response), 405, "{response}");
    assert!(!raw_header_values(&response, "allow").is_empty(), "405 names what is allowed");

    let enabled = TestProxy::start(&format!("{}[headers]\ntrace = true\n", listener("", ""))).await;
    let response = with_max_forwards(enabled.addr, "TRACE", &origin.url("/x"), "0").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(raw_header_values(&response, "content-type"), ["message/http"]);
    let body = raw_body(&response);
    assert!(body.starts_with(&format!("TRACE {} HTTP/1.1\r\n", origin.url("/x"))), "{body}");
    assert!(body.contains("x-probe: yes"), "{body}");
    assert!(!body.contains("secret"), "cookies are never reflected: {body}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn other_values_are_decremented_on_the_way() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    for method in ["OPTIONS", "TRACE"] {
        let response = with_max_forwards(proxy.addr, method, &origin.url("/x"), "5").await;
        assert_eq!(status_of(&response), 200, "{response}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    for request in seen {
        assert_eq!(request.headers["max-forwards"], "4", "{}", request.method);
    }
    // Other methods are left alone.
    let client = via_proxy(proxy.addr);
    within(client.get(origin.url("/g")).header("max-forwards", "0").send()).await.unwrap();
    assert_eq!(origin.seen()[2].headers["max-forwards"], "0");
}

#[tokio::test]
async fn a_reverse_route_answers_options_at_zero_itself() {
    let origin = Origin::echo().await;
    let config = format!("{}{}", listener(REVERSE, ""), route("/", &origin.url(""), ""));
    let proxy = TestProxy::start(&config).await;
    let response = with_max_forwards(proxy.addr, "OPTIONS", "/api", "0").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn a_loop_through_two_listeners_is_answered_508() {
    let origin = Origin::echo().await;
    // Listener 0 is a forward proxy, listener 1 a reverse proxy in front of the origin.
    let config =
        format!("{}{}{}", listener("", ""), listener(REVERSE, ""), route("/", &origin.url(""), ""));
    let proxy = TestProxy::start(&config).await;
    let (forward, reverse) = (proxy.addrs[0], proxy.addrs[1]);
    // Through the forward listener to the reverse one: the second hop sees its own Via.
    let client = via_proxy(forward);
    let response = within(client.get(format!("http://{reverse}/x")).send()).await.unwrap();
    assert_eq!(response.status(), 508);
    // And the forward listener to itself.
    let response = within(client.get(format!("http://{forward}/x")).send()).await.unwrap();
    assert_eq!(response.status(), 508);
    assert_eq!(origin.connections(), 0, "the loop was cut before any origin");
    // Straight to the reverse listener, no loop.
    let direct = support::client::direct();
    let response = within(direct.get(format!("http://{reverse}/x")).send()).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn two_instances_with_their_own_names_chain_without_a_loop() {
    let origin = Origin::echo().await;
    let hop = |name: &str, upstream: &str| {
        format!(
            "{}[headers]\nvia_pseudonym = \"{name}\"\n{}",
            listener(REVERSE, ""),
            route("/", upstream, "")
        )
    };
    let second = TestProxy::start(&hop("edge-b", &origin.url(""))).await;
    let first = TestProxy::start(&hop("edge-a", &format!("http://{}", second.addr))).await;
    let url = format!("http://{}/x", first.addr);
    let response = within(support::client::direct().get(url).send()).await.unwrap();
    assert_eq!(response.status(), 200);
    let via: Vec<_> = origin
        .only_request()
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(via, ["1.1 edge-a", "1.1 edge-b"]);
}

#[tokio::test]
async fn a_pseudonym_must_be_a_token() {
    let err = sluice::config::Config::from_toml("[headers]\nvia_pseudonym = \"two words\"\n", "t")
        .unwrap_err();
    assert!(err.to_string().contains("headers.via_pseudonym"), "{err}");
}
