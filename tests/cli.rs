//! The `sluice` binary itself: flags, `check`, config errors, startup log, signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use support::config::write_config;
use support::process::{SIGHUP, SLUICE, Sluice, address_field};
use support::upstream::Origin;
use support::within;
use tokio::io::{AsyncBufReadExt, BufReader};

#[test]
fn version_and_help() {
    let out = Command::new(SLUICE).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(SLUICE).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--listen", "--config", "--workers", "check"] {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
}

#[test]
fn check_prints_the_effective_listeners_of_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/forward.toml");
    let out = Command::new(SLUICE).args(["check", "--config", example]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:8080") && stdout.contains("forward"), "{stdout}");
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let path = write_config(
        "bad-values.toml",
        "[[listener]]\naddress = \"127.0.0.1:99999\"\n\n[timeouts]\nconnect = \"soon\"\n",
    );
    let out =
        Command::new(SLUICE).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:2: listener[0].address:")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:5: timeouts.connect:")), "{stderr}");
}

#[test]
fn bad_config_stops_startup_before_binding() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = write_config(
        "bad-key.toml",
        &format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[limits]\nmax_conections = 5\n"),
    );
    let out = Command::new(SLUICE)
        .args(["--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(":4: limits.max_conections: unknown field"), "{stderr}");
    assert!(!stderr.contains("listening"), "nothing may be bound: {stderr}");
}

#[tokio::test]
async fn serves_logs_its_listener_and_exits_cleanly_on_sigterm() {
    let origin = Origin::echo().await;
    let mut command = support::process::command("info");
    command.args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let sluice = Sluice::spawn(command).await;
    let line = &sluice.listening_line;
    assert!(line.contains("INFO") && line.contains("modes=forward"), "{line}");

    let response = within(support::client::via_proxy(sluice.addr).get(origin.url("/cli")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let via = origin.only_request().headers["via"].to_str().unwrap().to_owned();
    assert!(via.starts_with("1.1 sluice-"), "{via}");
    sluice.stop().await;
}

#[test]
fn check_shows_the_effective_security_defaults_of_each_listener() {
    let path = write_config(
        "policy.toml",
        "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
         [[listener]]\naddress = \"0.0.0.0:3128\"\n\
         [auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"${SLUICE_CLI_TEST_PW}\"\n",
    );
    let out = Command::new(SLUICE)
        .args(["check", "--config", path.to_str().unwrap()])
        .env("SLUICE_CLI_TEST_PW", "not-shown-anywhere")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("forward: auth required, CONNECT ports any, private destinations allowed"),
        "loopback listener is trusted: {stdout}"
    );
    assert!(
        stdout.contains("forward: auth required, CONNECT ports 443, private destinations refused"),
        "public listener is hardened: {stdout}"
    );
    assert!(stdout.contains("users    alice"), "{stdout}");
    assert!(!stdout.contains("not-shown-anywhere"), "the password never appears: {stdout}");
}

/// `sluice --config path --workers 1`, read until both its listeners are bound: the process
/// and the admin listener's address.
async fn start(path: &Path) -> (Sluice, SocketAddr) {
    const ADMIN_LINE: &str = " admin listening address=";
    let mut command = support::process::command("info");
    command.arg("--config").arg(path).args(["--workers", "1"]);
    let mut sluice = Sluice::spawn(command).await;
    let line = match sluice.log.iter().find(|line| line.contains(ADMIN_LINE)) {
        Some(line) => line.clone(),
        None => sluice.line_containing(ADMIN_LINE).await,
    };
    let admin = address_field(&line).unwrap();
    (sluice, admin)
}

/// A config file with one listener at `address` serving route `/v1` to `upstream`, no access
/// log, and the admin listener on an ephemeral port.
fn reverse_file(address: &str, upstream: &str) -> String {
    format!(
        "[[listener]]\naddress = \"{address}\"\nreverse = true\n\n\
         [[route]]\nname = \"models\"\nprefix = \"/v1\"\nupstream = \"{upstream}\"\n\n\
         [access_log]\nenabled = false\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_sigterm_exits_cleanly() {
    use support::upstream::full;
    let a =
        Origin::start(|_request: http::Request<hyper::body::Incoming>| async { full("A") }).await;
    let b =
        Origin::start(|_request: http::Request<hyper::body::Incoming>| async { full("B") }).await;
    let dir = support::tls::test_dir("cli-sighup");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, reverse_file("127.0.0.1:0", &a.url(""))).unwrap();
    let (mut sluice, admin) = start(&path).await;
    let addr = sluice.addr;
    let client = support::client::direct();
    let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
    assert_eq!(within(within(get("/v1/before")).await.unwrap().text()).await.unwrap(), "A");

    support::tls::write_atomically(&path, reverse_file(&addr.to_string(), &b.url("")).as_bytes());
    sluice.signal("HUP", SIGHUP).await;
    let line = sluice.line_containing("reloaded:").await;
    assert!(
        line.ends_with(&format!("reloaded: 1 routes; listening on {addr} (forward+reverse)")),
        "{line}"
    );
    assert_eq!(within(within(get("/v1/after")).await.unwrap().text()).await.unwrap(), "B");
    assert_eq!(a.only_request().uri, "/before");
    assert_eq!(b.only_request().uri, "/after");

    // The admin listener reports the same reload.
    let metrics = support::observe::scrape(&format!("http://{admin}/metrics")).await;
    let applied =
        support::observe::sample(&metrics, "sluice_config_reloads_total{result=\"applied\"}");
    assert_eq!(applied, 1.0);
    sluice.stop().await;
}

#[tokio::test]
async fn startup_log_shows_the_listener_and_route_tables_with_bound_addresses() {
    let dir = support::tls::test_dir("cli-startup-table");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, reverse_file("127.0.0.1:0", "http://127.0.0.1:9/base")).unwrap();
    let (sluice, _admin) = start(&path).await;
    let logged: Vec<&str> = sluice
        .log
        .iter()
        .filter_map(|line| line.split_once(" INFO sluice: "))
        .map(|(_, m)| m)
        .collect();
    let expected = [
        format!("{:<24} {:<16} PROTOCOL", "LISTENER", "MODES"),
        format!("{:<24} {:<16} http (http/1.1)", sluice.addr.to_string(), "forward+reverse"),
        format!("{:<20} {:<24} {:<40} OPTIONS", "ROUTE", "MATCH", "UPSTREAM"),
        format!(
            "{:<20} {:<24} {:<40} strip_prefix upgrades=websocket",
            "models", "/v1", "http://127.0.0.1:9/base"
        ),
    ];
    for line in &expected {
        assert!(logged.contains(&line.as_str()), "missing {line:?} in {:#?}", sluice.log);
    }
    sluice.stop().await;
}

#[test]
fn check_prints_the_tables_and_the_access_log_admin_and_request_id_settings() {
    let dir = support::tls::test_dir("cli-check-sections");
    let path = dir.join("ops.toml");
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:8080\"\nreverse = true\n\n\
         [[route]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9000\"\n\n\
         [access_log]\nformat = \"json\"\npath = \"logs/access.log\"\ndrop_query = true\n\
         headers = [\"user-agent\"]\n\n\
         [admin]\naddress = \"127.0.0.1:9901\"\n\n\
         [request_id]\nheader = \"x-trace-id\"\ntrust_incoming = true\n",
    )
    .unwrap();
    let out = Command::new(SLUICE).arg("check").arg("--config").arg(&path).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let expected = [
        format!("{}: OK\n", path.display()),
        format!(
            "\n{:<24} {:<16} PROTOCOL\n{:<24} {:<16} http (http/1.1)\n",
            "LISTENER", "MODES", "127.0.0.1:8080", "forward+reverse"
        ),
        format!(
            "\n{:<20} {:<24} {:<40} OPTIONS\n{:<20} {:<24} {:<40} strip_prefix upgrades=websocket\n",
            "ROUTE", "MATCH", "UPSTREAM", "api", "/api", "http://127.0.0.1:9000"
        ),
        format!(
            "\naccess_log:\n  json to {}, query strings dropped, headers user-agent\n",
            dir.join("logs/access.log").display()
        ),
        "\nadmin: 127.0.0.1:9901, status history 5m\nrequest_id: header x-trace-id, client ids trusted\n".to_owned(),
    ];
    for text in &expected {
        assert!(stdout.contains(text.as_str()), "missing {text:?} in:\n{stdout}");
    }

    // The defaults: stdout text log, no admin listener, generated ids.
    let plain = write_config("defaults.toml", "[[listener]]\naddress = \"127.0.0.1:8080\"\n");
    let out = Command::new(SLUICE).arg("check").arg("--config").arg(&plain).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "\naccess_log:\n  text to stdout\n\nadmin: off\n\
             request_id: header x-request-id, always generated\n"
        ),
        "{stdout}"
    );
}

/// `admin.allow_remote` guards the config file's admin address; `--admin` cannot bypass it.
#[tokio::test]
async fn admin_flag_with_a_non_loopback_address_is_refused() {
    let mut child = support::process::command("info")
        .args(["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    within(async {
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(!line.contains("admin listening"), "bound on every interface: {line}");
            stderr.push_str(&line);
            stderr.push('\n');
        }
    })
    .await;
    let status = within(child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("\n  command line: --admin: 0.0.0.0:0 is not a loopback address; "),
        "{stderr}"
    );
}

/// Started with a soft open-file limit of 512, sluice raises it to the hard limit and logs the
/// figure.
#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit_and_logged() {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -S -n 512 && exec {} --listen 127.0.0.1:0 --workers 1", SLUICE))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut sluice = Sluice::spawn(command).await;
    let line = match sluice.log.iter().find(|line| line.contains("open file limit")) {
        Some(line) => line.clone(),
        None => sluice.line_containing("open file limit").await,
    };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sluice.pid())).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{open_files}");
    assert!(line.contains(&format!("limit={hard}")) && line.contains("was=512"), "{line}");
    sluice.stop().await;
}
