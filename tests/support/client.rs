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

/// Sends `bytes` on a fresh connection (the proxy may refuse and close before reading them
/// all) and reads until the proxy closes it; a reset counts as a close. Fails if the
/// connection is still open after the suite's bound. Returns what arrived.
pub async fn exchange_until_closed(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let closed = tokio::time::timeout(super::WAIT, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(closed.is_ok(), "the proxy left the connection open after sending {text:?}");
    text
}

/// An absolute-form `GET` (forward proxy) for `origin` + `path` that closes the connection
/// afterwards.
pub fn forward_get(origin: SocketAddr, path: &str) -> String {
    format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
}

/// Sends CONNECT for `target` and returns the stream once the proxy answered 200.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = within(read_response_head(&mut stream)).await;
    assert!(head.starts_with("HTTP/1.1 200 Connection established\r\n"), "got {head:?}");
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

/// A reqwest client that talks to the proxy directly (reverse routes), ignoring any proxy
/// settings in the environment.
pub fn direct() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An HTTP/1.1 client connection to `addr` (hyper), with upgrades enabled, so a test controls
/// the request-target, `Host` and every header exactly.
pub async fn http1_conn<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let (sender, connection) =
        within(hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)))
            .await
            .unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

/// An HTTP/1.1 client connection (hyper) over the open `stream`, and the task driving it, so
/// a test can wait for the connection to end.
pub async fn http1_over<B>(
    stream: TcpStream,
) -> (hyper::client::conn::http1::SendRequest<B>, tokio::task::JoinHandle<Result<(), hyper::Error>>)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) =
        within(hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// Sends one `GET target` with `Host: host`, the `extra` header lines (each ending in
/// `\r\n`) and `Connection: close`, and returns the raw response text.
pub async fn raw_get(proxy: SocketAddr, target: &str, host: &str, extra: &str) -> String {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    raw_exchange(proxy, request.as_bytes()).await
}

/// Every value of header `name` (case-insensitive) in the head of a raw response, in order.
pub fn raw_header_values(response: &str, name: &str) -> Vec<String> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(field, _)| field.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim().to_owned())
        .collect()
}

/// The bytes after the head of a raw response (still chunk-encoded if it was chunked).
pub fn raw_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default()
}

/// A reqwest client that talks to the proxy directly over HTTPS, trusting only the CA
/// certificate `ca_pem` (no built-in roots). It offers ALPN `h2` and `http/1.1`.
pub fn https_direct(ca_pem: &str) -> reqwest::Client {
    https_builder(ca_pem).no_proxy().build().unwrap()
}

/// A reqwest builder trusting only the CA certificate `ca_pem`.
pub fn https_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
}

/// A reqwest client speaking HTTP/2 with prior knowledge (h2c on `http://` URLs), directly.
pub fn h2c_direct() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap()
}

/// An HTTP/2 prior-knowledge client connection (hyper) over one TCP connection to `addr`:
/// every request sent through the returned handle (or its clones) is a stream on that one
/// connection.
pub async fn h2c_conn<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = within(TcpStream::connect(addr)).await.unwrap();
    let (sender, connection) = within(hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    ))
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// Opens TCP to `addr` and completes a TLS handshake for `server_name` with `config`.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = within(TcpStream::connect(addr)).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    within(tokio_rustls::TlsConnector::from(config).connect(name, stream)).await
}

/// The leaf certificate (DER) the server at `addr` presents to a handshake for
/// `server_name`; the handshake must succeed with `config`.
pub async fn peer_leaf(
    addr: SocketAddr,
    server_name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> rustls::pki_types::CertificateDer<'static> {
    let tls = tls_connect(addr, server_name, config)
        .await
        .unwrap_or_else(|err| panic!("TLS handshake for {server_name} failed: {err}"));
    let (_, session) = tls.get_ref();
    session.peer_certificates().expect("the server presented a certificate")[0].clone().into_owned()
}

/// A normal POST through the forward proxy at `proxy` still succeeds: the check that follows
/// every refused or malformed input.
pub async fn assert_still_serves(proxy: SocketAddr) {
    let origin = super::upstream::Origin::echo().await;
    let response =
        within(via_proxy(proxy).post(origin.url("/ok")).body("fine").send()).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(within(response.text()).await.unwrap(), "fine");
}

/// Sends `bytes` from the local address `source` and returns everything the proxy writes
/// until it closes the connection.
pub async fn raw_exchange_from(
    source: std::net::IpAddr,
    proxy: SocketAddr,
    bytes: &[u8],
) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = within(socket.connect(proxy)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    within(stream.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
