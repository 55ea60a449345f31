//! CONNECT tunnels (RFC 9110 §9.3.6): dial first, answer `200 Connection established`, then
//! relay bytes both ways once hyper hands over the connection.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::target;
use crate::body::Body;
use crate::context::RequestContext;
use crate::dispatch::{ListenerContext, Proxy, UpstreamAddr};
use crate::error::ProxyError;
use crate::observe::{Mode, SessionLog};
use crate::relay::{RelayEnd, RelayLimits, Relayed, relay};
use crate::server::conn::PlainIo;

/// Opens a tunnel for a CONNECT request. The upstream is dialled before answering, so a dead
/// or slow destination gets a 502 or 504 instead of a 200 followed by a closed socket.
pub async fn open(
    request: Request<Incoming>,
    target: target::Target,
    ctx: &RequestContext,
    proxy: &Proxy,
    listener: &ListenerContext,
) -> Result<Response<Body>, ProxyError> {
    let upstream = listener
        .forward
        .connector()
        .connect(target.host(), target.port)
        .await
        .map_err(|source| ProxyError::Connect { target: target.authority.clone(), source })?;
    let on_upgrade = hyper::upgrade::on(request);
    let limits = RelayLimits {
        idle: proxy.config.timeouts.tunnel_idle,
        lifetime: proxy.config.timeouts.tunnel_max_lifetime,
    };
    let upstream_addr = upstream.peer_addr().ok();
    let session = SessionLog::new();
    let log = session.clone();
    let metrics = proxy.observer.metrics.clone();
    let hold = ctx.hold.clone();
    proxy.shutdown.spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(downstream) => {
                let _active = metrics.session_opened(Mode::Tunnel);
                log.relayed(relay_tunnel(downstream, upstream, limits).await);
            }
            Err(err) => {
                tracing::debug!(target = %target.authority, "CONNECT upgrade failed: {err}");
                log.not_upgraded();
            }
        }
    });
    let mut response = Response::new(Body::empty());
    let extensions = response.extensions_mut();
    extensions.insert(ReasonPhrase::from_static(b"Connection established"));
    extensions.insert(session);
    if let Some(addr) = upstream_addr {
        extensions.insert(UpstreamAddr(addr));
    }
    Ok(response)
}

/// Relays a tunnel: kernel to kernel with splice(2) when the client connection is plain TCP
/// (an HTTP/1 listener without TLS), through user-space buffers otherwise.
async fn relay_tunnel(downstream: Upgraded, upstream: TcpStream, limits: RelayLimits) -> Relayed {
    #[cfg(target_os = "linux")]
    let downstream = match downstream.downcast::<PlainIo>() {
        Ok(parts) => match parts.io.into_inner().into_inner() {
            Some(guard) => {
                let client = guard.into_inner();
                return crate::relay::splice::relay(client, parts.read_buf, upstream, limits).await;
            }
            // Cannot happen: a connection being upgraded is not being parked.
            None => return Relayed { to_upstream: 0, to_downstream: 0, end: RelayEnd::Error },
        },
        Err(other) => other,
    };
    relay(TokioIo::new(downstream), upstream, limits).await
}
