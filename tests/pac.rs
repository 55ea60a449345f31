//! PAC files as a browser would read them: sluice's generated file is evaluated by an
//! independent PAC implementation (pac-resolver, in a QuickJS sandbox, run by node from
//! `tests/pac-evaluator`; `npm ci --prefix tests/pac-evaluator` installs it), and its answers
//! are compared with the configured rules, for the file as generated and as a listener serves
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sluice::pac::{HostMatch, PacProxy, PacRules, generate};

/// Evaluates `pac` (written to a file in a directory of test `name`) for each of `urls` and returns the answers by URL.
pub fn evaluate(name: &str, pac: &str, urls: &[&str]) -> BTreeMap<String, String> {
    let evaluator = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pac-evaluator");
    assert!(
        evaluator.join("node_modules/pac-resolver").is_dir(),
        "the PAC evaluator is not installed: run `npm ci --prefix tests/pac-evaluator`"
    );
    let dir = support::tls::test_dir(&format!("pac-{name}"));
    let file = dir.join("proxy.pac");
    std::fs::write(&file, pac).unwrap();
    let output = Command::new("node")
        .arg(evaluator.join("evaluate.mjs"))
        .arg(&file)
        .args(urls)
        .output()
        .expect("node runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn host(pattern: &str) -> HostMatch {
    HostMatch::Host(pattern.to_owned())
}

fn net(text: &str) -> HostMatch {
    HostMatch::Network(text.parse().unwrap())
}

#[test]
fn the_generated_file_gives_the_configured_answers() {
    let rules = PacRules {
        direct: vec![
            host("intranet"),
            host("*.corp.example"),
            net("10.0.0.0/8"),
            net("192.168.1.0/24"),
        ],
        proxied: vec![],
        proxies: vec![
            PacProxy::Http("proxy.test:3128".into()),
            PacProxy::Socks5("proxy.test:3128".into()),
        ],
    };
    let via = "PROXY proxy.test:3128; SOCKS5 proxy.test:3128";
    let expected = [
        ("http://intranet/wiki", "DIRECT"),
        ("http://INTRANET/", "DIRECT"),
        ("https://git.corp.example/x", "DIRECT"),
        ("https://a.b.corp.example:8443/", "DIRECT"),
        ("https://corp.example/", via),
        ("https://notcorp.example/", via),
        ("http://10.20.30.40/", "DIRECT"),
        ("http://192.168.1.9:8080/", "DIRECT"),
        ("http://192.168.2.9/", via),
        ("http://11.0.0.1/", via),
        ("https://example.com/", via),
        ("http://[fd00::1]/", via),
    ];
    let urls: Vec<&str> = expected.iter().map(|(url, _)| *url).collect();
    let answers = evaluate("direct", &generate(&rules), &urls);
    for (url, answer) in expected {
        assert_eq!(answers[url], answer, "{url}");
    }
}

#[test]
fn with_proxied_hosts_only_those_go_through_the_proxy() {
    let rules = PacRules {
        direct: vec![host("public.api.example")],
        proxied: vec![host("*.api.example"), host("api.example")],
        proxies: vec![PacProxy::Https("gw.test:443".into())],
    };
    let expected = [
        ("https://api.example/", "HTTPS gw.test:443"),
        ("https://v2.api.example/", "HTTPS gw.test:443"),
        ("https://public.api.example/", "DIRECT"),
        ("https://example.org/", "DIRECT"),
    ];
    let urls: Vec<&str> = expected.iter().map(|(url, _)| *url).collect();
    let answers = evaluate("proxied", &generate(&rules), &urls);
    for (url, answer) in expected {
        assert_eq!(answers[url], answer, "{url}");
    }
}

#[tokio::test]
async fn a_forward_listener_serves_the_configured_file() {
    let config = format!(
        "{}[pac]\ndirect = [\"*.corp.example\", \"10.0.0.0/8\"]\n",
        support::config::listener("", "")
    );
    let proxy = support::proxy::TestProxy::start(&config).await;
    let url = format!("http://{}/proxy.pac", proxy.addr);
    let response = support::within(support::client::direct().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ns-proxy-autoconfig");
    let pac = response.text().await.unwrap();
    // No proxies configured: the address the file was fetched from, for HTTP and SOCKS5.
    let via = format!("PROXY {0}; SOCKS5 {0}", proxy.addr);
    let expected = [
        ("https://git.corp.example/", "DIRECT"),
        ("http://10.1.1.1/", "DIRECT"),
        ("https://example.com/", via.as_str()),
    ];
    let urls: Vec<&str> = expected.iter().map(|(url, _)| *url).collect();
    let answers = evaluate("served", &pac, &urls);
    for (url, answer) in expected {
        assert_eq!(answers[url], answer, "{url}");
    }

    let without = support::proxy::TestProxy::start(&support::config::listener("", "")).await;
    let url = format!("http://{}/proxy.pac", without.addr);
    let response = support::within(support::client::direct().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 400, "no [pac], no file");
}
