//! CONNECT tunnels (RFC 9110 §9.3.6): dial first, answer `200 Connection established`, then
//! relay bytes both ways once hyper hands over the connection.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
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
    let upstream =
        listener.forward.connector().connect(target.host(), target.port).await.map_err(
            |source| UpstreamError::Connect { target: target.authority.clone(), source },
        )?;
    ctx.answered_by(upstream.peer_addr().ok());
    let on_upgrade = hyper::upgrade::on(request);
    let limits = RelayLimits {
        idle: proxy.config.timeouts.tunnel_idle,
        lifetime: proxy.config.timeouts.tunnel_max_lifetime,
    };
    let session = SessionLog::new();
    let log = session.clone();
    let metrics = proxy.observer.metrics.clone();
    let hold = ctx.hold.clone();
    proxy.shutdown.spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(downstream) => {
                let _active = metrics.session_opened(Mode::Tunnel);
                session.relayed(relay_tunnel(downstream, upstream, limits).await);
            }
            Err(err) => {
                tracing::debug!(target = %target.authority, "CONNECT upgrade failed: {err}");
                session.not_upgraded();
            }
        }
    });
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(ReasonPhrase::from_static(b"Connection established"));
    Ok(Reply { response, session: Some(log) })
}

/// Relays a tunnel: kernel to kernel with splice(2) when the client connection is plain TCP
/// (an HTTP/1 listener without TLS), through user-space buffers otherwise.
async fn relay_tunnel(downstream: Upgraded, upstream: TcpStream, limits: RelayLimits) -> Relayed {
    #[cfg(target_os = "linux")]
    let downstream = match downstream::into_plain_tcp(downstream) {
        Ok(Some((client, read_buf))) => {
            return crate::relay::splice::relay(client, read_buf, upstream, limits).await;
        }
        Ok(None) => return Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error },
        Err(other) => other,
    };
    relay(TokioIo::new(downstream), upstream, limits).await
}
