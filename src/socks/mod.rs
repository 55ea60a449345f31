//! The SOCKS server side: SOCKS5 (RFC 1928) with username/password authentication (RFC 1929),
//! and SOCKS4 with its 4a extension for clients that send a name, as a codec over any
//! `AsyncRead + AsyncWrite` stream.
//!
//! [`handshake::negotiate`] reads the client's greeting, authenticates it and reads its
//! request, all within one deadline, and returns the [`address::Destination`] asked for; the
//! caller applies its policy, connects, and answers with [`handshake::Negotiated::answer`]
//! and a [`reply::Reply`] mapped from what happened. Only `CONNECT` is served: `BIND` and
//! `UDP ASSOCIATE` are answered "command not supported" (see [`handshake`] for why).
//! [`session::serve`] is that caller on a listener: the listener's policy, the dial, the
//! reply, the relay and the access-log line.

pub mod address;
pub mod handshake;
pub mod reply;
pub mod session;

pub use address::Destination;
pub use handshake::{Authentication, HandshakeError, Negotiated, Version, negotiate};
pub use reply::Reply;

/// The first byte of a SOCKS4 request.
pub const SOCKS4: u8 = 0x04;
/// The first byte of a SOCKS5 greeting.
pub const SOCKS5: u8 = 0x05;

/// Whether the first byte a client sent opens a SOCKS handshake. No HTTP/1 request (a method
/// token), TLS record (0x16) or HTTP/2 preface (`P`) starts with 0x04 or 0x05, so one byte tells
/// SOCKS and HTTP apart on a shared listener.
pub fn starts_socks(first: u8) -> bool {
    first == SOCKS4 || first == SOCKS5
}
