//! `sluice-bench`: the origin and the load tools of the side-by-side suite that wrk cannot do.
//!
//! Usage: `sluice-bench COMMAND key=value ...`; every client command is bounded by `secs=`
//! (or `hold=`) and prints one line of `key=value` results on stdout.
//!
//! - `origin port=P`: HTTP/1.1 origin on 127.0.0.1:P (`/` small body, `/1m` 1 MiB, any POST is
//!   drained and answered `ok`, `/sse` an event every 10 ms carrying its send time, `/ws` a
//!   WebSocket echo) and a raw TCP "blast" server on 127.0.0.1:P+1 (after the client's first
//!   byte it writes 64 KiB chunks until the peer goes away).
//! - `bulk addr=A [target=T [socks=1]] conns=N secs=S`: bytes/s read from the blast server,
//!   directly (`addr` is the blast server) or through `CONNECT target` at `addr` (a SOCKS5
//!   `CONNECT` with `socks=1`; `target` an IPv4 `address:port`).
//! - `connrate addr=A target=T [socks=1] conns=N secs=S`: CONNECT (or SOCKS5) tunnels set up
//!   (and closed) per second.
//! - `sse addr=A uri=U streams=N secs=S`: arrival delay of SSE events (p50, p90, p99 and
//!   p99.9 in µs).
//! - `ws addr=A uri=ws://host/ws clients=N size=B secs=S`: echo messages/s and RTT p50, p90,
//!   p99 and p99.9 in µs.
//! - `echo [addr=A] [target=T] [socks=1] clients=N size=B secs=S [count=C]`: small interactive
//!   messages (128 B WebSocket-like round trips) through tunnels: each client sends `size`
//!   bytes and waits for them to come back, from an echo server of its own (or `target`);
//!   without `addr` straight to the echo server. Prints round trips/s, their total and RTT
//!   p50, p90, p99 and p99.9 in µs.
//! - `idle addr=A mode=http|connect [target=T] conns=N hold=S [settle=MS]`: opens N idle
//!   connections (one request each, or one tunnel each), leaves them idle for `settle` ms
//!   (default 2500), prints `READY ok=..`, holds them `hold` seconds.
//! - `ai addr=A uri=U rate=R secs=S stream=0|1 [key=K] [model=M] [conns=C]`: chat
//!   completions at a fixed rate over keep-alive connections; for streams the time to the
//!   first `data:` event, else the time to the whole answer (p50/p99 in µs).
//!
//! The origin also plays an OpenAI-compatible provider: `POST …/chat/completions` answers a
//! small completion with usage, or with `"stream":true` a stream of 5 chunks 2 ms apart, a
//! usage chunk and `[DONE]`, the first chunk at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SMALL: &[u8] = b"Hello, world! This is the sluice benchmark origin.\n";
const MIB: usize = 1024 * 1024;
/// The body of the cached 1 KiB scenario.
static KIB_BODY: [u8; 1024] = [b'k'; 1024];

struct Args(HashMap<String, String>);

impl Args {
    fn str(&self, key: &str, default: &str) -> String {
        self.0.get(key).cloned().unwrap_or_else(|| default.to_owned())
    }
    fn num(&self, key: &str, default: u64) -> u64 {
        self.0.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    fn addr(&self, key: &str) -> SocketAddr {
        match self.str(key, "").parse() {
            Ok(a) => a,
            Err(_) => fail(&format!("{key}=IP:PORT is required")),
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("sluice-bench: {msg}");
    std::process::exit(2)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next().unwrap_or_default();
    let args = Args(
        argv.filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect(),
    );
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(&format!("runtime: {e}")),
    };
    let result = rt.block_on(async move {
        match cmd.as_str() {
            "origin" => origin(&args).await,
            "bulk" => bulk(&args).await,
            "connrate" => connrate(&args).await,
            "sse" => sse(&args).await,
            "ws" => ws(&args).await,
            "echo" => echo(&args).await,
            "idle" => idle(&args).await,
            "ai" => ai(&args).await,
            _ => fail("usage: sluice-bench origin|bulk|connrate|sse|ws|echo|idle|ai key=value..."),
        }
    });
    if let Err(e) = result {
        fail(&e.to_string());
    }
}

// ---------------------------------------------------------------- origin

async fn origin(args: &Args) -> Res<()> {
    let port = args.num("port", 18000) as u16;
    let http = TcpListener::bind(("127.0.0.1", port)).await?;
    let blast = TcpListener::bind(("127.0.0.1", port + 1)).await?;
    let big = Bytes::from(vec![b'x'; MIB]);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = blast.accept().await else { continue };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut one = [0u8; 1];
                if !matches!(s.read(&mut one).await, Ok(1)) {
                    return;
                }
                let chunk = vec![b'b'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    eprintln!("origin: http on 127.0.0.1:{port}, blast on 127.0.0.1:{}", port + 1);
    loop {
        let (stream, _) = http.accept().await?;
        let _ = stream.set_nodelay(true);
        let big = big.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, big.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).boxed_unsync()
}

async fn handle(mut req: Request<Incoming>, big: Bytes) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.headers().contains_key(UPGRADE) {
        let key = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes()));
        let Some(accept) = key else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                Role::Server,
                None,
            )
            .await;
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(m)) = rx.next().await {
                if (m.is_binary() || m.is_text()) && tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(Bytes::new()));
        return Ok(res.unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR)));
    }
    if req.method() == Method::POST && path.ends_with("/chat/completions") {
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Ok(completion(&body));
    }
    if req.method() == Method::POST {
        let _ = req.into_body().collect().await;
        return Ok(Response::new(full(Bytes::from_static(b"ok\n"))));
    }
    // Cacheable responses for the cache scenarios: `/cache/1k/<any>` and `/cache/1m/<any>`,
    // fresh for an hour, so every distinct path is one stored object.
    if let Some(rest) = path.strip_prefix("/cache/") {
        let body = if rest.starts_with("1m") { big } else { Bytes::from_static(&KIB_BODY) };
        let mut res = Response::new(full(body));
        res.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("public, max-age=3600"),
        );
        return Ok(res);
    }
    let res = match path.as_str() {
        "/1m" => Response::new(full(big)),
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                loop {
                    tick.tick().await;
                    let ev = format!("data: {}\n\n", now_ns());
                    if tx.send(Bytes::from(ev)).await.is_err() {
                        break;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
            let h = res.headers_mut();
            h.insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
            h.insert("x-accel-buffering", hyper::header::HeaderValue::from_static("no"));
            h.insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
            res
        }
        _ => Response::new(full(Bytes::from_static(SMALL))),
    };
    Ok(res)
}

/// The mock provider's answer to a chat completion request.
fn completion(request: &[u8]) -> Response<Body> {
    let stream = request.windows(13).any(|w| w == b"\"stream\":true");
    let model = "mock-model";
    if !stream {
        let body = format!(
            "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,\
             \"model\":\"{model}\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\
             \"content\":\"Hello from the benchmark provider.\"}},\"finish_reason\":\"stop\"}}],\
             \"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}}}"
        );
        let mut res = Response::new(full(Bytes::from(body)));
        res.headers_mut()
            .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        return res;
    }
    let include_usage = request.windows(20).any(|w| w == b"\"include_usage\":true");
    let chunk = |content: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
             \"created\":1700000000,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\
             \"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    };
    let mut events: Vec<String> = ["Hel", "lo", " from", " the", " bench"].map(chunk).to_vec();
    if include_usage {
        events.push(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
             \"created\":1700000000,\"model\":\"{model}\",\"choices\":[],\
             \"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}}}\n\n"
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 && i < 5 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
    res.headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
    res
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = code;
    r
}

// ---------------------------------------------------------------- client helpers

/// Reads until the end of a response head; returns the head and any bytes after it.
async fn read_head(s: &mut TcpStream) -> Res<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(tmp.get(..n).unwrap_or_default());
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
    }
}

fn status_ok(head: &str) -> bool {
    head.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2'))
}

async fn connect_tunnel(addr: SocketAddr, target: &str) -> Res<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await?;
    let (head, _) = read_head(&mut s).await?;
    if !status_ok(&head) {
        return Err(format!("CONNECT refused: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(s)
}

/// A SOCKS5 tunnel to `target` (an IPv4 `address:port`) at `addr`, without authentication:
/// greeting, method choice, request, reply (RFC 1928).
async fn socks_tunnel(addr: SocketAddr, target: &str) -> Res<TcpStream> {
    let target: std::net::SocketAddrV4 = target.parse()?;
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut request = vec![5u8, 1, 0, 5, 1, 0, 1];
    request.extend(target.ip().octets());
    request.extend(target.port().to_be_bytes());
    // The greeting and the request in one write, as clients with optimistic handshakes do.
    s.write_all(&request).await?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).await?;
    if reply[..2] != [5, 0] || reply[3] != 0 {
        return Err(format!("SOCKS5 refused: {:?}", &reply[..4]).into());
    }
    Ok(s)
}

/// A tunnel through the proxy at `addr`: SOCKS5 when `socks`, else HTTP `CONNECT`.
async fn tunnel(addr: SocketAddr, target: &str, socks: bool) -> Res<TcpStream> {
    if socks { socks_tunnel(addr, target).await } else { connect_tunnel(addr, target).await }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or(0)
}

/// `p50_us=.. p90_us=.. p99_us=.. p999_us=..` of sorted nanosecond samples: the latency
/// distribution bench/run tabulates and charts.
fn percentiles(sorted: &[u64]) -> String {
    let us = |p| percentile(sorted, p) as f64 / 1e3;
    format!(
        "p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1}",
        us(0.50),
        us(0.90),
        us(0.99),
        us(0.999)
    )
}

// ---------------------------------------------------------------- bulk / connrate

async fn bulk(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let target = args.str("target", "");
    let socks = args.num("socks", 0) == 1;
    let conns = args.num("conns", 1);
    let secs = args.num("secs", 5).min(10);
    let total = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for _ in 0..conns {
        let mut s = if target.is_empty() {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s
        } else {
            tunnel(addr, &target, socks).await?
        };
        s.write_all(b"G").await?;
        streams.push(s);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut s in streams {
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut local = 0u64;
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                local += n as u64;
            }
            total.fetch_add(local, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let el = start.elapsed().as_secs_f64();
    println!("MBps={:.1}", total.load(Ordering::Relaxed) as f64 / el / 1e6);
    Ok(())
}

async fn connrate(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let target = args.str("target", "");
    let socks = args.num("socks", 0) == 1;
    let conns = args.num("conns", 8);
    let secs = args.num("secs", 5).min(10);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (done, errors, target) = (done.clone(), errors.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r =
                    tokio::time::timeout_at(deadline.into(), tunnel(addr, &target, socks)).await;
                match r {
                    Ok(Ok(_s)) => done.fetch_add(1, Ordering::Relaxed),
                    Ok(Err(_)) => errors.fetch_add(1, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "rate={:.0} errors={}",
        done.load(Ordering::Relaxed) as f64 / el,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

// ---------------------------------------------------------------- SSE

async fn sse(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let uri = args.str("uri", "/sse");
    let streams = args.num("streams", 8);
    let secs = args.num("secs", 5).min(10);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let run = async {
                let mut s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let req = format!(
                    "GET {uri} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await?;
                let (head, rest) = read_head(&mut s).await?;
                if !status_ok(&head) {
                    return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                        format!("SSE refused: {}", head.lines().next().unwrap_or("")).into(),
                    );
                }
                let mut pending = rest;
                let mut buf = vec![0u8; 16 * 1024];
                // The first events may have queued up before the stream was read; skip 5.
                let mut skip = 5;
                loop {
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        if let Some(ts) = line.strip_prefix(b"data: ") {
                            let now = now_ns();
                            let text = String::from_utf8_lossy(ts);
                            if let Ok(sent) = text.trim().parse::<u64>() {
                                if skip > 0 {
                                    skip -= 1;
                                } else {
                                    samples.push(now.saturating_sub(sent));
                                }
                            }
                        }
                    }
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), run).await;
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            all.extend(s);
        }
    }
    all.sort_unstable();
    println!("{} events={}", percentiles(&all), all.len());
    Ok(())
}

// ---------------------------------------------------------------- WebSocket

async fn ws(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let uri = args.str("uri", &format!("ws://{addr}/ws"));
    let clients = args.num("clients", 64);
    let size = args.num("size", 128) as usize;
    let secs = args.num("secs", 5).min(10);
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(uri.as_str(), s).await?;
        sockets.push(ws);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut ws in sockets {
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![b'w'; size]);
            let mut rtts = Vec::new();
            let run = async {
                loop {
                    let t0 = Instant::now();
                    ws.send(Message::Binary(payload.clone())).await?;
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Binary(_))) => break,
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => return Err(e),
                            None => return Ok(()),
                        }
                    }
                    rtts.push(t0.elapsed().as_nanos() as u64);
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), run).await;
            rtts
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            all.extend(r);
        }
    }
    let el = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!("msgs={:.0} {}", all.len() as f64 / el, percentiles(&all));
    Ok(())
}

// ---------------------------------------------------------------- tunnel echo

/// Small interactive messages through tunnels: `clients` tunnels (CONNECT, or SOCKS5 with
/// `socks=1`) through `addr` to an echo server this command runs itself (or `target`), each
/// sending `size` bytes and waiting for them to come back, for `secs` (or `count` messages per
/// client, when given). Without `addr` the clients connect straight to the echo server.
async fn echo(args: &Args) -> Res<()> {
    let addr = if args.str("addr", "").is_empty() { None } else { Some(args.addr("addr")) };
    let socks = args.num("socks", 0) == 1;
    let clients = args.num("clients", 64);
    let size = args.num("size", 128) as usize;
    let secs = args.num("secs", 5).min(10);
    let count = args.num("count", 0);
    let mut target = args.str("target", "");
    if target.is_empty() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        target = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let mut streams = Vec::new();
    for _ in 0..clients {
        streams.push(match addr {
            Some(addr) => tunnel(addr, &target, socks).await?,
            None => {
                let s = TcpStream::connect(target.as_str()).await?;
                s.set_nodelay(true)?;
                s
            }
        });
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let payload = vec![b'e'; size];
            let mut back = vec![0u8; size];
            let mut rtts = Vec::new();
            let run = async {
                while count == 0 || rtts.len() < count as usize {
                    let t0 = Instant::now();
                    s.write_all(&payload).await?;
                    s.read_exact(&mut back).await?;
                    rtts.push(t0.elapsed().as_nanos() as u64);
                }
                Ok::<_, std::io::Error>(())
            };
            let _ = tokio::time::timeout_at(deadline.into(), run).await;
            rtts
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            all.extend(r);
        }
    }
    let el = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!("msgs={:.0} total={} {}", all.len() as f64 / el, all.len(), percentiles(&all));
    Ok(())
}

// ---------------------------------------------------------------- idle connections

async fn idle_one(addr: SocketAddr, mode: &str, target: &str, uri: &str) -> Res<TcpStream> {
    if mode == "connect" {
        return connect_tunnel(addr, target).await;
    }
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {uri} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let (head, mut rest) = read_head(&mut s).await?;
    if !status_ok(&head) {
        return Err(format!("refused: {}", head.lines().next().unwrap_or("")).into());
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut tmp = [0u8; 4096];
    while rest.len() < len {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(tmp.get(..n).unwrap_or_default());
    }
    Ok(s)
}

async fn idle(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let mode = args.str("mode", "http");
    let target = args.str("target", "");
    let uri = args.str("uri", "/");
    let conns = args.num("conns", 1000) as usize;
    let hold = args.num("hold", 20).min(60);
    let settle = args.num("settle", 2500).min(10_000);
    let mut held = Vec::with_capacity(conns);
    let mut errors = 0u64;
    let open_deadline = Instant::now() + Duration::from_secs(30);
    // At most 100 connections being set up at once, so the accept queue never overflows.
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0usize;
    while (started < conns || !set.is_empty()) && Instant::now() < open_deadline {
        while started < conns && set.len() < 100 {
            let (mode, target, uri) = (mode.clone(), target.clone(), uri.clone());
            set.spawn(async move { idle_one(addr, &mode, &target, &uri).await });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            Some(_) => errors += 1,
            None => break,
        }
    }
    // Idle means idle for a while, as keep-alive connections are between a client's bursts:
    // let the proxy settle (pooled upstream connections, deferred frees, idle-time parking).
    tokio::time::sleep(Duration::from_millis(settle)).await;
    println!("READY ok={} errors={errors}", held.len());
    let mut stdin = tokio::io::stdin();
    let mut one = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(hold), stdin.read(&mut one)).await;
    drop(held);
    Ok(())
}

// ---------------------------------------------------------------- AI completions

/// What one completion request measured.
enum Outcome {
    /// The latency measured (to the first event, or to the whole answer), in ns.
    Ok(u64),
    Failed,
}

/// Reads one response on `s` (after the request was written at `sent`): for a stream the time
/// to the first `data:`, else the time to the end of the body.
async fn read_completion(s: &mut TcpStream, sent: Instant, stream: bool) -> Res<(u64, bool)> {
    let (head, mut pending) = read_head(s).await?;
    if !status_ok(&head) {
        return Err(format!("refused: {}", head.lines().next().unwrap_or("")).into());
    }
    let lower = head.to_ascii_lowercase();
    let keep = !lower.contains("connection: close");
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut first: Option<u64> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let seen_data = |bytes: &[u8], first: &mut Option<u64>| {
        if first.is_none() && bytes.windows(5).any(|w| w == b"data:") {
            *first = Some(sent.elapsed().as_nanos() as u64);
        }
    };
    match length {
        Some(length) => {
            while pending.len() < length {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                seen_data(&pending, &mut first);
            }
            seen_data(&pending, &mut first);
        }
        None => {
            // Chunked: size line, data, CRLF, until the zero-size chunk and its empty trailer.
            let mut body = Vec::new();
            loop {
                if let Some(line_end) = pending.windows(2).position(|w| w == b"\r\n") {
                    let size_text =
                        String::from_utf8_lossy(pending.get(..line_end).unwrap_or_default())
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_owned();
                    let size = usize::from_str_radix(&size_text, 16)?;
                    let need = line_end + 2 + size + 2;
                    if pending.len() >= need {
                        body.extend_from_slice(
                            pending.get(line_end + 2..line_end + 2 + size).unwrap_or_default(),
                        );
                        seen_data(&body, &mut first);
                        pending.drain(..need);
                        if size == 0 {
                            break;
                        }
                        continue;
                    }
                }
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
        }
    }
    let whole = sent.elapsed().as_nanos() as u64;
    let measured = if stream { first.ok_or("no event in the stream")? } else { whole };
    Ok((measured, keep))
}

async fn ai(args: &Args) -> Res<()> {
    let addr = args.addr("addr");
    let uri = args.str("uri", "/v1/chat/completions");
    let rate = args.num("rate", 100).max(1);
    let secs = args.num("secs", 5).min(10);
    let stream = args.num("stream", 0) == 1;
    let key = args.str("key", "sk-bench");
    let model = args.str("model", "mock-model");
    let conns = args.num("conns", 32) as usize;
    let body = if stream {
        format!(
            r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}"#
        )
    } else {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}]}}"#)
    };
    let request = Arc::new(format!(
        "POST {uri} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    // A pool of keep-alive connections, opened before the clock starts.
    let (pool_tx, pool_rx) = tokio::sync::mpsc::channel::<TcpStream>(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        pool_tx.send(s).await?;
    }
    let pool_rx = Arc::new(tokio::sync::Mutex::new(pool_rx));
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    while Instant::now() < deadline {
        ticks.tick().await;
        let (pool_tx, pool_rx, request) = (pool_tx.clone(), pool_rx.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let taken = pool_rx.lock().await.try_recv().ok();
            let mut s = match taken {
                Some(s) => s,
                None => match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        s
                    }
                    Err(_) => return Outcome::Failed,
                },
            };
            let sent = Instant::now();
            if s.write_all(request.as_bytes()).await.is_err() {
                return Outcome::Failed;
            }
            let read =
                tokio::time::timeout(Duration::from_secs(5), read_completion(&mut s, sent, stream));
            match read.await {
                Ok(Ok((ns, keep))) => {
                    if keep {
                        let _ = pool_tx.try_send(s);
                    }
                    Outcome::Ok(ns)
                }
                _ => Outcome::Failed,
            }
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0u64;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Outcome::Ok(ns))) => samples.push(ns),
            _ => errors += 1,
        }
    }
    samples.sort_unstable();
    println!(
        "p50_us={:.1} p99_us={:.1} ok={} errors={}",
        percentile(&samples, 0.50) as f64 / 1e3,
        percentile(&samples, 0.99) as f64 / 1e3,
        samples.len(),
        errors
    );
    Ok(())
}
