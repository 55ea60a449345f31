//! Serving one client connection with hyper: HTTP/1.1 (with upgrades, for CONNECT) or h2c
//! prior knowledge, under the shutdown watcher.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::server::conn::http1;

use tokio_util::sync::CancellationToken;

use crate::body::BoxError;
use crate::downstream::Downstream;
use crate::downstream::h1::ClientConn;
use crate::downstream::hold::ConnectionHold;
use crate::downstream::park::{self, Idleness, InFlight, Parkable, Readiness};
use crate::downstream::streams::OpenStreams;
use crate::downstream::wire::WireGuard;
use crate::h1::timer::Timer;
use crate::observe::metrics::{Metrics, Rejection};
use crate::proxy;
use crate::proxy::fast::Served;
use crate::server::serving::{HttpBuilder, Live, Serving};

/// A served connection that can be asked to finish gracefully.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S> Graceful for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// What [`drive`] watches a connection's idleness for.
#[derive(Clone, Copy)]
enum Watch<'a> {
    /// A plain HTTP/1 connection, parked outside hyper once idle at a message boundary.
    Park(&'a Arc<Idleness>),
    /// A connection that may multiplex (HTTP/2), closed once it has had no request open for
    /// the duration (hyper's HTTP/2 server has no idle timeout of its own).
    Streams(&'a Arc<OpenStreams>, Duration),
}

impl Watch<'_> {
    /// How often the watched state is checked.
    fn period(self) -> Duration {
        match self {
            Watch::Park(_) => park::PARK_AFTER,
            // Closed at most a quarter of the timeout late.
            Watch::Streams(_, idle) => (idle / 4).max(Duration::from_millis(10)),
        }
    }
}

/// Drives `connection` to completion, asking it to finish gracefully once `stop` fires
/// (shutdown, or its listener removed by a reload) or once `watch` finds it idle; returns the
/// error it ended with, if any.
///
/// The connection arrives boxed: hyper's connection state is several KiB, and inline it would
/// make every connection's task that large for the connection's whole life (the task's
/// memory is all written when the future moves in), idle or not.
async fn drive<C, E>(
    mut connection: Pin<Box<C>>,
    stop: &CancellationToken,
    peer: SocketAddr,
    watch: Option<Watch<'_>>,
) -> Option<BoxError>
where
    C: Graceful<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let mut checks = watch.map(|watch| {
        let period = watch.period();
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks
    });
    let mut seen = u64::MAX;
    let result = loop {
        let check = async {
            match checks.as_mut() {
                Some(checks) => {
                    checks.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => break result,
            () = check => match watch {
                Some(Watch::Park(idleness)) if idleness.idle_since(&mut seen) => {
                    // Idle at a message boundary: hyper closes the idle connection, and the
                    // socket comes back to be parked.
                    idleness.park();
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
                Some(Watch::Streams(streams, idle)) if streams.idle_for() >= idle => {
                    tracing::debug!(%peer, limit = "http2_idle", "closing an idle connection");
                    // HTTP/2: GOAWAY, then close (no stream is open).
                    connection.as_mut().graceful_shutdown();
                    break connection.await;
                }
                _ => {}
            },
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
        }
    };
    let err = result.err()?.into();
    // Clients vanish, send garbage and time out all the time; that is not an event.
    tracing::debug!(%peer, "connection ended: {err}");
    Some(err)
}

/// The refusal behind the error a connection ended with, when hyper refused a request head.
/// (A missed first-request deadline is counted by the wire guard, and an idle keep-alive
/// connection expiring is a clean close, not an error.)
fn rejection(err: &BoxError) -> Option<Rejection> {
    let hyper_err = err.downcast_ref::<hyper::Error>()?;
    if hyper_err.is_parse_too_large() {
        Some(Rejection::RequestHeadTooLarge)
    } else if hyper_err.is_parse() {
        Some(Rejection::MalformedRequest)
    } else if hyper_err.is_timeout() {
        // hyper's header timer fired with part of a head received.
        Some(Rejection::RequestHeadTimeout)
    } else {
        None
    }
}

/// The protocol settings, limits and metrics a connection is served with for its whole life.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The listener's HTTP protocol settings.
    pub builder: Arc<HttpBuilder>,
    /// Where refusals and handshake failures are counted.
    pub metrics: Arc<Metrics>,
    /// Time allowed for the TLS handshake and for each request head.
    pub request_header: Duration,
    /// Largest request head.
    pub max_head: usize,
    /// Requests served before the connection is closed.
    pub max_requests: u64,
    /// A client accepting nothing for this long is disconnected.
    pub client_send: std::time::Duration,
    /// An HTTP/2 connection with no stream open for this long is closed.
    pub http2_idle: std::time::Duration,
}

impl ConnectionSettings {
    /// The settings of `serving`.
    pub fn of(serving: &Serving) -> ConnectionSettings {
        let config = &serving.proxy.config;
        ConnectionSettings {
            builder: serving.builder.clone(),
            metrics: serving.proxy.observer.metrics.clone(),
            request_header: config.timeouts.request_header,
            max_head: config.limits.max_request_head_bytes,
            max_requests: config.limits.max_requests_per_connection,
            client_send: config.timeouts.client_send,
            http2_idle: config.timeouts.http2_idle,
        }
    }
}

/// One accepted client connection and what it needs to be served.
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's current state, loaded again for every request.
    pub live: Live,
    /// What the connection keeps from the state it was accepted under. Not the whole state:
    /// a connection must not keep an old configuration alive after a reload.
    pub settings: ConnectionSettings,
    /// The connection's place under the connection limits.
    pub hold: Arc<ConnectionHold>,
    /// Fires when the listener stops (shutdown, or removed by a reload).
    pub stop: CancellationToken,
}

impl Connection {
    /// Completes the TLS handshake, bounded by the request-head timeout, then serves.
    pub async fn serve_tls(self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let timeout = self.settings.request_header;
        // Boxed for the same reason as the HTTP connection (see `drive`).
        match tokio::time::timeout(timeout, Box::pin(acceptor.accept(stream))).await {
            Ok(Ok(tls)) => {
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let max_head = self.settings.max_head;
                let io = if h2 {
                    WireGuard::passthrough(tls, timeout)
                } else {
                    WireGuard::new(tls, max_head, timeout)
                };
                let metrics = &self.settings.metrics;
                let io = io
                    .counting_into(metrics.clone())
                    .sending_within(self.settings.client_send, Some(metrics.clone()));
                self.serve(io).await
            }
            Ok(Err(err)) => {
                let failures = self.settings.metrics.tls_handshake_failed();
                tracing::debug!(peer = %self.peer, failures, "TLS handshake failed: {err}");
            }
            Err(_) => {
                let failures = self.settings.metrics.tls_handshake_failed();
                tracing::debug!(peer = %self.peer, failures, "TLS handshake timed out");
            }
        }
    }

    /// Serves requests until the client closes, or until shutdown lets in-flight ones finish.
    ///
    /// A plain HTTP/1 connection is parked outside hyper whenever it has been idle for
    /// [`park::PARK_AFTER`], and before its first request: while parked it holds only its
    /// socket (see [`park`]).
    pub async fn serve<I>(self, io: WireGuard<I>)
    where
        I: Readiness + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_after(io, 0).await;
    }

    /// Serves a plain TCP connection: each request the HTTP/1 fast path takes is served there
    /// ([`proxy::fast`]); from the first it does not take, hyper serves the connection (as
    /// [`Connection::serve`]), with the bytes already read in front of the socket.
    ///
    /// Between requests the connection waits holding only its socket, as a parked one does,
    /// within the same deadlines: the first request's head from the accept, the next one within
    /// `timeouts.request_header`.
    pub async fn serve_plain(self, stream: TcpStream, max_head: usize) {
        self.serve_plain_since(stream, max_head, Instant::now()).await;
    }

    /// [`Connection::serve_plain`] for a connection accepted at `accepted` (protocol detection
    /// waited for its first byte since).
    pub async fn serve_plain_since(self, stream: TcpStream, max_head: usize, accepted: Instant) {
        let timeout = self.settings.request_header;
        let client_send = self.settings.client_send;
        let metrics = Some(self.settings.metrics.clone());
        let mut client = ClientConn::new(stream, bytes::Bytes::new(), client_send, metrics);
        let mut fields = Vec::new();
        let downstream = Downstream::new(self.peer);
        let mut served = 0u64;
        // Made once for the connection's waits between requests, so a keep-alive connection
        // neither registers a timer nor a shutdown waiter anew for each request.
        let mut idle = Timer::new();
        let mut stopped = Box::pin(self.stop.clone().cancelled_owned());
        loop {
            if client.buffered().is_empty() {
                client.release_buffer();
                let first = served == 0;
                let deadline = if first { accepted + timeout } else { Instant::now() + timeout };
                let parked = self.settings.metrics.connection_parked();
                let next = async {
                    tokio::select! {
                        biased;
                        () = &mut stopped => false,
                        ready = client.stream().readable() => ready.is_ok(),
                    }
                };
                match idle.within_at(deadline, next).await {
                    Some(true) => {}
                    Some(false) => return,
                    None => {
                        if first {
                            self.settings.metrics.reject(Rejection::RequestHeadTimeout);
                        }
                        return;
                    }
                }
                drop(parked);
                match client.read_more().await {
                    Ok(1..) => {}
                    Ok(0) | Err(_) => return,
                }
            }
            let current = self.live.load_full();
            if !current.fast_path() {
                break;
            }
            let last = served + 1 >= self.settings.max_requests;
            let (proxy, listener) = (&current.proxy, &current.context);
            // Boxed: the request's state is freed between requests, so an idle connection's
            // task stays small.
            let request = proxy::fast::serve(
                &mut client,
                &mut fields,
                proxy,
                listener,
                &downstream,
                &self.hold,
                last,
            );
            match Box::pin(request).await {
                Served::KeepAlive => served += 1,
                Served::Close => {
                    client.shutdown().await;
                    return;
                }
                Served::General => break,
            }
        }
        let remaining = if served == 0 {
            timeout.saturating_sub(accepted.elapsed()).max(Duration::from_millis(1))
        } else {
            timeout
        };
        let metrics = &self.settings.metrics;
        let io = WireGuard::new(client.into_prefixed(), max_head, remaining)
            .counting_into(metrics.clone())
            .sending_within(client_send, Some(metrics.clone()));
        Box::pin(self.serve_after(io, served)).await;
    }

    /// [`Connection::serve`], for a connection that has already served `served` requests.
    async fn serve_after<I>(self, io: WireGuard<I>, served: u64)
    where
        I: Readiness + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { peer, live, settings, hold, stop } = self;
        let max_requests = settings.max_requests;
        let served = Arc::new(AtomicU64::new(served));
        let parking = match &*settings.builder {
            HttpBuilder::Http1(_) if I::PARKABLE => Some(Idleness::new()),
            _ => None,
        };
        let in_flight = parking.clone();
        // Idle HTTP/1 connections are closed by hyper's header timeout (or parked); a
        // connection that may speak HTTP/2 has its open requests counted for its idle timeout.
        let streams = match &*settings.builder {
            HttpBuilder::Auto(_) => Some(OpenStreams::new()),
            HttpBuilder::Http1(_) => None,
        };
        let downstream = Downstream {
            send: io.send_progress(),
            streams: streams.clone(),
            ..Downstream::new(peer)
        };
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let current = live.load_full();
            let served = served.clone();
            let hold = hold.clone();
            let downstream = downstream.clone();
            let in_flight = in_flight.as_ref().map(InFlight::start);
            async move {
                let _in_flight = in_flight;
                let http1 = request.version() < http::Version::HTTP_2;
                let connect = http1 && request.method() == http::Method::CONNECT;
                let upgrade = http1 && request.headers().contains_key(http::header::UPGRADE);
                let (shared, listener) = (&current.proxy, &current.context);
                let mut response = proxy::handle(request, shared, listener, downstream, hold).await;
                let status = response.status();
                // The wire guard stops reading a connection once it asks to switch protocols;
                // if the switch does not happen, the connection must not carry more requests.
                let declined = (connect && !status.is_success())
                    || (upgrade && !connect && status != http::StatusCode::SWITCHING_PROTOCOLS);
                // HTTP/1 also closes after the response that reaches the per-connection limit.
                let exhausted = http1 && served.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests;
                if declined || exhausted {
                    if exhausted {
                        tracing::debug!(%peer, limit = "max_requests_per_connection", "closing");
                    }
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let metrics = &settings.metrics;
        let outcome = match (&*settings.builder, parking) {
            (HttpBuilder::Http1(http1), Some(idleness)) => {
                let io = io.reporting_boundary(idleness.boundary.clone());
                serve_parking(io, http1, service, &idleness, &settings, &stop, peer).await
            }
            (HttpBuilder::Http1(http1), None) => {
                let io = TokioIo::new(io);
                let connection = Box::pin(http1.serve_connection(io, service).with_upgrades());
                drive(connection, &stop, peer, None).await
            }
            (HttpBuilder::Auto(auto), _) => {
                let io = TokioIo::new(io);
                let connection = Box::pin(auto.serve_connection_with_upgrades(io, service));
                let watch =
                    streams.as_ref().map(|streams| Watch::Streams(streams, settings.http2_idle));
                drive(connection, &stop, peer, watch).await
            }
        };
        if let Some(rejection) = outcome.and_then(|err| rejection(&err)) {
            metrics.reject(rejection);
        }
    }
}

/// Serves `io` with hyper in sessions: waits outside hyper (parked) until the client sends,
/// serves until the connection has been idle for [`park::PARK_AFTER`], takes the socket back
/// and parks again. Returns the error the last session ended with, if any.
async fn serve_parking<I, S>(
    mut io: WireGuard<I>,
    http1: &http1::Builder,
    service: S,
    idleness: &Arc<Idleness>,
    settings: &ConnectionSettings,
    stop: &CancellationToken,
    peer: SocketAddr,
) -> Option<BoxError>
where
    I: Readiness + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Clone,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
    http1::UpgradeableConnection<TokioIo<Parkable<WireGuard<I>>>, S>:
        Graceful<Output = Result<(), hyper::Error>>,
{
    let returned = Arc::new(std::sync::Mutex::new(None));
    let mut parked = Some(settings.metrics.connection_parked());
    loop {
        // Parked: only the socket is held until the client sends again (or, before the first
        // request, until the guard's first-request deadline, which runs from the accept across
        // sessions, so a wake-up without a request does not restart it; after one, the
        // keep-alive idle timeout).
        let first_request = io.first_request_deadline();
        let first = first_request.is_some();
        let deadline =
            first_request.unwrap_or_else(|| tokio::time::Instant::now() + settings.request_header);
        tokio::select! {
            ready = io.get_ref().readable() => if ready.is_err() { return None },
            () = tokio::time::sleep_until(deadline) => {
                if first {
                    settings.metrics.reject(Rejection::RequestHeadTimeout);
                }
                return None;
            }
            () = stop.cancelled() => return None,
        }
        drop(parked.take());
        idleness.unpark();
        let parkable = Parkable::new(io, idleness.clone(), returned.clone());
        let connection = Box::pin(
            http1.serve_connection(TokioIo::new(parkable), service.clone()).with_upgrades(),
        );
        let outcome = drive(connection, stop, peer, Some(Watch::Park(idleness))).await;
        let back = returned.lock().unwrap_or_else(|p| p.into_inner()).take();
        match back {
            Some(back) if outcome.is_none() => {
                io = back;
                parked = Some(settings.metrics.connection_parked());
            }
            _ => return outcome,
        }
    }
}
