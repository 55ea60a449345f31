//! The upstream side both proxy modes share: a [`Connector`] that resolves and dials with a
//! deadline, and the pooled [`Upstream`] client that sends requests over it. A route whose
//! upstream speaks only HTTP/1.1 sends its plain requests through its own [`route_pool`].
//!
//! Connect failures are typed ([`ConnectError`]) so the error renderer can tell a refused
//! connection (502) from a timeout (504) without inspecting message strings.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::Body;
use crate::config::{Config, UpstreamProtocol, UpstreamUrl};
use crate::error::{ErrorKind, ProxyError};
use crate::policy::destination::DestinationGuard;

pub mod route_pool;

use route_pool::RoutePool;

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

impl ConnectError {
    /// The failure kind this connect error represents.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::Dns { .. } | ConnectError::NoAddresses { .. } => ErrorKind::DnsError,
            ConnectError::Refused { .. } => ErrorKind::ConnectionRefused,
            ConnectError::Timeout { .. } => ErrorKind::ConnectionTimeout,
            ConnectError::Io { .. } | ConnectError::MissingHost => {
                ErrorKind::DestinationUnavailable
            }
            ConnectError::Prohibited { .. } => ErrorKind::DestinationIpProhibited,
        }
    }
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
    type Error = crate::body::BoxError;
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
                Err(_) => Err(Box::new(ConnectError::Timeout { after }) as crate::body::BoxError),
            }
        })
    }
}

/// How an [`Upstream`] client behaves: its timeouts and pool limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// TCP connect, DNS included.
    pub connect: Duration,
    /// Response head after the request was handed to the pool.
    pub response_header: Duration,
    /// Gap between two response body chunks.
    pub body_idle: Duration,
    /// Idle pooled connection lifetime.
    pub pool_idle: Duration,
    /// Idle pooled connections kept per origin.
    pub max_idle_per_host: usize,
}

impl UpstreamSettings {
    /// The global settings from `config`, used by the forward proxy.
    pub fn from_config(config: &Config) -> UpstreamSettings {
        UpstreamSettings {
            connect: config.timeouts.connect,
            response_header: config.timeouts.response_header,
            body_idle: config.timeouts.body_idle,
            pool_idle: config.timeouts.upstream_idle,
            max_idle_per_host: config.limits.max_idle_upstream_per_host,
        }
    }
}

/// The pooled HTTP(S) client used for proxied requests; one for the forward proxy and one per
/// route, so each route keeps its own timeouts, TLS settings and connection pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HandshakeDeadline, Body>,
    /// An HTTP/1.1-only client for upgrade requests, when `client` may speak HTTP/2 (an
    /// HTTP/1.1 `Upgrade` cannot travel over an HTTP/2 connection).
    upgrade_client: Option<Client<HandshakeDeadline, Body>>,
    /// The route's own HTTP/1.1 pool, for requests that are not upgrades, when the upstream
    /// speaks only HTTP/1.1.
    route_pool: Option<RoutePool>,
    /// What `client` dials through, kept to dial for a route pool too.
    https: HandshakeDeadline,
    protocol: UpstreamProtocol,
    connector: Connector,
    settings: UpstreamSettings,
}

impl Upstream {
    /// Builds a client with `settings`, speaking `protocol`, verifying HTTPS upstreams with
    /// `tls` (and `server_name` instead of the URL's host, when given).
    pub fn new(
        settings: UpstreamSettings,
        tls: Arc<rustls::ClientConfig>,
        protocol: UpstreamProtocol,
        server_name: Option<ServerName<'static>>,
        connector: Connector,
    ) -> Upstream {
        let https = https_connector(&settings, &tls, protocol, server_name.clone(), &connector);
        let client = build_client(&settings, https.clone(), protocol);
        let upgrade_client = (protocol != UpstreamProtocol::Http1).then(|| {
            let http1 =
                https_connector(&settings, &tls, UpstreamProtocol::Http1, server_name, &connector);
            build_client(&settings, http1, UpstreamProtocol::Http1)
        });
        let route_pool = None;
        Upstream { client, upgrade_client, route_pool, https, protocol, connector, settings }
    }

    /// Makes this a route's client for its one upstream `url`, whose `Host` is `host`: when
    /// that upstream speaks only HTTP/1.1 (a plain `http://` one with `protocol = "auto"`, or
    /// any with `protocol = "http1"`), every request but upgrades goes through a pool of the
    /// route's own ([`route_pool`]). An upstream that may speak HTTP/2 (by ALPN, or `http2`)
    /// stays on the general client.
    pub fn with_route_pool(mut self, url: &UpstreamUrl, host: HeaderValue) -> Upstream {
        let http1_only = match self.protocol {
            UpstreamProtocol::Http1 => true,
            UpstreamProtocol::Auto => url.scheme == http::uri::Scheme::HTTP,
            UpstreamProtocol::Http2 => false,
        };
        let origin = Uri::builder()
            .scheme(url.scheme.clone())
            .authority(url.authority.clone())
            .path_and_query("/")
            .build();
        if let (true, Ok(origin)) = (http1_only, origin) {
            self.route_pool = Some(RoutePool::new(
                self.https.clone(),
                origin,
                host,
                self.settings.max_idle_per_host,
                self.settings.pool_idle,
            ));
        }
        self
    }

    /// This client's settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// The connector, for tunnels that need a raw TCP stream.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Sends `request` (absolute URI) over a pooled connection and waits for the response head.
    /// An upgrade request always goes over HTTP/1.1.
    pub async fn send(
        &self,
        request: Request<Body>,
        target: &Authority,
        upgrade: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let after = self.settings.response_header;
        let sent = match (&self.route_pool, &self.upgrade_client, upgrade) {
            // Boxed, like the general client's response future: inline, this future would
            // make every connection's in-flight request slot (allocated by hyper at the size of
            // the whole request future, and kept by a tunnelling connection) larger.
            (Some(pool), _, false) => {
                tokio::time::timeout(after, Box::pin(pool.send(request))).await
            }
            (_, Some(http1), true) => tokio::time::timeout(after, send_via(http1, request)).await,
            _ => tokio::time::timeout(after, send_via(&self.client, request)).await,
        };
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(classify(source, target)),
            Err(_) => Err(ProxyError::ResponseTimeout { target: target.clone(), after }),
        }
    }
}

async fn send_via(
    client: &Client<HandshakeDeadline, Body>,
    request: Request<Body>,
) -> Result<Response<Incoming>, crate::body::BoxError> {
    client.request(request).await.map_err(Into::into)
}

/// The connector a client dials through: TCP by `connector`, then TLS for `https` upstreams,
/// offering the ALPN protocols `protocol` allows, all within the connect timeout.
fn https_connector(
    settings: &UpstreamSettings,
    tls: &Arc<rustls::ClientConfig>,
    protocol: UpstreamProtocol,
    server_name: Option<ServerName<'static>>,
    connector: &Connector,
) -> HandshakeDeadline {
    let mut builder =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((**tls).clone()).https_or_http();
    if let Some(name) = server_name {
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = match protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(connector.clone()),
        UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(connector.clone()),
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(connector.clone()),
    };
    HandshakeDeadline { inner: https, after: settings.connect }
}

fn build_client(
    settings: &UpstreamSettings,
    https: HandshakeDeadline,
    protocol: UpstreamProtocol,
) -> Client<HandshakeDeadline, Body> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(settings.pool_idle)
        .pool_max_idle_per_host(settings.max_idle_per_host)
        // `http2` to a plain-http upstream means HTTP/2 with prior knowledge (h2c).
        .http2_only(protocol == UpstreamProtocol::Http2)
        .build(https)
}

/// Turns a failed exchange (from either pool) into the error the client is told about.
fn classify(source: crate::body::BoxError, target: &Authority) -> ProxyError {
    if let Some(connect) = find_connect_error(&*source) {
        return ProxyError::Connect { target: target.clone(), source: connect };
    }
    if let Some(reason) = find_tls_error(&*source) {
        return ProxyError::UpstreamTls { target: target.clone(), reason };
    }
    ProxyError::Upstream { target: target.clone(), source }
}

/// The rustls error behind a failed upstream handshake, if that is what failed.
fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(tls) = rustls_error_in(current) {
            return Some(tls.clone());
        }
        cause = current.source();
    }
    None
}

/// rustls reports through io::Errors (sometimes nested) that wrap its own error, and
/// `io::Error::source` skips the wrapped error, so unwrap them by hand.
fn rustls_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<io::Error>()?.get_ref()?;
    rustls_error_in(inner)
}

/// The connector's own error, when the exchange failed while connecting.
fn find_connect_error(err: &(dyn std::error::Error + 'static)) -> Option<ConnectError> {
    if let Some(legacy) = err.downcast_ref::<hyper_util::client::legacy::Error>()
        && !legacy.is_connect()
    {
        return None;
    }
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(connect) = current.downcast_ref::<ConnectError>() {
            return Some(connect.clone());
        }
        cause = current.source();
    }
    None
}
