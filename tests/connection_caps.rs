//! The per-address connection cap's defaults: a loopback listener has none, so one address (a
//! load test, local tools) may open as many connections as `limits.max_connections` allows.
//! With the old default of 1,024 on every listener, the 1,025th connection got a 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use support::tls::test_dir;
use support::upstream::{Origin, full};
use support::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Keep-alive connections opened from 127.0.0.1, all held open to the end: the default
/// `limits.max_connections`.
const CONNECTIONS: usize = 10_000;
/// Connections being set up at once.
const PARALLEL: usize = 32;
/// Descriptors each process needs beyond one per connection (runtime, origin, pipes).
const SPARE_DESCRIPTORS: u64 = 512;
/// The bound on the whole exchange; on a loaded two-core machine it takes well under this.
const ALL_SERVED_WITHIN: Duration = Duration::from_secs(240);

/// Raises this process's soft descriptor limit to `wanted` when it is lower and the hard limit
/// allows; a child started afterwards inherits it. Returns the soft and hard limits in force.
#[allow(unsafe_code)]
fn raise_descriptor_limit(wanted: u64) -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (0, 0);
    }
    if limit.rlim_cur < wanted && limit.rlim_max >= wanted {
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one `rlimit` through a pointer to a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = wanted;
        }
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// Reads one response (head and `Content-Length` body) and returns its status code.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0, "connection closed before a whole response: {received:?}");
        received.extend_from_slice(&chunk[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        if received.len() >= end + 4 + length {
            return head.split(' ').nth(1).unwrap().parse().unwrap();
        }
    }
}

/// Opens a connection to `proxy`, sends one forward-proxy request for `origin` and returns the
/// connection, still open, with the response's status.
async fn served(proxy: SocketAddr, origin: SocketAddr) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let status = within(read_response(&mut stream)).await;
    (stream, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keep_alive_connections_from_one_address_are_all_served() {
    // sluice runs as its own process: in this one, the client and server ends of every
    // connection would need twice the descriptors.
    let wanted = CONNECTIONS as u64 + SPARE_DESCRIPTORS;
    let (soft, hard) = raise_descriptor_limit(wanted);
    if soft < wanted {
        eprintln!(
            "skipped: {CONNECTIONS} connections need {wanted} file descriptors per process, \
             and the limit is {soft} (hard limit {hard})"
        );
        return;
    }
    let origin = Origin::start(|_| async { full("ok") }).await;
    let dir = test_dir("connection-caps");
    let config = dir.join("sluice.toml");
    // A default loopback listener; the access log is off so 10,000 lines do not slow it down.
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[access_log]\nenabled = false\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(SLUICE)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let proxy: SocketAddr = within(async {
        loop {
            let line = log.next_line().await.unwrap().expect("sluice exited before listening");
            if let Some(field) = line.split_whitespace().find_map(|f| f.strip_prefix("address=")) {
                return field.parse().unwrap();
            }
        }
    })
    .await;
    // Keep reading the log so sluice never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });

    let outcome = tokio::time::timeout(ALL_SERVED_WITHIN, async {
        let gate = Arc::new(Semaphore::new(PARALLEL));
        let mut opening = JoinSet::new();
        for _ in 0..CONNECTIONS {
            let permit = gate.clone().acquire_owned().await.unwrap();
            opening.spawn(async move {
                let result = served(proxy, origin.addr).await;
                drop(permit);
                result
            });
        }
        let mut held = Vec::with_capacity(CONNECTIONS);
        let mut refused = 0;
        while let Some(result) = opening.join_next().await {
            let (stream, status) = result.unwrap();
            if status != 200 {
                refused += 1;
            }
            held.push(stream);
        }
        (held, refused)
    })
    .await;
    let (held, refused) = outcome.expect("10,000 connections were not served in time");
    assert_eq!(refused, 0, "{refused} of {CONNECTIONS} connections from 127.0.0.1 were refused");
    assert_eq!(held.len(), CONNECTIONS);
    drop(held);
    child.kill().await.unwrap();
}

#[test]
fn check_shows_the_default_cap_of_each_listener_kind() {
    let dir = test_dir("connection-caps-check");
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
         [[listener]]\naddress = \"0.0.0.0:8081\"\nforward = false\nreverse = true\n\
         [[listener]]\naddress = \"0.0.0.0:3128\"\n\
         [[listener]]\naddress = \"0.0.0.0:3129\"\nmax_connections_per_ip = 0\n\
         [auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"pw\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(SLUICE)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let caps: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("max connections per client address "))
        .collect();
    assert_eq!(caps, ["unlimited", "unlimited", "4096", "unlimited"], "{stdout}");
}
