//! Opening a TCP connection to `host:port`: resolve the name (static `[dns] hosts` first),
//! check each address against the destination guard and the connection caps, and connect
//! within the connect timeout ([`Dialer`]). This is the lowest step of reaching an upstream:
//! parent proxies (`super::parent`, `super::egress`) are dialled with it, and
//! `super::connect` builds the pooled clients' connections on it.
//!
//! Every connection a dialer opens holds a place under its caps ([`UpstreamTcp`]) until it
//! closes, pooled and idle or not: per address (`limits.max_upstream_connections`, which bounds
//! the descriptors one upstream address can take whatever the clients do: HTTP/2 streams fan
//! out to one upstream connection each when the upstream speaks HTTP/1.1), and in all, for a
//! group target's `max_connections` ([`OpenConnections`]).
//!
//! Failures are typed ([`ConnectError`]) so a refused connection (502), a timeout (504) and a
//! prohibited address (403) are told apart without reading message strings.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::net::TcpStream;

use crate::policy::destination::DestinationGuard;

/// Why a connection to an upstream could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The name did not resolve.
    #[error("DNS lookup of {host} failed")]
    Dns {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The name resolved to no addresses.
    #[error("DNS lookup of {host} returned no addresses")]
    NoAddresses {
        /// The name looked up.
        host: String,
    },
    /// Every address refused the connection.
    #[error("connection refused by {addr}")]
    Refused {
        /// The last address tried.
        addr: SocketAddr,
    },
    /// Resolution and connection together took longer than the connect timeout.
    #[error("no connection within {}", humantime::format_duration(*after))]
    Timeout {
        /// The configured timeout that fired.
        after: Duration,
    },
    /// Connecting failed for another reason (unreachable network, no route, ...).
    #[error("connecting to {addr} failed")]
    Io {
        /// The last address tried.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The URI given to the pooled client has no host (never the case for a parsed target).
    #[error("the upstream URI has no host")]
    MissingHost,
    /// Every address the name resolved to is refused by the destination rules.
    #[error("{addr} is not an allowed destination")]
    Prohibited {
        /// The (last) refused address.
        addr: SocketAddr,
    },
    /// Every allowed address already has as many connections open as the cap allows.
    #[error("{addr} already has {cap} connections open (limits.max_upstream_connections)")]
    AtCapacity {
        /// The (last) address at its cap.
        addr: SocketAddr,
        /// The cap.
        cap: usize,
    },
    /// The target already has as many connections open as its `max_connections` allows
    /// (circuit breaking); nothing was dialled.
    #[error("the target's {limit} connections are all open (max_connections)")]
    TargetAtCapacity {
        /// The target's `max_connections`.
        limit: usize,
    },
}

/// Static DNS answers consulted before the system resolver (`[dns] hosts`).
pub type StaticHosts = Arc<std::collections::BTreeMap<String, Vec<IpAddr>>>;

/// Resolves a host name and opens a TCP connection within the connect timeout, to an address
/// the destination guard allows.
#[derive(Debug, Clone)]
pub struct Dialer {
    timeout: Duration,
    hosts: StaticHosts,
    guard: Option<Arc<DestinationGuard>>,
    /// Connections open, per address and in all, shared by every clone of this dialer.
    open: Arc<OpenConnections>,
}

impl Dialer {
    /// A dialer whose every dial, DNS included, is bounded by `timeout`; `guard`, when given,
    /// is applied to each resolved address before connecting to it.
    pub fn new(
        timeout: Duration,
        hosts: StaticHosts,
        guard: Option<Arc<DestinationGuard>>,
    ) -> Dialer {
        Dialer { timeout, hosts, guard, open: OpenConnections::new(usize::MAX) }
    }

    /// This dialer (and every clone of it) opening at most `cap` connections at once to any
    /// one address; an address at its cap is skipped, and when every address is, dialling
    /// fails with [`ConnectError::AtCapacity`] at once.
    pub fn capped(mut self, cap: usize) -> Dialer {
        self.open = OpenConnections::new(cap);
        self
    }

    /// The connections this dialer has open, and their caps.
    pub fn connections(&self) -> &Arc<OpenConnections> {
        &self.open
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The static host table.
    pub fn hosts(&self) -> &StaticHosts {
        &self.hosts
    }

    /// The destination guard every resolved address is checked against, if any.
    pub fn guard(&self) -> Option<&DestinationGuard> {
        self.guard.as_deref()
    }

    /// Dials `host:port`, trying each resolved address in turn; `host` may be an IP literal,
    /// with or without IPv6 brackets. The address checked is the address connected to, so a
    /// name cannot pass the guard with one answer and connect with another (DNS rebinding).
    pub async fn connect(&self, host: &str, port: u16) -> Result<UpstreamTcp, ConnectError> {
        let after = self.timeout;
        tokio::time::timeout(after, self.dial(host, port))
            .await
            .unwrap_or(Err(ConnectError::Timeout { after }))
    }

    async fn resolve(&self, bare: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ips) = self.hosts.get(&name) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let resolved = tokio::net::lookup_host((bare, port)).await.map_err(|source| {
            ConnectError::Dns { host: bare.to_owned(), source: Arc::new(source) }
        })?;
        Ok(resolved.collect())
    }

    async fn dial(&self, host: &str, port: u16) -> Result<UpstreamTcp, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = self.resolve(bare, port).await?;
        let mut last = ConnectError::NoAddresses { host: bare.to_owned() };
        for addr in addrs {
            if let Some(guard) = &self.guard
                && !guard.address_allowed(addr.ip())
            {
                last = ConnectError::Prohibited { addr };
                continue;
            }
            let slot = match self.open.take(Some(addr)) {
                Ok(slot) => slot,
                // The target's own cap holds for every address: no point trying the next.
                Err(full @ ConnectError::TargetAtCapacity { .. }) => return Err(full),
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Proxied traffic is latency-sensitive (SSE, interactive tunnels); never
                    // let Nagle hold back a small write.
                    let _ = stream.set_nodelay(true);
                    return Ok(UpstreamTcp { stream, slot });
                }
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    last = ConnectError::Refused { addr };
                }
                Err(err) => {
                    last = ConnectError::Io { addr, source: Arc::new(err) };
                }
            }
        }
        Err(last)
    }
}

/// The connections a dialer has open, per address and in all, under two caps: the per-address
/// one (`limits.max_upstream_connections`), fixed, and the total one (a group target's
/// `max_connections`), which a reload may change while connections are open.
#[derive(Debug)]
pub struct OpenConnections {
    per_address: usize,
    limit: AtomicUsize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<SocketAddr, usize>,
    total: usize,
}

impl OpenConnections {
    /// No connections yet, at most `per_address` to any one address, and no total cap.
    pub fn new(per_address: usize) -> Arc<OpenConnections> {
        Arc::new(OpenConnections {
            per_address,
            limit: AtomicUsize::new(usize::MAX),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Sets the cap on all connections together (`None`: only the per-address cap), for
    /// connections opened from now on.
    pub fn set_limit(&self, limit: Option<u32>) {
        let limit = limit.map_or(usize::MAX, |limit| limit as usize);
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The cap on all connections together (`None` when there is none).
    pub fn limit(&self) -> Option<usize> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|limit| *limit != usize::MAX)
    }

    /// Connections open now, in all.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Whether a request with `in_flight` others to the same target can be served: below the
    /// total cap a new connection may be opened; at it, only if a connection is free. Each
    /// request in flight is taken to hold a connection, as over HTTP/1.1.
    pub fn admits(&self, in_flight: u32) -> bool {
        // Without a cap the count is not needed: no lock on every pick.
        let Some(limit) = self.limit() else { return true };
        let open = self.open();
        open < limit || (in_flight as usize) < open
    }

    /// A place for one more connection, to `addr` (`None`: through a parent proxy, counted
    /// in the total only), unless a cap is reached.
    pub fn take(self: &Arc<Self>, addr: Option<SocketAddr>) -> Result<UpstreamSlot, ConnectError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.limit.load(Ordering::Relaxed);
        if counts.total >= limit {
            return Err(ConnectError::TargetAtCapacity { limit });
        }
        if let Some(addr) = addr {
            let count = counts.by_address.entry(addr).or_insert(0);
            if *count >= self.per_address {
                return Err(ConnectError::AtCapacity { addr, cap: self.per_address });
            }
            *count += 1;
        }
        counts.total += 1;
        Ok(UpstreamSlot { counts: self.clone(), addr })
    }
}

/// One counted upstream connection's place under its dialer's caps; freed when dropped.
#[derive(Debug)]
pub struct UpstreamSlot {
    counts: Arc<OpenConnections>,
    addr: Option<SocketAddr>,
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(addr) = self.addr
            && let Some(count) = counts.by_address.get_mut(&addr)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_address.remove(&addr);
            }
        }
    }
}

/// A TCP connection to an upstream that holds its place under the dialer's caps until it is
/// dropped, wherever it ends up: in a pool, under TLS, in a tunnel.
#[derive(Debug)]
pub struct UpstreamTcp {
    stream: TcpStream,
    slot: UpstreamSlot,
}

impl UpstreamTcp {
    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, and a guard that keeps the connection counted until it is dropped (a
    /// tunnel relays the bare socket and keeps the guard beside it).
    pub fn into_parts(self) -> (TcpStream, UpstreamSlot) {
        (self.stream, self.slot)
    }
}

impl tokio::io::AsyncRead for UpstreamTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connection for UpstreamTcp {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_in_all_and_follow_a_new_limit() {
        let (a, b): (SocketAddr, SocketAddr) =
            ("192.0.2.1:80".parse().unwrap(), "192.0.2.2:80".parse().unwrap());
        let open = OpenConnections::new(1);
        let first = open.take(Some(a)).unwrap();
        assert!(matches!(open.take(Some(a)), Err(ConnectError::AtCapacity { cap: 1, .. })));
        open.set_limit(Some(2));
        let second = open.take(Some(b)).unwrap();
        // A connection through a parent counts in the total, never per address.
        assert!(matches!(open.take(None), Err(ConnectError::TargetAtCapacity { limit: 2 })));
        assert_eq!((open.open(), open.limit()), (2, Some(2)));
        // At the total cap, a request fits only while a connection is free.
        assert!(open.admits(1));
        assert!(!open.admits(2));
        drop(first);
        assert_eq!(open.open(), 1);
        assert!(open.admits(5), "below the cap another connection may be opened");
        let through_parent = open.take(None).unwrap();
        open.set_limit(None);
        let third = open.take(Some(a)).unwrap();
        assert_eq!((open.open(), open.limit()), (3, None));
        drop((second, through_parent, third));
        assert_eq!(open.open(), 0);
        assert!(open.take(Some(a)).is_ok());
    }
}
