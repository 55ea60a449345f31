//! The top of the request path: run the policy checks, classify each request, send it down its
//! branch, and turn any error into a response exactly once.
//!
//! | request                     | branch                        |
//! |-----------------------------|-------------------------------|
//! | `CONNECT host:port`         | [`crate::forward::tunnel`]    |
//! | absolute-form `http://h/p`  | [`crate::forward::forward`]   |
//! | origin-form `/p`            | [`crate::reverse::proxy`]     |

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::{Config, ListenerConfig, ListenerPolicy, Modes, UpstreamProtocol};
use crate::context::RequestContext;
use crate::error::{self, NotServed, ProxyError};
use crate::forward::{self, target};
use crate::policy::Policy;
use crate::policy::destination::DestinationGuard;
use crate::reverse::{self, router::RouteError, router::Router};
use crate::server::listener::ConnectionHold;
use crate::server::shutdown::Shutdown;
use crate::upstream::{Connector, StaticHosts, Upstream, UpstreamSettings};

/// Everything shared by all connections: configuration, policy, routes, the task tracker.
#[derive(Debug)]
pub struct Proxy {
    /// The configuration being served.
    pub config: Config,
    /// The reverse routes, each with its own pool.
    pub router: Router,
    /// Access, authentication and rate checks.
    pub policy: Policy,
    /// Tracks connections, tunnels and upgrades so shutdown can wait for them.
    pub shutdown: Shutdown,
    /// Event counts kept since start.
    pub counters: Counters,
    default_tls: Arc<rustls::ClientConfig>,
    hosts: StaticHosts,
}

impl Proxy {
    /// Builds the shared state for `config`, including every route's upstream client.
    pub fn new(config: Config, shutdown: Shutdown) -> Result<Proxy, RouteError> {
        let default_tls = crate::tls::client::default_client_config();
        let hosts: StaticHosts = Arc::new(config.dns_hosts.clone());
        let settings = UpstreamSettings::from_config(&config);
        let router = Router::new(&config.routes, settings, &default_tls, &hosts)?;
        let policy = Policy::new(&config);
        Ok(Proxy {
            config,
            router,
            policy,
            shutdown,
            counters: Counters::default(),
            default_tls,
            hosts,
        })
    }

    /// The per-listener state: its modes and policy, and a forward-proxy client whose
    /// connector enforces this listener's destination guard (a separate pool per listener, so
    /// a connection opened for a trusted listener is never reused for a guarded one).
    pub fn listener_context(&self, listener: &ListenerConfig, secure: bool) -> ListenerContext {
        let guard = Arc::new(DestinationGuard::new(&listener.policy, &self.config.destinations));
        let settings = UpstreamSettings::from_config(&self.config);
        let connector = Connector::new(settings.connect, self.hosts.clone(), Some(guard.clone()));
        let forward = Upstream::new(
            settings,
            self.default_tls.clone(),
            UpstreamProtocol::Auto,
            None,
            connector,
        );
        ListenerContext {
            modes: listener.modes,
            scheme: if secure { "https" } else { "http" },
            policy: listener.policy.clone(),
            guard,
            forward,
        }
    }
}

/// Counts of events that are not requests, kept since start.
#[derive(Debug, Default)]
pub struct Counters {
    tls_handshake_failures: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// Counts a failed or timed-out client TLS handshake; returns the new total.
    pub fn count_tls_handshake_failure(&self) -> u64 {
        self.tls_handshake_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Client TLS handshakes that failed or timed out.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What one listener serves and enforces, shared by its connections.
#[derive(Debug)]
pub struct ListenerContext {
    /// Which kinds of request it accepts.
    pub modes: Modes,
    /// `https` for TLS listeners, else `http`.
    pub scheme: &'static str,
    /// Its forward-proxy policy.
    pub policy: ListenerPolicy,
    /// Its destination checks.
    pub guard: Arc<DestinationGuard>,
    /// Its forward-proxy upstream client.
    pub forward: Upstream,
}

/// The kind of request, decided from its method and request-target form (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `CONNECT host:port`.
    Connect,
    /// `GET http://host/path`: a forward-proxy request.
    Absolute,
    /// `GET /path`: a request for this server's own routes.
    Origin,
}

/// Classifies a request by its method, target form and the listener's modes.
///
/// Over HTTP/1 an absolute-form target is a forward-proxy request on a forward listener, and
/// an origin request for that authority otherwise (RFC 9112 §3.2.2). HTTP/2 requests always
/// carry a scheme and authority, so there the listener decides: forward-only listeners proxy
/// them, reverse-only listeners route them, and a listener doing both routes a request that
/// matches a route and proxies the rest.
pub fn classify<B>(request: &Request<B>, modes: Modes, router: &Router) -> RequestKind {
    let uri = request.uri();
    if crate::upgrade::is_extended_connect(request) {
        // RFC 8441: WebSocket over HTTP/2 names a path on this server.
        RequestKind::Origin
    } else if request.method() == Method::CONNECT {
        RequestKind::Connect
    } else if uri.scheme().is_none() || !modes.forward {
        RequestKind::Origin
    } else if request.version() != Version::HTTP_2 || !modes.reverse {
        RequestKind::Absolute
    } else if router.find(uri.host(), uri.path()).is_some() {
        RequestKind::Origin
    } else {
        RequestKind::Absolute
    }
}

/// Serves one request from `peer` on `listener`; never fails.
pub async fn handle(
    request: Request<Incoming>,
    proxy: &Proxy,
    peer: SocketAddr,
    listener: &ListenerContext,
    hold: Arc<ConnectionHold>,
) -> Response<Body> {
    let ctx = RequestContext::new(peer, listener.scheme, hold);
    // Copies for the log line are only made when someone reads it.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), loggable(request.uri())));
    let response = match route(request, &ctx, proxy, listener).await {
        Ok(response) => response,
        Err(err) => error::render(&err),
    };
    if let Some((method, uri)) = logged {
        tracing::debug!(
            id = ctx.id,
            %peer,
            %method,
            %uri,
            status = response.status().as_u16(),
            elapsed_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    response
}

/// The URI for a log line: credentials in the userinfo are never written out.
fn loggable(uri: &http::Uri) -> String {
    let text = uri.to_string();
    match uri.authority().and_then(|a| a.as_str().rsplit_once('@')) {
        Some((userinfo, _)) => text.replacen(&format!("{userinfo}@"), "***@", 1),
        None => text,
    }
}

async fn route(
    request: Request<Incoming>,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Response<Body>, ProxyError> {
    proxy.policy.admit(&request, ctx)?;
    let modes = listener.modes;
    match classify(&request, modes, &proxy.router) {
        kind @ (RequestKind::Connect | RequestKind::Absolute) if modes.forward => {
            // A tunnel has no URI of its own to send; an absolute-form request does.
            let (target, uri) = if kind == RequestKind::Connect {
                (target::connect(request.uri())?, None)
            } else {
                let (target, uri) = target::absolute(request.uri())?;
                (target, Some(uri))
            };
            let (host, port) = (target.host(), target.port);
            let guard = &listener.guard;
            proxy.policy.admit_forward(&request, &listener.policy, guard, host, port).await?;
            match uri {
                None => forward::tunnel::open(request, target, ctx, proxy, listener).await,
                Some(uri) => forward::forward(request, target, uri, ctx, proxy, listener).await,
            }
        }
        RequestKind::Connect | RequestKind::Absolute => {
            Err(ProxyError::NotServed(NotServed::ForwardDisabled))
        }
        RequestKind::Origin if modes.reverse => reverse::proxy(request, ctx, proxy).await,
        RequestKind::Origin => Err(ProxyError::NotServed(NotServed::ReverseDisabled)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_reaches_the_log() {
        let uri: http::Uri = "http://alice:S3cret@example.com/x".parse().unwrap();
        assert_eq!(loggable(&uri), "http://***@example.com/x");
        let plain: http::Uri = "/path?q".parse().unwrap();
        assert_eq!(loggable(&plain), "/path?q");
    }
}
