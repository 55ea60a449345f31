//! TLS through rustls with the ring provider.

pub mod client;
