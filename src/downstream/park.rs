//! Parking idle HTTP/1 connections outside hyper.
//!
//! hyper keeps an HTTP/1 connection's read and write buffers (8 KiB each) and its connection
//! state for as long as the connection is open, idle or not. A proxy holds thousands of idle
//! keep-alive connections, so when a plain HTTP/1 connection has been idle for a moment
//! sluice asks hyper to finish with it, takes the socket back, and waits for the next request
//! with nothing but the socket: hyper's state is rebuilt when bytes arrive.
//!
//! The hand-back is safe only at a message boundary: no request in flight, no byte of a next
//! request read (the wire guard reports this), and no I/O since the last check. Then hyper's
//! graceful shutdown closes the idle connection without touching the socket ([`Parkable`]
//! turns its shutdown into a no-op and returns the socket when dropped).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How often an open HTTP session checks whether it has been idle; it is parked after one
/// whole quiet period (so 100-200 ms of idleness). A client sending request after request never
/// pays for rebuilding hyper's state (a few small allocations), and a burst of new clients
/// does not hold 16 KiB of hyper buffers each for long after they go quiet.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// What the serving side and the I/O wrapper share about one connection.
#[derive(Debug, Default)]
pub struct Idleness {
    /// Requests whose response head has not been handed to hyper yet.
    pub in_flight: AtomicUsize,
    /// Reads and writes so far; unchanged between two checks means no traffic.
    activity: AtomicU64,
    /// Set by the wire guard: everything read so far ends on a message boundary.
    pub boundary: Arc<AtomicBool>,
    /// Set just before hyper is asked to finish, so the socket is kept, not shut down.
    parking: AtomicBool,
}

impl Idleness {
    /// A connection at a boundary (nothing read yet), with no request in flight.
    pub fn new() -> Arc<Idleness> {
        Arc::new(Idleness { boundary: Arc::new(AtomicBool::new(true)), ..Idleness::default() })
    }

    /// True when the connection may be parked: nothing in flight, at a message boundary,
    /// and no I/O since `last_activity` (updated to the current count).
    pub fn idle_since(&self, last_activity: &mut u64) -> bool {
        let now = self.activity.load(Ordering::Relaxed);
        let quiet = now == *last_activity;
        *last_activity = now;
        quiet
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.boundary.load(Ordering::Relaxed)
    }

    /// Marks the connection as being parked: its shutdown keeps the socket.
    pub fn park(&self) {
        self.parking.store(true, Ordering::Relaxed);
    }

    /// Clears the mark once the socket is back.
    pub fn unpark(&self) {
        self.parking.store(false, Ordering::Relaxed);
    }
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Idleness>);

impl InFlight {
    /// Starts counting one request.
    pub fn start(idleness: &Arc<Idleness>) -> InFlight {
        idleness.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(idleness.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The I/O hyper is given: passes everything through, counts activity, and when the
/// connection is being parked turns shutdown into a no-op and, when dropped, puts the inner
/// I/O into `returned` instead of closing it.
#[derive(Debug)]
pub struct Parkable<I> {
    io: Option<I>,
    idleness: Arc<Idleness>,
    returned: Arc<Mutex<Option<I>>>,
}

impl<I> Parkable<I> {
    /// Wraps `io`; a parked connection's I/O comes back through `returned`.
    pub fn new(io: I, idleness: Arc<Idleness>, returned: Arc<Mutex<Option<I>>>) -> Parkable<I> {
        Parkable { io: Some(io), idleness, returned }
    }

    /// The inner I/O, for a tunnel that takes the connection over.
    pub fn into_inner(mut self) -> Option<I> {
        self.io.take()
    }

    fn io(&mut self) -> io::Result<&mut I> {
        self.io.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "parked"))
    }

    fn touch(&self) {
        self.idleness.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl<I> Drop for Parkable<I> {
    fn drop(&mut self) {
        if self.idleness.parking.load(Ordering::Relaxed)
            && let Some(io) = self.io.take()
        {
            *self.returned.lock().unwrap_or_else(|p| p.into_inner()) = Some(io);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Parkable<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(self.io()?).poll_read(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Parkable<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.io()?).poll_write(cx, data);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.io()?).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.idleness.parking.load(Ordering::Relaxed) {
            // Parking: hyper is done with the socket, but the client is not.
            return Poll::Ready(Ok(()));
        }
        Pin::new(self.io()?).poll_shutdown(cx)
    }
}

/// A client connection's transport, as far as parking needs to know it.
pub trait Readiness {
    /// Whether the connection can wait outside hyper with only its socket: true for plain
    /// TCP; false for TLS, whose session may hold decrypted bytes the socket does not show.
    const PARKABLE: bool;
    /// Resolves when the socket has bytes (or EOF) to read.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Readiness for TcpStream {
    const PARKABLE: bool = true;
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

impl Readiness for tokio_rustls::server::TlsStream<TcpStream> {
    const PARKABLE: bool = false;
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::pending()
    }
}
