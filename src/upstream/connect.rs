//! Reaching an upstream: resolve its name (static `[dns] hosts` first), check each address
//! against the destination guard, open TCP within the connect timeout ([`Connector`]), and bound
//! the TLS handshake by the same deadline ([`HandshakeDeadline`]).
//!
//! Failures are typed ([`ConnectError`]) so a refused connection (502), a timeout (504) and a
//! prohibited address (403) are told apart without reading message strings.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
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
}

impl Connector {
    /// A connector whose every dial, DNS included, is bounded by `timeout`; `guard`, when
    /// given, is applied to each resolved address before connecting to it.
    pub fn new(
        timeout: Duration,
        hosts: StaticHosts,
        guard: Option<Arc<DestinationGuard>>,
    ) -> Connector {
        Connector { timeout, hosts, guard }
    }

    /// Dials `host:port`, trying each resolved address in turn; `host` may be an IP literal,
    /// with or without IPv6 brackets. The address checked is the address connected to, so a
    /// name cannot pass the guard with one answer and connect with another (DNS rebinding).
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
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

    async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
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
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Proxied traffic is latency-sensitive (SSE, interactive tunnels); never
                    // let Nagle hold back a small write.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
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

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
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
