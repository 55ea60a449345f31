//! In-process upstream servers on 127.0.0.1:0.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Boxed response body for test handlers.
pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// What an origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method as received.
    pub method: Method,
    /// Request-target as received (origin-form expected).
    pub uri: Uri,
    /// Protocol version.
    pub version: Version,
    /// Every header field, duplicates kept.
    pub headers: HeaderMap,
}

/// A running HTTP origin built on hyper's server.
#[derive(Clone)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    /// Starts an origin whose responses come from `handler`; every request is recorded first.
    pub async fn start<H, F>(handler: H) -> Origin
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Origin::serve(None, handler).await
    }

    /// Accepts on 127.0.0.1:0, completes a TLS handshake first when `tls` is given, records
    /// every request and answers it with `handler`, over HTTP/1.1 or HTTP/2.
    async fn serve<H, F>(tls: Option<tokio_rustls::TlsAcceptor>, handler: H) -> Origin
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let origin = Origin { addr, seen: seen.clone(), connections: connections.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: request.method().clone(),
                            uri: request.uri().clone(),
                            version: request.version(),
                            headers: request.headers().clone(),
                        });
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                    };
                });
            }
        });
        origin
    }

    /// An origin that streams each request body back as the response body, with headers
    /// `x-origin: <port>` and `x-method: <method>`.
    pub async fn echo() -> Origin {
        Origin::start(echo_handler).await
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The only request seen; fails if there were several or none.
    pub fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected exactly one request, saw {seen:?}");
        seen.into_iter().next().unwrap()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Streams the request body back as the response body, with header `x-method: <method>`.
async fn echo_handler(request: Request<Incoming>) -> Response<TestBody> {
    let method = request.method().to_string();
    let mut response = Response::new(request.into_body().boxed());
    response.headers_mut().insert("x-method", method.parse().unwrap());
    response
}

/// A complete response with `body`.
pub fn full(body: impl Into<Bytes>) -> Response<TestBody> {
    Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed())
}

/// One request an origin received completely: its path and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// The request-target's path.
    pub path: String,
    /// The whole body.
    pub body: Vec<u8>,
}

/// An origin (hyper, so it parses requests properly) that reads each request body to the end
/// before answering `200` with `<length> <sha256>`, and records every request it received
/// completely; a body that breaks off gets `400 incomplete body`. `origin.seen()` also lists
/// the requests whose body never finished.
pub struct Collector {
    /// The origin itself.
    pub origin: Origin,
    complete: Arc<Mutex<Vec<Complete>>>,
}

impl Collector {
    /// Starts the origin.
    pub async fn start() -> Collector {
        let complete = Arc::new(Mutex::new(Vec::new()));
        let record = complete.clone();
        let origin = Origin::start(move |request: Request<Incoming>| {
            let record = record.clone();
            async move {
                let path = request.uri().path().to_owned();
                match request.into_body().collect().await {
                    Ok(body) => {
                        let body = body.to_bytes().to_vec();
                        let answer = format!("{} {}", body.len(), super::sha256(&body));
                        record.lock().unwrap().push(Complete { path, body });
                        full(answer)
                    }
                    Err(_) => {
                        let mut response = full("incomplete body");
                        *response.status_mut() = http::StatusCode::BAD_REQUEST;
                        response
                    }
                }
            }
        })
        .await;
        Collector { origin, complete }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.origin.addr
    }

    /// Every request received completely, in order.
    pub fn complete(&self) -> Vec<Complete> {
        self.complete.lock().unwrap().clone()
    }

    /// The bodies of the requests received completely, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.complete().into_iter().map(|complete| complete.body).collect()
    }
}

/// An address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A TCP server that runs `handler` for each accepted connection; for behaviour hyper would
/// not produce (raw bytes, early close, silence).
pub async fn raw_server<H, F>(handler: H) -> SocketAddr
where
    H: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// Reads from `stream` until the end of a request head (`\r\n\r\n`).
pub async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    head
}

/// An origin that accepts connections and never answers.
pub async fn black_hole() -> SocketAddr {
    raw_server(|mut stream| async move {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    })
    .await
}

/// An origin that promises `Content-Length: 100000`, sends 1,000 bytes and closes.
pub async fn dies_mid_response() -> SocketAddr {
    raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n").await;
        let _ = stream.write_all(&[b'x'; 1000]).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// A TCP echo server: writes back every byte, and half-closes when the client does.
pub async fn tcp_echo() -> SocketAddr {
    raw_server(|stream| async move {
        let (mut read, mut write) = stream.into_split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    })
    .await
}

/// An address whose accept queue is full, so a new connection attempt hangs in SYN-SENT
/// (Linux drops the SYN while the queue is full). Keep the returned guard alive.
pub async fn unanswered_connect() -> (SocketAddr, (TcpListener, Vec<TcpStream>)) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = socket.listen(1).unwrap();
    let mut held = Vec::new();
    // Fill the queue: connections complete until it is full, then the next one stalls.
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
    }
    (addr, (listener, held))
}

/// A `200 OK` response whose body frames are whatever is sent through the returned sender,
/// each `send_data` one frame, so a handler can stream (SSE, large or stalling bodies). The
/// body ends when the sender is dropped.
pub fn channel_response(
    buffer: usize,
) -> (http_body_util::channel::Sender<Bytes>, Response<TestBody>) {
    let (sender, body) = http_body_util::channel::Channel::<Bytes>::new(buffer);
    let response = Response::new(body.map_err(|never| match never {}).boxed());
    (sender, response)
}

/// What a WebSocket origin saw of one opening handshake.
#[derive(Debug, Clone)]
pub struct WsSeen {
    /// Request-target of the handshake request.
    pub uri: Uri,
    /// Every header field of the handshake request.
    pub headers: HeaderMap,
}

/// A WebSocket echo origin (tokio-tungstenite) on 127.0.0.1:0.
///
/// Echoes text and binary messages; answers pings (tungstenite does); when the text
/// `close-me` arrives it closes with code 4002 and reason `server bye`. If the client offers
/// the subprotocol `chat.v1` it is selected. Every handshake and every close frame received
/// from the client is recorded.
pub struct WsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<WsSeen>>>,
    closes: tokio::sync::Mutex<
        tokio::sync::mpsc::UnboundedReceiver<
            Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
        >,
    >,
}

impl WsOrigin {
    /// Starts the origin.
    pub async fn start() -> WsOrigin {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::handshake::server::{
            Request as WsRequest, Response as WsResponse,
        };
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let (close_tx, close_rx) = tokio::sync::mpsc::unbounded_channel();
        let recorded = handshakes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                let close_tx = close_tx.clone();
                tokio::spawn(async move {
                    // tungstenite's callback signature fixes the (large) error type.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &WsRequest, mut response: WsResponse| {
                        recorded.lock().unwrap().push(WsSeen {
                            uri: request.uri().clone(),
                            headers: request.headers().clone(),
                        });
                        let offers_v1 = request
                            .headers()
                            .get_all("sec-websocket-protocol")
                            .iter()
                            .filter_map(|value| value.to_str().ok())
                            .flat_map(|value| value.split(','))
                            .any(|token| token.trim() == "chat.v1");
                        if offers_v1 {
                            response
                                .headers_mut()
                                .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
                        }
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        match message {
                            Message::Text(text) if text.as_str() == "close-me" => {
                                let frame = CloseFrame {
                                    code: CloseCode::from(4002),
                                    reason: "server bye".into(),
                                };
                                let _ = ws.close(Some(frame)).await;
                            }
                            Message::Text(_) | Message::Binary(_) => {
                                if ws.send(message).await.is_err() {
                                    return;
                                }
                            }
                            Message::Close(frame) => {
                                let _ = close_tx.send(frame);
                            }
                            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                        }
                    }
                });
            }
        });
        WsOrigin { addr, handshakes, closes: tokio::sync::Mutex::new(close_rx) }
    }

    /// Every handshake seen so far.
    pub fn handshakes(&self) -> Vec<WsSeen> {
        self.handshakes.lock().unwrap().clone()
    }

    /// The next close frame a client sent (`None` inside: a close without a code), waiting
    /// within the suite's bound.
    pub async fn next_close(&self) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
        let mut closes = self.closes.lock().await;
        super::within(closes.recv()).await.expect("the WebSocket origin stopped")
    }
}

impl Origin {
    /// Like [`Origin::start`], but serving HTTPS with `tls`: ALPN `h2` and `http/1.1` are
    /// offered (unless the config already names protocols), so HTTP/2 clients get HTTP/2.
    /// Every TCP connection counts in [`Origin::connections`]; a failed handshake (for
    /// example a client without the required certificate) just closes that connection.
    pub async fn start_tls<H, F>(tls: Arc<rustls::ServerConfig>, handler: H) -> Origin
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let mut tls = (*tls).clone();
        if tls.alpn_protocols.is_empty() {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Origin::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))), handler).await
    }

    /// An HTTPS origin (see [`Origin::start_tls`]) that streams each request body back, with
    /// header `x-method: <method>`.
    pub async fn echo_tls(tls: Arc<rustls::ServerConfig>) -> Origin {
        Origin::start_tls(tls, echo_handler).await
    }

    /// `https://addr` + `path`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }
}
