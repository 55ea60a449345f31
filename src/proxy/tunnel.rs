//! CONNECT tunnels (RFC 9110 §9.3.6): dial first, answer `200 Connection established`, then
//! relay bytes both ways once hyper hands over the connection.

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
#[cfg(target_os = "linux")]
use tokio::io::AsyncWriteExt;
#[cfg(target_os = "linux")]
use tokio::net::TcpStream;

use crate::body::Body;
use crate::downstream;
use crate::error::ProxyError;
use crate::observe::Mode;
use crate::proxy::context::RequestContext;
use crate::proxy::log::{Reply, SessionLog};
use crate::proxy::state::{ListenerContext, Proxy};
use crate::relay::{RelayEnd, RelayLimits, Relayed, relay};
use crate::upstream::client::UpstreamError;
use crate::upstream::dialer::UpstreamSlot;
use crate::upstream::egress::{Dialed, EgressError};
use crate::upstream::parent::{ParentStream, ParentTunnel};
use crate::uri::owned;
use crate::uri::target::Target;

/// Opens a tunnel for a CONNECT request. The upstream is dialled before answering, so a dead
/// or slow destination gets a 502 or 504 instead of a 200 followed by a closed socket.
pub async fn open(
    request: Request<Incoming>,
    target: Target,
    ctx: &mut RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Reply, ProxyError> {
    // Through the parents the `[[parent]]` rules name for the destination, or straight
    // there with the listener's guard judging every resolved address.
    let dialed = listener.forward.connector().open(target.host(), target.port).await;
    let upstream = dialed.map_err(|err| egress_failure(target.authority.clone(), err))?;
    ctx.answered_by(upstream.peer_addr());
    let on_upgrade = hyper::upgrade::on(request);
    let limits = RelayLimits {
        idle: proxy.config.timeouts.tunnel_idle,
        lifetime: proxy.config.timeouts.tunnel_max_lifetime,
    };
    let session = SessionLog::new();
    let log = session.clone();
    let metrics = proxy.observer.metrics.clone();
    let hold = ctx.hold.clone();
    // For the log line of a failed upgrade; a copy, since the request's own is a slice of
    // hyper's read buffer, which the tunnel would keep alive with it.
    let authority = owned::authority(&target.authority);
    let tasks = proxy.shutdown.clone();
    proxy.shutdown.spawn(async move {
        let downstream = match on_upgrade.await {
            Ok(downstream) => downstream,
            Err(err) => {
                tracing::debug!(target = %authority, "CONNECT upgrade failed: {err}");
                session.not_upgraded();
                return;
            }
        };
        let active = metrics.session_opened(Mode::Tunnel);
        match Ends::of(downstream, upstream) {
            #[cfg(target_os = "linux")]
            Ends::Plain { client, read_buf, upstream, early, slot } => {
                // A task of its own, holding the sockets, the relay and the guards: this
                // one's state (the dial's result, the upgrade, the user-space relay) is freed
                // before the tunnel goes idle.
                tasks.spawn(async move {
                    let _guards = (hold, active, slot);
                    session.relayed(splice_tunnel(client, read_buf, upstream, early, limits).await);
                });
            }
            Ends::Other { downstream, upstream, slot } => {
                let _guards = (hold, active, slot);
                // Boxed: inline, it would make every tunnel's first task this large.
                let relayed = Box::pin(relay(TokioIo::new(downstream), upstream, limits)).await;
                session.relayed(relayed);
            }
            Ends::Gone => {
                drop((hold, active));
                session.relayed(Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error });
            }
        }
    });
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(ReasonPhrase::from_static(b"Connection established"));
    Ok(Reply { response, session: Some(log) })
}

/// The error a failed dial becomes: a direct connect failure as before, a parent's as its own.
pub fn egress_failure(target: Authority, err: EgressError) -> UpstreamError {
    match err {
        EgressError::Direct(source) => UpstreamError::Connect { target, source },
        other => UpstreamError::Parent { target, source: other },
    }
}

/// A tunnel's two ends, as its relay takes them: with `relay::splice` (small messages copied,
/// bulk spliced kernel to kernel) when both are plain TCP (an HTTP/1 listener without TLS, and
/// a direct or plain-parent upstream), through user-space buffers otherwise. A direct socket
/// keeps its place under the upstream connection cap (`slot`) beside it until the relay ends.
enum Ends {
    /// Two plain TCP sockets: the client's, with the bytes hyper had read past the CONNECT
    /// head (for the upstream), and the upstream's, with what a parent sent after its answer
    /// (for the client).
    #[cfg(target_os = "linux")]
    Plain {
        client: TcpStream,
        read_buf: Bytes,
        upstream: TcpStream,
        early: Bytes,
        slot: Option<UpstreamSlot>,
    },
    /// Anything else.
    Other { downstream: Upgraded, upstream: ParentTunnel, slot: Option<UpstreamSlot> },
    /// The client's socket had been given back to be parked, which cannot happen to a
    /// connection being upgraded.
    Gone,
}

impl Ends {
    /// The ends of the tunnel from the upgraded client connection and the dialled upstream.
    fn of(downstream: Upgraded, upstream: Dialed) -> Ends {
        let (upstream, early, slot) = upstream.into_tunnel();
        #[cfg(target_os = "linux")]
        let (downstream, upstream) = match upstream {
            ParentStream::Plain(upstream) => match downstream::into_plain_tcp(downstream) {
                Ok(Some((client, read_buf))) => {
                    return Ends::Plain { client, read_buf, upstream, early, slot };
                }
                Ok(None) => return Ends::Gone,
                Err(other) => (other, ParentStream::Plain(upstream)),
            },
            other => (downstream, other),
        };
        Ends::Other { downstream, upstream: ParentTunnel::from_parts(upstream, early), slot }
    }
}

/// The spliced relay of [`Ends::Plain`]: what a parent sent after its answer reaches the
/// client first. An `async` block, as [`crate::relay::splice::relay`] is, so the task does not
/// hold the sockets twice.
#[cfg(target_os = "linux")]
#[allow(clippy::manual_async_fn)]
fn splice_tunnel(
    mut client: TcpStream,
    read_buf: Bytes,
    upstream: TcpStream,
    mut early: Bytes,
    limits: RelayLimits,
) -> impl Future<Output = Relayed> + Send {
    async move {
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error };
        }
        // Not kept for the tunnel's life: it may be a slice of a larger buffer.
        let early = std::mem::take(&mut early).len() as u64;
        let mut relayed = crate::relay::splice::relay(client, read_buf, upstream, limits).await;
        relayed.to_downstream += early;
        relayed
    }
}
