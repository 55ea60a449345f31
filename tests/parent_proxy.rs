//! Tunnels through parent proxies, against real parents on 127.0.0.1:0: a small HTTP CONNECT
//! parent (plain and inside TLS) written here, and a SOCKS5 parent made of sluice's own codec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use rustls::pki_types::ServerName;
use sluice::config::{AuthConfig, Credential, Secret, User};
use sluice::policy::auth::Authenticator;
use sluice::socks::{Authentication, Reply, negotiate};
use sluice::upstream::connect::Connector;
use sluice::upstream::parent::{
    self, Parent, ParentCredentials, ParentError, ParentProtocol, ParentStream, ParentTls,
};
use support::tls::TestCa;
use support::upstream::{black_hole, raw_server, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(5);

fn credentials() -> ParentCredentials {
    ParentCredentials { username: "relay".into(), password: Secret::new("p@ss:word".into()) }
}

fn parent(
    address: SocketAddr,
    protocol: ParentProtocol,
    with: Option<ParentCredentials>,
) -> Parent {
    Parent { address: address.to_string().parse().unwrap(), protocol, credentials: with }
}

/// Reads a request head byte by byte, so nothing after it is consumed.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(_) => break,
        }
    }
    String::from_utf8(head).unwrap()
}

/// An HTTP CONNECT parent on `stream`: checks the credentials when `wanted` (407 otherwise),
/// dials the target, answers 200 and relays. Returns the head it received.
async fn serve_connect<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, wanted: Option<String>) {
    let head = read_head(&mut stream).await;
    let target = head.split(' ').nth(1).unwrap().to_owned();
    assert!(head.contains(&format!("\r\nHost: {target}\r\n")), "{head}");
    if let Some(wanted) = wanted
        && !head.contains(&format!("\r\nProxy-Authorization: Basic {wanted}\r\n"))
    {
        let _ = stream.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = stream.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
}

fn basic(credentials: &ParentCredentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password.expose());
    base64::engine::general_purpose::STANDARD.encode(pair)
}

async fn http_parent(wanted: Option<String>) -> SocketAddr {
    raw_server(move |stream| serve_connect(stream, wanted.clone())).await
}

/// A parent that answers every connection with `answer` and then echoes.
async fn scripted_parent(answer: &'static [u8]) -> SocketAddr {
    raw_server(move |mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(answer).await;
        let (mut read, mut write) = stream.into_split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
    .await
}

/// Sends 256 KiB through `stream` to an echo origin and checks what comes back by hash.
async fn echoes<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let sent = payload(256 * 1024, 11);
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

async fn open(
    at: SocketAddr,
    parent: &Parent,
    target: SocketAddr,
) -> Result<parent::ParentTunnel, ParentError> {
    let stream = TcpStream::connect(at).await.unwrap();
    let host = target.ip().to_string();
    within(parent::open(stream, parent, &host, target.port(), DEADLINE)).await
}

#[tokio::test]
async fn http_parent_with_credentials_tunnels_to_the_origin() {
    let echo = tcp_echo().await;
    let at = http_parent(Some(basic(&credentials()))).await;
    let tunnel = open(at, &parent(at, ParentProtocol::Http, Some(credentials())), echo).await;
    echoes(tunnel.unwrap()).await;
}

#[tokio::test]
async fn http_parent_refusals_are_typed() {
    let echo = tcp_echo().await;
    let at = http_parent(Some(basic(&credentials()))).await;
    let err = open(at, &parent(at, ParentProtocol::Http, None), echo).await.unwrap_err();
    assert!(
        matches!(err, ParentError::Status { status } if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED)
    );
    assert!(err.blames_parent(), "another parent may take these credentials");

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let at = http_parent(None).await;
    let err = open(at, &parent(at, ParentProtocol::Http, None), closed).await.unwrap_err();
    assert!(matches!(err, ParentError::Status { status } if status == StatusCode::BAD_GATEWAY));
    assert!(!err.blames_parent(), "the destination failed, not the parent");
}

#[tokio::test]
async fn bytes_after_the_parents_answer_belong_to_the_tunnel() {
    let at = scripted_parent(b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-early\r\n").await;
    let echo = tcp_echo().await;
    let mut tunnel = open(at, &parent(at, ParentProtocol::Http, None), echo).await.unwrap();
    let mut banner = [0u8; 15];
    within(tunnel.read_exact(&mut banner)).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-early\r\n");
    tunnel.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within(tunnel.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping");

    let at = scripted_parent(b"HTTP/1.1 200 OK\r\n\r\nearly").await;
    let tunnel = open(at, &parent(at, ParentProtocol::Http, None), echo).await.unwrap();
    let (stream, early) = tunnel.into_parts();
    assert!(matches!(stream, ParentStream::Plain(_)));
    assert_eq!(&early[..], b"early");
}

#[tokio::test]
async fn broken_parents_fail_with_their_own_error() {
    let echo = tcp_echo().await;
    let garbage = scripted_parent(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let err = open(garbage, &parent(garbage, ParentProtocol::Http, None), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::Malformed(_)), "{err:?}");

    let endless = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        loop {
            if stream.write_all(b"X-Filler: 0123456789abcdef\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;
    let err = open(endless, &parent(endless, ParentProtocol::Http, None), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::HeadTooLarge), "{err:?}");

    let hangs_up = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
    })
    .await;
    let err =
        open(hangs_up, &parent(hangs_up, ParentProtocol::Http, None), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::Closed), "{err:?}");

    let silent = black_hole().await;
    let stream = TcpStream::connect(silent).await.unwrap();
    let quick = Duration::from_millis(200);
    let silent_parent = parent(silent, ParentProtocol::Http, None);
    let err = within(parent::open(stream, &silent_parent, "127.0.0.1", echo.port(), quick))
        .await
        .unwrap_err();
    assert!(matches!(err, ParentError::Timeout { after } if after == quick), "{err:?}");
    assert!(err.blames_parent());
}

async fn https_parent(ca: &TestCa) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["parent.test"]));
    raw_server(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                serve_connect(tls, None).await;
            }
        }
    })
    .await
}

fn tls_to(ca: &TestCa) -> ParentProtocol {
    ParentProtocol::Https(ParentTls {
        config: ca.client_config(),
        server_name: ServerName::try_from("parent.test").unwrap(),
    })
}

#[tokio::test]
async fn https_parent_tunnels_inside_tls() {
    let ca = TestCa::new();
    let at = https_parent(&ca).await;
    let echo = tcp_echo().await;
    let tunnel = open(at, &parent(at, tls_to(&ca), None), echo).await.unwrap();
    echoes(tunnel).await;

    let stranger = TestCa::new();
    let err = open(at, &parent(at, tls_to(&stranger), None), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::Tls(_)), "{err:?}");
    assert!(err.blames_parent());
}

/// A SOCKS5 parent made of sluice's codec, requiring `relay`'s password.
async fn socks_parent() -> SocketAddr {
    let users = Arc::new(Authenticator::new(&AuthConfig {
        realm: "parent".into(),
        users: vec![User {
            name: "relay".into(),
            credential: Credential::Password(Secret::new("p@ss:word".into())),
        }],
    }));
    let hosts = BTreeMap::from([("echo.test".to_owned(), vec!["127.0.0.1".parse().unwrap()])]);
    let connector = Connector::new(DEADLINE, Arc::new(hosts), None);
    raw_server(move |mut client| {
        let users = users.clone();
        let connector = connector.clone();
        async move {
            let auth = Authentication::Users(&users);
            let Ok(request) = negotiate(&mut client, auth, DEADLINE).await else { return };
            let destination = &request.destination;
            match connector.connect(&destination.host(), destination.port()).await {
                Ok(mut upstream) => {
                    let bound = upstream.get_ref().local_addr().ok();
                    let _ = request.answer(&mut client, Reply::Succeeded, bound).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(err) => {
                    let _ = request.answer(&mut client, Reply::for_connect_error(&err), None).await;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn socks5_parent_tunnels_by_address_and_by_name() {
    let at = socks_parent().await;
    let echo = tcp_echo().await;
    let socks = parent(at, ParentProtocol::Socks5, Some(credentials()));
    echoes(open(at, &socks, echo).await.unwrap()).await;
    let stream = TcpStream::connect(at).await.unwrap();
    let by_name = within(parent::open(stream, &socks, "echo.test", echo.port(), DEADLINE)).await;
    echoes(by_name.unwrap()).await;
}

#[tokio::test]
async fn socks5_parent_refusals_are_typed() {
    let at = socks_parent().await;
    let echo = tcp_echo().await;
    let err = open(at, &parent(at, ParentProtocol::Socks5, None), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::NoAcceptableMethod), "{err:?}");

    let wrong = ParentCredentials { username: "relay".into(), password: Secret::new("no".into()) };
    let err = open(at, &parent(at, ParentProtocol::Socks5, Some(wrong)), echo).await.unwrap_err();
    assert!(matches!(err, ParentError::Credentials), "{err:?}");
    assert!(err.blames_parent());

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let socks = parent(at, ParentProtocol::Socks5, Some(credentials()));
    let err = open(at, &socks, closed).await.unwrap_err();
    assert!(matches!(err, ParentError::SocksReply { code: 5 }), "{err:?}");
    assert!(!err.blames_parent(), "the destination refused, not the parent");
}
