//! CONNECT tunnels (RFC 9110 §9.3.6): dial first, answer `200 Connection established`, then
//! relay bytes both ways once hyper hands over the connection.

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::body::Body;
use crate::downstream;
use crate::error::ProxyError;
use crate::observe::Mode;
use crate::proxy::context::RequestContext;
use crate::proxy::log::{Reply, SessionLog};
use crate::proxy::state::{ListenerContext, Proxy};
use crate::relay::{RelayEnd, RelayLimits, Relayed, relay};
use crate::upstream::client::UpstreamError;
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
    proxy.shutdown.spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(downstream) => {
                let _active = metrics.session_opened(Mode::Tunnel);
                session.relayed(relay_tunnel(downstream, upstream, limits).await);
            }
            Err(err) => {
                tracing::debug!(target = %authority, "CONNECT upgrade failed: {err}");
                session.not_upgraded();
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

/// Relays a tunnel: with `relay::splice` (small messages copied, bulk spliced kernel to
/// kernel) when both ends are plain TCP (an HTTP/1 listener without TLS, and a direct or
/// plain-parent upstream), through user-space buffers otherwise. What a parent sent after its answer reaches the client first.
async fn relay_tunnel(downstream: Upgraded, upstream: Dialed, limits: RelayLimits) -> Relayed {
    // A direct socket is relayed bare (spliced, on Linux); its place under the upstream
    // connection cap is kept beside it until the relay ends.
    let (upstream, mut early, _slot) = match upstream {
        Dialed::Direct(stream) => {
            let (stream, slot) = stream.into_parts();
            (ParentStream::Plain(stream), Bytes::new(), Some(slot))
        }
        Dialed::Parent { tunnel, .. } => {
            let (stream, early) = tunnel.into_parts();
            (stream, early, None)
        }
    };
    #[cfg(target_os = "linux")]
    let (downstream, upstream) = match upstream {
        ParentStream::Plain(upstream) => match downstream::into_plain_tcp(downstream) {
            Ok(Some((mut client, read_buf))) => {
                if !early.is_empty() && client.write_all(&early).await.is_err() {
                    return Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error };
                }
                // Not kept for the tunnel's life: it may be a slice of a larger buffer.
                let early = std::mem::take(&mut early).len() as u64;
                let mut relayed =
                    crate::relay::splice::relay(client, read_buf, upstream, limits).await;
                relayed.to_downstream += early;
                return relayed;
            }
            Ok(None) => {
                return Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error };
            }
            Err(other) => (other, ParentStream::Plain(upstream)),
        },
        other => (downstream, other),
    };
    relay(TokioIo::new(downstream), ParentTunnel::from_parts(upstream, early), limits).await
}
