//! Clients that talk to the proxy: reqwest configured with it, and raw TCP for bytes that
//! well-behaved clients never send.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// A reqwest client that sends every request through the proxy at `proxy`.
pub fn via_proxy(proxy: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap()
}

/// Sends `bytes` on a fresh connection and returns everything the proxy writes before it
/// closes the connection (or until the bound in [`within`]).
pub async fn raw_exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends CONNECT for `target` and returns the stream once the proxy answered 200.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = within(read_response_head(&mut stream)).await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "got {head:?}"
    );
    stream
}

/// Reads one response head byte by byte, so nothing after it is consumed.
pub async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_ne!(n, 0, "connection closed inside a response head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The status code of a raw response text.
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}
