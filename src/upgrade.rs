//! Protocol upgrades (RFC 9110 §7.8), WebSocket above all: keep the client's upgrade request
//! when the protocol is allowed, and once the upstream answers `101 Switching Protocols`, relay
//! bytes between the two upgraded connections.

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::relay::relay;
use crate::server::shutdown::Shutdown;

/// Protocols the forward proxy lets through: plain `ws://` via absolute-form.
pub const FORWARD_ALLOWED: &[&str] = &["websocket"];

/// A client's upgrade request that sluice has agreed to pass on.
#[derive(Debug)]
pub struct PendingUpgrade {
    protocol: HeaderValue,
    downstream: OnUpgrade,
}

/// Takes the upgrade from `request` if it asks for one (`Connection: upgrade` plus `Upgrade`)
/// and its protocol is in `allowed` (lower-case names). A protocol not allowed is left for
/// hop-by-hop removal, so the request goes upstream as an ordinary one (RFC 9110 §7.8 lets a
/// server ignore Upgrade).
pub fn take<B, S: AsRef<str>>(request: &mut Request<B>, allowed: &[S]) -> Option<PendingUpgrade> {
    let protocol = requested(request.headers())?;
    let name = protocol_name(protocol)?;
    if !allowed.iter().any(|a| a.as_ref().eq_ignore_ascii_case(name)) {
        return None;
    }
    let protocol = protocol.clone();
    Some(PendingUpgrade { protocol, downstream: hyper::upgrade::on(request) })
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
    /// `Upgrade`): the next hop must see exactly this request to switch protocols.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, self.protocol.clone());
    }

    /// After the upstream switched protocols: marks the downstream 101 response, and spawns a
    /// tracked task that relays between both upgraded connections until both close, one fails,
    /// or nothing moves for `idle`.
    pub fn splice(
        self,
        response_headers: &mut HeaderMap,
        accepted: Option<HeaderValue>,
        upstream: OnUpgrade,
        idle: Duration,
        tasks: &Shutdown,
        label: String,
    ) {
        response_headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        response_headers.insert(UPGRADE, accepted.unwrap_or_else(|| self.protocol.clone()));
        let downstream = self.downstream;
        tasks.spawn(async move {
            let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(target_name = %label, "upgrade failed: {err}");
                    return;
                }
            };
            let relayed = relay(TokioIo::new(downstream), TokioIo::new(upstream), idle).await;
            tracing::debug!(
                target_name = %label,
                to_upstream = relayed.to_upstream,
                to_downstream = relayed.to_downstream,
                end = relayed.end.as_str(),
                "upgraded connection closed"
            );
        });
    }
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
    fn protocol_names_drop_versions() {
        assert_eq!(protocol_name(&HeaderValue::from_static("HTTP/2.0, SHTTP/1.3")), Some("HTTP"));
        assert_eq!(protocol_name(&HeaderValue::from_static(" websocket ")), Some("websocket"));
        assert_eq!(protocol_name(&HeaderValue::from_static("")), None);
    }
}
