//! The `sluice` binary itself: flags, `check`, config errors, startup log, signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::upstream::Origin;
use support::within;
use tokio::io::{AsyncBufReadExt, BufReader};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

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
    let mut child = tokio::process::Command::new(SLUICE)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = within(async {
        loop {
            let line = lines.next_line().await.unwrap().expect("sluice exited early");
            if line.contains("listening") {
                return line;
            }
        }
    })
    .await;
    assert!(line.contains("INFO") && line.contains("modes=forward"), "{line}");
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .unwrap()
        .to_owned();

    let response =
        within(support::client::via_proxy(addr.parse().unwrap()).get(origin.url("/cli")).send())
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(origin.only_request().headers["via"], "1.1 sluice");

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
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
