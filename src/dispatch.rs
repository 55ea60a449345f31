//! The top of the request path: classify each request, send it down its branch, and turn any
//! error into a response exactly once.
//!
//! | request                     | branch                        |
//! |-----------------------------|-------------------------------|
//! | `CONNECT host:port`         | [`crate::forward::tunnel`]    |
//! | absolute-form `http://h/p`  | [`crate::forward::forward`]   |
//! | origin-form `/p`            | [`crate::reverse::proxy`]     |

use std::net::SocketAddr;

use http::{Method, Request, Response, Version};

use hyper::body::Incoming;

use crate::body::Body;
use crate::config::UpstreamProtocol;
use crate::config::{Config, Modes};
use crate::context::RequestContext;
use crate::error::{self, NotServed, ProxyError};
use crate::forward;
use crate::reverse::{
    self,
    router::{RouteError, Router},
};
use crate::server::shutdown::Shutdown;
use crate::upstream::{Upstream, UpstreamSettings};

/// Everything shared by all connections: configuration, upstream pools, the task tracker.
#[derive(Debug)]
pub struct Proxy {
    /// The configuration being served.
    pub config: Config,
    /// The forward proxy's pooled upstream client.
    pub upstream: Upstream,
    /// The reverse routes, each with its own pool.
    pub router: Router,
    /// Tracks connections, tunnels and upgrades so shutdown can wait for them.
    pub shutdown: Shutdown,
}

impl Proxy {
    /// Builds the shared state for `config`: the forward proxy's client and every route's.
    pub fn new(config: Config, shutdown: Shutdown) -> Result<Proxy, RouteError> {
        let tls = crate::tls::client::default_client_config();
        let settings = UpstreamSettings::from_config(&config);
        let upstream = Upstream::new(settings, tls.clone(), UpstreamProtocol::Auto, None);
        let router = Router::new(&config.routes, settings, &tls)?;
        Ok(Proxy { config, upstream, router, shutdown })
    }
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
/// HTTP/2 requests always carry a scheme and authority, so only CONNECT makes one a proxy
/// request. Over HTTP/1 an absolute-form target on a listener without forward proxying is an
/// origin request for that authority (RFC 9112 §3.2.2).
pub fn classify<B>(request: &Request<B>, modes: Modes) -> RequestKind {
    if crate::upgrade::is_extended_connect(request) {
        // RFC 8441: WebSocket over HTTP/2 names a path on this server.
        RequestKind::Origin
    } else if request.method() == Method::CONNECT {
        RequestKind::Connect
    } else if request.uri().scheme().is_some()
        && request.version() != Version::HTTP_2
        && modes.forward
    {
        RequestKind::Absolute
    } else {
        RequestKind::Origin
    }
}

/// Serves one request from `peer` on a listener with `modes` reached over `scheme`; never
/// fails.
pub async fn handle(
    request: Request<Incoming>,
    proxy: &Proxy,
    peer: SocketAddr,
    modes: Modes,
    scheme: &'static str,
) -> Response<Body> {
    let ctx = RequestContext::new(peer, scheme);
    // Copies for the log line are only made when someone reads it.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().clone()));
    let response = match route(request, &ctx, proxy, modes).await {
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

async fn route(
    request: Request<Incoming>,
    ctx: &RequestContext,
    proxy: &Proxy,
    modes: Modes,
) -> Result<Response<Body>, ProxyError> {
    match classify(&request, modes) {
        RequestKind::Connect if modes.forward => forward::tunnel::open(request, ctx, proxy).await,
        RequestKind::Absolute if modes.forward => forward::forward(request, ctx, proxy).await,
        RequestKind::Connect | RequestKind::Absolute => {
            Err(ProxyError::NotServed(NotServed::ForwardDisabled))
        }
        RequestKind::Origin if modes.reverse => reverse::proxy(request, ctx, proxy).await,
        RequestKind::Origin => Err(ProxyError::NotServed(NotServed::ReverseDisabled)),
    }
}
