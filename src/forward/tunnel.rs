//! CONNECT tunnels (RFC 9110 §9.3.6): dial first, answer `200 Connection established`, then
//! relay bytes both ways once hyper hands over the connection.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;

use super::target;
use crate::body::Body;
use crate::context::RequestContext;
use crate::dispatch::{ListenerContext, Proxy};
use crate::error::ProxyError;
use crate::relay::{RelayLimits, relay};

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
    let id = ctx.id;
    let peer = ctx.peer;
    let hold = ctx.hold.clone();
    proxy.shutdown.spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(downstream) => {
                let relayed = relay(TokioIo::new(downstream), upstream, limits).await;
                tracing::debug!(
                    id,
                    %peer,
                    target = %target.authority,
                    to_upstream = relayed.to_upstream,
                    to_downstream = relayed.to_downstream,
                    end = relayed.end.as_str(),
                    "tunnel closed"
                );
            }
            Err(err) => tracing::debug!(id, %peer, "CONNECT upgrade failed: {err}"),
        }
    });
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(ReasonPhrase::from_static(b"Connection established"));
    Ok(response)
}
