//! Protocol upgrades (RFC 9110 §7.8), WebSocket above all: keep the client's upgrade request
//! when the protocol is allowed, and once the upstream answers `101 Switching Protocols`, relay
//! bytes between the two upgraded connections.

use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, request, response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::observe::Mode;
use crate::proxy::context::RequestContext;
use crate::proxy::log::SessionLog;
use crate::proxy::state::Proxy;
use crate::relay::{RelayLimits, relay};

/// Protocols the forward proxy lets through: plain `ws://` via absolute-form.
pub const FORWARD_ALLOWED: &[&str] = &["websocket"];

/// A client's upgrade request that sluice has agreed to pass on.
#[derive(Debug)]
pub struct PendingUpgrade {
    protocol: HeaderValue,
    downstream: OnUpgrade,
    style: Style,
}

/// How the client asked for the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// HTTP/1.1 `Upgrade` (RFC 9110 §7.8), answered with 101.
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol` (RFC 8441), answered with 200. Upstreams are
    /// reached over HTTP/1.1, so the request is translated to a classic upgrade on the way.
    ExtendedConnect,
}

/// Takes the upgrade from `request` if it asks for one (`Connection: upgrade` plus `Upgrade`)
/// and its protocol is in `allowed` (lower-case names). A protocol not allowed is left for
/// hop-by-hop removal, so the request goes upstream as an ordinary one (RFC 9110 §7.8 lets a
/// server ignore Upgrade).
pub fn take<B, S: AsRef<str>>(request: &mut Request<B>, allowed: &[S]) -> Option<PendingUpgrade> {
    let (protocol, style) = match request.extensions().get::<hyper::ext::Protocol>() {
        Some(extended) if request.method() == Method::CONNECT => {
            (HeaderValue::from_str(extended.as_str()).ok()?, Style::ExtendedConnect)
        }
        _ => (requested(request.headers())?.clone(), Style::Http1),
    };
    let name = protocol_name(&protocol)?;
    if !allowed.iter().any(|a| a.as_ref().eq_ignore_ascii_case(name)) {
        return None;
    }
    Some(PendingUpgrade { protocol, downstream: hyper::upgrade::on(request), style })
}

/// True for an HTTP/2 extended CONNECT (RFC 8441), which is a request for a route, not a
/// tunnel.
pub fn is_extended_connect<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT
        && request.extensions().get::<hyper::ext::Protocol>().is_some()
}

/// The `Upgrade` value when some `Connection` line carries the `upgrade` option.
fn requested(headers: &HeaderMap) -> Option<&HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    if asks { headers.get(UPGRADE) } else { None }
}

/// The first protocol's name without version: `websocket` from `WebSocket`, `h2c` from `h2c`.
fn protocol_name(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let first = text.split(',').next()?.trim();
    let name = first.split('/').next()?.trim();
    (!name.is_empty()).then_some(name)
}

impl PendingUpgrade {
    /// Puts the upgrade request back after hop-by-hop removal (which drops `Connection` and
    /// `Upgrade`): the next hop must see exactly this request to switch protocols. An extended
    /// CONNECT becomes `GET` with a fresh `Sec-WebSocket-Key` (RFC 8441 §5).
    pub fn restore(&self, parts: &mut request::Parts) {
        if self.style == Style::ExtendedConnect {
            parts.method = Method::GET;
            parts.headers.insert(SEC_WEBSOCKET_KEY, websocket_key());
            if !parts.headers.contains_key(SEC_WEBSOCKET_VERSION) {
                parts.headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
        }
        parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, self.protocol.clone());
    }

    /// After the upstream switched protocols: marks the downstream 101 response, and spawns a
    /// tracked task that relays between both upgraded connections until both close, one fails,
    /// or nothing moves for `idle`. The request becomes a WebSocket session, finished by the
    /// relay through the returned [`SessionLog`].
    pub fn splice(
        self,
        response: &mut response::Parts,
        accepted: Option<HeaderValue>,
        upstream: OnUpgrade,
        proxy: &Proxy,
        ctx: &mut RequestContext,
    ) -> SessionLog {
        let limits = RelayLimits {
            idle: proxy.config.timeouts.websocket_idle,
            lifetime: proxy.config.timeouts.websocket_max_lifetime,
        };
        let metrics = proxy.observer.metrics.clone();
        let hold = ctx.hold.clone();
        let session = SessionLog::new();
        ctx.mode = Mode::WebSocket;
        let log = session.clone();
        match self.style {
            Style::Http1 => {
                response.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                response.headers.insert(UPGRADE, accepted.unwrap_or_else(|| self.protocol.clone()));
            }
            Style::ExtendedConnect => {
                // RFC 8441 §5: success is a 2xx; the accept key belongs to the HTTP/1.1 hop.
                response.status = StatusCode::OK;
                response.headers.remove(SEC_WEBSOCKET_ACCEPT);
            }
        }
        let downstream = self.downstream;
        proxy.shutdown.spawn(async move {
            let _hold = hold;
            let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!("upgrade failed: {err}");
                    session.not_upgraded();
                    return;
                }
            };
            let _active = metrics.session_opened(Mode::WebSocket);
            let relayed = relay(TokioIo::new(downstream), TokioIo::new(upstream), limits).await;
            session.relayed(relayed);
        });
        log
    }
}

/// A `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1). The randomness comes from
/// the standard library's per-process random hash keys, plenty for a handshake nonce.
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&key)
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(connection: &str, upgrade: &str) -> Request<()> {
        Request::get("/")
            .header("connection", connection)
            .header("upgrade", upgrade)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_allowed_upgrades_are_taken() {
        let allowed = ["websocket"];
        assert!(take(&mut request("Upgrade", "websocket"), &allowed).is_some());
        assert!(take(&mut request("keep-alive, Upgrade", "WebSocket"), &allowed).is_some());
        assert!(take(&mut request("keep-alive", "websocket"), &allowed).is_none());
        assert!(take(&mut request("upgrade", "h2c"), &allowed).is_none());
        assert!(take(&mut request("upgrade", "websocket"), &[] as &[&str]).is_none());
    }

    #[test]
    fn websocket_keys_are_16_bytes_and_differ() {
        let (a, b) = (websocket_key(), websocket_key());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }

    #[test]
    fn protocol_names_drop_versions() {
        assert_eq!(protocol_name(&HeaderValue::from_static("HTTP/2.0, SHTTP/1.3")), Some("HTTP"));
        assert_eq!(protocol_name(&HeaderValue::from_static(" websocket ")), Some("websocket"));
        assert_eq!(protocol_name(&HeaderValue::from_static("")), None);
    }
}
