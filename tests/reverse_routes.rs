//! Reverse routes: segment-aware longest-prefix matching, path joining, Host handling,
//! header rules, forwarding headers, config errors and the 404/502/504 paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use sluice::config::Config;
use support::client::{direct, raw_body, raw_exchange, raw_get, raw_header_values, status_of};
use support::config::{reverse_config, route};
use support::proxy::TestProxy;
use support::upstream::{Origin, black_hole, closed_port, full, raw_server, read_head};
use support::within;

/// Sends `GET target` raw (so nothing normalises the path), expects 200, and returns the
/// request-target the origin saw for it.
async fn target_seen_by(origin: &Origin, proxy: &TestProxy, target: &str) -> String {
    let before = origin.seen().len();
    let response = raw_get(proxy.addr, target, "front.test", "").await;
    assert_eq!(status_of(&response), 200, "{target}: {response}");
    let seen = origin.seen();
    assert_eq!(seen.len(), before + 1, "{target} reached the origin once");
    seen.last().unwrap().uri.to_string()
}

/// A normal request through a route still succeeds (the proxy was not harmed by a failure).
async fn route_still_serves(proxy: &TestProxy, origin: &Origin, path: &str) {
    let response =
        within(direct().post(format!("http://{}{path}", proxy.addr)).body("fine").send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(within(response.text()).await.unwrap(), "fine");
    assert!(origin.seen().iter().any(|seen| seen.method == "POST"));
}

#[tokio::test]
async fn prefix_matches_whole_segments_only() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    assert_eq!(target_seen_by(&origin, &proxy, "/api").await, "/");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/").await, "/");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x").await, "/x");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x/y?z=1").await, "/x/y?z=1");

    for miss in ["/apiary", "/apiary/x", "/ap", "/", "/other/api"] {
        let response = raw_get(proxy.addr, miss, "front.test", "").await;
        assert_eq!(status_of(&response), 404, "{miss}: {response}");
        let body = raw_body(&response);
        assert!(body.contains("no route"), "{miss}: {body:?}");
        assert!(body.len() < 200, "short body: {body:?}");
    }
    assert_eq!(origin.seen().len(), 4, "no miss reached the origin");
}

#[tokio::test]
async fn longest_prefix_wins() {
    let short = Origin::echo().await;
    let long = Origin::echo().await;
    // The shorter prefix comes first, so first-match order would pick the wrong route.
    let config = reverse_config(&format!(
        "{}{}",
        route("/api", &short.url(""), ""),
        route("/api/v2", &long.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(target_seen_by(&long, &proxy, "/api/v2/models").await, "/models");
    assert_eq!(target_seen_by(&long, &proxy, "/api/v2").await, "/");
    assert_eq!(target_seen_by(&short, &proxy, "/api/v20").await, "/v20");
    assert_eq!(target_seen_by(&short, &proxy, "/api/v1/x").await, "/v1/x");
    assert_eq!(long.seen().len(), 2);
    assert_eq!(short.seen().len(), 2);
}

#[tokio::test]
async fn trailing_slash_in_a_prefix_is_ignored() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api/", &origin.url(""), ""))).await;
    assert_eq!(target_seen_by(&origin, &proxy, "/api").await, "/");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x").await, "/x");
    let response = raw_get(proxy.addr, "/apix", "front.test", "").await;
    assert_eq!(status_of(&response), 404, "{response}");
}

#[tokio::test]
async fn root_prefix_matches_every_path() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/", &origin.url("/base"), ""))).await;
    // "/" is the prefix plus a slash, like "/api/" for "/api": either join is slash-correct.
    let root = target_seen_by(&origin, &proxy, "/").await;
    assert!(root == "/base" || root == "/base/", "{root}");
    assert_eq!(target_seen_by(&origin, &proxy, "/anything/x?q").await, "/base/anything/x?q");
}

#[tokio::test]
async fn strip_prefix_joins_the_rest_onto_the_upstream_base_path() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url("/base"), ""))).await;
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x").await, "/base/x");
    assert_eq!(target_seen_by(&origin, &proxy, "/api").await, "/base");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/").await, "/base/");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x/y/").await, "/base/x/y/");
}

#[tokio::test]
async fn strip_prefix_false_sends_the_whole_path_after_the_base() {
    let origin = Origin::echo().await;
    let with_base = Origin::echo().await;
    let config = reverse_config(&format!(
        "{}{}",
        route("/api", &origin.url(""), "strip_prefix = false"),
        route("/svc", &with_base.url("/base"), "strip_prefix = false"),
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x").await, "/api/x");
    assert_eq!(target_seen_by(&origin, &proxy, "/api").await, "/api");
    assert_eq!(target_seen_by(&with_base, &proxy, "/svc/x?q=1").await, "/base/svc/x?q=1");
    assert_eq!(target_seen_by(&with_base, &proxy, "/svc").await, "/base/svc");
}

#[tokio::test]
async fn slash_terminated_bases_never_double_or_drop_a_slash() {
    let root = Origin::echo().await;
    let versioned = Origin::echo().await;
    let unstripped = Origin::echo().await;
    let config = reverse_config(&format!(
        "{}{}{}",
        route("/r", &root.url("/"), ""),
        route("/v", &versioned.url("/v1/"), ""),
        route("/u", &unstripped.url("/v1/"), "strip_prefix = false"),
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(target_seen_by(&root, &proxy, "/r/x").await, "/x");
    assert_eq!(target_seen_by(&root, &proxy, "/r").await, "/");
    assert_eq!(target_seen_by(&root, &proxy, "/r/").await, "/");
    assert_eq!(target_seen_by(&versioned, &proxy, "/v/chat").await, "/v1/chat");
    assert_eq!(target_seen_by(&versioned, &proxy, "/v/").await, "/v1/");
    let bare = target_seen_by(&versioned, &proxy, "/v").await;
    assert!(bare == "/v1" || bare == "/v1/", "{bare}");
    assert_eq!(target_seen_by(&unstripped, &proxy, "/u/x").await, "/v1/u/x");
    for seen in root.seen().iter().chain(&versioned.seen()).chain(&unstripped.seen()) {
        assert!(!seen.uri.path().contains("//"), "double slash: {}", seen.uri);
    }
}

#[tokio::test]
async fn encoded_path_and_query_arrive_byte_exact() {
    let origin = Origin::echo().await;
    let keep = Origin::echo().await;
    let config = reverse_config(&format!(
        "{}{}",
        route("/api", &origin.url("/v1"), ""),
        route("/keep", &keep.url(""), "strip_prefix = false"),
    ));
    let proxy = TestProxy::start(&config).await;
    assert_eq!(
        target_seen_by(
            &origin,
            &proxy,
            "/api/a%2Fb/caf%C3%A9?path=a%2Fb&sum=1+2&name=%C3%A9t%C3%A9&empty=&flag"
        )
        .await,
        "/v1/a%2Fb/caf%C3%A9?path=a%2Fb&sum=1+2&name=%C3%A9t%C3%A9&empty=&flag"
    );
    assert_eq!(
        target_seen_by(&keep, &proxy, "/keep/%2F%2f/x%20y?q=%2F+%2B").await,
        "/keep/%2F%2f/x%20y?q=%2F+%2B"
    );
    assert_eq!(target_seen_by(&origin, &proxy, "/api?only=query").await, "/v1?only=query");
}

#[tokio::test]
async fn host_is_the_upstream_authority_by_default() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let response = raw_get(proxy.addr, "/api/x", "front.test:8443", "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, [&origin.addr.to_string()]);
}

#[tokio::test]
async fn preserve_host_passes_the_clients_host_unchanged() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/api", &origin.url(""), "preserve_host = true")))
            .await;
    let response = raw_get(proxy.addr, "/api/x", "Front.Test:8443", "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["Front.Test:8443"]);
}

#[tokio::test]
async fn a_route_for_the_requests_host_beats_the_host_less_route() {
    let for_a = Origin::echo().await;
    let any = Origin::echo().await;
    // The host-less route comes first, so first-match order would pick the wrong route.
    let config = reverse_config(&format!(
        "{}{}",
        route("/svc", &any.url(""), ""),
        route("/svc", &for_a.url(""), "host = \"a.test\""),
    ));
    let proxy = TestProxy::start(&config).await;
    for host in ["a.test", "A.TEST", "a.test:8080"] {
        let response = raw_get(proxy.addr, "/svc/x", host, "").await;
        assert_eq!(status_of(&response), 200, "{host}: {response}");
    }
    for host in ["b.test", "a.test.example", "127.0.0.1"] {
        let response = raw_get(proxy.addr, "/svc/y", host, "").await;
        assert_eq!(status_of(&response), 200, "{host}: {response}");
    }
    let to_a = for_a.seen();
    assert_eq!(to_a.len(), 3);
    assert!(to_a.iter().all(|seen| seen.uri == "/x"), "{to_a:?}");
    let to_any = any.seen();
    assert_eq!(to_any.len(), 3);
    assert!(to_any.iter().all(|seen| seen.uri == "/y"), "{to_any:?}");
}

#[tokio::test]
async fn a_host_only_route_does_not_serve_other_hosts() {
    let for_a = Origin::echo().await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/svc", &for_a.url(""), "host = \"a.test\"")))
            .await;
    let response = raw_get(proxy.addr, "/svc/x", "b.test", "").await;
    assert_eq!(status_of(&response), 404, "{response}");
    assert!(for_a.seen().is_empty());
}

#[tokio::test]
async fn several_set_cookie_response_fields_are_preserved() {
    let origin = Origin::start(|_request: Request<Incoming>| async move {
        let mut response = full("ok");
        for cookie in ["a=1; Path=/", "b=2; HttpOnly", "c=3, d=4"] {
            response.headers_mut().append("set-cookie", cookie.parse().unwrap());
        }
        response
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let response =
        within(direct().get(format!("http://{}/api/c", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly", "c=3, d=4"]);
}

#[tokio::test]
async fn duplicate_request_fields_are_preserved_in_order() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let response = raw_get(
        proxy.addr,
        "/api/d",
        "front.test",
        "X-Dup: one\r\nCookie: a=1\r\nX-Dup: two\r\nCookie: b=2\r\nX-Dup: three, four\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    let dups: Vec<_> = seen.headers.get_all("x-dup").iter().collect();
    assert_eq!(dups, ["one", "two", "three, four"]);
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
}

#[tokio::test]
async fn dot_dot_segments_are_refused_with_400() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    for target in [
        "/api/../secret",
        "/api/x/../../secret",
        "/api/..",
        "/api/%2e%2e/secret",
        "/api/%2E%2E/secret",
        "/api/.%2e/secret",
        "/api/%2e./secret",
        // Look-alikes that Tomcat, IIS and several frameworks resolve as `..`.
        "/api/..;/admin",
        "/api/..;jsessionid=1/admin",
        "/api/..\\admin",
        "/api/..%2fadmin",
        "/api/..%2Fadmin",
        "/api/..%5cadmin",
        "/api/..%3b/admin",
        "/api/.;/admin",
    ] {
        let response = raw_get(proxy.addr, target, "front.test", "").await;
        assert_eq!(status_of(&response), 400, "{target}: {response}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // Dots inside a segment are ordinary characters.
    assert_eq!(target_seen_by(&origin, &proxy, "/api/a..b/..c/v1.2").await, "/a..b/..c/v1.2");
    assert_eq!(target_seen_by(&origin, &proxy, "/api/x;v=1/..a").await, "/x;v=1/..a");
}

#[tokio::test]
async fn absolute_form_on_a_reverse_only_listener_is_routed_by_path() {
    let origin = Origin::echo().await;
    let elsewhere = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url("/base"), ""))).await;
    let target = elsewhere.url("/api/x?q=1");
    let response = raw_get(proxy.addr, &target, &elsewhere.addr.to_string(), "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(origin.only_request().uri, "/base/x?q=1");
    assert!(elsewhere.seen().is_empty(), "not forwarded to the URI's authority");
}

#[tokio::test]
async fn header_rules_apply_global_then_route_on_requests() {
    let origin = Origin::echo().await;
    let config = reverse_config(&format!(
        "[headers.request]\n\
         set = {{ \"x-gateway\" = \"sluice\", \"x-both\" = \"global\" }}\n\
         append = {{ \"x-tag\" = \"global\" }}\n\
         remove = [\"x-debug\"]\n\n\
         {}\
         [route.headers.request]\n\
         set = {{ \"x-route\" = \"api\", \"x-both\" = \"route\" }}\n\
         append = {{ \"x-tag\" = \"route\" }}\n\
         remove = [\"X-Secret\"]\n",
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response = raw_get(
        proxy.addr,
        "/api/h",
        "front.test",
        "X-Gateway: client\r\nX-Gateway: client2\r\nX-Tag: client\r\nX-Debug: 1\r\n\
         X-Debug: 2\r\nX-Secret: s\r\nX-Both: client\r\nX-Keep: k\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    let values = |name: &str| -> Vec<String> {
        seen.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    assert_eq!(values("x-gateway"), ["sluice"], "set replaces every line");
    assert_eq!(values("x-tag"), ["client", "global", "route"], "append adds, global first");
    assert!(values("x-debug").is_empty(), "global remove");
    assert!(values("x-secret").is_empty(), "route remove");
    assert_eq!(values("x-route"), ["api"]);
    assert_eq!(values("x-both"), ["route"], "route rules run after global rules");
    assert_eq!(values("x-keep"), ["k"], "untouched fields pass");
}

#[tokio::test]
async fn header_rules_apply_route_then_global_on_responses() {
    let origin = Origin::start(|_request: Request<Incoming>| async move {
        let mut response = full("ok");
        let headers = response.headers_mut();
        headers.append("server", "origin/1.0".parse().unwrap());
        headers.append("x-internal", "1".parse().unwrap());
        headers.append("x-route", "from-origin".parse().unwrap());
        headers.append("x-powered-by", "a".parse().unwrap());
        headers.append("x-powered-by", "b".parse().unwrap());
        headers.append("x-keep", "k".parse().unwrap());
        response
    })
    .await;
    let config = reverse_config(&format!(
        "[headers.response]\n\
         remove = [\"server\"]\n\
         set = {{ \"x-both\" = \"global\" }}\n\n\
         {}\
         [route.headers.response]\n\
         append = {{ \"x-route\" = \"openai\" }}\n\
         set = {{ \"x-powered-by\" = \"sluice\", \"x-both\" = \"route\" }}\n\
         remove = [\"x-internal\"]\n",
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response =
        within(direct().get(format!("http://{}/api/r", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let values = |name: &str| -> Vec<String> {
        response.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    assert!(values("server").is_empty(), "global remove");
    assert!(values("x-internal").is_empty(), "route remove");
    assert_eq!(values("x-route"), ["from-origin", "openai"]);
    assert_eq!(values("x-powered-by"), ["sluice"]);
    assert_eq!(values("x-both"), ["global"], "global rules run after route rules");
    assert_eq!(values("x-keep"), ["k"]);
    let via = values("via");
    assert!(via.len() == 1 && via[0].starts_with("1.1 sluice-"), "{via:?}");
}

#[tokio::test]
async fn forwarding_headers_default_to_append_replace_replace() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    // Nothing from the client: sluice adds each.
    let response = raw_get(proxy.addr, "/api/1", "front.test", "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    // Spoofed values from the client.
    let response = raw_get(
        proxy.addr,
        "/api/2",
        "front.test:8080",
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: spoof.test\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    let joined = |index: usize, name: &str| -> String {
        seen[index]
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_eq!(joined(0, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(joined(0, "x-forwarded-proto"), "http");
    assert_eq!(joined(0, "x-forwarded-host"), "front.test");
    assert_eq!(joined(1, "x-forwarded-for"), "203.0.113.7, 127.0.0.1", "append");
    assert_eq!(joined(1, "x-forwarded-proto"), "http", "replace");
    assert_eq!(joined(1, "x-forwarded-host"), "front.test:8080", "replace");
    assert!(seen[0].headers.get("forwarded").is_none(), "Forwarded is off by default");
    assert!(joined(0, "via").starts_with("1.1 sluice-"));
}

#[tokio::test]
async fn forwarding_headers_replace_and_off_modes() {
    let origin = Origin::echo().await;
    let config = reverse_config(&format!(
        "[headers]\nx_forwarded_for = \"replace\"\nx_forwarded_proto = \"off\"\n\
         x_forwarded_host = \"off\"\n\n{}",
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response = raw_get(proxy.addr, "/api/1", "front.test", "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let response =
        raw_get(proxy.addr, "/api/2", "front.test", "X-Forwarded-For: 203.0.113.7\r\n").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.seen();
    assert!(seen[0].headers.get("x-forwarded-proto").is_none(), "off adds nothing");
    assert!(seen[0].headers.get("x-forwarded-host").is_none(), "off adds nothing");
    let xff: Vec<_> = seen[1].headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, ["127.0.0.1"], "replace drops the client's value");
}

#[tokio::test]
async fn forwarded_is_appended_when_enabled() {
    let origin = Origin::echo().await;
    let config = reverse_config(&format!(
        "[headers]\nforwarded = \"append\"\n\n{}",
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response =
        raw_get(proxy.addr, "/api/f", "front.test:8080", "Forwarded: for=203.0.113.7\r\n").await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    let forwarded = seen
        .headers
        .get_all("forwarded")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    // RFC 7239 §4: a value with ':' is not a token, so the host must be a quoted-string.
    assert_eq!(forwarded, "for=203.0.113.7, for=127.0.0.1;host=\"front.test:8080\";proto=http");
}

#[tokio::test]
async fn hop_by_hop_fields_are_removed_both_ways_on_routes() {
    let origin = Origin::start(|_request: Request<Incoming>| async move {
        let mut response = full("ok");
        let headers = response.headers_mut();
        headers.append("connection", "x-origin-private".parse().unwrap());
        headers.append("x-origin-private", "1".parse().unwrap());
        headers.append("keep-alive", "timeout=5".parse().unwrap());
        response
    })
    .await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let response = raw_get(
        proxy.addr,
        "/api/h",
        "front.test",
        "Connection: x-private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\nX-End-To-End: kept\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    for name in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(seen.headers.get(name).is_none(), "{name} reached the origin");
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert!(raw_header_values(&response, "x-origin-private").is_empty(), "{response}");
    assert!(raw_header_values(&response, "keep-alive").is_empty(), "{response}");
}

/// The error text of a config that must be refused.
fn refused(toml: &str) -> String {
    match Config::from_toml(toml, "x.toml") {
        Ok(config) => panic!("accepted: {toml}\n{config:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn duplicate_prefix_is_a_config_error() {
    let message = refused(&reverse_config(&format!(
        "{}{}",
        route("/api", "http://127.0.0.1:1", ""),
        route("/api/", "http://127.0.0.1:2", "")
    )));
    assert!(message.contains("route[1].prefix"), "{message}");

    let message = refused(&reverse_config(&format!(
        "{}{}",
        route("/api", "http://127.0.0.1:1", "host = \"a.test\""),
        route("/api", "http://127.0.0.1:2", "host = \"a.test\"")
    )));
    assert!(message.contains("route[1]"), "{message}");

    // The same prefix for different hosts is fine.
    Config::from_toml(
        &reverse_config(&format!(
            "{}{}",
            route("/api", "http://127.0.0.1:1", "host = \"a.test\""),
            route("/api", "http://127.0.0.1:2", "")
        )),
        "x.toml",
    )
    .unwrap();
}

#[test]
fn unset_env_var_in_a_header_rule_is_a_config_error_naming_it() {
    let message = refused(&reverse_config(&route(
        "/api",
        "http://127.0.0.1:1",
        "[route.headers.request]\nset = { authorization = \"Bearer ${SLUICE_TEST_UNSET_VAR}\" }",
    )));
    assert!(message.contains("SLUICE_TEST_UNSET_VAR"), "{message}");
    assert!(message.contains("route[0]"), "{message}");
}

#[test]
fn bad_upstream_url_is_a_config_error_with_its_key() {
    let mut accepted = Vec::new();
    for bad in [
        "ftp://127.0.0.1/x",
        "not a url",
        "http://",
        "http://127.0.0.1:1/v1?key=x",
        "http://127.0.0.1:1/v1#frag",
        "127.0.0.1:8080",
        "http://user:pass@127.0.0.1:1/v1",
    ] {
        match Config::from_toml(&reverse_config(&route("/api", bad, "")), "x.toml") {
            Ok(_) => accepted.push(bad),
            Err(err) => {
                let message = err.to_string();
                assert!(message.contains("route[0].upstream"), "{bad}: {message}");
            }
        }
    }
    assert!(accepted.is_empty(), "bad upstream URLs accepted: {accepted:?}");
}

#[test]
fn other_route_mistakes_are_config_errors_with_their_keys() {
    let message = refused(&reverse_config(&route("api", "http://127.0.0.1:1", "")));
    assert!(message.contains("route[0].prefix"), "{message}");
    let message =
        refused(&reverse_config(&route("/api", "http://127.0.0.1:1", "strip_prefixx = true")));
    assert!(message.contains("strip_prefixx"), "{message}");
    let message = refused(&reverse_config(&route(
        "/api",
        "http://127.0.0.1:1",
        "[route.timeouts]\nbody_idle = \"0s\"",
    )));
    assert!(message.contains("route[0].timeouts.body_idle"), "{message}");
    let message = refused(&reverse_config("[headers]\nx_forwarded_for = \"sometimes\"\n"));
    assert!(message.contains("headers.x_forwarded_for"), "{message}");
}

#[test]
fn every_route_problem_is_reported_at_once() {
    let message = refused(&reverse_config(&format!(
        "{}{}{}",
        route("/a", "http://127.0.0.1:1", ""),
        route("/a", "http://127.0.0.1:2", ""),
        route("/b", "gopher://x", "")
    )));
    assert!(message.contains("route[1].prefix"), "{message}");
    assert!(message.contains("route[2].upstream"), "{message}");
}

#[tokio::test]
async fn no_route_is_404_and_routes_still_work() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let response =
        within(direct().get(format!("http://{}/nowhere", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = within(response.text()).await.unwrap();
    assert!(body.contains("no route"), "{body}");
    route_still_serves(&proxy, &origin, "/api/ok").await;
}

#[tokio::test]
async fn refused_upstream_is_502_and_routes_still_work() {
    let origin = Origin::echo().await;
    let closed = closed_port();
    let config = reverse_config(&format!(
        "{}{}",
        route("/dead", &format!("http://{closed}"), ""),
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response =
        within(direct().get(format!("http://{}/dead/x", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("connection_refused"), "{status_header}");
    let body = within(response.text()).await.unwrap();
    assert!(body.starts_with("502"), "{body}");
    route_still_serves(&proxy, &origin, "/api/ok").await;
}

#[tokio::test]
async fn silent_upstream_is_504_after_the_routes_response_header_timeout() {
    let origin = Origin::echo().await;
    let silent = black_hole().await;
    let config = reverse_config(&format!(
        "{}[route.timeouts]\nresponse_header = \"300ms\"\n\n{}",
        route("/slow", &format!("http://{silent}"), ""),
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let started = std::time::Instant::now();
    let response =
        within(direct().get(format!("http://{}/slow/x", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the route's 300ms applied, not the 300s default"
    );
    let status_header = response.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(status_header.contains("http_response_timeout"), "{status_header}");
    route_still_serves(&proxy, &origin, "/api/ok").await;
}

#[tokio::test]
async fn a_reverse_only_listener_still_refuses_connect() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/api", &origin.url(""), ""))).await;
    let request =
        format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n", origin.addr);
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_ne!(status_of(&response), 200, "{response}");
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn unanswered_connect_on_a_route_is_504_after_the_routes_connect_timeout() {
    let origin = Origin::echo().await;
    let (stalled, _guard) = support::upstream::unanswered_connect().await;
    let config = reverse_config(&format!(
        "{}[route.timeouts]\nconnect = \"300ms\"\n\n{}",
        route("/stalled", &format!("http://{stalled}"), ""),
        route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let started = std::time::Instant::now();
    let response =
        within(direct().get(format!("http://{}/stalled/x", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the route's 300ms applied, not the 10s default: {:?}",
        started.elapsed()
    );
    assert!(response.headers().contains_key("proxy-status"));
    route_still_serves(&proxy, &origin, "/api/ok").await;
}

#[tokio::test]
async fn absolute_form_authority_is_the_host_for_host_routes() {
    let for_a = Origin::echo().await;
    let any = Origin::echo().await;
    let config = reverse_config(&format!(
        "{}{}",
        route("/svc", &any.url(""), ""),
        route("/svc", &for_a.url(""), "host = \"a.test\""),
    ));
    let proxy = TestProxy::start(&config).await;
    // RFC 9112 §3.2.2: with absolute-form, the target's authority replaces the Host field.
    let response = raw_get(proxy.addr, "http://a.test/svc/x", "b.test", "").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(for_a.only_request().uri, "/x");
    assert!(any.seen().is_empty(), "{:?}", any.seen());
}

#[tokio::test]
async fn route_upstream_connections_are_reused() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/", &origin.url(""), ""))).await;
    let client = direct();
    for i in 0..5 {
        let url = format!("http://{}/r{i}", proxy.addr);
        let response = within(client.post(url).body(format!("body {i}")).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(within(response.text()).await.unwrap(), format!("body {i}"));
    }
    let paths: Vec<String> = origin.seen().iter().map(|seen| seen.uri.to_string()).collect();
    assert_eq!(paths, ["/r0", "/r1", "/r2", "/r3", "/r4"], "origin-form targets, in order");
    assert_eq!(origin.connections(), 1, "sequential requests reuse one upstream connection");
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_loses_no_request() {
    // Answers one request per connection without announcing `Connection: close`, then closes:
    // the route's pooled connection is dead by the time the next request is sent on it.
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let upstream = raw_server(move |mut stream| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            use tokio::io::AsyncWriteExt;
            read_head(&mut stream).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let upstream_url = format!("http://{upstream}");
    let proxy = TestProxy::start(&reverse_config(&route("/", &upstream_url, ""))).await;
    for i in 0..3 {
        let response = raw_get(proxy.addr, &format!("/again{i}"), "front.test", "").await;
        assert_eq!(status_of(&response), 200, "request {i}: {response}");
        assert_eq!(raw_body(&response), "ok");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
