//! Protocol detection on a plain listener that speaks SOCKS: the connection's first byte
//! decides. SOCKS4 and SOCKS5 open with their version (4 or 5), which no HTTP/1 method, TLS
//! record (22) or HTTP/2 preface (`P`) does, so the byte is peeked, never consumed, and HTTP
//! connections reach hyper exactly as on any other listener.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::downstream::h1::Prefixed;
use crate::downstream::wire::WireGuard;
use crate::observe::metrics::Rejection;
use crate::server::conn::Connection;
use crate::socks;
use crate::socks::session::SocksService;

/// Serves a plain connection on a listener with SOCKS enabled: as SOCKS when its first byte
/// says so, as HTTP otherwise (or, on a SOCKS-only listener, not at all). The first byte must
/// arrive within `timeouts.request_header`, and the HTTP request head or SOCKS handshake
/// within what is left of it.
pub async fn serve_plain(connection: Connection, stream: TcpStream, max_head: usize) {
    let deadline = connection.settings.request_header;
    let accepted = Instant::now();
    let metrics = &connection.settings.metrics;
    let mut first = [0u8; 1];
    // Until its first byte the connection holds only its socket, as a parked one does, and is
    // counted so; shutdown (or the listener's removal) ends the wait.
    let parked = metrics.connection_parked();
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(deadline, stream.peek(&mut first)) => peeked,
        () = connection.stop.cancelled() => return,
    };
    drop(parked);
    let remaining = deadline.saturating_sub(accepted.elapsed()).max(Duration::from_millis(1));
    match peeked {
        Ok(Ok(1..)) if socks::starts_socks(first[0]) => {
            let serving = connection.live.load_full();
            let service = SocksService {
                proxy: &serving.proxy,
                listener: &serving.context,
                handshake: remaining,
            };
            let (peer, hold) = (connection.peer, connection.hold);
            Box::pin(socks::session::serve(stream, peer, service, hold)).await;
        }
        // With the fast path on, HTTP/1 starts there, as on a listener without SOCKS.
        Ok(Ok(1..)) if serves_http_fast(&connection) => {
            Box::pin(connection.serve_plain_since(stream, max_head, accepted)).await;
        }
        Ok(Ok(1..)) if connection.live.load().context.modes.http() => {
            let io = WireGuard::new(Prefixed::new(stream), max_head, remaining)
                .counting_into(metrics.clone())
                .sending_within(connection.settings.client_send, Some(metrics.clone()));
            Box::pin(connection.serve(io)).await;
        }
        Ok(Ok(1..)) => {
            tracing::debug!(peer = %connection.peer, "not a SOCKS client on a SOCKS-only listener");
            metrics.reject(Rejection::MalformedRequest);
        }
        Ok(_) => {}
        Err(_) => metrics.reject(Rejection::RequestHeadTimeout),
    }
}

/// Whether this listener serves HTTP and starts it on the HTTP/1 fast path.
fn serves_http_fast(connection: &Connection) -> bool {
    let serving = connection.live.load();
    serving.context.modes.http() && serving.fast_path()
}
