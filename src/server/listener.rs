//! The accept loop: one per listener, bounded by a connection permit per client connection and
//! a cap on connections from any one client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::BoundListener;
use super::conn;
use crate::dispatch::Proxy;
use crate::policy::wire::WireGuard;

/// Pause after a failed `accept` (typically EMFILE) so a full file table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a client over its per-address connection cap receives before the connection closes.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\nContent-Length: 58\r\nConnection: close\r\n\
    Retry-After: 1\r\n\r\n503 Service Unavailable: too many connections from your address\n";

/// Open connections per client address on one listener.
#[derive(Debug, Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// What an open client connection holds: its place under `max_connections` and under its
/// address's cap. Tunnels and upgraded connections keep a clone, so a connection that becomes
/// a tunnel still counts until the tunnel closes.
pub struct ConnectionHold {
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
}

impl std::fmt::Debug for ConnectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionHold")
    }
}

/// One counted connection; uncounts itself when dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn try_take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot { counts: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until shutdown, serving each on its own task.
///
/// At most `limits.max_connections` connections are open at once: the loop waits for a permit
/// before accepting, so excess clients queue in the kernel backlog rather than in memory. One
/// client address may hold at most `max_connections_per_ip`; beyond that it gets a 503.
pub async fn accept_loop(listener: BoundListener, proxy: Arc<Proxy>) {
    let permits = Arc::new(Semaphore::new(proxy.config.limits.max_connections));
    let builder = Arc::new(conn::http_builder(&proxy.config, &listener.config));
    let context = Arc::new(proxy.listener_context(&listener.config, listener.tls.is_some()));
    let per_address = Arc::new(PerAddress::default());
    let cap = listener.config.policy.max_connections_per_ip;
    let max_head = proxy.config.limits.max_request_head_bytes;
    let first_request = proxy.config.timeouts.request_header;
    let shutdown = proxy.shutdown.clone();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.signalled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            () = shutdown.signalled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(address = %listener.config.address, "accept failed: {err}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = per_address.try_take(peer.ip(), cap) else {
            tracing::debug!(%peer, limit = "max_connections_per_ip", "connection refused");
            let plain = listener.tls.is_none();
            shutdown.spawn(refuse(stream, plain));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = conn::Connection {
            peer,
            listener: context.clone(),
            proxy: proxy.clone(),
            builder: builder.clone(),
            hold: Arc::new(ConnectionHold { _permit: permit, _slot: slot }),
        };
        let tls = listener.tls.as_ref().map(|tls| tls.acceptor.clone());
        shutdown.spawn(async move {
            match tls {
                Some(acceptor) => connection.serve_tls(stream, acceptor).await,
                None => connection.serve(WireGuard::new(stream, max_head, first_request)).await,
            }
        });
    }
    tracing::debug!(address = %listener.config.address, "listener closed");
}

/// Tells an over-limit client why it is turned away (in plain HTTP only: on a TLS listener a
/// handshake would cost what the limit protects) and closes.
async fn refuse(mut stream: TcpStream, plain: bool) {
    if plain {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY_CONNECTIONS))
                .await;
    }
    let _ = stream.shutdown().await;
}
