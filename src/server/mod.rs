//! Accepting and serving client connections.
//!
//! [`bind`] opens every configured listener before anything is served, so a port conflict is
//! reported at start. [`listener`] runs the accept loops, [`conn`] serves one connection with
//! hyper, and [`shutdown`] drains them.

pub mod conn;
pub mod listener;
pub mod shutdown;

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::ListenerConfig;

/// A listener socket already bound, with the configuration it serves.
#[derive(Debug)]
pub struct BoundListener {
    /// The listener's configuration (its `address` may have port 0).
    pub config: ListenerConfig,
    /// The bound socket.
    pub socket: TcpListener,
}

impl BoundListener {
    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}")]
pub struct BindError {
    /// The address that failed.
    pub address: SocketAddr,
    /// The socket error (address in use, permission denied, ...).
    #[source]
    pub source: io::Error,
}

/// Binds every listener, failing on the first address that cannot be bound.
pub async fn bind(listeners: &[ListenerConfig]) -> Result<Vec<BoundListener>, BindError> {
    let mut bound = Vec::with_capacity(listeners.len());
    for config in listeners {
        let socket = TcpListener::bind(config.address)
            .await
            .map_err(|source| BindError { address: config.address, source })?;
        bound.push(BoundListener { config: config.clone(), socket });
    }
    Ok(bound)
}
