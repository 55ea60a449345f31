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
use crate::tls::files::TlsFileError;
use crate::tls::server::TlsListener;

/// A listener socket already bound, with the configuration it serves.
#[derive(Debug)]
pub struct BoundListener {
    /// The listener's configuration (its `address` may have port 0).
    pub config: ListenerConfig,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS termination with its certificates loaded, when configured.
    pub tls: Option<TlsListener>,
}

impl BoundListener {
    /// The address actually bound (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A listener that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket could not be bound.
    #[error("cannot listen on {address}")]
    Socket {
        /// The address that failed.
        address: SocketAddr,
        /// The socket error (address in use, permission denied, ...).
        #[source]
        source: io::Error,
    },
    /// The listener's certificates could not be loaded.
    #[error("cannot set up TLS for {address}")]
    Tls {
        /// The listener's address.
        address: SocketAddr,
        /// Which file, and why.
        #[source]
        source: TlsFileError,
    },
}

/// Loads TLS certificates and binds every listener, failing on the first that cannot be set up.
pub async fn bind(listeners: &[ListenerConfig]) -> Result<Vec<BoundListener>, BindError> {
    let mut bound = Vec::with_capacity(listeners.len());
    for config in listeners {
        let address = config.address;
        let tls = match &config.tls {
            Some(tls) => {
                Some(TlsListener::new(tls).map_err(|source| BindError::Tls { address, source })?)
            }
            None => None,
        };
        let socket = TcpListener::bind(address)
            .await
            .map_err(|source| BindError::Socket { address, source })?;
        bound.push(BoundListener { config: config.clone(), socket, tls });
    }
    Ok(bound)
}
