//! The admin listener: liveness and readiness (also once a shutdown drain has begun), metrics
//! in the OpenMetrics text format, the effective configuration with bound addresses and no
//! secrets, the methods and paths it refuses, and the rule that keeps it on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use sluice::config::{AdminConfig, Config};
use sluice::shutdown::Drained;
use support::client::{direct, http1_conn};
use support::config::{ADMIN, reverse_config, route};
use support::observe::{sample, scrape};
use support::proxy::TestProxy;
use support::upstream::{Origin, channel_response};
use support::within;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A reverse-only listener on 127.0.0.1:0, one route `/s` to `upstream`, and the admin listener.
fn reverse_with_admin(upstream: &str) -> String {
    format!("{}{ADMIN}", reverse_config(&route("/s", upstream, "")))
}

/// A forward proxy with the admin listener.
async fn forward_with_admin() -> TestProxy {
    TestProxy::start(&format!("[[listener]]\naddress = \"127.0.0.1:0\"\n\n{ADMIN}")).await
}

/// GET `path` on the admin listener: status, content type and body.
async fn admin_get(proxy: &TestProxy, path: &str) -> (StatusCode, String, String) {
    let response = within(direct().get(proxy.admin_url(path)).send()).await.unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (status, content_type, within(response.text()).await.unwrap())
}

/// `GET path` for an open HTTP/1.1 client connection.
fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).header("host", "admin").body(Empty::new()).unwrap()
}

/// `GET path` on an open HTTP/1.1 client connection: status and body.
async fn send(conn: &mut SendRequest<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
    let response = within(conn.send_request(get(path))).await.unwrap();
    let status = response.status();
    let body = within(response.into_body().collect()).await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn healthz_and_readyz_answer_ok_and_ready() {
    let proxy = forward_with_admin().await;
    assert_eq!(
        admin_get(&proxy, "/healthz").await,
        (StatusCode::OK, TEXT_PLAIN.to_owned(), "ok\n".to_owned())
    );
    assert_eq!(
        admin_get(&proxy, "/readyz").await,
        (StatusCode::OK, TEXT_PLAIN.to_owned(), "ready\n".to_owned())
    );
}

/// The admin listener is not part of the drain: while in-flight work finishes it answers
/// `/readyz` with 503 (on new connections and on one kept alive from before), refuses
/// `POST /reload` with 503, stays live, and closes only once the drain is over.
#[tokio::test]
async fn readyz_answers_503_during_a_shutdown_drain_until_the_drain_ends() {
    let (senders, mut streams) = tokio::sync::mpsc::unbounded_channel();
    let origin = Origin::start(move |_request: Request<Incoming>| {
        let senders = senders.clone();
        async move {
            let (sender, response) = channel_response(1);
            senders.send(sender).unwrap();
            response
        }
    })
    .await;
    let mut proxy = TestProxy::start(&reverse_with_admin(&origin.url(""))).await;
    let admin_addr = proxy.admin.unwrap();

    // A keep-alive admin connection, used once while running.
    let mut admin = http1_conn::<Empty<Bytes>>(admin_addr).await;
    assert_eq!(send(&mut admin, "/readyz").await, (StatusCode::OK, "ready\n".to_owned()));

    // A streaming response held open through the proxy keeps the drain going.
    let mut stream =
        within(direct().get(format!("http://{}/s/events", proxy.addr)).send()).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut events = within(streams.recv()).await.unwrap();
    within(events.send_data(Bytes::from("event 1\n"))).await.unwrap();
    assert_eq!(within(stream.chunk()).await.unwrap().unwrap(), "event 1\n");

    proxy.signal_shutdown();
    // Ready until the drain begins, then "shutting down"; nothing else.
    within(async {
        loop {
            match admin_get(&proxy, "/readyz").await {
                (StatusCode::OK, _, body) if body == "ready\n" => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                (StatusCode::SERVICE_UNAVAILABLE, content_type, body) => {
                    assert_eq!(
                        (content_type.as_str(), body.as_str()),
                        (TEXT_PLAIN, "shutting down\n")
                    );
                    break;
                }
                other => panic!("unexpected readiness answer {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(
        send(&mut admin, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned()),
        "on the connection kept alive from before the shutdown"
    );
    assert_eq!(send(&mut admin, "/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
    // A reload would put listeners back to work while they are being closed: refused.
    let reload = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(reload.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(within(reload.text()).await.unwrap(), "shutting down; reload refused\n");
    let metrics = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(sample(&metrics, "sluice_connections_active"), 1.0, "the stream's connection");
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "the proxy listener accepts nothing during the drain"
    );

    // The stream opened before shutdown runs to its end, which ends the drain.
    within(events.send_data(Bytes::from("event 2\n"))).await.unwrap();
    drop(events);
    assert_eq!(within(stream.chunk()).await.unwrap().unwrap(), "event 2\n");
    assert_eq!(within(stream.chunk()).await.unwrap(), None);
    assert_eq!(proxy.finished().await, Drained::Complete);

    // Then the admin listener closes, with its connections.
    within(async {
        while tokio::net::TcpStream::connect(admin_addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let closed = within(admin.send_request(get("/readyz"))).await.unwrap_err();
    assert!(closed.is_canceled() || closed.is_closed(), "{closed:?}");
}

#[tokio::test]
async fn metrics_are_openmetrics_text_ending_in_eof_for_get_and_head() {
    let proxy = forward_with_admin().await;
    let (status, content_type, body) = admin_get(&proxy, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, OPENMETRICS);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    for line in [
        "# TYPE sluice_connections_active gauge",
        "sluice_connections_active 0",
        "# TYPE sluice_config_reloads counter",
        "sluice_config_reloads_total{result=\"applied\"} 0",
        "sluice_config_reloads_total{result=\"refused\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no line {line:?} in {body}");
    }

    let head = within(direct().head(proxy.admin_url("/metrics")).send()).await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-type"], OPENMETRICS);
    assert_eq!(within(head.bytes()).await.unwrap(), "");
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_and_unknown_path_is_404() {
    let proxy = forward_with_admin().await;
    let client = direct();
    for path in ["/metrics", "/healthz", "/readyz", "/config", "/upstreams", "/", "/status.json"] {
        let response = within(client.post(proxy.admin_url(path)).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
        assert_eq!(response.headers()["allow"], "GET, HEAD", "POST {path}");
        assert_eq!(within(response.text()).await.unwrap(), "method not allowed\n");
    }
    let response = within(client.get(proxy.admin_url("/reload")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    for path in ["/nope", "/index.html", "/metrics/extra", "/status.json/x"] {
        let (status, content_type, body) = admin_get(&proxy, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
        assert_eq!(content_type, TEXT_PLAIN);
        assert_eq!(
            body,
            "not found; try / /status.json /healthz /readyz /metrics /config /upstreams /reload \
             /cache/purge\n"
        );
    }
}

/// Secrets given through the environment (a header rule, a user's password) and a literal
/// password: /config shows the templates and user names, never a value.
#[tokio::test]
async fn config_shows_bound_addresses_routes_and_templates_but_no_secret() {
    const ROUTE_SECRET: &str = "sk-route-secret-4b1d9e";
    const GLOBAL_SECRET: &str = "global-secret-77c3a0";
    const BOB_PASSWORD: &str = "bob-password-e2f6c1";
    const ALICE_PASSWORD: &str = "alice-literal-password-9a8b";
    let origin = Origin::echo().await;
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = true\nreverse = true\n\n\
         [headers.request]\nset = {{ x-global-key = \"${{SLUICE_ADMIN_TEST_GLOBAL_KEY}}\" }}\n\n\
         [auth]\n\
         [[auth.user]]\nname = \"alice\"\npassword = \"{ALICE_PASSWORD}\"\n\
         [[auth.user]]\nname = \"bob\"\npassword = \"${{SLUICE_ADMIN_TEST_BOB_PASSWORD}}\"\n\n\
         [[route]]\nname = \"models\"\nprefix = \"/v1\"\nupstream = \"{}\"\n\
         [route.headers.request]\n\
         set = {{ authorization = \"Bearer ${{SLUICE_ADMIN_TEST_ROUTE_KEY}}\" }}\n\n{ADMIN}",
        origin.url("/base")
    );
    let env = |name: &str| match name {
        "SLUICE_ADMIN_TEST_ROUTE_KEY" => Some(ROUTE_SECRET.to_owned()),
        "SLUICE_ADMIN_TEST_GLOBAL_KEY" => Some(GLOBAL_SECRET.to_owned()),
        "SLUICE_ADMIN_TEST_BOB_PASSWORD" => Some(BOB_PASSWORD.to_owned()),
        _ => None,
    };
    let config = Config::from_toml_with_env(&text, "admin.toml", &env).unwrap();
    let proxy = TestProxy::with_config(config).await;

    // The secrets are really in use: the route sends them upstream.
    let response =
        within(direct().get(format!("http://{}/v1/models", proxy.addr)).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = origin.only_request();
    assert_eq!(seen.headers["authorization"], format!("Bearer {ROUTE_SECRET}"));
    assert_eq!(seen.headers["x-global-key"], GLOBAL_SECRET);

    let (status, content_type, body) = admin_get(&proxy, "/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, TEXT_PLAIN);
    assert!(body.starts_with("running configuration: OK\n"), "{body}");
    assert_ne!(proxy.addr.port(), 0);
    let listener = format!("\n  {:<24} {:<16} http (http/1.1)\n", proxy.addr, "forward+reverse");
    assert!(body.contains(&listener), "{body}");
    assert!(!body.contains("127.0.0.1:0 "), "configured port 0 shown instead of the bound one");
    assert!(
        body.contains(&format!(
            "\n  {:<20} /v1 -> {}  (strip_prefix=true, preserve_host=false, upgrades=[websocket])\n",
            "models",
            origin.url("/base")
        )),
        "{body}"
    );
    assert!(
        body.contains(
            "\n    request set    authorization = \"Bearer ${SLUICE_ADMIN_TEST_ROUTE_KEY}\"\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("\n  request set    x-global-key = \"${SLUICE_ADMIN_TEST_GLOBAL_KEY}\"\n"),
        "{body}"
    );
    assert!(body.contains("\n  users    alice, bob\n"), "{body}");
    assert!(
        body.contains("\naccess_log:\n  off\n\nadmin: 127.0.0.1:")
            && body.contains("\nrequest_id: header x-request-id, always generated\n"),
        "{body}"
    );
    for secret in [ROUTE_SECRET, GLOBAL_SECRET, BOB_PASSWORD, ALICE_PASSWORD] {
        assert!(!body.contains(secret), "/config shows a secret: {body}");
    }
}

#[test]
fn non_loopback_admin_address_is_refused_with_its_key_and_line() {
    let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"0.0.0.0:9901\"\n";
    let err = Config::from_toml(text, "remote-admin.toml").unwrap_err().to_string();
    assert!(
        err.contains(
            "\n  remote-admin.toml:5: admin.address: 0.0.0.0:9901 is not a loopback address; \
             the admin listener can reload the config and shows its routes, so expose it only \
             with `allow_remote = true` behind a firewall"
        ),
        "{err}"
    );
    let v6 = "[admin]\naddress = \"[2001:db8::1]:9901\"\n";
    let err = Config::from_toml(v6, "v6.toml").unwrap_err().to_string();
    assert!(err.contains("\n  v6.toml:2: admin.address: [2001:db8::1]:9901 is not a loopback"));

    let allowed = format!("{text}allow_remote = true\n");
    let config = Config::from_toml(&allowed, "remote-admin.toml").unwrap();
    assert_eq!(config.admin, Some(AdminConfig::on("0.0.0.0:9901".parse().unwrap())));
    let loopback = Config::from_toml("[admin]\naddress = \"[::1]:9901\"\n", "v6.toml").unwrap();
    let address: SocketAddr = "[::1]:9901".parse().unwrap();
    assert_eq!(loopback.admin, Some(AdminConfig::on(address)));
}

#[test]
fn status_history_is_a_duration_between_a_second_and_an_hour() {
    let config = |history: &str| {
        Config::from_toml(
            &format!("[admin]\naddress = \"127.0.0.1:0\"\nhistory = \"{history}\"\n"),
            "h.toml",
        )
    };
    assert_eq!(config("90s").unwrap().admin.unwrap().history, std::time::Duration::from_secs(90));
    let default = Config::from_toml(ADMIN, "h.toml").unwrap().admin.unwrap();
    assert_eq!(default.history, sluice::config::DEFAULT_ADMIN_HISTORY);
    for (bad, message) in [
        ("2h", "h.toml:3: admin.history: must be at most 1h, got `2h`"),
        ("500ms", "h.toml:3: admin.history: must be at least 1s, got `500ms`"),
        ("soon", "h.toml:3: admin.history: `soon` is not a duration"),
    ] {
        let err = config(bad).unwrap_err().to_string();
        assert!(err.contains(message), "{bad}: {err}");
    }
}
