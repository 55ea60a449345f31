//! TLS through rustls with the ring provider: [`server`] for listeners, [`client`] for
//! upstreams, [`files`] for reading PEM files with errors that name them.

pub mod client;
pub mod files;
pub mod server;
