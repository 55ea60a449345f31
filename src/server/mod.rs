//! Accepting and serving client connections.
//!
//! [`bind`] opens every configured listener before anything is served, so a port conflict is
//! reported at start. [`listener`] runs the accept loops, [`serving`] is what each listener
//! serves for a configuration generation, [`detect`] tells SOCKS from HTTP on a listener that
//! speaks both, and [`conn`] serves one connection with hyper.

pub mod conn;
pub mod detect;
pub mod listener;
pub mod serving;

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::{Config, ListenerConfig};
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
    /// The admin listener's socket could not be bound.
    #[error("cannot listen on {address} (admin)")]
    Admin {
        /// The admin address.
        address: SocketAddr,
        /// The socket error.
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

/// Every socket a configuration needs, bound before anything is served.
#[derive(Debug)]
pub struct Bound {
    /// The proxy listeners, in config order.
    pub listeners: Vec<BoundListener>,
    /// The admin listener, when configured.
    pub admin: Option<TcpListener>,
}

/// Loads TLS certificates and binds every listener (and the admin listener), failing on the
/// first that cannot be set up.
pub async fn bind(config: &Config) -> Result<Bound, BindError> {
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        listeners.push(bind_listener(listener).await?);
    }
    let admin = match &config.admin {
        Some(admin) => Some(
            TcpListener::bind(admin.address)
                .await
                .map_err(|source| BindError::Admin { address: admin.address, source })?,
        ),
        None => None,
    };
    Ok(Bound { listeners, admin })
}

/// Loads one listener's certificates and binds its socket.
pub async fn bind_listener(config: &ListenerConfig) -> Result<BoundListener, BindError> {
    let address = config.address;
    let tls = load_tls(config)?;
    let socket =
        TcpListener::bind(address).await.map_err(|source| BindError::Socket { address, source })?;
    Ok(BoundListener { config: config.clone(), socket, tls })
}

/// Loads a listener's certificates, when it terminates TLS.
pub fn load_tls(config: &ListenerConfig) -> Result<Option<TlsListener>, BindError> {
    let address = config.address;
    config
        .tls
        .as_ref()
        .map(|tls| TlsListener::new(tls).map_err(|source| BindError::Tls { address, source }))
        .transpose()
}
