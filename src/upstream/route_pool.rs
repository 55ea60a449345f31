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

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::MaybeHttpsStream;

use tokio::time::Instant;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::upstream::connect::HandshakeDeadline;
use crate::upstream::replay::{self, Replay};

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
    /// `Host` for a request that has none (a rule removed it), as the general client adds
    /// one: the route's upstream `Host` (`proxy::router::Route::upstream_host`).
    host: HeaderValue,
    max_idle: usize,
    idle_timeout: Duration,
    /// The largest response head, and the most one read takes from a connection (see
    /// `limits.max_response_head_bytes`).
    max_read: usize,
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
    /// A pool dialling `origin` (`scheme://authority/`) through `connector`, keeping at most
    /// `max_idle` idle connections, each for at most `idle_timeout`, reading responses in
    /// pieces of at most `max_read` bytes (also the largest response head); `host` is sent
    /// when a request has no `Host`.
    pub fn new(
        connector: HandshakeDeadline,
        origin: Uri,
        host: HeaderValue,
        max_idle: usize,
        idle_timeout: Duration,
        max_read: usize,
    ) -> RoutePool {
        RoutePool {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(Vec::new()),
                connector,
                origin,
                host,
                max_idle,
                idle_timeout,
                max_read,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` over an idle connection, or a new one, and waits for the response head.
    ///
    /// A request that never left because its pooled connection had been closed meanwhile (the
    /// upstream closed it while it sat idle) is sent again on another connection. One that was
    /// written on a reused connection that then closed without an answer (the upstream's
    /// keep-alive timeout struck as it went out) is sent once more on a new connection when
    /// it is idempotent and its body can be sent again ([`replay`](super::replay)); any other
    /// written request is never repeated. A request on a new connection is not retried, so the
    /// attempts are bounded by the idle connections there were. Returns the response with the
    /// upstream address of its connection, when known.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), BoxError> {
        // An HTTP/1.1 origin server is sent the origin form of the target (RFC 9112 §3.2.1).
        let origin_form = match request.uri().path_and_query() {
            Some(path_and_query) => Uri::from(path_and_query.clone()),
            None => Uri::from_static("/"),
        };
        *request.uri_mut() = origin_form;
        // HTTP/1.1 requires `Host` (RFC 9112 §3.2).
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.inner.host.clone());
        }
        loop {
            let (sender, addr, reused) = match self.checkout() {
                Some(idle) => (idle.sender, idle.addr, true),
                None => {
                    let (sender, addr) = self.connect().await?;
                    (sender, addr, false)
                }
            };
            // Only a request on a reused connection can meet the keep-alive race.
            let replay = if reused { Replay::of(&request) } else { None };
            match self.try_send(sender, addr, request).await {
                Ok(answered) => return Ok(answered),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        let error = failed.into_error();
                        return match replay {
                            Some(replay) if replay::connection_closed(&error) => {
                                tracing::debug!(
                                    origin = %self.inner.origin,
                                    "the upstream closed a reused connection as a request went \
                                     out ({error}); sending it again on a new connection"
                                );
                                let (sender, addr) = self.connect().await?;
                                let again = self.try_send(sender, addr, replay.into_request());
                                again.await.map_err(|failed| failed.into_error().into())
                            }
                            _ => Err(error.into()),
                        };
                    }
                },
            }
        }
    }

    /// Sends `request` over `sender`, returning the connection to the idle stack once it is
    /// free again.
    async fn try_send(
        &self,
        mut sender: SendRequest<Body>,
        addr: Option<SocketAddr>,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), TrySendError<Request<Body>>> {
        let response = sender.try_send_request(request).await?;
        self.release_when_ready(sender, addr);
        Ok((response, addr))
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
        let (sender, connection) =
            http1::Builder::new().max_buf_size(self.inner.max_read).handshake(io).await?;
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
        if self.inner.max_idle == 0 {
            return;
        }
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

/// Closes each idle connection when it has been idle for the idle timeout (waking at the
/// oldest one's deadline, not on a fixed period that would let a connection outlive its
/// timeout by up to a period); ends when the stack is empty (the next return starts it again)
/// or the pool is gone.
async fn sweep(pool: Weak<PoolInner>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut stack = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            stack.retain(|idle| {
                !idle.sender.is_closed() && idle.since.elapsed() < pool.idle_timeout
            });
            match stack.iter().map(|idle| idle.since).min() {
                // A deadline beyond what the clock can hold never comes.
                Some(oldest) => match oldest.checked_add(pool.idle_timeout) {
                    Some(deadline) => deadline,
                    None => return,
                },
                None => {
                    // Under the lock, so a `put` that follows sees the flag down and starts
                    // a new sweeper.
                    pool.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamProtocol;
    use crate::upstream::client::UpstreamSettings;
    use crate::upstream::connect::Connector;
    use http::Response;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;

    /// An upstream on 127.0.0.1:0 that answers every request with `fresh`; counts connections.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"fresh"),
                    )))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service),
                );
            }
        });
        (addr, accepted)
    }

    fn pool_for(addr: SocketAddr) -> RoutePool {
        let settings = UpstreamSettings {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(5),
            body_idle: Duration::from_secs(5),
            pool_idle: Duration::from_secs(90),
            max_idle_per_host: 8,
            max_connections_per_address: 64,
            max_response_head: 16 * 1024,
        };
        let connector = Connector::new(settings.connect, Arc::default(), None);
        let tls = crate::tls::client::default_client_config();
        let https = HandshakeDeadline::new(&connector, &tls, UpstreamProtocol::Http1, None);
        let origin: Uri = format!("http://{addr}/").parse().unwrap();
        let host = HeaderValue::from_str(&addr.to_string()).unwrap();
        let (idle, timeout) = (settings.max_idle_per_host, settings.pool_idle);
        RoutePool::new(https, origin, host, idle, timeout, settings.max_response_head)
    }

    #[tokio::test]
    async fn a_request_never_written_on_a_dead_pooled_connection_is_sent_on_a_new_one() {
        let (addr, accepted) = upstream().await;
        let pool = pool_for(addr);

        // A pooled connection whose upstream has gone: ready when it was put back, closed by
        // the time it is used. Its connection task runs only once `send` has queued the
        // request on it, so it finds the close before it writes anything.
        let (client_io, server_io) = tokio::io::duplex(1024);
        let (sender, connection) =
            http1::handshake::<_, Body>(hyper_util::rt::TokioIo::new(client_io)).await.unwrap();
        let mut connection = Box::pin(connection);
        std::future::poll_fn(|cx| {
            assert!(connection.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert!(sender.is_ready());
        drop(server_io);
        pool.inner.put(Idle { sender, since: Instant::now(), addr: None });
        tokio::spawn(connection);

        let request = Request::get(format!("http://{addr}/again")).body(Body::empty()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), pool.send(request))
            .await
            .expect("the request is answered in time")
            .expect("the unsent request went out on a new connection");
        let body = tokio::time::timeout(Duration::from_secs(5), response.0.into_body().collect());
        assert_eq!(body.await.unwrap().unwrap().to_bytes(), "fresh");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_without_host_gets_the_upstreams_authority() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = pool_for(addr);
        let seen = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
                head.extend_from_slice(&byte);
            }
            stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let request = Request::get(format!("http://{addr}/p?q=1")).body(Body::empty()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), pool.send(request));
        assert_eq!(response.await.unwrap().unwrap().0.status(), http::StatusCode::NO_CONTENT);
        let head = tokio::time::timeout(Duration::from_secs(5), seen).await.unwrap().unwrap();
        assert!(head.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("host: {addr}\r\n")), "{head}");
    }
}
