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
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpInfo;

use crate::body::Body;
use crate::config::{Config, ListenerConfig, ListenerPolicy, Modes, UpstreamProtocol};
use crate::context::{Downstream, RequestContext};
use crate::error::{self, NotServed, ProxyError};
use crate::forward::{self, target};
use crate::observe::metrics::{Metrics, RouteLabel, RouteSeries};
use crate::observe::{Entry, Failure, Mode, ObservedBody, Observer, RequestId, SessionLog};
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
    /// The access log and metrics.
    pub observer: Arc<Observer>,
    default_tls: Arc<rustls::ClientConfig>,
    hosts: StaticHosts,
}

impl Proxy {
    /// Builds the shared state for `config`, including every route's upstream client and the
    /// access log, reporting into `metrics`.
    pub fn new(
        config: Config,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, BuildError> {
        let default_tls = crate::tls::client::default_client_config();
        let hosts: StaticHosts = Arc::new(config.dns_hosts.clone());
        let settings = UpstreamSettings::from_config(&config);
        let router = Router::new(&config.routes, settings, &default_tls, &hosts)?;
        let policy = Policy::new(&config);
        let observer = Arc::new(Observer::new(&config, metrics)?);
        Ok(Proxy { config, router, policy, shutdown, observer, default_tls, hosts })
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
            forward_series: Arc::new(RouteSeries::new(Mode::Forward, RouteLabel::default())),
        }
    }
}

/// Why the state for a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route's upstream client could not be set up.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] crate::observe::access_log::AccessLogError),
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
    /// The metric handles of its forward-proxy requests.
    pub forward_series: Arc<RouteSeries>,
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

/// Serves one request from `downstream` on `listener`; never fails. The response body finishes the
/// request's access-log entry and metrics when it ends (a tunnel or upgrade finishes them when
/// the session closes).
pub async fn handle(
    request: Request<Incoming>,
    proxy: &Proxy,
    downstream: Downstream,
    listener: &ListenerContext,
    hold: Arc<ConnectionHold>,
) -> Response<ObservedBody> {
    let kind = classify(&request, listener.modes, &proxy.router);
    let id = RequestId::for_request(request.headers(), &proxy.config.request_id);
    let mode = match kind {
        RequestKind::Connect => Mode::Tunnel,
        RequestKind::Absolute => Mode::Forward,
        RequestKind::Origin => Mode::Reverse,
    };
    let mut entry = Entry::start(&proxy.observer, &request, downstream.addr, id.clone(), mode);
    let has_body = !request.body().is_end_stream();
    let ctx = RequestContext::new(id, downstream, listener.scheme, hold, has_body);
    let mut response = match route(request, kind, &ctx, proxy, listener).await {
        Ok(response) => response,
        Err(err) => {
            entry.failure = Some(Failure::Proxy(err.kind()));
            error::render(&err)
        }
    };
    entry.status = response.status().as_u16();
    entry.received_meter = ctx.received.clone();
    let extensions = response.extensions();
    entry.upstream = extensions
        .get::<HttpInfo>()
        .map(HttpInfo::remote_addr)
        .or_else(|| extensions.get::<UpstreamAddr>().map(|addr| addr.0));
    if entry.upstream.is_some() {
        entry.upstream_ttfb = Some(entry.started.elapsed());
    }
    if let Some(route) = ctx.route.get() {
        // Clients of an API quote this id when something went wrong; an upstream that sets
        // its own id (many AI APIs do) keeps it.
        let header = &proxy.config.request_id.header;
        if !response.headers().contains_key(header) {
            response.headers_mut().insert(header.clone(), ctx.id_header());
        }
        entry.route = route.route().clone();
        entry.series = Some(route.clone());
    } else if kind == RequestKind::Absolute {
        entry.series = Some(listener.forward_series.clone());
    }
    match response.extensions_mut().remove::<SessionLog>() {
        Some(session) => {
            if kind != RequestKind::Connect {
                entry.mode = Mode::WebSocket;
            }
            session.start(entry);
            response.map(ObservedBody::unobserved)
        }
        None => response.map(|body| ObservedBody::new(body, entry)),
    }
}

/// The address of the upstream a tunnel was opened to, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamAddr(pub SocketAddr);

async fn route(
    request: Request<Incoming>,
    kind: RequestKind,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Response<Body>, ProxyError> {
    proxy.policy.admit(&request, ctx)?;
    let modes = listener.modes;
    match kind {
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
