//! One SOCKS client on a listener, from its first byte to the tunnel's end: the same policy as
//! an HTTP `CONNECT` on that listener (client address rules and rate, credentials, CONNECT
//! ports, denied hosts, the destination guard on the resolved address, the idle and lifetime
//! limits), then one access-log line with `mode=socks` and the tunnel metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::downstream::hold::ConnectionHold;
use crate::error::{ErrorKind, ProxyError};
use crate::observe::metrics::{Rejection, RouteLabel};
use crate::observe::{Event, Failure, Mode, RequestId};
use crate::policy::{self, Denied};
use crate::proxy::state::{ListenerContext, Proxy};
use crate::proxy::tunnel::egress_failure;
use crate::relay::{RelayLimits, Relayed};
use crate::socks::handshake::{Authentication, HandshakeError, Negotiated, negotiate};
use crate::socks::reply::Reply;
use crate::upstream::client::UpstreamError;
use crate::upstream::egress::Dialed;
use crate::upstream::parent::{ParentStream, ParentTunnel};

/// The route label of SOCKS traffic, which matches no route.
static NO_ROUTE: RouteLabel = RouteLabel(None);

/// What a SOCKS client on a listener is served with.
#[derive(Debug, Clone, Copy)]
pub struct SocksService<'a> {
    /// The configuration generation the connection was accepted under.
    pub proxy: &'a Proxy,
    /// The listener's policy, guard and forward connector.
    pub listener: &'a ListenerContext,
    /// The deadline for the whole handshake (`timeouts.request_header`, what an HTTP client
    /// gets for its request head).
    pub handshake: Duration,
}

/// Serves one SOCKS client connection; `hold` keeps its place under the connection limits
/// until the tunnel closes. Never fails: every outcome is a reply, a log line or a count.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    service: SocksService<'_>,
    hold: Arc<ConnectionHold>,
) {
    let SocksService { proxy, listener, handshake } = service;
    let started = Instant::now();
    // A client refused by address or rate is not asked for credentials; it learns the
    // refusal once its request is read ("not allowed by ruleset").
    let admitted = admit_client(proxy, peer);
    let auth = match (&admitted, listener.policy.auth_required) {
        (Ok(()), true) => Authentication::Users(proxy.policy.authenticator()),
        _ => Authentication::NotRequired,
    };
    let request = match negotiate(&mut client, auth, handshake).await {
        Ok(request) => request,
        Err(err) => {
            refused_handshake(proxy, peer, started, &err);
            return;
        }
    };
    let target = request
        .destination
        .authority()
        .and_then(|authority| Uri::try_from(authority.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("*"));
    let mut entry = Entry::new(started, peer, target);
    let dialed = match admitted {
        Ok(()) => dial(&request, listener).await,
        Err(err) => Err(err),
    };
    let upstream = match dialed {
        Ok(upstream) => upstream,
        Err(err) => {
            let _ = request.answer(&mut client, reply_for(&err), None).await;
            entry.failed(&err);
            entry.finish(proxy);
            return;
        }
    };
    entry.upstream = upstream.peer_addr();
    entry.upstream_ttfb = Some(started.elapsed());
    if let Err(err) = request.answer(&mut client, Reply::Succeeded, upstream.local_addr()).await {
        tracing::debug!(%peer, "SOCKS client left before the reply: {err}");
        entry.failure = Some(Failure::ClientClosed);
        entry.finish(proxy);
        return;
    }
    let limits = RelayLimits {
        idle: proxy.config.timeouts.tunnel_idle,
        lifetime: proxy.config.timeouts.tunnel_max_lifetime,
    };
    let relayed = {
        let _active = proxy.observer.metrics.session_opened(Mode::Socks);
        relay(client, upstream, limits).await
    };
    drop(hold);
    entry.relayed(relayed);
    entry.finish(proxy);
}

/// The client-level checks an HTTP request gets first: `[access]` and the client's rate.
fn admit_client(proxy: &Proxy, peer: SocketAddr) -> Result<(), ProxyError> {
    proxy.policy.check_client(peer.ip())?;
    proxy.policy.check_client_rate(peer.ip())?;
    Ok(())
}

/// The destination checks of an HTTP `CONNECT`, then the dial: through the parents the
/// `[[parent]]` rules name for the destination, or straight there with the listener's
/// connector, whose guard judges every resolved address.
async fn dial(request: &Negotiated, listener: &ListenerContext) -> Result<Dialed, ProxyError> {
    let destination = &request.destination;
    let (host, port) = (destination.host(), destination.port());
    policy::check_connect_port(&listener.policy, port)?;
    if listener.guard.host_denied(&host) {
        return Err(Denied::Host.into());
    }
    let target = destination.authority().ok_or(Denied::Host)?;
    let dialed = listener.forward.connector().open(&host, port).await;
    dialed.map_err(|err| egress_failure(target, err).into())
}

/// The SOCKS reply for a failure: a dial failure by its own socket error, anything else by
/// its kind.
fn reply_for(err: &ProxyError) -> Reply {
    match err {
        ProxyError::Upstream(UpstreamError::Connect { source, .. }) => {
            Reply::for_connect_error(source)
        }
        other => Reply::for_kind(other.kind()),
    }
}

/// Records a handshake that never named a destination. Refused credentials (or no method
/// sluice accepts) are what a `407` is to an HTTP client: an access-log line (`mode=socks`,
/// status 407, target `*`, `error=proxy_auth_required`), counted with the requests and the
/// rejections as that `407` is. A slow or malformed handshake is what a slow or malformed
/// HTTP head is: counted in the rejections only, with no line, as no request was made.
fn refused_handshake(proxy: &Proxy, peer: SocketAddr, started: Instant, err: &HandshakeError) {
    tracing::debug!(%peer, "SOCKS handshake refused: {err}");
    let rejection = match err {
        HandshakeError::Timeout { .. } => Some(Rejection::RequestHeadTimeout),
        HandshakeError::Credentials | HandshakeError::NoAcceptableMethod => {
            let mut entry = Entry::new(started, peer, Uri::from_static("*"));
            entry.status = StatusCode::PROXY_AUTHENTICATION_REQUIRED.as_u16();
            entry.failure = Some(Failure::Proxy(ErrorKind::ProxyAuthRequired));
            entry.finish(proxy);
            None
        }
        HandshakeError::Io(_) => None,
        HandshakeError::Version(_)
        | HandshakeError::Malformed(_)
        | HandshakeError::Name
        | HandshakeError::Command(_)
        | HandshakeError::AddressType(_) => Some(Rejection::MalformedRequest),
    };
    if let Some(rejection) = rejection {
        proxy.observer.metrics.reject(rejection);
    }
}

/// Relays a tunnel: with `relay::splice` on Linux (small messages copied, bulk spliced) when
/// the upstream is plain TCP (direct, or an HTTP or SOCKS5 parent), else through buffers. What a parent sent after its answer reaches
/// the client first.
async fn relay(mut client: TcpStream, upstream: Dialed, limits: RelayLimits) -> Relayed {
    // A direct socket keeps its place under the upstream connection cap until the relay ends.
    let (upstream, early, _slot) = upstream.into_tunnel();
    #[cfg(target_os = "linux")]
    if let ParentStream::Plain(upstream) = upstream {
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return Relayed {
                to_upstream: 0,
                to_downstream: 0,
                end: crate::relay::RelayEnd::Error,
            };
        }
        let mut relayed = crate::relay::splice::relay(client, Bytes::new(), upstream, limits).await;
        relayed.to_downstream += early.len() as u64;
        return relayed;
    }
    crate::relay::relay(client, ParentTunnel::from_parts(upstream, early), limits).await
}

/// What the access log and the metrics are told about one SOCKS session.
struct Entry {
    started: Instant,
    peer: SocketAddr,
    target: Uri,
    status: u16,
    upstream: Option<SocketAddr>,
    upstream_ttfb: Option<Duration>,
    received: u64,
    sent: u64,
    failure: Option<Failure>,
    close: Option<&'static str>,
}

impl Entry {
    /// A session from `peer` for `target` (`*` when none was named), admitted so far.
    fn new(started: Instant, peer: SocketAddr, target: Uri) -> Entry {
        Entry {
            started,
            peer,
            target,
            status: 200,
            upstream: None,
            upstream_ttfb: None,
            received: 0,
            sent: 0,
            failure: None,
            close: None,
        }
    }

    /// Records a refusal or dial failure with the status an HTTP `CONNECT` would have got.
    fn failed(&mut self, err: &ProxyError) {
        self.status = err.status().as_u16();
        self.failure = Some(Failure::Proxy(err.kind()));
    }

    fn relayed(&mut self, relayed: Relayed) {
        self.received = relayed.to_upstream;
        self.sent = relayed.to_downstream;
        self.close = Some(relayed.end.as_str());
    }

    fn finish(self, proxy: &Proxy) {
        let id = RequestId::for_request(&HeaderMap::new(), &proxy.config.request_id);
        let event = Event {
            started: self.started,
            peer: self.peer,
            id: &id,
            mode: Mode::Socks,
            method: &Method::CONNECT,
            target: &self.target,
            version: Version::HTTP_11,
            route: &NO_ROUTE,
            series: None,
            status: self.status,
            received: self.received,
            sent: self.sent,
            upstream_ttfb: self.upstream_ttfb,
            upstream: self.upstream,
            upstream_target: None,
            attempts: 0,
            failure: self.failure,
            close: self.close,
            cache: None,
            headers: &[],
            ai: None,
        };
        proxy.observer.finish(&event);
    }
}
