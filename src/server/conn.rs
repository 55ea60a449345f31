//! Serving one client connection with hyper: HTTP/1.1 (with upgrades, for CONNECT) or h2c
//! prior knowledge, under the shutdown watcher.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::listener::HttpBuilder;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, ListenerConfig};
use crate::dispatch::{self, ListenerContext, Proxy};

/// Builds the protocol settings every connection of `listener` uses: head size and count
/// limits (431 when exceeded) and the request-head timeout. HTTP/2 is offered over TLS (by
/// ALPN) and, on plain listeners, only with `h2c = true`.
pub fn http_builder(config: &Config, listener: &ListenerConfig) -> HttpBuilder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if listener.tls.is_none() && !listener.h2c {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.request_header)
        .max_buf_size(config.limits.max_request_head_bytes)
        .max_headers(config.limits.max_request_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(config.limits.max_request_head_bytes).unwrap_or(u32::MAX),
        )
        // RFC 8441: WebSocket over HTTP/2 arrives as an extended CONNECT.
        .enable_connect_protocol();
    builder
}

/// One accepted client connection and what it needs to be served.
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// What the listener serves and enforces.
    pub listener: Arc<ListenerContext>,
    /// Shared proxy state.
    pub proxy: Arc<Proxy>,
    /// The listener's protocol settings.
    pub builder: Arc<HttpBuilder>,
}

impl Connection {
    /// Completes the TLS handshake, bounded by the request-head timeout, then serves.
    pub async fn serve_tls(self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let timeout = self.proxy.config.timeouts.request_header;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(err)) => {
                tracing::debug!(peer = %self.peer, "TLS handshake failed: {err}");
            }
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Serves requests until the client closes, or until shutdown lets in-flight ones finish.
    pub async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { peer, listener, proxy, builder } = self;
        let shutdown = proxy.shutdown.clone();
        let max_requests = proxy.config.limits.max_requests_per_connection;
        let served = Arc::new(AtomicU64::new(0));
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let proxy = proxy.clone();
            let listener = listener.clone();
            let served = served.clone();
            async move {
                let http1 = request.version() < http::Version::HTTP_2;
                let mut response = dispatch::handle(request, &proxy, peer, &listener).await;
                // HTTP/1 closes after the response that reaches the per-connection limit.
                if http1 && served.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests {
                    tracing::debug!(%peer, limit = "max_requests_per_connection", "closing");
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.signalled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            // Clients vanish, send garbage and time out all the time; that is not an event.
            tracing::debug!(%peer, "connection ended: {err}");
        }
    }
}
