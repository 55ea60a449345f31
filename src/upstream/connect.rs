//! Reaching an upstream: the connections the pooled clients dial ([`Connector`]), straight to
//! the upstream with the TCP [`Dialer`] or through parent proxies ([`Egress`]: the forward
//! proxy's `[[parent]]` rules, a route's `upstream_proxy`), each counted under the dialer's
//! caps while it is open ([`OpenConnections`]: per address, and a group target's
//! `max_connections` in all, a connection through a parent included), and the TLS handshake
//! bounded by the same deadline ([`HandshakeDeadline`]).
//!
//! A connection is an [`UpstreamStream`]: which way it went is decided once, when it is
//! opened, so the pools that keep it need no key beyond the destination they already use. A
//! connection to an HTTP parent that forwards requests tells hyper so
//! (`Connected::proxy`), and hyper writes those requests in absolute-form. Each is stamped with
//! when it was opened ([`DialedAt`]): hyper-util's pooled client reports a connection's details
//! with each response and each error, not whether it took the connection from its pool, and
//! the stamp answers that (a connection opened before a request set off was reused, and may
//! have met the upstream closing it: `super::replay`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::body::BoxError;
use crate::config::UpstreamProtocol;
use crate::policy::destination::DestinationGuard;
pub use crate::upstream::dialer::{
    ConnectError, Dialer, OpenConnections, StaticHosts, UpstreamSlot, UpstreamTcp,
};
use crate::upstream::egress::{Carriage, Dialed, Egress, EgressError, Payload};
use crate::upstream::parent::ParentTunnel;

/// How the pooled clients reach an upstream: the TCP dialer (resolution, the destination
/// guard, the connect timeout), the parent rules when there are any, and the connection cap of
/// a group's target.
#[derive(Debug, Clone)]
pub struct Connector {
    dialer: Dialer,
    egress: Option<Arc<Egress>>,
}

impl Connector {
    /// A connector whose every dial, DNS included, is bounded by `timeout`; `guard`, when
    /// given, is applied to each resolved address before connecting to it. It connects
    /// straight to every upstream until given parent rules ([`Connector::through`]).
    pub fn new(
        timeout: Duration,
        hosts: StaticHosts,
        guard: Option<Arc<DestinationGuard>>,
    ) -> Connector {
        Connector { dialer: Dialer::new(timeout, hosts, guard), egress: None }
    }

    /// The same connector, opening its connections by `egress`'s rules (no rules: unchanged).
    pub fn through(mut self, egress: Arc<Egress>) -> Connector {
        self.egress = (!egress.is_empty()).then_some(egress);
        self
    }

    /// This connector (and every clone of it) opening at most `cap` connections at once to
    /// any one address (see [`Dialer::capped`]).
    pub fn capped(mut self, cap: usize) -> Connector {
        self.dialer = self.dialer.capped(cap);
        self
    }

    /// The same connector, opening at most `limit` connections in all (a group target's
    /// `max_connections`), direct or through parents.
    pub fn limited(self, limit: Option<u32>) -> Connector {
        self.dialer.connections().set_limit(limit);
        self
    }

    /// The connections it has open, and their caps.
    pub fn connections(&self) -> &Arc<OpenConnections> {
        self.dialer.connections()
    }

    /// The TCP dialer under it.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The parent rules, when there are any.
    pub fn egress(&self) -> Option<&Egress> {
        self.egress.as_deref()
    }

    /// The longest opening a connection may take before the upstream's own TLS handshake:
    /// the connect timeout, or through parents every parent's connection and handshake.
    pub fn deadline(&self) -> Duration {
        match &self.egress {
            None => self.dialer.timeout(),
            Some(egress) => egress.longest_dial().max(self.dialer.timeout()),
        }
    }

    /// Dials `host:port` over TCP, straight there (no parent rules): what a caller that must
    /// reach the host itself uses.
    pub async fn connect(&self, host: &str, port: u16) -> Result<UpstreamTcp, ConnectError> {
        self.dialer.connect(host, port).await
    }

    /// Opens a tunnel to `host:port`: through the parents the rules name for it, else
    /// straight there (counted under the per-address cap while the tunnel lasts).
    pub async fn open(&self, host: &str, port: u16) -> Result<Dialed, EgressError> {
        match &self.egress {
            None => Ok(Dialed::Direct(self.dialer.connect(host, port).await?)),
            Some(egress) => egress.open(&self.dialer, host, port, Payload::Opaque).await,
        }
    }

    /// The connection a pooled client asked for by `uri` (`scheme://authority`).
    async fn stream_to(&self, uri: &Uri) -> Result<UpstreamStream, BoxError> {
        let host = uri.host().ok_or(ConnectError::MissingHost)?;
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let io = match &self.egress {
            None => Io::Direct(self.dialer.connect(host, port).await?),
            Some(egress) => {
                // A connection through a parent counts under the target's cap too (a direct
                // one takes its own place as it is dialled); taken before dialling, so two
                // dials cannot both take the last place.
                let slot = match egress.parents_for(host) {
                    Some(_) => Some(self.dialer.connections().take(None)?),
                    None => None,
                };
                let payload = if https { Payload::Opaque } else { Payload::PlainHttp };
                match egress.open(&self.dialer, host, port, payload).await {
                    Ok(Dialed::Direct(stream)) => Io::Direct(stream),
                    Ok(Dialed::Parent { tunnel, parent, carriage }) => {
                        Io::Parent(Box::new(ThroughParent {
                            tunnel,
                            parent,
                            carriage,
                            _slot: slot,
                        }))
                    }
                    // The direct failure is a plain connect error, as without parents.
                    Err(EgressError::Direct(err)) => return Err(err.into()),
                    Err(err) => return Err(err.into()),
                }
            }
        };
        Ok(UpstreamStream { io, at: DialedAt(Instant::now()) })
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.stream_to(&uri).await.map(TokioIo::new) })
    }
}

/// The parent proxy a connection goes through, in the extensions of every response that came
/// over it (as hyper-util's `HttpInfo` has the peer of a direct one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentPeer {
    /// The parent's address.
    pub addr: SocketAddr,
    /// The parent forwards the requests itself (absolute-form), so a `407` on them is its own.
    pub forwards: bool,
}

/// When a pooled connection was opened, in the [`Connected`] extras of every response and
/// every error of hyper-util's client that came over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DialedAt(pub Instant);

/// A connection the pooled clients dial: TCP straight to the upstream, or through a parent;
/// holding its place under its dialer's caps while it is open.
#[derive(Debug)]
pub struct UpstreamStream {
    io: Io,
    /// When it was opened.
    at: DialedAt,
}

#[derive(Debug)]
enum Io {
    Direct(UpstreamTcp),
    /// Boxed: the direct connection stays as small as a bare TCP stream.
    Parent(Box<ThroughParent>),
}

#[derive(Debug)]
struct ThroughParent {
    tunnel: ParentTunnel,
    parent: SocketAddr,
    carriage: Carriage,
    /// Its place under the target's cap.
    _slot: Option<UpstreamSlot>,
}

impl UpstreamStream {
    /// The address at the other end of sluice's socket: the upstream, or the parent.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.io {
            Io::Direct(stream) => stream.get_ref().peer_addr(),
            Io::Parent(through) => Ok(through.parent),
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        let connected = match &self.io {
            Io::Direct(stream) => stream.connected(),
            Io::Parent(through) => {
                Connected::new().proxy(through.carriage == Carriage::Forward).extra(ParentPeer {
                    addr: through.parent,
                    forwards: through.carriage == Carriage::Forward,
                })
            }
        };
        connected.extra(self.at)
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Direct(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Parent(through) => Pin::new(&mut through.tunnel).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Direct(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Parent(through) => Pin::new(&mut through.tunnel).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Direct(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Parent(through) => Pin::new(&mut through.tunnel).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper asks once per connection; a direct one keeps TCP's gathered writes.
        match &self.io {
            Io::Direct(stream) => stream.is_write_vectored(),
            Io::Parent(through) => through.tunnel.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Direct(stream) => Pin::new(stream).poll_flush(cx),
            Io::Parent(through) => Pin::new(&mut through.tunnel).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Direct(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Parent(through) => Pin::new(&mut through.tunnel).poll_shutdown(cx),
        }
    }
}

/// Bounds connecting *and* the TLS handshake by the connector's deadline: a server that
/// accepts TCP and then never completes the handshake is a connect timeout (504), not a hang.
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
    /// of the URL's host, when given), all within the connector's deadline.
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
        HandshakeDeadline { inner, after: connector.deadline() }
    }
}
