//! The zero-copy relay for tunnels whose two ends are plain TCP sockets: each direction moves
//! bytes socket → pipe → socket with splice(2), so they never enter user space, and no buffer
//! is held while the tunnel is idle (a direction's pipe is created when its first byte
//! arrives).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{Shutdown, shutdown};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{Progress, RelayEnd, RelayLimits, Relayed};

/// Pipe capacity asked for per direction: one splice moves up to this much. Larger pipes mean
/// fewer system calls on bulk transfers; the kernel may grant less, which is fine.
const PIPE_BYTES: usize = 256 * 1024;

/// Relays between two plain TCP sockets until both directions end, one fails, or a limit is
/// reached. `early` holds bytes the client sent before the tunnel opened (read along with its
/// CONNECT head); they are written upstream first.
pub async fn relay(
    downstream: TcpStream,
    early: Bytes,
    mut upstream: TcpStream,
    limits: RelayLimits,
) -> Relayed {
    let progress = Progress::new();
    if !early.is_empty() {
        if upstream.write_all(&early).await.is_err() {
            return progress.finish(RelayEnd::Error);
        }
        progress.to_upstream.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    let both = async {
        tokio::join!(
            one_way(&downstream, &upstream, &progress, &progress.to_upstream),
            one_way(&upstream, &downstream, &progress, &progress.to_downstream),
        )
    };
    let end = tokio::select! {
        (a, b) = both => if a.is_ok() && b.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
        () = progress.idle_for(limits.idle) => RelayEnd::IdleTimeout,
        () = tokio::time::sleep(limits.lifetime) => RelayEnd::MaxLifetime,
    };
    progress.finish(end)
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
    from: &TcpStream,
    to: &TcpStream,
    progress: &Progress,
    counter: &AtomicU64,
) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        from.readable().await?;
        let pipe = match &mut pipe {
            Some(pipe) => pipe,
            None => pipe.insert(Pipe::new()?),
        };
        let filled = from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, pipe.write.as_fd(), None, PIPE_BYTES, flags)
                .map_err(io::Error::from)
        });
        let filled = match filled {
            Ok(0) => {
                // EOF: pass the half-close on and let the other direction carry on.
                return shutdown_write(to);
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                let _ = shutdown_write(to);
                return Err(err);
            }
        };
        let mut left: usize = filled;
        while left > 0 {
            to.writable().await?;
            let drained = to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, to.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            });
            match drained {
                Ok(n) => left = left.saturating_sub(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        counter.fetch_add(filled as u64, Ordering::Relaxed);
        progress.touch();
    }
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
}
