//! The SOCKS codec against a real SOCKS client (tokio-socks), over TCP on 127.0.0.1:0: a small
//! server made of `sluice::socks` and the real `Connector` dials the destination, so the reply
//! codes come from real connect failures where a test can provoke one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::{
    AuthConfig, Credential, DestinationRules, ListenerPolicy, Modes, Secret, User,
};
use sluice::policy::auth::Authenticator;
use sluice::policy::destination::DestinationGuard;
use sluice::socks::{Authentication, Reply, negotiate};
use sluice::upstream::connect::Connector;
use support::upstream::{tcp_echo, unanswered_connect};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_socks::Error as SocksError;
use tokio_socks::tcp::{Socks4Stream, Socks5Stream};

/// How the test server behaves.
#[derive(Clone)]
struct Server {
    users: Option<Arc<Authenticator>>,
    connector: Connector,
    /// Answer this instead of connecting.
    forced: Option<Reply>,
}

impl Server {
    fn open() -> Server {
        Server { users: None, connector: connector(None, Duration::from_secs(5)), forced: None }
    }

    async fn start(self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(self.clone().serve(stream));
            }
        });
        addr
    }

    async fn serve(self, mut client: TcpStream) {
        let auth = match &self.users {
            Some(users) => Authentication::Users(users),
            None => Authentication::NotRequired,
        };
        let Ok(request) = negotiate(&mut client, auth, Duration::from_secs(5)).await else {
            return;
        };
        if let Some(reply) = self.forced {
            let _ = request.answer(&mut client, reply, None).await;
            return;
        }
        let destination = &request.destination;
        match self.connector.connect(&destination.host(), destination.port()).await {
            Ok(mut upstream) => {
                let bound = upstream.get_ref().local_addr().ok();
                if request.answer(&mut client, Reply::Succeeded, bound).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            }
            Err(err) => {
                let _ = request.answer(&mut client, Reply::for_connect_error(&err), None).await;
            }
        }
    }
}

fn connector(guard: Option<DestinationGuard>, timeout: Duration) -> Connector {
    let hosts = BTreeMap::from([("echo.test".to_owned(), vec!["127.0.0.1".parse().unwrap()])]);
    Connector::new(timeout, Arc::new(hosts), guard.map(Arc::new))
}

fn users() -> Arc<Authenticator> {
    Arc::new(Authenticator::new(&AuthConfig {
        realm: "sluice".into(),
        users: vec![User {
            name: "alice".into(),
            credential: Credential::Password(Secret::new("wonderland".into())),
        }],
    }))
}

/// Sends 256 KiB through `stream` to the echo origin and checks what comes back by hash.
async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let sent = payload(256 * 1024, 7);
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = async {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let reader = read.read_to_end(&mut back);
    let ((), read) = within(async { tokio::join!(writer, reader) }).await;
    read.unwrap();
    assert_eq!(sha256(&back), sha256(&sent));
}

#[tokio::test]
async fn socks5_tunnels_by_address_and_by_name() {
    let echo = tcp_echo().await;
    let proxy = Server::open().start().await;
    echoes(within(Socks5Stream::connect(proxy, echo)).await.unwrap()).await;
    let by_name = within(Socks5Stream::connect(proxy, ("echo.test", echo.port()))).await.unwrap();
    echoes(by_name).await;
}

#[tokio::test]
async fn socks5_over_ipv6_loopback() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        return; // no IPv6 on this machine
    };
    let echo = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    });
    let proxy = Server::open().start().await;
    echoes(within(Socks5Stream::connect(proxy, echo)).await.unwrap()).await;
}

#[tokio::test]
async fn socks5_with_a_password() {
    let echo = tcp_echo().await;
    let proxy = Server { users: Some(users()), ..Server::open() }.start().await;
    let stream =
        within(Socks5Stream::connect_with_password(proxy, echo, "alice", "wonderland")).await;
    echoes(stream.unwrap()).await;

    let wrong = within(Socks5Stream::connect_with_password(proxy, echo, "alice", "x")).await;
    assert!(matches!(wrong, Err(SocksError::PasswordAuthFailure(1))), "{wrong:?}");
    let anonymous = within(Socks5Stream::connect(proxy, echo)).await;
    assert!(matches!(anonymous, Err(SocksError::NoAcceptableAuthMethods)), "{anonymous:?}");
}

#[tokio::test]
async fn every_failure_reply_reaches_the_client_as_itself() {
    let cases = [
        (Reply::GeneralFailure, "General SOCKS server failure"),
        (Reply::NotAllowed, "Connection not allowed by ruleset"),
        (Reply::NetworkUnreachable, "Network unreachable"),
        (Reply::HostUnreachable, "Host unreachable"),
        (Reply::ConnectionRefused, "Connection refused"),
        (Reply::TtlExpired, "TTL expired"),
        (Reply::CommandNotSupported, "Command not supported"),
        (Reply::AddressTypeNotSupported, "Address type not supported"),
    ];
    for (reply, message) in cases {
        let proxy = Server { forced: Some(reply), ..Server::open() }.start().await;
        let err = within(Socks5Stream::connect(proxy, ("example.org", 443))).await.unwrap_err();
        assert_eq!(err.to_string(), message, "{reply:?}");
    }
}

#[tokio::test]
async fn real_connect_failures_are_told_apart() {
    // Refused: a port nobody listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let proxy = Server::open().start().await;
    let refused = within(Socks5Stream::connect(proxy, closed)).await;
    assert!(matches!(refused, Err(SocksError::ConnectionRefused)), "{refused:?}");

    // Timeout: a destination whose accept queue is full never completes the handshake.
    let (stalled, _guard) = unanswered_connect().await;
    let slow = Server { connector: connector(None, Duration::from_millis(300)), ..Server::open() };
    let proxy = slow.start().await;
    let expired = within(Socks5Stream::connect(proxy, stalled)).await;
    assert!(matches!(expired, Err(SocksError::TtlExpired)), "{expired:?}");

    // Not allowed: the guard refuses the address the name resolves to.
    let policy =
        ListenerPolicy::defaults_for("192.0.2.1:1080".parse().unwrap(), Modes::FORWARD, false);
    let guard = DestinationGuard::new(&policy, &DestinationRules::default());
    let guarded =
        Server { connector: connector(Some(guard), Duration::from_secs(5)), ..Server::open() };
    let proxy = guarded.start().await;
    let echo = tcp_echo().await;
    let denied = within(Socks5Stream::connect(proxy, ("echo.test", echo.port()))).await;
    assert!(matches!(denied, Err(SocksError::ConnectionNotAllowedByRuleset)), "{denied:?}");
}

#[tokio::test]
async fn socks4_and_socks4a_tunnel() {
    let echo = tcp_echo().await;
    let proxy = Server::open().start().await;
    echoes(within(Socks4Stream::connect(proxy, echo)).await.unwrap()).await;
    let by_name = within(Socks4Stream::connect(proxy, ("echo.test", echo.port()))).await;
    echoes(by_name.unwrap()).await;
    let refused = Server { users: Some(users()), ..Server::open() }.start().await;
    assert!(within(Socks4Stream::connect(refused, echo)).await.is_err());
}
