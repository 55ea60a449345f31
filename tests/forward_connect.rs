//! CONNECT tunnels: a real TLS session end to end, half-close, failures, idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use rustls::pki_types::ServerName;
use sha2::Digest;
use support::client::{connect_tunnel, raw_exchange, status_of};
use support::proxy::TestProxy;
use support::tls::TestCa;
use support::upstream::{raw_server, tcp_echo};
use support::{payload, sha256, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[tokio::test]
async fn tls_session_through_tunnel_carries_64_mib_each_way() {
    let ca = TestCa::new();
    let acceptor = TlsAcceptor::from(ca.server_config(&["origin.test"]));
    // A TLS echo server: everything the client sends comes back over the same session.
    let origin = raw_server(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let tls = acceptor.accept(stream).await.unwrap();
            let (mut read, mut write) = tokio::io::split(tls);
            tokio::io::copy(&mut read, &mut write).await.unwrap();
            write.shutdown().await.unwrap();
        }
    })
    .await;
    let proxy = TestProxy::forward().await;
    let tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    let connector = TlsConnector::from(ca.client_config());
    let tls = within(connector.connect(ServerName::try_from("origin.test").unwrap(), tunnel))
        .await
        .expect("certificate verifies through the tunnel");
    let (mut read, mut write) = tokio::io::split(tls);

    const TOTAL: usize = 64 * 1024 * 1024;
    let block = payload(1024 * 1024, 42);
    let sender = tokio::spawn(async move {
        let mut hash = sha2::Sha256::new();
        for i in 0..TOTAL / block.len() {
            // Vary each block so reordering would change the hash.
            let mut chunk = block.clone();
            chunk[0] = i as u8;
            hash.update(&chunk);
            write.write_all(&chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
        hash.finalize()
    });
    let mut received = 0usize;
    let mut hash = sha2::Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = within(read.read(&mut buffer)).await.unwrap();
        if n == 0 {
            break;
        }
        received += n;
        hash.update(&buffer[..n]);
    }
    let sent_hash = within(sender).await.unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(hash.finalize(), sent_hash, "every byte arrives, in order");
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    // The origin reads until the client's FIN, then answers with what it read.
    let origin = raw_server(|mut stream| async move {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        let answer = format!("read {} bytes, sha256 {}", request.len(), sha256(&request));
        stream.write_all(answer.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    })
    .await;
    let proxy = TestProxy::forward().await;
    let mut tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    let body = payload(300_000, 8);
    tunnel.write_all(&body).await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut answer = String::new();
    within(tunnel.read_to_string(&mut answer)).await.unwrap();
    assert_eq!(answer, format!("read 300000 bytes, sha256 {}", sha256(&body)));
}

#[tokio::test]
async fn bytes_already_sent_after_the_connect_head_are_not_lost() {
    let origin = tcp_echo().await;
    let proxy = TestProxy::forward().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Client speaks first, in the same write as the CONNECT head (as TLS False Start does).
    let request = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\nearly bytes");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = String::new();
    within(stream.read_to_string(&mut out)).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 Connection established\r\n"), "{out:?}");
    assert!(out.ends_with("\r\n\r\nearly bytes"), "{out:?}");
}

#[tokio::test]
async fn connect_to_a_closed_port_is_502_and_the_proxy_carries_on() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = TestProxy::forward().await;
    let response = raw_exchange(
        proxy.addr,
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 502, "{response}");
    assert!(response.contains(&format!("cannot connect to {closed}")), "{response}");
    assert!(response.contains("connection refused"), "{response}");
    let origin = tcp_echo().await;
    let mut tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    tunnel.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within(tunnel.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping");
}

#[tokio::test]
async fn connect_without_a_port_is_400() {
    let proxy = TestProxy::forward().await;
    let response = raw_exchange(
        proxy.addr,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(response.contains("host:port"), "{response}");
}

#[tokio::test]
async fn connect_to_a_port_beyond_65535_is_400() {
    let proxy = TestProxy::forward().await;
    for target in ["127.0.0.1:99999", "127.0.0.1:65536", "[::1]:70000"] {
        let response = raw_exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{target}: {response}");
        assert!(response.contains("not a number from 1 to 65535"), "{target}: {response}");
    }
}

#[tokio::test]
async fn connect_with_user_information_is_400_and_dials_nothing() {
    let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = accepted.send(stream);
        }
    });
    let proxy = TestProxy::forward().await;
    for userinfo in ["user:pw@", "user@", "@"] {
        let target = format!("{userinfo}{origin}");
        let response = raw_exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{target}: {response}");
        assert!(response.contains("without user information"), "{target}: {response}");
    }
    // A tunnel to the same origin without userinfo is dialled, and is the first connection
    // the origin accepts: the refusals above dialled nothing.
    let _tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    within(accepts.recv()).await.unwrap();
    assert!(accepts.try_recv().is_err(), "a refused CONNECT reached the origin");
}

#[tokio::test]
async fn idle_tunnel_is_closed_after_the_timeout() {
    let origin = tcp_echo().await;
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[timeouts]\ntunnel_idle = \"300ms\"\n",
    )
    .await;
    let mut tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    tunnel.write_all(b"active").await.unwrap();
    let mut echo = [0u8; 6];
    within(tunnel.read_exact(&mut echo)).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // The proxy closes the idle tunnel: the read ends (EOF) well before the test's bound.
    let read = within(tunnel.read_to_end(&mut rest)).await;
    assert_eq!(read.unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "not closed before idle timeout");
}

/// 128 B round trips through `tunnel` to an echo origin: each comes back whole before the next.
async fn echo_round_trips(tunnel: &mut tokio::net::TcpStream, count: u8) {
    for i in 0..count {
        let message = payload(128, u64::from(i) + 1);
        tunnel.write_all(&message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        within(tunnel.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, message, "round trip {i}");
    }
}

#[tokio::test]
async fn tunnel_carries_small_messages_then_bulk_then_small_again_intact() {
    // Small messages are copied, bulk is spliced, then small messages are copied again: every
    // switch must keep every byte, in order, and the half-close at the end.
    let origin = tcp_echo().await;
    let proxy = TestProxy::forward().await;
    let mut tunnel = connect_tunnel(proxy.addr, &origin.to_string()).await;
    echo_round_trips(&mut tunnel, 50).await;

    const BULK: usize = 8 * 1024 * 1024;
    let bulk = payload(BULK, 7);
    let sent_hash = sha256(&bulk);
    let (mut read, mut write) = tunnel.split();
    let send = async {
        write.write_all(&bulk).await.unwrap();
    };
    let receive = async {
        let mut back = vec![0u8; BULK];
        read.read_exact(&mut back).await.unwrap();
        sha256(&back)
    };
    let ((), got_hash) = within(async { tokio::join!(send, receive) }).await;
    assert_eq!(got_hash, sent_hash, "bulk echoed byte for byte");

    echo_round_trips(&mut tunnel, 50).await;
    // The client's FIN travels to the origin, whose echo loop then ends and closes its side.
    tunnel.write_all(b"last words").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(tunnel.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"last words");
}
