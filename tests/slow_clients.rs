//! Clients that read slowly or not at all: what sluice holds for them (a few tens of KiB per
//! response, measured as the bytes an origin wrote less those the client read and those in the
//! kernel's socket queues), and `timeouts.client_send`, which disconnects a client that
//! accepts nothing for that long and frees the upstream connection behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::config::{reverse_config, route};
use support::proxy::TestProxy;
use support::upstream::read_head;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// The body the origin offers: far more than any buffer on the way.
const BODY: u64 = 256 << 20;

/// The smallest socket buffers the kernel allows, for the test's own sockets, so what they
/// hold is small and known.
const SMALL_BUFFER: u32 = 4096;

/// An origin (with a small send buffer) that answers one request with [`BODY`] bytes written
/// as fast as the connection takes them; counts the bytes written, and reports when its
/// connection fails (sluice closed it).
async fn flooding_origin() -> (SocketAddr, Arc<AtomicU64>, oneshot::Receiver<Instant>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let (closed_tx, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        loop {
            match stream.write(&chunk).await {
                Ok(n) => counter.fetch_add(n as u64, Ordering::SeqCst),
                Err(_) => {
                    let _ = closed_tx.send(Instant::now());
                    return;
                }
            };
        }
    });
    (addr, written, closed)
}

/// A client with a small receive buffer that sends `request` and reads `take` bytes.
async fn client(proxy: SocketAddr, request: &str, take: usize) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut taken = vec![0u8; take];
    within(stream.read_exact(&mut taken)).await.unwrap();
    stream
}

/// Bytes queued in the kernel (sent but unacknowledged, or received but unread) on every
/// IPv4 TCP socket with an end on one of `ports`, from `/proc/net/tcp`.
fn kernel_queued(ports: &[u16]) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |end: &str| u16::from_str_radix(end.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| ports.contains(&port(f[1])) || ports.contains(&port(f[2])))
        .map(|f| {
            let (tx, rx) = f[4].split_once(':').unwrap();
            u64::from_str_radix(tx, 16).unwrap() + u64::from_str_radix(rx, 16).unwrap()
        })
        .sum()
}

/// Waits (bounded) until the origin has written nothing more for half a second: every
/// buffer between it and the stalled client is full.
async fn until_stalled(written: &AtomicU64) -> u64 {
    within(async {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = written.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
}

/// What sluice holds in its own memory for a client that read `read` bytes of the response
/// (its head included) and stopped: the origin's bytes not read by the client, less those in
/// the kernel's queues of the four sockets between them.
async fn held_by_sluice(origin: SocketAddr, client: &TcpStream, written: &AtomicU64) -> u64 {
    let written = until_stalled(written).await;
    let ports = [origin.port(), client.local_addr().unwrap().port()];
    let queued = kernel_queued(&ports);
    let head = 40; // "HTTP/1.1 200 OK\r\nContent-Length: 268435456\r\n\r\n" and what sluice adds
    written.saturating_sub(queued).saturating_sub(BODY_READ as u64).saturating_sub(head)
}

/// Body bytes the slow clients read before they stop.
const BODY_READ: usize = 100;

/// hyper would queue up to 16 chunks of whatever size the upstream reads (up to 400 KiB)
/// for a client that reads slowly; sluice hands it little more than 16 KiB ahead of what the
/// socket took, and reads the upstream 16 KiB at a time.
#[tokio::test]
async fn a_stalled_reader_pins_a_few_tens_of_kib_on_a_route() {
    let (origin, written, _closed) = flooding_origin().await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/big", &format!("http://{origin}"), ""))).await;
    let request = "GET /big/file HTTP/1.1\r\nHost: sluice.test\r\n\r\n";
    let client = client(proxy.addr, request, BODY_READ).await;
    let held = held_by_sluice(origin, &client, &written).await;
    assert!(held <= 64 * 1024, "sluice holds {held} bytes for one stalled reader");
}

#[tokio::test]
async fn a_stalled_reader_pins_a_few_tens_of_kib_through_the_forward_proxy() {
    let (origin, written, _closed) = flooding_origin().await;
    let proxy = TestProxy::forward().await;
    let request = format!("GET http://{origin}/file HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let client = client(proxy.addr, &request, BODY_READ).await;
    let held = held_by_sluice(origin, &client, &written).await;
    assert!(held <= 64 * 1024, "sluice holds {held} bytes for one stalled reader");
}

/// `body_idle` watches the upstream; a client that stops reading is closed by
/// `timeouts.client_send` instead, which frees the upstream connection too.
#[tokio::test]
async fn a_client_that_accepts_nothing_is_disconnected_after_client_send() {
    let (origin, written, closed) = flooding_origin().await;
    let proxy = TestProxy::start(&reverse_config(&format!(
        "{}[timeouts]\nclient_send = \"1s\"\n",
        route("/big", &format!("http://{origin}"), "")
    )))
    .await;
    let request = "GET /big/file HTTP/1.1\r\nHost: sluice.test\r\n\r\n";
    let mut client = client(proxy.addr, request, BODY_READ).await;
    let stalled = Instant::now();
    until_stalled(&written).await;
    let closed = within(closed).await.unwrap();
    let after = closed.duration_since(stalled);
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the timeout");
    // The client, reading again, finds the end of the connection after what was queued.
    let mut rest = Vec::new();
    let _ = within(client.read_to_end(&mut rest)).await;
    assert!((rest.len() as u64) < BODY, "the response was cut off");
}
