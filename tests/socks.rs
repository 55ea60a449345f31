//! SOCKS on sluice's listeners: real clients (curl, tokio-socks) through to HTTP and TLS
//! origins with hashes checked, SOCKS and HTTP clients on one port, every reply code, the
//! listener's policy, the access log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::config::{FORWARD, listener};
use support::observe::{log_lines, request_line, text_fields};
use support::proxy::TestProxy;
use support::tls::{TestCa, test_dir, toml_path};
use support::upstream::{Origin, closed_port, full, tcp_echo, unanswered_connect};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_socks::Error as SocksError;
use tokio_socks::tcp::{Socks4Stream, Socks5Stream};

/// The body every origin in this file serves: 1 MiB, hashed on arrival.
fn blob() -> Vec<u8> {
    payload(1024 * 1024, 19)
}

async fn blob_origin() -> Origin {
    Origin::start(|_request| async { full(blob()) }).await
}

async fn blob_origin_tls(ca: &TestCa) -> Origin {
    Origin::start_tls(ca.server_config(&["origin.test"]), |_request| async { full(blob()) }).await
}

/// Maps `origin.test` (and `private.test`) to loopback, in sluice's static DNS.
const DNS: &str =
    "[dns.hosts]\n\"origin.test\" = [\"127.0.0.1\"]\n\"private.test\" = [\"127.0.0.1\"]\n";

/// Runs curl with `args` and returns the SHA-256 of what it downloaded, or what it said.
async fn curl(args: &[&str]) -> Result<String, String> {
    let dir = test_dir(&format!("curl-{}", sha256(args.join(" ").as_bytes())));
    let out = dir.join("body");
    let output = within(
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "15", "-o"])
            .arg(&out)
            .args(args)
            .output(),
    )
    .await
    .expect("curl runs (apt-get install curl)");
    match output.status.success() {
        true => Ok(sha256(&std::fs::read(&out).unwrap())),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

fn write_ca(ca: &TestCa, dir: &Path) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.cert_pem()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn curl_socks5_and_socks5_hostname_reach_http_and_tls_origins() {
    let proxy = TestProxy::start(&format!("{}{DNS}", listener("", ""))).await;
    let plain = blob_origin().await;
    let ca = TestCa::new();
    let secure = blob_origin_tls(&ca).await;
    let ca_file = write_ca(&ca, &test_dir("socks-curl-ca"));
    let expected = sha256(&blob());
    let socks = proxy.addr.to_string();
    let http_url = format!("http://origin.test:{}/blob", plain.addr.port());
    let https_url = format!("https://origin.test:{}/blob", secure.addr.port());
    let resolve_http = format!("origin.test:{}:127.0.0.1", plain.addr.port());
    let resolve_https = format!("origin.test:{}:127.0.0.1", secure.addr.port());
    let by_address = plain.url("/blob");

    // --socks5: curl resolves and sends an address; --socks5-hostname: sluice resolves.
    let cases: [Vec<&str>; 5] = [
        vec!["--socks5", &socks, &by_address],
        vec!["--socks5", &socks, "--resolve", &resolve_http, &http_url],
        vec!["--socks5-hostname", &socks, &http_url],
        vec!["--socks5", &socks, "--resolve", &resolve_https, "--cacert", &ca_file, &https_url],
        vec!["--socks5-hostname", &socks, "--cacert", &ca_file, &https_url],
    ];
    for args in cases {
        assert_eq!(curl(&args).await, Ok(expected.clone()), "{args:?}");
    }
}

#[tokio::test]
async fn curl_with_a_user_needs_the_right_password() {
    let config = format!(
        "{}{DNS}[auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"wonder:land\"\n",
        listener("", "")
    );
    let proxy = TestProxy::start(&config).await;
    let plain = blob_origin().await;
    let url = format!("http://origin.test:{}/blob", plain.addr.port());
    let socks = proxy.addr.to_string();
    let expected = sha256(&blob());
    let ok = curl(&["--socks5-hostname", &socks, "--proxy-user", "alice:wonder:land", &url]).await;
    assert_eq!(ok, Ok(expected.clone()));
    let with_url = format!("socks5h://alice:wonder%3Aland@{socks}");
    assert_eq!(curl(&["-x", &with_url, &url]).await, Ok(expected));
    let wrong = curl(&["--socks5-hostname", &socks, "--proxy-user", "alice:nope", &url]).await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let anonymous = curl(&["--socks5-hostname", &socks, &url]).await;
    assert!(anonymous.is_err(), "no password, no tunnel");
    // HTTP clients on the same port need the same credentials.
    let status = support::client::via_proxy(proxy.addr).get(plain.url("/x")).send().await;
    assert_eq!(status.unwrap().status(), 407);
}

/// Sends 256 KiB through `stream` to an echo server and checks it comes back intact.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S, seed: u64) {
    let sent = payload(256 * 1024, seed);
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = async {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let ((), read) = within(async { tokio::join!(writer, read.read_to_end(&mut back)) }).await;
    read.unwrap();
    assert_eq!(sha256(&back), sha256(&sent));
}

#[tokio::test]
async fn socks_and_http_clients_interleave_on_one_port() {
    let proxy = TestProxy::start(&format!("{}{DNS}", listener("", ""))).await;
    let echo = tcp_echo().await;
    let origin = blob_origin().await;
    let expected = sha256(&blob());
    let http = support::client::via_proxy(proxy.addr);
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let (http, url) = (http.clone(), origin.url("/blob"));
        let expected = expected.clone();
        let at = proxy.addr;
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => echoes(Socks5Stream::connect(at, echo).await.unwrap(), i).await,
                1 => {
                    let target = ("origin.test", echo.port());
                    echoes(Socks4Stream::connect(at, target).await.unwrap(), i).await
                }
                _ => {
                    let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
                    assert_eq!(sha256(&body), expected);
                }
            }
        }));
    }
    for task in tasks {
        within(task).await.unwrap();
    }
}

/// Opens a raw SOCKS5 connection, sends `request` after the no-auth greeting and returns the
/// reply code.
async fn raw_reply(proxy: SocketAddr, request: &[u8]) -> u8 {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(&[5, 1, 0]).await.unwrap();
    let mut chosen = [0u8; 2];
    within(stream.read_exact(&mut chosen)).await.unwrap();
    assert_eq!(chosen, [5, 0]);
    stream.write_all(request).await.unwrap();
    let mut reply = [0u8; 2];
    within(stream.read_exact(&mut reply)).await.unwrap();
    reply[1]
}

#[tokio::test]
async fn every_reply_code_comes_from_the_real_failure() {
    let config = format!(
        "{}{DNS}[timeouts]\nconnect = \"300ms\"\n[destinations]\ndeny_hosts = [\"*.blocked.test\"]\n",
        listener("", "connect_ports = [1, 2, 3]\n")
    );
    let ports_limited = TestProxy::start(&config).await;
    let proxy = TestProxy::start(&format!(
        "{}{DNS}[timeouts]\nconnect = \"300ms\"\n[destinations]\ndeny_hosts = [\"*.blocked.test\"]\n",
        listener("", "")
    ))
    .await;
    let echo = tcp_echo().await;

    let refused = within(Socks5Stream::connect(proxy.addr, closed_port())).await;
    assert!(matches!(refused, Err(SocksError::ConnectionRefused)), "{refused:?}");

    let port = within(Socks5Stream::connect(ports_limited.addr, echo)).await;
    assert!(matches!(port, Err(SocksError::ConnectionNotAllowedByRuleset)), "{port:?}");

    let denied = within(Socks5Stream::connect(proxy.addr, ("x.blocked.test", 1))).await;
    assert!(matches!(denied, Err(SocksError::ConnectionNotAllowedByRuleset)), "{denied:?}");

    let unknown = within(Socks5Stream::connect(proxy.addr, ("no-such-host.invalid", 80))).await;
    assert!(matches!(unknown, Err(SocksError::HostUnreachable)), "{unknown:?}");

    let (stalled, _guard) = unanswered_connect().await;
    let expired = within(Socks5Stream::connect(proxy.addr, stalled)).await;
    assert!(matches!(expired, Err(SocksError::TtlExpired)), "{expired:?}");

    // What tokio-socks cannot send: BIND, UDP ASSOCIATE, an unknown address type, a bad name.
    assert_eq!(raw_reply(proxy.addr, &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await, 7);
    assert_eq!(raw_reply(proxy.addr, &[5, 3, 0, 1, 127, 0, 0, 1, 0, 80]).await, 7);
    assert_eq!(raw_reply(proxy.addr, &[5, 1, 0, 9, 1, 2]).await, 8);
    assert_eq!(raw_reply(proxy.addr, &[5, 1, 0, 3, 3, b'a', b' ', b'b', 0, 80]).await, 1);
    // Network unreachable needs a route-less network, which a test cannot provoke on
    // loopback alone; its mapping from ENETUNREACH is covered by the reply's unit tests.
}

#[tokio::test]
async fn the_guard_refuses_a_name_resolving_to_a_private_address() {
    // A loopback listener with the policy a public one gets: private destinations refused.
    let hardened = listener("", "allow_private_destinations = false\n");
    let proxy = TestProxy::start(&format!("{hardened}{DNS}")).await;
    let echo = tcp_echo().await;
    let by_name = within(Socks5Stream::connect(proxy.addr, ("private.test", echo.port()))).await;
    assert!(matches!(by_name, Err(SocksError::ConnectionNotAllowedByRuleset)), "{by_name:?}");
    let by_address = within(Socks5Stream::connect(proxy.addr, echo)).await;
    assert!(matches!(by_address, Err(SocksError::ConnectionNotAllowedByRuleset)));
    let socks4 = within(Socks4Stream::connect(proxy.addr, ("private.test", echo.port()))).await;
    assert!(socks4.is_err());
}

#[tokio::test]
async fn a_socks_only_listener_serves_no_http() {
    let proxy = TestProxy::start(&listener("forward = false\nsocks = true\n", "")).await;
    let echo = tcp_echo().await;
    echoes(within(Socks5Stream::connect(proxy.addr, echo)).await.unwrap(), 3).await;
    let answer = support::client::exchange_until_closed(
        proxy.addr,
        format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer, "", "closed without an HTTP answer");
}

#[tokio::test]
async fn socks_can_be_turned_off_on_a_forward_listener() {
    let proxy = TestProxy::start(&listener(FORWARD, "socks = false\n")).await;
    let echo = tcp_echo().await;
    assert!(within(Socks5Stream::connect(proxy.addr, echo)).await.is_err());
}

#[tokio::test]
async fn each_session_is_one_access_log_line_with_mode_socks() {
    let dir = test_dir("socks-access-log");
    let log = dir.join("access.log");
    let config = format!("{}{DNS}[access_log]\npath = {}\n", listener("", ""), toml_path(&log));
    let proxy = TestProxy::start(&config).await;
    let echo = tcp_echo().await;
    echoes(
        within(Socks5Stream::connect(proxy.addr, ("origin.test", echo.port()))).await.unwrap(),
        5,
    )
    .await;
    let refused = closed_port();
    let _ = within(Socks5Stream::connect(proxy.addr, refused)).await;
    let lines = log_lines(&log, 2).await;
    let ok = lines.iter().find(|l| l.contains("origin.test")).unwrap();
    let (_, request, status) = request_line(ok);
    assert_eq!(
        (request.as_str(), status),
        (format!("CONNECT origin.test:{} SOCKS", echo.port()).as_str(), 200)
    );
    let fields = text_fields(ok);
    assert_eq!(fields["mode"], "socks");
    assert_eq!((fields["in"].as_str(), fields["out"].as_str()), ("262144", "262144"));
    assert_eq!(fields["upstream"], echo.to_string());
    assert_eq!(fields["close"], "closed");
    let failed = lines.iter().find(|l| l.contains(&refused.to_string())).unwrap();
    assert_eq!(request_line(failed).2, 502);
    assert_eq!(text_fields(failed)["error"], "connection_refused");
}

#[tokio::test]
async fn refused_credentials_are_an_access_log_line_with_407() {
    let dir = test_dir("socks-refused-credentials");
    let log = dir.join("access.log");
    let config = format!(
        "{}[access_log]\npath = {}\n[auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"right\"\n",
        listener("", ""),
        toml_path(&log)
    );
    let proxy = TestProxy::start(&config).await;
    let echo = tcp_echo().await;
    let wrong =
        within(Socks5Stream::connect_with_password(proxy.addr, echo, "alice", "wrong")).await;
    assert!(wrong.is_err());
    let lines = log_lines(&log, 1).await;
    let (_, _, status) = request_line(&lines[0]);
    assert_eq!(status, 407, "{}", lines[0]);
    let fields = text_fields(&lines[0]);
    assert_eq!(fields["mode"], "socks");
    assert_eq!(fields["error"], "proxy_auth_required");
    assert!(!lines[0].contains(&echo.to_string()), "no destination was named yet");
}

#[tokio::test]
async fn open_socks_listeners_on_public_addresses_are_refused() {
    let err = sluice::config::Config::from_toml(
        "[[listener]]\naddress = \"0.0.0.0:1080\"\nforward = false\nsocks = true\n",
        "test.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("open to anyone"), "{err}");
    let tls = sluice::config::Config::from_toml(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nsocks = true\n[listener.tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n",
        "test.toml",
    );
    assert!(tls.unwrap_err().to_string().contains("SOCKS is not spoken inside TLS"));
}

#[tokio::test]
async fn a_client_that_trickles_its_handshake_is_cut_off() {
    let proxy =
        TestProxy::start(&format!("{}[timeouts]\nrequest_header = \"300ms\"\n", listener("", "")))
            .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The greeting's first byte, then nothing: the listener's head deadline ends it.
    stream.write_all(&[5]).await.unwrap();
    let mut rest = Vec::new();
    let read = within(stream.read_to_end(&mut rest)).await;
    assert!(read.is_err() || rest.is_empty(), "closed without an answer: {rest:?}");
}
