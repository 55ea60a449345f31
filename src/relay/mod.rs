//! Copying bytes both ways between two streams: the body of every CONNECT tunnel and upgraded
//! connection.
//!
//! Each direction runs on its own. When one side finishes sending (EOF), the write half of the
//! other side is shut down, so the FIN travels on, while the opposite direction keeps flowing
//! (TCP half-close). The relay ends when both directions are done, when either fails, or when
//! no byte has moved either way for the idle timeout.
//!
//! [`relay`] copies through user-space buffers and works on any stream (TLS, HTTP/2, upgraded
//! connections); [`splice`] serves tunnels whose two ends are plain TCP sockets, copying small
//! messages with read/write and moving bulk kernel to kernel with splice(2).

#[cfg(target_os = "linux")]
pub mod splice;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Buffer per direction: large enough for bulk throughput, small enough per tunnel.
const BUFFER_BYTES: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// Open for the maximum lifetime.
    MaxLifetime,
    /// A read or write failed (reset, broken pipe).
    Error,
}

impl RelayEnd {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::IdleTimeout => "idle_timeout",
            RelayEnd::MaxLifetime => "max_lifetime",
            RelayEnd::Error => "error",
        }
    }
}

/// What a relay carried and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes copied from the downstream side to the upstream side.
    pub to_upstream: u64,
    /// Bytes copied from the upstream side to the downstream side.
    pub to_downstream: u64,
    /// Why it stopped.
    pub end: RelayEnd,
}

/// Progress shared by both directions, read by the idle watchdog.
struct Progress {
    started: Instant,
    /// Milliseconds after `started` when a byte last moved.
    last_activity_ms: AtomicU64,
    to_upstream: AtomicU64,
    to_downstream: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            to_upstream: AtomicU64::new(0),
            to_downstream: AtomicU64::new(0),
        }
    }

    fn finish(&self, end: RelayEnd) -> Relayed {
        Relayed {
            to_upstream: self.to_upstream.load(Ordering::Relaxed),
            to_downstream: self.to_downstream.load(Ordering::Relaxed),
            end,
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves with the limit that ends the relay: no activity for `limits.idle`, or
    /// `limits.lifetime` since the start. One timer serves both, so an idle relay keeps one.
    async fn limit_reached(&self, limits: RelayLimits) -> RelayEnd {
        let end_of_life = self.started + limits.lifetime;
        loop {
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let idle_deadline = self.started + last + limits.idle;
            let now = Instant::now();
            if now >= end_of_life {
                return RelayEnd::MaxLifetime;
            }
            if now >= idle_deadline {
                return RelayEnd::IdleTimeout;
            }
            tokio::time::sleep_until(idle_deadline.min(end_of_life)).await;
        }
    }
}

/// How long a relay may sit idle, and how long it may live at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// No byte either way for this long ends the relay.
    pub idle: Duration,
    /// The relay ends this long after it started, however busy.
    pub lifetime: Duration,
}

/// Relays between `downstream` and `upstream` until both directions end, one fails, or a
/// limit is reached.
pub async fn relay<D, U>(downstream: D, upstream: U, limits: RelayLimits) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let progress = Progress::new();
    let (down_read, down_write) = tokio::io::split(downstream);
    let (up_read, up_write) = tokio::io::split(upstream);
    let both = async {
        tokio::join!(
            copy_one_way(down_read, up_write, &progress, &progress.to_upstream),
            copy_one_way(up_read, down_write, &progress, &progress.to_downstream),
        )
    };
    let end = tokio::select! {
        (a, b) = both => if a.is_ok() && b.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
        end = progress.limit_reached(limits) => end,
    };
    progress.finish(end)
}

async fn copy_one_way<R, W>(
    mut reader: R,
    mut writer: W,
    progress: &Progress,
    counter: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                let _ = writer.shutdown().await;
                return Err(err);
            }
        };
        let chunk = buffer.get(..read).unwrap_or_default();
        writer.write_all(chunk).await?;
        counter.fetch_add(read as u64, Ordering::Relaxed);
        progress.touch();
    }
    // EOF from the reader: pass the half-close on and let the other direction carry on.
    writer.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let (client, proxy_down) = duplex(64);
        let (proxy_up, server) = duplex(64);
        let relay = tokio::spawn(relay(
            proxy_down,
            proxy_up,
            RelayLimits { idle: Duration::from_secs(5), lifetime: Duration::from_secs(60) },
        ));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);

        client_write.write_all(b"request").await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");

        // The other direction still flows after the client's half-close.
        server_write.write_all(b"response after FIN").await.unwrap();
        server_write.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_read.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response after FIN");

        let relayed = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert_eq!(relayed, Relayed { to_upstream: 7, to_downstream: 18, end: RelayEnd::Closed });
    }

    #[tokio::test(start_paused = true)]
    async fn busy_relay_ends_at_its_maximum_lifetime() {
        let (mut client, proxy_down) = duplex(64);
        let (proxy_up, mut server) = duplex(64);
        let relay = relay(
            proxy_down,
            proxy_up,
            RelayLimits { idle: Duration::from_secs(5), lifetime: Duration::from_secs(20) },
        );
        tokio::pin!(relay);
        // Keep traffic flowing every second so the idle timeout never fires.
        let relayed = loop {
            let traffic = async {
                let _ = client.write_all(b"x").await;
                let mut byte = [0u8; 1];
                let _ = server.read_exact(&mut byte).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            tokio::select! {
                relayed = &mut relay => break relayed,
                () = traffic => {}
            }
        };
        assert_eq!(relayed.end, RelayEnd::MaxLifetime);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_past_both_limits_ends_at_its_lifetime() {
        let (_client, proxy_down) = duplex(64);
        let (proxy_up, _server) = duplex(64);
        let limit = Duration::from_secs(30);
        let relayed =
            relay(proxy_down, proxy_up, RelayLimits { idle: limit, lifetime: limit }).await;
        assert_eq!(relayed.end, RelayEnd::MaxLifetime);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_relay_is_closed() {
        let (_client, proxy_down) = duplex(64);
        let (proxy_up, _server) = duplex(64);
        let relayed = relay(
            proxy_down,
            proxy_up,
            RelayLimits { idle: Duration::from_secs(30), lifetime: Duration::from_secs(3600) },
        )
        .await;
        assert_eq!(relayed.end, RelayEnd::IdleTimeout);
    }
}
