//! Config values that `sluice check` once accepted but that crashed, exhausted or misdirected
//! the running proxy: counts, rates and durations past their bounds, upstream ports out of
//! range, certificate paths that are not small regular files, header rules on fields sluice
//! frames itself, and prefixes and names that could never match. Each is refused when the
//! config is loaded, naming the key and line, and a reload refuses it just as start-up does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use http::StatusCode;
use sluice::config::source::Overrides;
use sluice::config::{Config, ConfigError, ConfigIssue};
use support::client::{direct, via_proxy};
use support::proxy::TestProxy;
use support::tls::{TestCa, test_dir, toml_path, write_atomically};
use support::upstream::Origin;
use support::within;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Every issue of a config that must be refused.
fn issues(toml: &str) -> Vec<ConfigIssue> {
    match Config::from_toml(toml, "test.toml") {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        other => panic!("expected the config to be refused: {other:?}\n{toml}"),
    }
}

/// Loads `toml` on its own thread and fails if that takes more than a few seconds, so a
/// config that blocks or reads without end fails the test instead of hanging it.
fn load_bounded(toml: String) -> Result<Config, ConfigError> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(Config::from_toml(&toml, "test.toml"));
    });
    result.recv_timeout(Duration::from_secs(5)).expect("loading the config did not return")
}

/// The values that aborted the process at start, on the first request, or that never served.
const CRASHING: [(&str, &str, &str); 4] = [
    (
        "[limits]\nmax_connections = 9223372036854775807\n",
        "2: limits.max_connections",
        "must be at most 1000000",
    ),
    (
        "[limits]\nmax_request_headers = 4611686018427387904\n",
        "2: limits.max_request_headers",
        "must be at most 10000",
    ),
    (
        "[rate_limit.per_ip]\nrate = 1e-20\nburst = 1\n",
        "2: rate_limit.per_ip.rate",
        "must be from 0.000001 to 1000000 requests per second",
    ),
    ("workers = 100000000\n", "1: workers", "must be at most 1024"),
];

#[test]
fn check_refuses_the_values_that_crashed_the_process_naming_key_and_line() {
    let dir = test_dir("config-hardening-check");
    for (i, (toml, located, message)) in CRASHING.iter().enumerate() {
        let path = dir.join(format!("crash-{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(SLUICE)
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}: {stderr}");
        let expected = format!("{}:{located}: {message}", path.display());
        assert!(stderr.contains(&expected), "{toml}: expected {expected:?} in {stderr}");
    }
}

/// A forward proxy on loopback with an admin listener, and `extra` on top.
fn reloadable(extra: &str) -> String {
    format!(
        "{extra}[[listener]]\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [access_log]\nenabled = false\n"
    )
}

#[tokio::test]
async fn a_reload_refuses_what_start_up_refuses_and_the_proxy_keeps_serving() {
    let origin = Origin::start(|_| async { support::upstream::full("served") }).await;
    let dir = test_dir("config-hardening-reload");
    let path = dir.join("sluice.toml");
    write_atomically(&path, reloadable("").as_bytes());
    let proxy = TestProxy::from_file(&path).await;
    let client = via_proxy(proxy.addr);
    let fetch = || async {
        let response = within(client.get(origin.url("/")).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(within(response.text()).await.unwrap(), "served");
    };
    fetch().await;
    for (toml, located, message) in CRASHING {
        // The check-then-reload procedure once applied these and aborted on the next
        // connection; the workers line must come first in the file, so each goes on top.
        write_atomically(&path, reloadable(toml).as_bytes());
        let response = within(direct().post(proxy.admin_url("/reload")).send()).await.unwrap();
        let status = response.status();
        let body = within(response.text()).await.unwrap();
        assert_ne!(status, StatusCode::OK, "{toml}: {body}");
        let key = located.split_once(": ").unwrap().1;
        assert!(body.contains(&format!("{key}: {message}")), "{toml}: {body}");
        fetch().await;
    }
    proxy.shutdown().await;
}

#[test]
fn an_upstream_port_out_of_range_is_an_error_not_the_default_port() {
    let found = issues("[[route]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:99999\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "route[0].upstream");
    assert_eq!(found[0].line, Some(3));
    assert!(found[0].message.contains("has port `99999`"), "{}", found[0].message);

    // `--route` goes through the same parser.
    let cli =
        Overrides { routes: vec!["/api=http://127.0.0.1:99999".to_owned()], ..Default::default() };
    let err = cli.apply(&mut Config::default(), false).unwrap_err().to_string();
    assert!(
        err.contains(
            "--route /api=http://127.0.0.1:99999: `http://127.0.0.1:99999` has port `99999`"
        ),
        "{err}"
    );
}

/// A listener on loopback terminating TLS with `certificate` and `key`, and a route whose
/// upstream trusts the CA file `ca`.
fn tls_config(certificate: &Path, key: &Path, ca: &Path) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.tls]\ncertificate = {}\nkey = {}\n\n\
         [[route]]\nprefix = \"/\"\nupstream = \"https://127.0.0.1:1\"\n[route.tls]\nca = [{}]\n",
        toml_path(certificate),
        toml_path(key),
        toml_path(ca)
    )
}

/// A named pipe at `path` that nobody writes to.
fn fifo(path: &Path) -> PathBuf {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    path.to_owned()
}

#[test]
fn certificate_key_and_ca_files_must_be_small_regular_files() {
    let dir = test_dir("config-hardening-files");
    let ca = TestCa::new();
    let leaf = ca.leaf_pem(&["localhost"]).write(&dir, "leaf");
    let ca_file = ca.write_cert(&dir, "ca");
    assert!(load_bounded(tls_config(&leaf.cert, &leaf.key, &ca_file)).is_ok());

    // /dev/zero never ends: it was read until memory ran out.
    let Err(ConfigError::Invalid { issues, .. }) =
        load_bounded(tls_config(Path::new("/dev/zero"), &leaf.key, &ca_file))
    else {
        panic!("/dev/zero accepted as a certificate")
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "listener[0].tls");
    assert_eq!(issues[0].line, Some(4));
    assert_eq!(
        issues[0].message,
        "cannot read /dev/zero: it is a character device, not a regular file"
    );

    // A FIFO nobody writes to blocked loading for ever, as a key and as a CA file.
    let key_fifo = fifo(&dir.join("key-fifo.pem"));
    let ca_fifo = fifo(&dir.join("ca-fifo.pem"));
    let Err(ConfigError::Invalid { issues, .. }) =
        load_bounded(tls_config(&leaf.cert, &key_fifo, &ca_fifo))
    else {
        panic!("FIFOs accepted as key and CA files")
    };
    let found: Vec<_> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(found, [("listener[0].tls", Some(4)), ("route[0].tls.ca", Some(11))]);
    for (issue, file) in issues.iter().zip([&key_fifo, &ca_fifo]) {
        let expected = format!("cannot read {}: it is a FIFO, not a regular file", file.display());
        assert_eq!(issue.message, expected);
    }

    // More than 1 MiB is no PEM file sluice needs.
    let huge = dir.join("huge.pem");
    std::fs::File::create(&huge).unwrap().set_len(1024 * 1024 + 1).unwrap();
    let Err(ConfigError::Invalid { issues, .. }) =
        load_bounded(tls_config(&leaf.cert, &leaf.key, &huge))
    else {
        panic!("a 1 MiB CA file accepted")
    };
    assert_eq!(issues[0].key, "route[0].tls.ca");
    assert!(issues[0].message.contains("larger than 1048576 bytes"), "{}", issues[0].message);
}

#[test]
fn header_rules_and_the_request_id_may_not_name_framing_or_hop_by_hop_fields() {
    // This rule truncated a 42-byte POST to 5 bytes at the origin.
    let found = issues(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n\
         [route.headers.request]\nset = { content-length = \"5\" }\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "route[0].headers.request.set.content-length");
    assert_eq!(found[0].line, Some(5));
    assert!(found[0].message.contains("header rules may not set, append or remove it"));

    let found = issues("[headers.response]\nappend = { transfer-encoding = \"chunked\" }\n");
    assert_eq!(found[0].key, "headers.response.append.transfer-encoding");

    let found = issues("[headers.request]\nremove = [\"connection\", \"x-fine\"]\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "headers.request.remove");

    // This put the request id into Content-Length.
    let found = issues("[request_id]\nheader = \"content-length\"\n");
    assert_eq!(found[0].key, "request_id.header");
    assert_eq!(found[0].line, Some(2));
    assert!(found[0].message.ends_with("it cannot carry the request id"));
}

#[test]
fn prefixes_and_server_names_that_could_never_match_are_refused() {
    for prefix in ["/a/../b", "/a/%2e%2e/b", "/a/./b"] {
        let found =
            issues(&format!("[[route]]\nprefix = {prefix:?}\nupstream = \"http://127.0.0.1:1\"\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "route[0].prefix");
        assert_eq!(found[0].line, Some(2));
    }

    let dir = test_dir("config-hardening-sni");
    let leaf = TestCa::new().leaf_pem(&["a.example"]).write(&dir, "leaf");
    let sni = |names: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.tls]\ncertificate = {cert}\n\
             key = {key}\n[[listener.tls.sni]]\nnames = {names}\n\
             certificate = {cert}\nkey = {key}\n",
            cert = toml_path(&leaf.cert),
            key = toml_path(&leaf.key)
        )
    };
    for bad in ["\"\"", "\"*.*.x\"", "\"a b\"", "\"10.0.0.1\"", "\"x*.example\""] {
        let found = issues(&sni(&format!("[\"ok.example\", {bad}]")));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert_eq!(found[0].key, "listener[0].tls.sni[0].names");
        assert_eq!(found[0].line, Some(7));
        assert!(found[0].message.starts_with(&format!("`{}`", bad.trim_matches('"'))));
    }
    let config = Config::from_toml(&sni("[\"*.Example\", \"b.example.\"]"), "test.toml").unwrap();
    let names = &config.listeners[0].tls.as_ref().unwrap().sni[0].names;
    assert_eq!(names, &["*.example", "b.example"]);

    let found = issues("[dns]\nhosts = { \"a b\" = [\"10.0.0.1\"] }\n");
    assert_eq!(found[0].key, "dns.hosts.a b");
    let found = issues("[destinations]\ndeny_hosts = [\"ok.example\", \"*.*.x\", \"\"]\n");
    let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["destinations.deny_hosts", "destinations.deny_hosts"]);
}
