//! Reaching an upstream: resolve its name (static `[dns] hosts` first), check each address
//! against the destination guard and its connection cap, open TCP within the connect timeout
//! ([`Connector`]), and bound the TLS handshake by the same deadline ([`HandshakeDeadline`]).
//!
//! Every connection a connector opens holds a place under its per-address cap
//! ([`UpstreamTcp`]) until it closes, pooled and idle or not: the cap bounds the descriptors
//! one upstream address can take, whatever the clients do (HTTP/2 streams fan out to one
//! upstream connection each when the upstream speaks HTTP/1.1).
//!
//! Failures are typed ([`ConnectError`]) so a refused connection (502), a timeout (504) and a
//! prohibited address (403) are told apart without reading message strings.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::config::UpstreamProtocol;
use crate::policy::destination::DestinationGuard;

/// Why a TCP connection to an upstream could not be made.
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
}

/// Static DNS answers consulted before the system resolver (`[dns] hosts`).
pub type StaticHosts = Arc<std::collections::BTreeMap<String, Vec<IpAddr>>>;

/// Resolves a host name and opens a TCP connection within the connect timeout, to an address
/// the destination guard allows.
#[derive(Debug, Clone)]
pub struct Connector {
    timeout: Duration,
    hosts: StaticHosts,
    guard: Option<Arc<DestinationGuard>>,
    /// Connections open per address, shared by every clone of this connector.
    open: Arc<OpenConnections>,
}

impl Connector {
    /// A connector whose every dial, DNS included, is bounded by `timeout`; `guard`, when
    /// given, is applied to each resolved address before connecting to it.
    pub fn new(
        timeout: Duration,
        hosts: StaticHosts,
        guard: Option<Arc<DestinationGuard>>,
    ) -> Connector {
        Connector { timeout, hosts, guard, open: Arc::new(OpenConnections::new(usize::MAX)) }
    }

    /// This connector (and every clone of it) opening at most `cap` connections at once to
    /// any one address; an address at its cap is skipped, and when every address is,
    /// connecting fails with [`ConnectError::AtCapacity`] at once.
    pub fn capped(mut self, cap: usize) -> Connector {
        self.open = Arc::new(OpenConnections::new(cap));
        self
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
            let Some(slot) = self.open.try_take(addr) else {
                last = ConnectError::AtCapacity { addr, cap: self.open.cap };
                continue;
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

/// Connections open per upstream address, under a cap.
#[derive(Debug)]
struct OpenConnections {
    cap: usize,
    open: Mutex<HashMap<SocketAddr, usize>>,
}

impl OpenConnections {
    fn new(cap: usize) -> OpenConnections {
        OpenConnections { cap, open: Mutex::new(HashMap::new()) }
    }

    /// A place for one more connection to `addr`, unless it has `cap` already.
    fn try_take(self: &Arc<Self>, addr: SocketAddr) -> Option<UpstreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(addr).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(UpstreamSlot { counts: self.clone(), addr })
    }
}

/// One counted upstream connection's place under the per-address cap; freed when dropped.
#[derive(Debug)]
pub struct UpstreamSlot {
    counts: Arc<OpenConnections>,
    addr: SocketAddr,
}

impl Drop for UpstreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// A TCP connection to an upstream that holds its place under the connector's per-address
/// cap until it is dropped, wherever it ends up: in a pool, under TLS, in a tunnel.
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

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamTcp>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::MissingHost)?;
            let default_port =
                if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
            let port = uri.port_u16().unwrap_or(default_port);
            connector.connect(host, port).await.map(TokioIo::new)
        })
    }
}

/// Bounds connecting *and* the TLS handshake by the connect timeout: a server that accepts
/// TCP and then never completes the handshake is a connect timeout (504), not a hang.
#[derive(Debug, Clone)]
pub struct HandshakeDeadline {
    inner: HttpsConnector<Connector>,
    after: Duration,
}

impl tower_service::Service<Uri> for HandshakeDeadline {
    type Response = <HttpsConnector<Connector> as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let after = self.after;
        Box::pin(async move {
            match tokio::time::timeout(after, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(ConnectError::Timeout { after }) as BoxError),
            }
        })
    }
}

impl HandshakeDeadline {
    /// Dials through `connector`, then makes the TLS connection for `https` upstreams with
    /// `tls`, offering the ALPN protocols `protocol` allows (and verifying `server_name` instead
    /// of the URL's host, when given), all within the connector's timeout.
    pub fn new(
        connector: &Connector,
        tls: &Arc<rustls::ClientConfig>,
        protocol: UpstreamProtocol,
        server_name: Option<ServerName<'static>>,
    ) -> HandshakeDeadline {
        let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((**tls).clone())
            .https_or_http();
        if let Some(name) = server_name {
            builder =
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
        }
        let inner = match protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(connector.clone()),
            UpstreamProtocol::Auto => {
                builder.enable_all_versions().wrap_connector(connector.clone())
            }
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(connector.clone()),
        };
        HandshakeDeadline { inner, after: connector.timeout }
    }
}
