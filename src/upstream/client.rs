//! The pooled HTTP(S) client proxied requests are sent through ([`Upstream`]): one for each
//! listener's forward proxy and one per route. A route whose upstream speaks only HTTP/1.1
//! sends its plain requests through its own [`RoutePool`].
//!
//! A failed exchange is typed ([`UpstreamError`]): whether connecting, the TLS handshake or the
//! exchange itself failed, or the response head did not come in time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::PROXY_AUTHORIZATION;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::config::{Config, MIN_RESPONSE_HEAD_BYTES, UpstreamProtocol, UpstreamUrl};
use crate::upstream::connect::{ConnectError, Connector, HandshakeDeadline, ParentPeer};
use crate::upstream::egress::EgressError;
use crate::upstream::parent::ParentError;
use crate::upstream::replay::{self, Replay};
use crate::upstream::route_pool::RoutePool;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached.
    #[error("cannot connect to {target}")]
    Connect {
        /// `host:port` that was dialled.
        target: Authority,
        /// What went wrong while connecting.
        #[source]
        source: ConnectError,
    },
    /// The upstream accepted the request but sent no response head in time.
    #[error("{target} sent no response within {}", humantime::format_duration(*after))]
    ResponseTimeout {
        /// `host:port` of the upstream.
        target: Authority,
        /// The configured timeout that fired.
        after: Duration,
    },
    /// The TLS handshake with the upstream failed.
    #[error("{}", tls_message(target, reason))]
    Tls {
        /// `host:port` of the upstream.
        target: Authority,
        /// rustls's reason.
        reason: rustls::Error,
    },
    /// The exchange failed after connecting (closed early, invalid response).
    #[error("request to {target} failed")]
    Exchange {
        /// `host:port` of the upstream.
        target: Authority,
        /// The client's error; its own cause says what happened.
        #[source]
        source: BoxError,
    },
    /// No parent proxy took the connection to the upstream.
    #[error("cannot reach {target} through a parent proxy")]
    Parent {
        /// `host:port` of the upstream.
        target: Authority,
        /// The last parent's failure.
        #[source]
        source: EgressError,
    },
}

fn tls_message(target: &Authority, reason: &rustls::Error) -> String {
    match reason {
        rustls::Error::InvalidCertificate(why) => {
            format!("the TLS certificate of {target} did not verify ({why:?})")
        }
        other => format!("TLS handshake with {target} failed: {other}"),
    }
}

/// An upstream's response head, and the address of the connection it came over.
#[derive(Debug)]
pub struct Answered {
    /// The response, its body still streaming.
    pub response: Response<Incoming>,
    /// The upstream's address, when the connection knows it.
    pub peer: Option<SocketAddr>,
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
    /// Connections open at once to one upstream address, in use and idle.
    pub max_connections_per_address: usize,
    /// Largest HTTP/1 response head, and the most read from a connection at once.
    pub max_response_head: usize,
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
            max_connections_per_address: config.limits.max_upstream_connections,
            // hyper refuses (panics on) a buffer under 8 KiB; validation never allows one.
            max_response_head: config.limits.max_response_head_bytes.max(MIN_RESPONSE_HEAD_BYTES),
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
        let https = HandshakeDeadline::new(&connector, &tls, protocol, server_name.clone());
        let client = build_client(&settings, https.clone(), protocol);
        let upgrade_client = (protocol != UpstreamProtocol::Http1).then(|| {
            let http1 =
                HandshakeDeadline::new(&connector, &tls, UpstreamProtocol::Http1, server_name);
            build_client(&settings, http1, UpstreamProtocol::Http1)
        });
        let route_pool = None;
        Upstream { client, upgrade_client, route_pool, https, protocol, connector, settings }
    }

    /// Makes this a route's client for its one upstream `url`, whose `Host` is `host`: when
    /// that upstream speaks only HTTP/1.1 (a plain `http://` one with `protocol = "auto"`, or
    /// any with `protocol = "http1"`), every request but upgrades goes through a pool of the
    /// route's own ([`route_pool`]). An upstream that may speak HTTP/2 (by ALPN, or `http2`)
    /// stays on the general client, as does one whose requests a parent proxy takes in
    /// absolute-form (`upstream_proxy` through an HTTP parent): the route pool writes
    /// origin-form.
    pub fn with_route_pool(mut self, url: &UpstreamUrl, host: HeaderValue) -> Upstream {
        let http1_only = match self.protocol {
            UpstreamProtocol::Http1 => true,
            UpstreamProtocol::Auto => url.scheme == http::uri::Scheme::HTTP,
            UpstreamProtocol::Http2 => false,
        };
        let forwarded = url.scheme == http::uri::Scheme::HTTP
            && self.connector.egress().is_some_and(|egress| egress.forwards(url.authority.host()));
        let http1_only = http1_only && !forwarded;
        let origin = Uri::builder()
            .scheme(url.scheme.clone())
            .authority(url.authority.clone())
            .path_and_query("/")
            .build();
        if let (true, Ok(origin)) = (http1_only, origin) {
            let settings = &self.settings;
            self.route_pool = Some(RoutePool::new(
                self.https.clone(),
                origin,
                host,
                settings.max_idle_per_host,
                settings.pool_idle,
                settings.max_response_head,
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
    /// An upgrade request always goes over HTTP/1.1. A plain `http://` request that a parent
    /// proxy takes in absolute-form carries the parent's credentials. An idempotent request
    /// that a reused connection lost as the upstream closed it is sent once more
    /// ([`super::replay`]), within the same response timeout.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        target: &Authority,
        upgrade: bool,
    ) -> Result<Answered, UpstreamError> {
        if let Some(egress) = self.connector.egress() {
            authorize(egress, &mut request);
        }
        let after = self.settings.response_header;
        let sent = match (&self.route_pool, &self.upgrade_client, upgrade) {
            // Boxed, like the general client's response future: inline, this future would
            // make every connection's in-flight request slot (allocated by hyper at the size of
            // the whole request future, and kept by a tunnelling connection) larger.
            (Some(pool), _, false) => {
                tokio::time::timeout(after, Box::pin(send_pooled(pool, request))).await
            }
            (_, Some(http1), true) => {
                tokio::time::timeout(after, send_via(http1, request, None)).await
            }
            _ => {
                // An upgrade is never sent twice: the upstream may have switched protocols.
                let replay = if upgrade { None } else { Replay::of(&request) };
                tokio::time::timeout(after, send_via(&self.client, request, replay)).await
            }
        };
        match sent {
            Ok(Ok(answered)) => refused_by_parent(answered, target),
            Ok(Err(source)) => Err(classify(source, target)),
            Err(_) => Err(UpstreamError::ResponseTimeout { target: target.clone(), after }),
        }
    }
}

/// A `407` from a parent that forwards sluice's requests is that parent refusing sluice's own
/// credentials (RFC 9110 §11.7.1: `Proxy-Authenticate` is for the parent's immediate client):
/// a failure reaching the upstream (502), never a challenge passed on to the client, who has
/// no business answering it.
fn refused_by_parent(answered: Answered, target: &Authority) -> Result<Answered, UpstreamError> {
    let status = answered.response.status();
    match answered.response.extensions().get::<ParentPeer>() {
        Some(parent) if parent.forwards && status == StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
            Err(UpstreamError::Parent {
                target: target.clone(),
                source: EgressError::Parent {
                    parent: parent.addr.to_string(),
                    source: Arc::new(ParentError::Status { status }),
                },
            })
        }
        _ => Ok(answered),
    }
}

/// Adds the parent's `Proxy-Authorization` to a plain `http://` request that `egress` sends
/// to an HTTP parent in absolute-form (RFC 9110 §11.7.2: the credentials are for that
/// parent, which consumes them). The client's own were removed with the hop-by-hop fields.
fn authorize(egress: &crate::upstream::egress::Egress, request: &mut Request<Body>) {
    if request.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
        return;
    }
    let Some(host) = request.uri().host() else { return };
    if let Some(credentials) = egress.authorization(host) {
        let credentials = credentials.clone();
        request.headers_mut().insert(PROXY_AUTHORIZATION, credentials);
    }
}

async fn send_pooled(pool: &RoutePool, request: Request<Body>) -> Result<Answered, BoxError> {
    let (response, peer) = pool.send(request).await?;
    Ok(Answered { response, peer })
}

/// Sends `request` through hyper-util's client; sends `replay` once more when the pooled
/// connection the request took closed before answering.
async fn send_via(
    client: &Client<HandshakeDeadline, Body>,
    request: Request<Body>,
    replay: Option<Replay>,
) -> Result<Answered, BoxError> {
    let started = Instant::now();
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(err) => match replay {
            Some(replay)
                if replay::reused_before(&err, started) && replay::connection_closed(&err) =>
            {
                tracing::debug!(
                    error = ?err,
                    "the upstream closed a reused connection as a request went out; sending it \
                     again"
                );
                client.request(replay.into_request()).await?
            }
            _ => return Err(err.into()),
        },
    };
    // hyper-util's client reports the connection's addresses in the response's extensions;
    // a connection through a parent reports the parent's.
    let extensions = response.extensions();
    let peer = match extensions.get::<HttpInfo>() {
        Some(info) => Some(info.remote_addr()),
        None => extensions.get::<ParentPeer>().map(|parent| parent.addr),
    };
    Ok(Answered { response, peer })
}

fn build_client(
    settings: &UpstreamSettings,
    https: HandshakeDeadline,
    protocol: UpstreamProtocol,
) -> Client<HandshakeDeadline, Body> {
    let head = u32::try_from(settings.max_response_head).unwrap_or(u32::MAX);
    Client::builder(TokioExecutor::new())
        .pool_timer(SweepTimer::for_idle_timeout(settings.pool_idle))
        .timer(TokioTimer::new())
        .pool_idle_timeout(settings.pool_idle)
        .pool_max_idle_per_host(settings.max_idle_per_host)
        // What a response can pin in sluice while its client reads slowly: one read of the
        // HTTP/1 connection (reads grow to this size), and an HTTP/2 stream's receive window,
        // which starts small and grows only while the body is consumed fast.
        .http1_max_buf_size(settings.max_response_head)
        .http2_adaptive_window(true)
        .http2_max_header_list_size(head)
        // `http2` to a plain-http upstream means HTTP/2 with prior knowledge (h2c).
        .http2_only(protocol == UpstreamProtocol::Http2)
        .build(https)
}

/// The pooled client's pool timer. hyper-util's pool uses its timer only to sweep idle
/// connections, and it sweeps once per idle timeout, so a connection that went idle just after
/// a sweep lived almost twice the timeout (180 s for `upstream_idle = 90s`). This timer cuts
/// every sleep it is asked for to a tenth of the idle timeout (between 100 ms and 1 s), so the
/// sweep runs that often and a connection is closed at most that long after its timeout.
/// (Checkout never hands out an expired connection either way.)
#[derive(Debug, Clone)]
struct SweepTimer {
    step: Duration,
    tokio: TokioTimer,
}

impl SweepTimer {
    fn for_idle_timeout(timeout: Duration) -> SweepTimer {
        let step = (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        SweepTimer { step, tokio: TokioTimer::new() }
    }

    fn sooner(&self, deadline: std::time::Instant) -> std::time::Instant {
        let now = hyper::rt::Timer::now(&self.tokio);
        deadline.min(now.checked_add(self.step).unwrap_or(deadline))
    }
}

impl hyper::rt::Timer for SweepTimer {
    fn sleep(&self, duration: Duration) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        self.tokio.sleep(duration.min(self.step))
    }

    fn sleep_until(
        &self,
        deadline: std::time::Instant,
    ) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        self.tokio.sleep_until(self.sooner(deadline))
    }

    fn reset(
        &self,
        sleep: &mut std::pin::Pin<Box<dyn hyper::rt::Sleep>>,
        new_deadline: std::time::Instant,
    ) {
        self.tokio.reset(sleep, self.sooner(new_deadline));
    }

    fn now(&self) -> std::time::Instant {
        self.tokio.now()
    }
}

/// Sorts a failed exchange (from either pool): connecting, the TLS handshake, or the rest.
fn classify(source: BoxError, target: &Authority) -> UpstreamError {
    if let Some(connect) = find_connect_error(&*source) {
        return UpstreamError::Connect { target: target.clone(), source: connect };
    }
    if let Some(parent) = find_in_chain::<EgressError>(&*source) {
        return UpstreamError::Parent { target: target.clone(), source: parent };
    }
    if let Some(reason) = find_tls_error(&*source) {
        return UpstreamError::Tls { target: target.clone(), reason };
    }
    UpstreamError::Exchange { target: target.clone(), source }
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
    find_in_chain::<ConnectError>(err)
}

/// An error of type `E` in the cause chain of an exchange that failed while connecting.
fn find_in_chain<E: std::error::Error + Clone + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> Option<E> {
    if let Some(legacy) = err.downcast_ref::<hyper_util::client::legacy::Error>()
        && !legacy.is_connect()
    {
        return None;
    }
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found.clone());
        }
        cause = current.source();
    }
    None
}
