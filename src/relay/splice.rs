//! The relay for tunnels whose two ends are plain TCP sockets. Each direction chooses, from
//! the sizes of its own reads, how to move its bytes:
//!
//! - **Copy**: read(2) into a buffer, write(2) out. A small interactive message (a WebSocket
//!   frame, a keystroke, one request of a request/response protocol) costs two system calls
//!   this way: a read shorter than the buffer shows the socket is drained, so no third call
//!   is needed to learn that it would block. The buffer exists only while bytes are waiting,
//!   so a tunnel idle between messages holds none.
//! - **Splice**: socket → pipe → socket with splice(2), kernel to kernel, up to [`PIPE_BYTES`]
//!   a call. A direction switches to it when a read fills the copy buffer (bulk), and back,
//!   closing its pipe, after [`SMALL_RUN`] fills in a row that the copy buffer would have held.
//!   A splice cannot tell a drained socket from a full pipe, so each wake-up ends with one call
//!   that would block: three calls for a small message, few per MiB for bulk.
//!
//! Every direction starts with Copy, so a tunnel that never carries bulk never opens a pipe.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{Shutdown, shutdown};
use tokio::io::{AsyncRead, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{Progress, RelayEnd, RelayLimits, Relayed};

/// Pipe capacity asked for per direction: one splice moves up to this much. Larger pipes mean
/// fewer system calls on bulk transfers; the kernel may grant less, which is fine.
const PIPE_BYTES: usize = 256 * 1024;

/// Copy buffer per direction, allocated only while bytes wait. A read that fills it is taken
/// as bulk: the direction moves on to splice.
const COPY_BYTES: usize = 16 * 1024;

/// Fills in a row smaller than [`COPY_BYTES`] after which a splicing direction goes back to
/// copying: enough that a bulk transfer's occasional short fill does not flip it.
const SMALL_RUN: u32 = 8;

/// Relays between two plain TCP sockets until both directions end, one fails, or a limit is
/// reached. `early` holds bytes the client sent before the tunnel opened (read along with its
/// CONNECT head); they are written upstream first, and not held after that (they may be a
/// slice of a larger read buffer).
///
/// An `async` block rather than an `async fn`: an `async fn` moves its arguments into locals
/// of its own, so a tunnel's task would hold both sockets twice for its whole life.
#[allow(clippy::manual_async_fn)]
pub fn relay(
    mut downstream: TcpStream,
    early: Bytes,
    mut upstream: TcpStream,
    limits: RelayLimits,
) -> impl Future<Output = Relayed> + Send {
    async move {
        let progress = Progress::new();
        if !early.is_empty() {
            if upstream.write_all(&early).await.is_err() {
                return progress.finish(RelayEnd::Error);
            }
            progress.to_upstream.fetch_add(early.len() as u64, Ordering::Relaxed);
        }
        drop(early);
        let (down_read, down_write) = downstream.split();
        let (up_read, up_write) = upstream.split();
        let both = async {
            tokio::join!(
                one_way(down_read, up_write, &progress, &progress.to_upstream),
                one_way(up_read, down_write, &progress, &progress.to_downstream),
            )
        };
        let end = tokio::select! {
            (a, b) = both => if a.is_ok() && b.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
            end = progress.limit_reached(limits) => end,
        };
        progress.finish(end)
    }
}

/// How a direction moves its bytes for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// read(2) and write(2) through a buffer.
    Copy,
    /// splice(2) through a pipe.
    Splice,
}

/// A direction's choice of [`Mode`], made from the sizes of its reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gear {
    mode: Mode,
    /// Splice fills in a row smaller than the copy buffer.
    small_run: u32,
}

impl Gear {
    fn new() -> Gear {
        Gear { mode: Mode::Copy, small_run: 0 }
    }

    /// Takes note of one read or fill of `moved` bytes and returns the mode for the next.
    fn after(&mut self, moved: usize) -> Mode {
        let small = moved < COPY_BYTES;
        match self.mode {
            Mode::Copy if !small => *self = Gear { mode: Mode::Splice, small_run: 0 },
            Mode::Copy => {}
            Mode::Splice if small => {
                self.small_run = self.small_run.saturating_add(1);
                if self.small_run >= SMALL_RUN {
                    *self = Gear::new();
                }
            }
            Mode::Splice => self.small_run = 0,
        }
        self.mode
    }
}

/// What one wake-up of a direction did.
enum Step {
    /// Bytes moved from one side to the other.
    Moved(usize),
    /// The reading side sent its FIN.
    Eof,
    /// The readiness was stale: nothing to read after all.
    Idle,
}

/// A pipe: its read end and its write end.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: a smaller pipe only means more system calls.
        let wanted = i32::try_from(PIPE_BYTES).unwrap_or(i32::MAX);
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(wanted));
        Ok(Pipe { read, write })
    }
}

/// Moves bytes from `from` to `to` until `from` reaches EOF (then half-closes `to`) or fails.
async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    progress: &Progress,
    counter: &AtomicU64,
) -> io::Result<()> {
    let mut gear = Gear::new();
    // Empty whenever a step ends: every byte spliced in has been spliced out.
    let mut pipe: Option<Pipe> = None;
    loop {
        // Polled rather than awaited with `readable`, which queues a waiter of its own: this
        // makes the relay's task the socket's reader, in place of the task that read it before
        // (hyper's, which waited for a read as the tunnel opened), whose memory that stale
        // waker would keep allocated for the tunnel's whole life.
        poll_fn(|cx| from.as_ref().poll_read_ready(cx)).await?;
        let step = match gear.mode {
            Mode::Copy => {
                pipe = None;
                copy_once(&mut from, &mut to).await?
            }
            Mode::Splice => {
                let pipe = match &mut pipe {
                    Some(pipe) => pipe,
                    None => pipe.insert(Pipe::new()?),
                };
                splice_once(from.as_ref(), to.as_ref(), pipe).await?
            }
        };
        match step {
            Step::Moved(moved) => {
                counter.fetch_add(moved as u64, Ordering::Relaxed);
                progress.touch();
                gear.after(moved);
            }
            // Pass the half-close on and let the other direction carry on.
            Step::Eof => return shutdown_write(to.as_ref()),
            Step::Idle => {}
        }
    }
}

/// Reads once what waits on `from` and writes all of it to `to`. The buffer lives for this
/// call only, so a direction waiting for its next message holds none.
async fn copy_once(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>) -> io::Result<Step> {
    let mut storage = Vec::with_capacity(COPY_BYTES);
    let mut buffer = ReadBuf::uninit(storage.spare_capacity_mut());
    // One poll: tokio clears the readiness after a short read (the socket is drained) or one
    // that would block, so the next wait needs no extra system call; a would-block ends the
    // step instead of holding the buffer while waiting.
    let read = poll_fn(|cx| match Pin::new(&mut *from).poll_read(cx, &mut buffer) {
        Poll::Ready(result) => Poll::Ready(result.map(|()| true)),
        Poll::Pending => Poll::Ready(Ok(false)),
    })
    .await;
    match read {
        Ok(false) => {
            // Pending is also tokio's way of saying this task used up its budget, and
            // `readable` does not count against it: yield, or the loop would spin.
            tokio::task::yield_now().await;
            Ok(Step::Idle)
        }
        Ok(true) if buffer.filled().is_empty() => Ok(Step::Eof),
        Ok(true) => {
            to.write_all(buffer.filled()).await?;
            Ok(Step::Moved(buffer.filled().len()))
        }
        Err(err) => {
            let _ = shutdown_write(to.as_ref());
            Err(err)
        }
    }
}

/// Splices what waits on `from` into the pipe, then all of it out to `to`.
async fn splice_once(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> io::Result<Step> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let filled = from.try_io(Interest::READABLE, || {
        splice(from.as_fd(), None, pipe.write.as_fd(), None, PIPE_BYTES, flags)
            .map_err(io::Error::from)
    });
    let filled = match filled {
        Ok(0) => return Ok(Step::Eof),
        Ok(n) => n,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
        Err(err) => {
            let _ = shutdown_write(to);
            return Err(err);
        }
    };
    let mut left: usize = filled;
    while left > 0 {
        poll_fn(|cx| to.poll_write_ready(cx)).await?;
        let drained = to.try_io(Interest::WRITABLE, || {
            splice(pipe.read.as_fd(), None, to.as_fd(), None, left, flags).map_err(io::Error::from)
        });
        match drained {
            Ok(n) => left = left.saturating_sub(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Step::Moved(filled))
}

fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    match shutdown(stream.as_raw_fd(), Shutdown::Write) {
        Ok(()) => Ok(()),
        // The peer is already gone; nothing left to tell it.
        Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn splices_both_ways_with_early_bytes_and_half_close() {
        let (mut client, proxy_down) = pair().await;
        let (proxy_up, mut server) = pair().await;
        let limits =
            RelayLimits { idle: Duration::from_secs(5), lifetime: Duration::from_secs(60) };
        let relay =
            tokio::spawn(relay(proxy_down, Bytes::from_static(b"early:"), proxy_up, limits));

        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), big.len() + 6);
        assert!(got.starts_with(b"early:") && got.get(6..) == Some(&big[..]));

        server.write_all(b"reply after FIN").await.unwrap();
        server.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after FIN");

        let relayed = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert_eq!(
            relayed,
            Relayed { to_upstream: big.len() as u64 + 6, to_downstream: 15, end: RelayEnd::Closed }
        );
    }

    #[test]
    fn small_reads_copy_full_reads_splice_and_a_run_of_small_fills_copies_again() {
        let mut gear = Gear::new();
        assert_eq!(gear.mode, Mode::Copy, "a tunnel starts copying, with no pipe");
        assert_eq!(gear.after(128), Mode::Copy);
        assert_eq!(gear.after(COPY_BYTES - 1), Mode::Copy);
        assert_eq!(gear.after(COPY_BYTES), Mode::Splice, "a full buffer means bulk");
        assert_eq!(gear.after(PIPE_BYTES), Mode::Splice);
        // A bulk transfer's occasional short fill does not send it back to copying.
        for _ in 1..SMALL_RUN {
            assert_eq!(gear.after(1448), Mode::Splice);
        }
        assert_eq!(gear.after(64 * 1024), Mode::Splice);
        for _ in 1..SMALL_RUN {
            assert_eq!(gear.after(128), Mode::Splice);
        }
        assert_eq!(gear.after(128), Mode::Copy, "a run of small fills: interactive again");
        assert_eq!(gear, Gear::new());
    }

    #[tokio::test]
    async fn small_messages_bulk_and_small_again_arrive_intact_both_ways() {
        let (client, proxy_down) = pair().await;
        let (proxy_up, server) = pair().await;
        let limits =
            RelayLimits { idle: Duration::from_secs(5), lifetime: Duration::from_secs(60) };
        let relay = tokio::spawn(relay(proxy_down, Bytes::new(), proxy_up, limits));
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        // The server echoes everything back, then passes the client's FIN on.
        let echo = tokio::spawn(async move {
            tokio::io::copy(&mut server_read, &mut server_write).await.unwrap();
            server_write.shutdown().await.unwrap();
        });

        let mut sent = Vec::new();
        let messages = (0..20u8).map(|i| vec![i; 128]);
        let bulk: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        for chunk in messages.clone().chain([bulk]).chain(messages) {
            // Written and read back at once: the bulk chunk exceeds what the sockets buffer.
            let mut back = vec![0u8; chunk.len()];
            let (wrote, read) =
                tokio::join!(client_write.write_all(&chunk), client_read.read_exact(&mut back));
            wrote.unwrap();
            read.unwrap();
            assert!(back == chunk, "a {} byte message came back changed", chunk.len());
            sent.extend(chunk);
        }
        client_write.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_read.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tokio::time::timeout(Duration::from_secs(5), echo).await.unwrap().unwrap();

        let relayed = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        let total = sent.len() as u64;
        assert_eq!(
            relayed,
            Relayed { to_upstream: total, to_downstream: total, end: RelayEnd::Closed }
        );
    }
}
