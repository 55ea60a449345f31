//! The client side of a connection, as the request path sees it: who the client is
//! ([`Downstream`]), the connection's place under the connection limits ([`hold`]), the
//! byte-level framing guard in front of hyper ([`wire`]), what the client has accepted of
//! what it is sent ([`send`]), the requests open on a multiplexed connection ([`streams`]),
//! parking an idle connection outside hyper ([`park`]), the connection as the HTTP/1 fast path
//! serves it ([`h1`]), and taking back the socket of a connection a tunnel took over
//! ([`into_plain_tcp`]).
//!
//! `proxy/` reaches the client connection only through this module.

pub mod h1;
pub mod hold;
pub mod park;
pub mod send;
pub mod streams;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::downstream::h1::Prefixed;
use crate::downstream::park::Parkable;
use crate::downstream::send::SendProgress;
use crate::downstream::streams::OpenStreams;
use crate::downstream::wire::WireGuard;
use crate::headers::forwarded::ClientIp;

/// The client end of a connection: its address, its IP in header form for
/// `X-Forwarded-For` (rendered once per connection instead of once per forwarded request),
/// and what its socket has accepted so far.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's IP address, with its header form.
    pub ip: ClientIp,
    /// What the connection's socket has accepted, which its HTTP/1 response bodies wait for
    /// (see [`send`]).
    pub send: Option<Arc<SendProgress>>,
    /// The requests open on the connection, when its idle time is watched (see [`streams`]).
    pub streams: Option<Arc<OpenStreams>>,
}

impl Downstream {
    /// The downstream end for a client connected from `addr`.
    pub fn new(addr: SocketAddr) -> Downstream {
        Downstream { addr, ip: ClientIp::new(addr.ip()), send: None, streams: None }
    }
}

/// The I/O hyper serves on a plain HTTP/1 connection: the socket, behind what the fast path
/// had read of it.
pub type PlainIo = TokioIo<Parkable<WireGuard<Prefixed<TcpStream>>>>;

/// The client's TCP socket and the bytes hyper had already read from it, when a connection
/// that switched protocols (a CONNECT tunnel) is a plain TCP connection; the upgraded
/// connection unchanged otherwise (TLS, HTTP/2). `Ok(None)` would mean the socket had been
/// parked, which cannot happen to a connection being upgraded.
pub fn into_plain_tcp(upgraded: Upgraded) -> Result<Option<(TcpStream, Bytes)>, Upgraded> {
    let parts = upgraded.downcast::<PlainIo>()?;
    let read_buf = parts.read_buf;
    Ok(parts.io.into_inner().into_inner().map(|guard| {
        // hyper's unread bytes came first; what it never read of the prefix follows them.
        let (stream, unread) = guard.into_inner().into_parts();
        let early = if unread.is_empty() {
            // Even empty, hyper's bytes are a slice of its whole read buffer, which the
            // tunnel would keep alive.
            if read_buf.is_empty() { Bytes::new() } else { read_buf }
        } else {
            let mut early = read_buf.to_vec();
            early.extend_from_slice(&unread);
            Bytes::from(early)
        };
        (stream, early)
    }))
}
