//! Handshake tests over in-memory streams: the bytes a client sends, the bytes sluice answers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::config::{AuthConfig, Credential, Secret, User};

const DEADLINE: Duration = Duration::from_secs(5);

fn users() -> Authenticator {
    Authenticator::new(&AuthConfig {
        realm: "sluice".into(),
        users: vec![User {
            name: "alice".into(),
            credential: Credential::Password(Secret::new("s3cret:x".into())),
        }],
    })
}

/// Runs `negotiate` against a client that sends `sent` (then waits), and returns the outcome
/// with everything sluice wrote back.
async fn exchange(
    sent: &[u8],
    auth: Authentication<'_>,
) -> (Result<Negotiated, HandshakeError>, Vec<u8>) {
    let (mut client, mut server): (DuplexStream, DuplexStream) = duplex(1024);
    client.write_all(sent).await.unwrap();
    client.shutdown().await.unwrap();
    let outcome = negotiate(&mut server, auth, DEADLINE).await;
    drop(server);
    let mut answered = Vec::new();
    client.read_to_end(&mut answered).await.unwrap();
    (outcome, answered)
}

fn name(host: &str, port: u16) -> Destination {
    Destination::Name { host: host.into(), port }
}

#[tokio::test]
async fn socks5_connect_by_ipv4_ipv6_and_name() {
    let cases: [(&[u8], Destination); 3] = [
        (
            &[5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 7, 0x01, 0xbb],
            Destination::Address("192.0.2.7:443".parse().unwrap()),
        ),
        (
            &[5, 1, 0, 5, 1, 0, 4, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80],
            Destination::Address("[2001:db8::1]:80".parse().unwrap()),
        ),
        (
            &[
                5, 2, 2, 0, 5, 1, 0, 3, 11, b'E', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o',
                b'r', b'g', 0x1f, 0x90,
            ],
            name("example.org", 8080),
        ),
    ];
    for (sent, destination) in cases {
        let (outcome, answered) = exchange(sent, Authentication::NotRequired).await;
        let negotiated = outcome.unwrap();
        assert_eq!(negotiated.destination, destination);
        assert_eq!((negotiated.version, negotiated.user), (Version::Socks5, None));
        assert_eq!(answered, [5, 0], "no authentication chosen");
    }
}

#[tokio::test]
async fn replies_carry_every_code_and_the_bound_address() {
    for reply in Reply::ALL {
        let (mut client, mut server) = duplex(1024);
        client.write_all(&[5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 22]).await.unwrap();
        let negotiated =
            negotiate(&mut server, Authentication::NotRequired, DEADLINE).await.unwrap();
        negotiated
            .answer(&mut server, reply, Some("127.0.0.1:40000".parse().unwrap()))
            .await
            .unwrap();
        negotiated.answer(&mut server, reply, Some("[::1]:2".parse().unwrap())).await.unwrap();
        drop(server);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        let mut expected = vec![5, 0, 5, reply.code(), 0, 1, 127, 0, 0, 1, 0x9c, 0x40];
        expected.extend([5, reply.code(), 0, 4]);
        expected.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        expected.extend([0, 2]);
        assert_eq!(answered, expected, "{reply:?}");
    }
}

#[tokio::test]
async fn a_failure_reply_without_an_address_is_all_zeros() {
    let (mut client, mut server) = duplex(1024);
    client.write_all(&[5, 1, 0, 5, 1, 0, 3, 1, b'a', 0, 1]).await.unwrap();
    let negotiated = negotiate(&mut server, Authentication::NotRequired, DEADLINE).await.unwrap();
    negotiated.answer(&mut server, Reply::ConnectionRefused, None).await.unwrap();
    drop(server);
    let mut answered = Vec::new();
    client.read_to_end(&mut answered).await.unwrap();
    assert_eq!(answered, [5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn bind_and_udp_associate_are_not_supported() {
    for command in [2u8, 3, 9] {
        let sent = [5, 1, 0, 5, command, 0, 1, 192, 0, 2, 1, 0, 53];
        let (outcome, answered) = exchange(&sent, Authentication::NotRequired).await;
        assert!(matches!(outcome, Err(HandshakeError::Command(c)) if c == command));
        assert_eq!(answered, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}

#[tokio::test]
async fn unknown_address_types_are_not_supported() {
    let (outcome, answered) =
        exchange(&[5, 1, 0, 5, 1, 0, 2, 1, 2], Authentication::NotRequired).await;
    assert!(matches!(outcome, Err(HandshakeError::AddressType(2))));
    assert_eq!(answered, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn names_that_cannot_be_hosts_get_a_general_failure() {
    for bad in [&b""[..], b"a b", b"x/y"] {
        let mut sent = vec![5, 1, 0, 5, 1, 0, 3, bad.len() as u8];
        sent.extend(bad);
        sent.extend([0, 80]);
        let (outcome, answered) = exchange(&sent, Authentication::NotRequired).await;
        assert!(matches!(outcome, Err(HandshakeError::Name)), "{bad:?}");
        assert_eq!(answered, [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}

#[tokio::test]
async fn users_required_means_username_password_or_nothing() {
    let users = users();
    let auth = Authentication::Users(&users);
    let (outcome, answered) = exchange(&[5, 1, 0], auth).await;
    assert!(matches!(outcome, Err(HandshakeError::NoAcceptableMethod)));
    assert_eq!(answered, [5, 0xff]);
    let (outcome, answered) = exchange(&[5, 0], auth).await;
    assert!(matches!(outcome, Err(HandshakeError::NoAcceptableMethod)));
    assert_eq!(answered, [5, 0xff]);
}

fn password_attempt(user: &[u8], password: &[u8]) -> Vec<u8> {
    let mut sent = vec![5, 1, 2, 1, user.len() as u8];
    sent.extend(user);
    sent.push(password.len() as u8);
    sent.extend(password);
    sent.extend([5, 1, 0, 3, 4, b'h', b'o', b's', b't', 0, 80]);
    sent
}

#[tokio::test]
async fn the_right_password_passes_and_names_the_user() {
    let users = users();
    let (outcome, answered) =
        exchange(&password_attempt(b"alice", b"s3cret:x"), Authentication::Users(&users)).await;
    let negotiated = outcome.unwrap();
    assert_eq!(negotiated.user.as_deref(), Some("alice"));
    assert_eq!(negotiated.destination, name("host", 80));
    assert_eq!(answered, [5, 2, 1, 0]);
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_status_1() {
    let users = users();
    let attempts: [(&[u8], &[u8]); 5] = [
        (b"alice", b"wrong"),
        (b"bob", b"s3cret:x"),
        (b"alice:s3cret", b"x"),
        (b"", b""),
        (b"alice", &[0xff, 0xfe]),
    ];
    for (user, password) in attempts {
        let (outcome, answered) =
            exchange(&password_attempt(user, password), Authentication::Users(&users)).await;
        assert!(matches!(outcome, Err(HandshakeError::Credentials)), "{user:?}");
        assert_eq!(answered, [5, 2, 1, 1], "nothing more after a refusal");
    }
}

#[tokio::test]
async fn an_open_listener_lets_a_password_only_client_through_unnamed() {
    let (outcome, answered) =
        exchange(&password_attempt(b"anyone", b"anything"), Authentication::NotRequired).await;
    let negotiated = outcome.unwrap();
    assert_eq!(negotiated.user, None);
    assert_eq!(answered, [5, 2, 1, 0]);
}

#[tokio::test]
async fn protocol_errors_close_without_a_reply() {
    let cases: [(&[u8], &str); 4] = [
        (&[6, 1, 0], "version"),
        (b"GET / HTTP/1.1\r\n", "version"),
        (&[5, 1, 2, 9, 1, b'a', 1, b'b'], "malformed"),
        (&[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80], "malformed"),
    ];
    for (sent, kind) in cases {
        let (outcome, answered) = exchange(sent, Authentication::NotRequired).await;
        assert_eq!(outcome.unwrap_err().as_str(), kind, "{sent:?}");
        assert!(answered.len() <= 2, "at most the method choice: {answered:?}");
    }
}

#[tokio::test]
async fn a_client_closing_mid_handshake_is_an_io_error() {
    let (outcome, _) = exchange(&[5, 3, 0], Authentication::NotRequired).await;
    assert!(matches!(outcome, Err(HandshakeError::Io(_))));
}

#[tokio::test(start_paused = true)]
async fn a_client_trickling_bytes_is_cut_off_at_the_deadline() {
    let (mut client, mut server) = duplex(1024);
    let trickle = tokio::spawn(async move {
        for byte in [5u8, 1, 0, 5, 1, 0, 1] {
            if client.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Keep the connection open well past the deadline.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let started = tokio::time::Instant::now();
    let outcome = negotiate(&mut server, Authentication::NotRequired, DEADLINE).await;
    assert!(matches!(outcome, Err(HandshakeError::Timeout { after }) if after == DEADLINE));
    assert_eq!(started.elapsed(), DEADLINE);
    trickle.abort();
}

#[tokio::test]
async fn bytes_sent_ahead_of_the_reply_stay_for_the_tunnel() {
    let (mut client, mut server) = duplex(1024);
    client.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    negotiate(&mut server, Authentication::NotRequired, DEADLINE).await.unwrap();
    let mut early = [0u8; 16];
    server.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"GET / HTTP/1.1\r\n");
}

#[tokio::test]
async fn socks4_and_socks4a_connect() {
    let cases: [(&[u8], Destination); 2] = [
        (
            &[4, 1, 0, 80, 192, 0, 2, 9, b'm', b'e', 0],
            Destination::Address("192.0.2.9:80".parse().unwrap()),
        ),
        (
            &[4, 1, 1, 187, 0, 0, 0, 1, 0, b'E', b'x', b'.', b'c', b'o', b'm', 0],
            name("ex.com", 443),
        ),
    ];
    for (sent, destination) in cases {
        let (mut client, mut server) = duplex(1024);
        client.write_all(sent).await.unwrap();
        let negotiated =
            negotiate(&mut server, Authentication::NotRequired, DEADLINE).await.unwrap();
        assert_eq!((negotiated.version, &negotiated.destination), (Version::Socks4, &destination));
        negotiated
            .answer(&mut server, Reply::Succeeded, Some("10.1.2.3:1025".parse().unwrap()))
            .await
            .unwrap();
        negotiated.answer(&mut server, Reply::HostUnreachable, None).await.unwrap();
        drop(server);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        assert_eq!(answered, [0, 90, 4, 1, 10, 1, 2, 3, 0, 91, 0, 0, 0, 0, 0, 0]);
    }
}

#[tokio::test]
async fn socks4_is_refused_where_a_password_is_required_or_the_command_is_bind() {
    let users = users();
    let (outcome, answered) =
        exchange(&[4, 1, 0, 80, 1, 2, 3, 4, 0], Authentication::Users(&users)).await;
    assert!(matches!(outcome, Err(HandshakeError::NoAcceptableMethod)));
    assert_eq!(answered, [0, 91, 0, 0, 0, 0, 0, 0]);
    let (outcome, answered) =
        exchange(&[4, 2, 0, 80, 1, 2, 3, 4, 0], Authentication::NotRequired).await;
    assert!(matches!(outcome, Err(HandshakeError::Command(2))));
    assert_eq!(answered, [0, 91, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn socks4_fields_are_bounded() {
    let mut sent = vec![4, 1, 0, 80, 1, 2, 3, 4];
    sent.extend([b'u'; 300]);
    let (outcome, answered) = exchange(&sent, Authentication::NotRequired).await;
    assert!(matches!(outcome, Err(HandshakeError::Malformed(_))));
    assert!(answered.is_empty());
}

#[tokio::test]
async fn a_client_offering_both_methods_is_asked_for_its_password_where_required() {
    let users = users();
    let mut sent = vec![5, 2, 0, 2, 1, 5];
    sent.extend(b"alice");
    sent.push(8);
    sent.extend(b"s3cret:x");
    sent.extend([5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
    let (outcome, answered) = exchange(&sent, Authentication::Users(&users)).await;
    assert_eq!(outcome.unwrap().user.as_deref(), Some("alice"));
    assert_eq!(answered, [5, 2, 1, 0]);
}
