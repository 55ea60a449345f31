//! The connection pool of a route whose upstream speaks only HTTP/1.1: a plain `http://`
//! upstream, or any upstream with `protocol = "http1"`.
//!
//! The general pooled client keys its pool by scheme and authority and hashes both on every
//! checkout and every return. A route has exactly one upstream, so its connections need no
//! key: idle senders wait on a stack behind a mutex and are reused last in, first out (the
//! connection used most recently is the one least likely to have been closed by the
//! upstream). Upgrade requests and HTTP/2 upstreams still go through the general client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::MaybeHttpsStream;

use tokio::time::Instant;
use tower_service::Service;

use super::HandshakeDeadline;
use crate::body::{Body, BoxError};
use crate::dispatch::UpstreamAddr;

/// HTTP/1.1 connections to one route's upstream.
#[derive(Debug, Clone)]
pub struct RoutePool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    idle: Mutex<Vec<Idle>>,
    connector: HandshakeDeadline,
    /// `scheme://authority` of the upstream: what the connector dials.
    origin: Uri,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether a task is evicting connections idle for longer than `idle_timeout`.
    sweeping: AtomicBool,
}

/// A connection waiting for its next request.
#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    addr: Option<SocketAddr>,
}

impl RoutePool {
    /// A pool dialling `origin` through `connector`, keeping at most `max_idle` idle
    /// connections, each for at most `idle_timeout`.
    pub fn new(
        connector: HandshakeDeadline,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> RoutePool {
        RoutePool {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(Vec::new()),
                connector,
                origin,
                max_idle,
                idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` over an idle connection, or a new one, and waits for the response head.
    ///
    /// A request that never left because its pooled connection had been closed meanwhile (the
    /// upstream closed it while it sat idle) is sent again on another connection; one that
    /// was written is never repeated. A request on a new connection is not retried, so the
    /// attempts are bounded by the idle connections there were.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        // An HTTP/1.1 origin server is sent the origin form of the target (RFC 9112 §3.2.1).
        let origin_form = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = origin_form.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
        loop {
            let (mut sender, addr, reused) = match self.checkout() {
                Some(idle) => (idle.sender, idle.addr, true),
                None => {
                    let (sender, addr) = self.connect().await?;
                    (sender, addr, false)
                }
            };
            match sender.try_send_request(request).await {
                Ok(mut response) => {
                    if let Some(addr) = addr {
                        response.extensions_mut().insert(UpstreamAddr(addr));
                    }
                    self.release_when_ready(sender, addr);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and not too old.
    fn checkout(&self) -> Option<Idle> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(candidate) = idle.pop() {
            if candidate.sender.is_ready() && candidate.since.elapsed() < self.inner.idle_timeout {
                return Some(candidate);
            }
        }
        None
    }

    /// Dials the upstream (TLS included, within the connect timeout) and starts an HTTP/1.1
    /// connection over it, driven by its own task until it closes.
    async fn connect(&self) -> Result<(SendRequest<Body>, Option<SocketAddr>), BoxError> {
        let mut connector = self.inner.connector.clone();
        let io = connector.call(self.inner.origin.clone()).await?;
        let addr = match &io {
            MaybeHttpsStream::Http(tcp) => tcp.inner().peer_addr().ok(),
            MaybeHttpsStream::Https(tls) => {
                tls.inner().get_ref().0.inner().inner().peer_addr().ok()
            }
        };
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("upstream connection ended: {err}");
            }
        });
        Ok((sender, addr))
    }

    /// Returns `sender` to the idle stack once its connection can take another request (an
    /// HTTP/1.1 connection is busy until the response body has been read to its end).
    fn release_when_ready(&self, mut sender: SendRequest<Body>, addr: Option<SocketAddr>) {
        if sender.is_ready() {
            self.inner.put(Idle { sender, since: Instant::now(), addr });
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if sender.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.put(Idle { sender, since: Instant::now(), addr });
            }
        });
    }
}

impl PoolInner {
    /// Keeps `idle` for reuse, unless the stack is full; starts the sweeper if none runs.
    fn put(self: &Arc<Self>, idle: Idle) {
        {
            let mut stack = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if stack.len() >= self.max_idle {
                return;
            }
            stack.push(idle);
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }
}

/// Closes connections idle for longer than the idle timeout, checking every half timeout;
/// ends when the stack is empty (the next return starts it again) or the pool is gone.
async fn sweep(pool: Weak<PoolInner>) {
    let every = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut stack = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        stack.retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < pool.idle_timeout);
        if stack.is_empty() {
            pool.sweeping.store(false, Ordering::Release);
            return;
        }
    }
}
