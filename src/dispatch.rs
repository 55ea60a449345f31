//! The top of the request path: classify each request, send it down its branch, and turn any
//! error into a response exactly once.
//!
//! | request                     | branch                        |
//! |-----------------------------|-------------------------------|
//! | `CONNECT host:port`         | [`crate::forward::tunnel`]    |
//! | absolute-form `http://h/p`  | [`crate::forward::forward`]   |
//! | origin-form `/p`            | reverse routes                |

use std::net::SocketAddr;

use http::{Method, Request, Response};

use hyper::body::Incoming;

use crate::body::Body;
use crate::config::{Config, Modes};
use crate::context::RequestContext;
use crate::error::{self, NotServed, ProxyError};
use crate::forward;
use crate::server::shutdown::Shutdown;
use crate::upstream::Upstream;

/// Everything shared by all connections: configuration, the upstream pool, the task tracker.
#[derive(Debug)]
pub struct Proxy {
    /// The configuration being served.
    pub config: Config,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// Tracks tunnels so shutdown can wait for them.
    pub shutdown: Shutdown,
}

impl Proxy {
    /// Builds the shared state for `config`.
    pub fn new(config: Config, shutdown: Shutdown) -> Proxy {
        let upstream = Upstream::new(&config);
        Proxy {
            config,
            upstream,
            shutdown,
        }
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

/// Classifies a request by its target form.
pub fn classify<B>(request: &Request<B>) -> RequestKind {
    if request.method() == Method::CONNECT {
        RequestKind::Connect
    } else if request.uri().scheme().is_some() {
        RequestKind::Absolute
    } else {
        RequestKind::Origin
    }
}

/// Serves one request from `peer` on a listener with `modes`; never fails.
pub async fn handle(
    request: Request<Incoming>,
    proxy: &Proxy,
    peer: SocketAddr,
    modes: Modes,
) -> Response<Body> {
    let ctx = RequestContext::new(peer);
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
    match classify(&request) {
        RequestKind::Connect if modes.forward => forward::tunnel::open(request, ctx, proxy).await,
        RequestKind::Absolute if modes.forward => forward::forward(request, ctx, proxy).await,
        RequestKind::Connect | RequestKind::Absolute => {
            Err(ProxyError::NotServed(NotServed::ForwardDisabled))
        }
        RequestKind::Origin if modes.reverse => Err(ProxyError::NotServed(NotServed::NoRoute)),
        RequestKind::Origin => Err(ProxyError::NotServed(NotServed::ReverseDisabled)),
    }
}
