//! What a listener serves for one configuration generation ([`Serving`]): the generation's
//! shared state, the listener's own settings and context, its HTTP protocol settings
//! ([`HttpBuilder`]) and its certificates. A reload swaps it whole ([`Live`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::{Config, ListenerConfig, MIN_REQUEST_HEAD_BYTES};
use crate::proxy::state::{ListenerContext, Proxy};
use crate::tls::server::TlsListener;

/// The HTTP versions a listener speaks, with their settings.
#[derive(Debug)]
pub enum HttpBuilder {
    /// HTTP/1.1 only (plain listeners without `h2c`).
    Http1(http1::Builder),
    /// HTTP/1.1 and HTTP/2, told apart by ALPN or the HTTP/2 preface.
    Auto(auto::Builder<TokioExecutor>),
}

/// Most response body bytes an HTTP/2 stream buffers for a client whose flow-control window is
/// closed (hyper's default is 400 KiB per stream); a stream whose client opens no window for
/// `timeouts.client_send` is given up (`body::PacedBody`).
pub const HTTP2_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Builds the protocol settings every connection of `listener` uses: head size and count
/// limits (431 when exceeded), the request-head timeout, the HTTP/1 buffers (the request
/// head limit, so a slow reader or writer pins little) and, for HTTP/2, the concurrent
/// stream limit. HTTP/2 is offered over TLS (by ALPN) and, on plain listeners, only with
/// `h2c = true`.
pub fn http_builder(config: &Config, listener: &ListenerConfig) -> HttpBuilder {
    let limits = &config.limits;
    if listener.tls.is_none() && !listener.h2c {
        // `auto::Builder::http1_only` is ignored for upgradeable connections, so HTTP/1-only
        // listeners use hyper's HTTP/1 builder directly.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.timeouts.request_header)
            .max_header_size(limits.max_request_head_bytes)
            // hyper refuses (panics on) a buffer under 8 KiB; validation never allows one.
            .max_buf_size(limits.max_request_head_bytes.max(MIN_REQUEST_HEAD_BYTES))
            .max_headers(limits.max_request_headers);
        return HttpBuilder::Http1(builder);
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.request_header)
        .max_buf_size(limits.max_request_head_bytes.max(MIN_REQUEST_HEAD_BYTES))
        .max_headers(config.limits.max_request_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_streams).unwrap_or(u32::MAX))
        .max_send_buf_size(HTTP2_SEND_BUFFER_BYTES)
        // RFC 8441: WebSocket over HTTP/2 arrives as an extended CONNECT.
        .enable_connect_protocol();
    HttpBuilder::Auto(builder)
}

/// What a listener serves right now: the configuration generation, the listener's own
/// settings, protocol builder and certificates. A reload swaps it whole; each request loads the
/// current one, so keep-alive connections follow the new routes from their next request.
#[derive(Debug)]
pub struct Serving {
    /// The configuration generation.
    pub proxy: Arc<Proxy>,
    /// The listener's configuration.
    pub config: ListenerConfig,
    /// Its modes, policy and forward-proxy client.
    pub context: ListenerContext,
    /// Its HTTP protocol settings.
    pub builder: Arc<HttpBuilder>,
    /// Its TLS termination, when configured.
    pub tls: Option<TlsListener>,
}

impl Serving {
    /// The state for `config` served by `proxy`, with certificates already loaded.
    pub fn new(proxy: Arc<Proxy>, config: ListenerConfig, tls: Option<TlsListener>) -> Serving {
        let context = proxy.listener_context(&config, tls.is_some());
        let builder = Arc::new(http_builder(&proxy.config, &config));
        Serving { proxy, config, context, builder, tls }
    }

    /// Whether a plain connection's HTTP/1 requests go to the fast path (`http1_fast_path`, on
    /// a listener that speaks HTTP/1 only); otherwise hyper serves the connection throughout.
    pub fn fast_path(&self) -> bool {
        self.proxy.config.http1_fast_path && matches!(*self.builder, HttpBuilder::Http1(_))
    }
}

/// A listener's current [`Serving`], shared by its accept loop and its connections.
pub type Live = Arc<ArcSwap<Serving>>;
