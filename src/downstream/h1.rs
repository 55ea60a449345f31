//! The client connection as the HTTP/1 fast path serves it ([`ClientConn`]): the socket, and
//! a read buffer held only while a message is arriving. When a request is not for the fast
//! path, the connection goes to hyper with the bytes already read in front of the socket
//! ([`Prefixed`]), so hyper and the wire guard see the connection's bytes exactly as if they
//! had read them themselves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use std::sync::Arc;

use crate::downstream::park::Readiness;
use crate::h1::buffers;
use crate::h1::timer::Timer;
use crate::observe::metrics::{Metrics, Rejection};

/// A plain TCP client connection served by the fast path.
#[derive(Debug)]
pub struct ClientConn {
    stream: TcpStream,
    /// Bytes received and not yet consumed; no allocation while there are none.
    buf: Vec<u8>,
    /// Whether the client has closed its sending side.
    eof: bool,
    /// A write the client accepts nothing of for this long fails (`timeouts.client_send`).
    send_timeout: Duration,
    /// Where a client disconnected for the send timeout is counted.
    metrics: Option<Arc<Metrics>>,
    /// The timer of the connection's waits on a write to the client or a read from its
    /// upstream (one wait at a time).
    timer: Timer,
}

impl ClientConn {
    /// Serves `stream`, with `early` bytes already read from it; a write the client accepts
    /// nothing of for `send_timeout` fails.
    pub fn new(
        stream: TcpStream,
        early: Bytes,
        send_timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> ClientConn {
        let buf = if early.is_empty() {
            Vec::new()
        } else {
            let mut buf = buffers::take();
            buf.extend_from_slice(&early);
            buf
        };
        ClientConn { stream, buf, eof: false, send_timeout, metrics, timer: Timer::new() }
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the client closed its sending side (nothing more will arrive).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Drops the first `n` buffered bytes (they have been dealt with).
    pub fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }

    /// Reads what the client has sent since, appending it to the buffer; returns how much
    /// arrived (0 at EOF). The buffer grows beyond its usual size only for a head that needs
    /// it.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf = buffers::take();
        }
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(buffers::BUFFER_BYTES);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Gives the read buffer back while nothing is buffered: an idle connection holds none.
    pub fn release_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            buffers::give(std::mem::take(&mut self.buf));
        }
    }

    /// Writes all of `head` and then `body` (in one system call when the socket takes them).
    /// Fails with [`io::ErrorKind::TimedOut`] when the client accepts nothing for the send
    /// timeout, as the wire guard fails hyper's writes on the general path.
    pub async fn write_all(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let (mut head, mut body) = (head, body);
        while !head.is_empty() || !body.is_empty() {
            let write = write_some(&mut self.stream, head, body);
            let Some(written) = self.timer.within(self.send_timeout, write).await else {
                if let Some(metrics) = self.metrics.take() {
                    metrics.reject(Rejection::ClientSendTimeout);
                }
                return Err(io::ErrorKind::TimedOut.into());
            };
            let written = written?;
            let from_head = written.min(head.len());
            head = head.get(from_head..).unwrap_or_default();
            body = body.get(written - from_head..).unwrap_or_default();
        }
        Ok(())
    }

    /// The bytes read and not yet consumed, with the connection's timer: a request head parsed
    /// from the first can wait on its upstream with the second while it is still borrowed.
    pub fn parts(&mut self) -> (&[u8], &mut Timer) {
        (&self.buf, &mut self.timer)
    }

    /// The timer for a wait of the request being served (a read from its upstream): the
    /// connection's own, so a keep-alive connection does not make one per request.
    pub fn timer(&mut self) -> &mut Timer {
        &mut self.timer
    }

    /// Closes the sending side, so the client sees the end of a close-delimited response.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The connection for hyper: its socket behind the bytes already read.
    pub fn into_prefixed(mut self) -> Prefixed<TcpStream> {
        let prefix = Bytes::copy_from_slice(&self.buf);
        self.buf.clear();
        self.release_buffer();
        Prefixed { prefix, inner: self.stream }
    }
}

/// Writes some of `head` then `body` (both in one `writev`); returns how much.
async fn write_some(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
    let count = if body.is_empty() {
        1
    } else if head.is_empty() {
        0
    } else {
        2
    };
    let slices = if count == 0 { slices.get(1..) } else { slices.get(..count) };
    let written = stream.write_vectored(slices.unwrap_or_default()).await?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(written)
}

/// Writes all of `head` then `body` to `stream`, both in one `writev` when the socket has
/// room.
pub async fn write_both(
    stream: &mut (impl AsyncWrite + Unpin),
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() {
        let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
        let count = if body.is_empty() { 1 } else { 2 };
        let written = stream.write_vectored(slices.get(..count).unwrap_or_default()).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = head.get(from_head..).unwrap_or_default();
        body = body.get(written - from_head..).unwrap_or_default();
    }
    stream.write_all(body).await
}

/// A stream read from behind bytes that were read from it earlier: reads return `prefix`
/// first. Writes go straight to the stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with nothing in front of it.
    pub fn new(inner: S) -> Prefixed<S> {
        Prefixed { prefix: Bytes::new(), inner }
    }

    /// The stream, and the prefix bytes not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(self.prefix.get(..n).unwrap_or_default());
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Readiness for Prefixed<TcpStream> {
    const PARKABLE: bool = true;
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        let ready = !self.prefix.is_empty();
        let stream = &self.inner;
        async move { if ready { Ok(()) } else { stream.readable().await } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_before_the_stream() {
        let (client, server) = tokio::io::duplex(64);
        let mut prefixed = Prefixed { prefix: Bytes::from_static(b"early "), inner: server };
        let mut client = client;
        client.write_all(b"late").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        prefixed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"early late");
    }
}
