//! Per-request state carried down the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::server::listener::ConnectionHold;

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// What is known about one request as it moves through sluice.
#[derive(Debug)]
pub struct RequestContext {
    /// Process-unique id, used to tie log lines together.
    pub id: u64,
    /// The downstream peer that sent the request.
    pub peer: SocketAddr,
    /// When the request head was received.
    pub started: Instant,
    /// `https` when the client reached sluice over TLS, else `http`.
    pub scheme: &'static str,
    /// The client connection's place under the connection limits, kept by tunnels.
    pub hold: Arc<ConnectionHold>,
}

impl RequestContext {
    /// Starts the context for a request just received from `peer` over `scheme` on the
    /// connection holding `hold`.
    pub fn new(
        peer: SocketAddr,
        scheme: &'static str,
        hold: Arc<ConnectionHold>,
    ) -> RequestContext {
        RequestContext {
            id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            started: Instant::now(),
            scheme,
            hold,
        }
    }
}
