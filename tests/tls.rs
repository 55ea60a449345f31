//! TLS: HTTPS listeners (reverse and forward, HTTP/1.1 and h2 by ALPN, SNI, reload, bad
//! files, bad clients) and TLS to upstreams (extra CAs, server name, mTLS, insecure opt-in,
//! verification errors).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluice::config::Config;
use support::client::{https_builder, https_direct, peer_leaf, raw_exchange, tls_connect};
use support::config::{FORWARD, REVERSE, reverse_config, route, tls_listener};
use support::proxy::TestProxy;
use support::tls::{
    LeafFiles, TestCa, client_config_trusting, test_dir, toml_path, write_atomically,
};
use support::upstream::Origin;
use support::within;

/// `[route.tls]` trusting the CA file `ca` and any further `lines`.
fn route_tls(ca: &Path, lines: &str) -> String {
    format!("[route.tls]\nca = [{}]\n{lines}", toml_path(ca))
}

/// POSTs `body` to `url` and returns status, `proxy-status` (or "") and the body text.
async fn post(client: &reqwest::Client, url: &str, body: &str) -> (StatusCode, String, String) {
    let response = within(client.post(url).body(body.to_owned()).send()).await.unwrap();
    let status = response.status();
    let proxy_status = response
        .headers()
        .get("proxy-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, proxy_status, within(response.text()).await.unwrap())
}

/// Every value of `name` the origin saw in request `index`, joined with ", ".
fn seen_header(origin: &Origin, index: usize, name: &str) -> String {
    let seen = origin.seen();
    let values: Vec<_> =
        seen[index].headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    values.join(", ")
}

#[tokio::test]
async fn https_reverse_route_serves_http1_and_h2_and_sets_x_forwarded_proto_https() {
    let ca = TestCa::new();
    let dir = test_dir("https_reverse_route");
    let leaf = ca.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "{}{}",
        tls_listener(&leaf, REVERSE, ""),
        route("/app", &origin.url(""), "")
    ))
    .await;
    let url = format!("https://{}/app/hello?q=1", proxy.addr);
    let http1 = https_builder(&ca.cert_pem()).no_proxy().http1_only().build().unwrap();
    let by_alpn = https_direct(&ca.cert_pem());
    for (client, version) in [(http1, Version::HTTP_11), (by_alpn, Version::HTTP_2)] {
        let response =
            within(client.post(&url).body(format!("body over {version:?}")).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{version:?}");
        assert_eq!(response.version(), version, "ALPN picked the wrong protocol");
        assert_eq!(within(response.text()).await.unwrap(), format!("body over {version:?}"));
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (index, request) in seen.iter().enumerate() {
        assert_eq!(request.uri, "/hello?q=1");
        assert_eq!(seen_header(&origin, index, "x-forwarded-proto"), "https", "request {index}");
    }
}

#[tokio::test]
async fn sni_selects_the_certificate_for_each_server_name() {
    let ca = TestCa::new();
    let dir = test_dir("sni_selects");
    let a = ca.leaf_pem(&["a.test", "127.0.0.1"]).write(&dir, "a");
    let b = ca.leaf_pem(&["b.test", "*.c.test"]).write(&dir, "b");
    let sni = format!(
        "[[listener.tls.sni]]\nnames = [\"b.test\", \"*.c.test\"]\ncertificate = {}\nkey = {}\n",
        toml_path(&b.cert),
        toml_path(&b.key)
    );
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "{}{}",
        tls_listener(&a, REVERSE, &sni),
        route("/app", &origin.url(""), "")
    ))
    .await;
    let trust = client_config_trusting(&[&ca], &[]);
    assert!(peer_leaf(proxy.addr, "a.test", trust.clone()).await == a.der, "a.test gets default");
    assert!(peer_leaf(proxy.addr, "b.test", trust.clone()).await == b.der, "b.test gets its own");
    assert!(peer_leaf(proxy.addr, "x.c.test", trust.clone()).await == b.der, "*.c.test matches");
    // An IP address sends no SNI at all: the default certificate.
    assert!(peer_leaf(proxy.addr, "127.0.0.1", trust).await == a.der, "no SNI gets default");
}

#[tokio::test]
async fn https_forward_proxy_serves_absolute_form_and_connect_inside_tls() {
    let ca = TestCa::new();
    let dir = test_dir("https_forward_proxy");
    let leaf = ca.leaf_pem(&["127.0.0.1"]).write(&dir, "proxy");
    let plain_origin = Origin::echo().await;
    let tls_origin = Origin::echo_tls(ca.server_config(&["127.0.0.1"])).await;
    let proxy = TestProxy::start(&tls_listener(&leaf, FORWARD, "")).await;
    let client = https_builder(&ca.cert_pem())
        .proxy(reqwest::Proxy::all(format!("https://{}", proxy.addr)).unwrap())
        .build()
        .unwrap();

    // http:// target: an absolute-form request inside the TLS connection to the proxy.
    let (status, _, body) = post(&client, &plain_origin.url("/plain"), "absolute form").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "absolute form");
    assert_eq!(plain_origin.only_request().uri, "/plain");

    // https:// target: CONNECT inside TLS, then the client's TLS to the origin inside that.
    let (status, _, body) = post(&client, &tls_origin.https_url("/tunneled"), "tls in tls").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "tls in tls");
    assert_eq!(tls_origin.only_request().uri.path(), "/tunneled");
}

#[tokio::test]
async fn https_upstream_verifies_with_route_ca_and_unverified_cert_returns_502() {
    let ca = TestCa::new();
    let dir = test_dir("https_upstream_ca");
    let ca_file = ca.write_cert(&dir, "ca");
    let origin = Origin::echo_tls(ca.server_config(&["127.0.0.1"])).await;
    let upstream = origin.https_url("");
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/good", &upstream, &route_tls(&ca_file, "")),
        route("/bad", &upstream, "")
    )))
    .await;
    let client = support::client::direct();
    let base = format!("http://{}", proxy.addr);

    let (status, _, body) = post(&client, &format!("{base}/good/x"), "trusted").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "trusted");

    // Same upstream, but this route does not trust the test CA (only the webpki roots).
    let (status, proxy_status, body) = post(&client, &format!("{base}/bad/x"), "untrusted").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(proxy_status.contains("tls_certificate_error"), "proxy-status: {proxy_status:?}");
    assert!(body.contains(&origin.addr.to_string()), "body names the upstream: {body:?}");
    assert!(body.contains("did not verify"), "body says why: {body:?}");
    assert_eq!(origin.seen().len(), 1, "the unverified upstream got the request");

    let (status, _, body) = post(&client, &format!("{base}/good/y"), "still fine").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "still fine");
    assert_eq!(origin.seen().len(), 2, "only the two trusted requests reached the origin");
}

#[tokio::test]
async fn https_upstream_uses_h2_by_alpn_and_http1_when_the_route_says_so() {
    let ca = TestCa::new();
    let dir = test_dir("https_upstream_protocol");
    let ca_file = ca.write_cert(&dir, "ca");
    let origin = Origin::echo_tls(ca.server_config(&["127.0.0.1"])).await;
    let upstream = origin.https_url("");
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/auto", &upstream, &route_tls(&ca_file, "")),
        route("/h1", &upstream, &format!("protocol = \"http1\"\n{}", route_tls(&ca_file, "")))
    )))
    .await;
    let client = support::client::direct();
    for path in ["/auto/v", "/h1/v"] {
        let (status, _, body) = post(&client, &format!("http://{}{path}", proxy.addr), path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, path);
    }
    let versions: Vec<_> = origin.seen().iter().map(|seen| seen.version).collect();
    assert_eq!(versions, vec![Version::HTTP_2, Version::HTTP_11]);
}

#[tokio::test]
async fn upstream_server_name_overrides_the_url_host() {
    let ca = TestCa::new();
    let dir = test_dir("upstream_server_name");
    let ca_file = ca.write_cert(&dir, "ca");
    // The certificate names only origin.test, not the 127.0.0.1 of the upstream URL.
    let origin = Origin::echo_tls(ca.server_config(&["origin.test"])).await;
    let upstream = origin.https_url("");
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/named", &upstream, &route_tls(&ca_file, "server_name = \"origin.test\"\n")),
        route("/unnamed", &upstream, &route_tls(&ca_file, ""))
    )))
    .await;
    let client = support::client::direct();
    let (status, _, body) =
        post(&client, &format!("http://{}/named/x", proxy.addr), "by name").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "by name");
    // Without the override the name checked is 127.0.0.1, which the certificate lacks.
    let (status, proxy_status, body) =
        post(&client, &format!("http://{}/unnamed/x", proxy.addr), "by address").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(proxy_status.contains("tls_certificate_error"), "proxy-status: {proxy_status:?}");
    assert_eq!(origin.seen().len(), 1, "{:?}", origin.seen());
}

#[tokio::test]
async fn upstream_mtls_presents_the_route_client_certificate() {
    let ca = TestCa::new();
    let dir = test_dir("upstream_mtls");
    let ca_file = ca.write_cert(&dir, "ca");
    let client_leaf = ca.client_leaf_pem("sluice client").write(&dir, "client");
    let origin =
        Origin::echo_tls(ca.server_config_requiring_client_cert(&["127.0.0.1"], &ca)).await;
    let upstream = origin.https_url("");
    let with_cert = format!(
        "client_certificate = {}\nclient_key = {}\n",
        toml_path(&client_leaf.cert),
        toml_path(&client_leaf.key)
    );
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/with", &upstream, &route_tls(&ca_file, &with_cert)),
        route("/without", &upstream, &route_tls(&ca_file, ""))
    )))
    .await;
    let client = support::client::direct();
    let base = format!("http://{}", proxy.addr);

    let (status, _, body) = post(&client, &format!("{base}/without/x"), "no cert").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, _, body) = post(&client, &format!("{base}/with/x"), "with cert").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "with cert");
    // A route without the certificate never rides on the other route's mTLS connection.
    let (status, _, body) = post(&client, &format!("{base}/without/y"), "no cert again").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let uris: Vec<_> = origin.seen().iter().map(|seen| seen.uri.path().to_owned()).collect();
    assert_eq!(uris, vec!["/x"], "only the request with the client certificate got through");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_untrusted_upstream_certificate() {
    let untrusted = TestCa::new();
    let origin = Origin::echo_tls(untrusted.server_config(&["somewhere.else"])).await;
    let upstream = origin.https_url("");
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}{}",
        route("/insecure", &upstream, "[route.tls]\ninsecure_skip_verify = true\n"),
        route("/verified", &upstream, "")
    )))
    .await;
    let client = support::client::direct();
    let (status, _, body) =
        post(&client, &format!("http://{}/insecure/x", proxy.addr), "anything goes").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "anything goes");
    let (status, proxy_status, body) =
        post(&client, &format!("http://{}/verified/x", proxy.addr), "checked").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(proxy_status.contains("tls_certificate_error"), "proxy-status: {proxy_status:?}");
}

/// How often the reload test's listener re-checks its files.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Handshakes with the proxy until it presents `expected`; each handshake must present either
/// `expected` or `previous`.
async fn wait_for_certificate(
    proxy: &TestProxy,
    trust: &std::sync::Arc<rustls::ClientConfig>,
    previous: &LeafFiles,
    expected: &LeafFiles,
) {
    within(async {
        loop {
            let presented = peer_leaf(proxy.addr, "127.0.0.1", trust.clone()).await;
            if presented == expected.der {
                return;
            }
            assert!(presented == previous.der, "neither the old nor the new certificate");
        }
    })
    .await;
}

#[tokio::test]
async fn certificate_reload_serves_new_handshakes_keeps_open_connections_and_refuses_bad_keys() {
    let (ca1, ca2) = (TestCa::new(), TestCa::new());
    let dir = test_dir("certificate_reload");
    let a = ca1.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "{}{}",
        tls_listener(&a, REVERSE, "reload_interval = \"100ms\"\n"),
        route("/app", &origin.url(""), "")
    ))
    .await;
    let trust_both = client_config_trusting(&[&ca1, &ca2], &[b"http/1.1"]);

    // An HTTP/1.1 keep-alive connection opened before the reload.
    let tls = tls_connect(proxy.addr, "127.0.0.1", trust_both.clone()).await.unwrap();
    assert!(tls.get_ref().1.peer_certificates().unwrap()[0] == a.der);
    let (mut open, connection) =
        within(hyper::client::conn::http1::handshake(TokioIo::new(tls))).await.unwrap();
    tokio::spawn(connection);
    let mut get_on_open_connection = async |path: &str| {
        within(open.ready()).await.expect("the old connection is still open");
        let request = Request::get(path).header("host", "front.test").body(Empty::<Bytes>::new());
        let response = within(open.send_request(request.unwrap())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        within(response.into_body().collect()).await.unwrap();
    };
    get_on_open_connection("/app/before").await;

    // New certificate from another CA: new handshakes get it within the reload interval.
    let b = ca2.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    wait_for_certificate(&proxy, &trust_both, &a, &b).await;
    get_on_open_connection("/app/after-reload").await;

    // A garbage key is refused: handshakes keep getting B. Watch several reload intervals.
    write_atomically(
        &b.key,
        b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZSwgbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    let watching = Instant::now();
    let mut handshakes = 0;
    while watching.elapsed() < 6 * RELOAD_INTERVAL {
        let presented = peer_leaf(proxy.addr, "127.0.0.1", trust_both.clone()).await;
        assert!(presented == b.der, "after a refused reload the old certificate must stay");
        handshakes += 1;
    }
    assert!(handshakes > 0);
    get_on_open_connection("/app/after-refused-reload").await;

    // The reloader survived the refusal: a good pair is picked up again.
    let c = ca1.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    wait_for_certificate(&proxy, &trust_both, &b, &c).await;
    let response =
        within(https_direct(&ca1.cert_pem()).get(format!("https://{}/app/c", proxy.addr)).send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn listener_with_missing_or_mismatched_certificate_files_fails_naming_them() {
    let ca = TestCa::new();
    let dir = test_dir("listener_bad_files");
    let a = ca.leaf_pem(&["a.test"]).write(&dir, "a");
    let b = ca.leaf_pem(&["b.test"]).write(&dir, "b");
    let missing = dir.join("missing.pem");
    let config_path = dir.join("sluice.toml");
    let origin = config_path.to_str().unwrap();
    let config = |cert: &Path, key: &Path| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[listener.tls]\ncertificate = {}\n\
             key = {}\n",
            toml_path(cert),
            toml_path(key)
        )
    };

    let missing_config = config(&missing, &a.key);
    let err =
        Config::from_toml(&missing_config, origin).expect_err("missing cert accepted").to_string();
    assert!(err.contains(&missing.display().to_string()), "names the file: {err}");
    assert!(err.contains("listener[0].tls"), "names the key: {err}");

    // A key that belongs to another certificate.
    let err = Config::from_toml(&config(&a.cert, &b.key), origin)
        .expect_err("mismatched key accepted")
        .to_string();
    assert!(err.contains(&a.cert.display().to_string()), "names the certificate: {err}");
    assert!(err.contains(&b.key.display().to_string()), "names the key file: {err}");
    assert!(err.contains("listener[0].tls"), "names the config key: {err}");

    // `sluice check` agrees.
    std::fs::write(&config_path, missing_config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config", origin])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed a missing certificate: {stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn failed_client_handshakes_do_not_stop_the_tls_listener() {
    let ca = TestCa::new();
    let dir = test_dir("failed_client_handshakes");
    let leaf = ca.leaf_pem(&["127.0.0.1"]).write(&dir, "server");
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "{}{}",
        tls_listener(&leaf, REVERSE, ""),
        route("/app", &origin.url(""), "")
    ))
    .await;

    // Plain HTTP to the TLS port: the connection ends (raw_exchange waits for the close),
    // and no plaintext HTTP response comes back.
    let answer = raw_exchange(proxy.addr, b"GET /app/x HTTP/1.1\r\nHost: front.test\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/"), "plain HTTP was served on a TLS port: {answer:?}");
    // A client that does not trust the certificate aborts its handshake.
    let distrustful = client_config_trusting(&[&TestCa::new()], &[]);
    assert!(tls_connect(proxy.addr, "127.0.0.1", distrustful).await.is_err());
    // A client that connects and says nothing at all.
    drop(within(tokio::net::TcpStream::connect(proxy.addr)).await.unwrap());

    let (status, _, body) =
        post(&https_direct(&ca.cert_pem()), &format!("https://{}/app/y", proxy.addr), "ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert_eq!(origin.only_request().uri, "/y");
}
