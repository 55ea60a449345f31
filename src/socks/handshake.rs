//! The server side of the SOCKS handshake, up to the request: method selection (RFC 1928 §3),
//! username/password authentication (RFC 1929), the request (RFC 1928 §4, §5) and the reply
//! (§6); SOCKS4 and SOCKS4a as well, since they cost one more function.
//!
//! Every read is of a length the protocol bounds (255 bytes at most: a one-byte count, or a
//! SOCKS4 field cut off at that length) and the whole handshake runs under one deadline, so a
//! client that sends a byte a minute is cut off, and none can make sluice buffer more. Reads
//! take exactly what the protocol says comes next, so bytes a client sends ahead of the reply
//! (optimistic data) stay in the socket for the tunnel.
//!
//! Only `CONNECT` is served. `BIND` exists for active-mode FTP, and would have sluice listen on
//! a port for a stranger. `UDP ASSOCIATE` needs a UDP relay whose every datagram names its own
//! destination, so each would need its own resolution, guard check and accounting, with no
//! request or access-log line to hang them on, and an open UDP relay is a favourite
//! amplification tool; the clients sluice is for (browsers, curl, ssh, git, SDKs) tunnel TCP.
//! Both are answered "command not supported".

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::address::{Destination, MAX_NAME_BYTES};
use super::reply::Reply;
use super::{SOCKS4, SOCKS5};
use crate::policy::auth::Authenticator;

/// Method: no authentication (RFC 1928 §3).
const NO_AUTHENTICATION: u8 = 0x00;
/// Method: username/password (RFC 1928 §3, RFC 1929).
const USERNAME_PASSWORD: u8 = 0x02;
/// The method-selection answer when nothing offered is acceptable (RFC 1928 §3).
const NO_ACCEPTABLE_METHODS: u8 = 0xff;
/// The version byte of the username/password sub-negotiation (RFC 1929 §2).
const PASSWORD_VERSION: u8 = 0x01;
/// The only command served, in both versions.
const CONNECT: u8 = 0x01;
/// Address types (RFC 1928 §5).
const ATYP_IPV4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
/// The longest SOCKS4 user id or SOCKS4a name read; the protocol has no length byte, so this
/// is sluice's bound, the same as SOCKS5's.
const MAX_SOCKS4_FIELD: usize = MAX_NAME_BYTES;

/// Which protocol the client spoke; the reply is written in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4, or SOCKS4a when the client sent a name.
    Socks4,
    /// SOCKS5.
    Socks5,
}

impl Version {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Socks4 => "socks4",
            Version::Socks5 => "socks5",
        }
    }
}

/// What the listener asks of a SOCKS client before serving it.
#[derive(Debug, Clone, Copy)]
pub enum Authentication<'a> {
    /// Anyone may connect (a trusted listener). A client that offers only username/password
    /// is let through whatever it sends, and its name is not recorded, since nobody checked it.
    NotRequired,
    /// A SOCKS5 username/password checked against these users; SOCKS4, which cannot carry a
    /// password, is refused.
    Users(&'a Authenticator),
}

/// Why a SOCKS handshake did not produce a request to serve. Where the protocol has a way to
/// say so, the client has already been told.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The handshake was not complete within the deadline.
    #[error("no complete SOCKS handshake within {}", humantime::format_duration(*after))]
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection failed or closed during the handshake.
    #[error("the connection failed during the SOCKS handshake")]
    Io(#[from] io::Error),
    /// The first byte names no SOCKS version served.
    #[error("SOCKS version {0} is not supported")]
    Version(u8),
    /// The client offers no authentication method the listener accepts (for SOCKS4: the
    /// listener requires a password).
    #[error("the client offers no acceptable SOCKS authentication method")]
    NoAcceptableMethod,
    /// Unknown user or wrong password (not distinguished, on purpose).
    #[error("invalid SOCKS credentials")]
    Credentials,
    /// A field that breaks the protocol.
    #[error("malformed SOCKS handshake: {0}")]
    Malformed(&'static str),
    /// The domain name requested cannot be a host name.
    #[error("the requested name is not a host name")]
    Name,
    /// A command other than `CONNECT`.
    #[error("SOCKS command {0:#04x} is not supported")]
    Command(u8),
    /// An address type other than IPv4, IPv6 or a domain name.
    #[error("SOCKS address type {0:#04x} is not supported")]
    AddressType(u8),
}

impl HandshakeError {
    /// The name used in logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            HandshakeError::Timeout { .. } => "timeout",
            HandshakeError::Io(_) => "io",
            HandshakeError::Version(_) => "version",
            HandshakeError::NoAcceptableMethod => "no_acceptable_method",
            HandshakeError::Credentials => "credentials",
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::Name => "name",
            HandshakeError::Command(_) => "command",
            HandshakeError::AddressType(_) => "address_type",
        }
    }
}

/// A handshake that ended in a request to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol the client spoke.
    pub version: Version,
    /// Where the client wants a tunnel to.
    pub destination: Destination,
    /// The authenticated user, when the listener required one.
    pub user: Option<String>,
}

impl Negotiated {
    /// Answers the request: `bound` is the address sluice connected from (the reply's
    /// `BND.ADDR`, RFC 1928 §6), or none after a failure.
    pub async fn answer<S>(
        &self,
        stream: &mut S,
        reply: Reply,
        bound: Option<SocketAddr>,
    ) -> io::Result<()>
    where
        S: AsyncWrite + Unpin,
    {
        write_reply(stream, self.version, reply, bound).await
    }
}

/// Runs the server side of a SOCKS handshake on `stream`, from its first byte through the
/// request, within `timeout`. On success the caller connects and then calls
/// [`Negotiated::answer`]; on failure the caller closes the connection.
pub async fn negotiate<S>(
    stream: &mut S,
    auth: Authentication<'_>,
    timeout: Duration,
) -> Result<Negotiated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, handshake(stream, auth))
        .await
        .unwrap_or(Err(HandshakeError::Timeout { after: timeout }))
}

async fn handshake<S>(
    stream: &mut S,
    auth: Authentication<'_>,
) -> Result<Negotiated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match stream.read_u8().await? {
        SOCKS5 => socks5(stream, auth).await,
        SOCKS4 => socks4(stream, auth).await,
        other => Err(HandshakeError::Version(other)),
    }
}

async fn socks5<S>(stream: &mut S, auth: Authentication<'_>) -> Result<Negotiated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let offered = read_counted(stream).await?;
    let Some(method) = choose_method(&offered, auth) else {
        write_flushed(stream, &[SOCKS5, NO_ACCEPTABLE_METHODS]).await?;
        return Err(HandshakeError::NoAcceptableMethod);
    };
    write_flushed(stream, &[SOCKS5, method]).await?;
    let user = match method {
        USERNAME_PASSWORD => authenticate(stream, auth).await?,
        _ => None,
    };
    let destination = read_request(stream).await?;
    Ok(Negotiated { version: Version::Socks5, destination, user })
}

/// The method to use among those `offered`: username/password when users are required, else
/// no authentication, or username/password for a client that offers nothing else.
fn choose_method(offered: &[u8], auth: Authentication<'_>) -> Option<u8> {
    let acceptable: &[u8] = match auth {
        Authentication::Users(_) => &[USERNAME_PASSWORD],
        Authentication::NotRequired => &[NO_AUTHENTICATION, USERNAME_PASSWORD],
    };
    acceptable.iter().copied().find(|method| offered.contains(method))
}

/// The username/password sub-negotiation (RFC 1929 §2): the user on success; on failure the
/// client is told (status 1) and the connection must close.
async fn authenticate<S>(
    stream: &mut S,
    auth: Authentication<'_>,
) -> Result<Option<String>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stream.read_u8().await? != PASSWORD_VERSION {
        return Err(HandshakeError::Malformed("username/password version"));
    }
    let user = read_counted(stream).await?;
    let password = read_counted(stream).await?;
    let verified = match auth {
        Authentication::NotRequired => Some(None),
        Authentication::Users(users) => verify(users, &user, &password).await.map(Some),
    };
    match verified {
        Some(user) => {
            write_flushed(stream, &[PASSWORD_VERSION, 0x00]).await?;
            Ok(user)
        }
        None => {
            write_flushed(stream, &[PASSWORD_VERSION, 0x01]).await?;
            Err(HandshakeError::Credentials)
        }
    }
}

/// Checks SOCKS credentials with the same authenticator, cache and timing defences as
/// `Proxy-Authorization`, by presenting them as the Basic credentials they are equivalent to.
/// A name with `:` cannot be a Basic user-id (RFC 7617 §2) and matches no configured user.
async fn verify(users: &Authenticator, user: &[u8], password: &[u8]) -> Option<String> {
    let user = std::str::from_utf8(user).ok().filter(|user| !user.contains(':'))?;
    let password = std::str::from_utf8(password).ok()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    users.check(Some(&value)).await.ok()
}

/// Reads a SOCKS5 request (RFC 1928 §4) and answers at once what cannot be served.
async fn read_request<S>(stream: &mut S) -> Result<Destination, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let [version, command, _reserved, address_type] = head;
    if version != SOCKS5 {
        return Err(HandshakeError::Malformed("request version"));
    }
    let destination = match address_type {
        ATYP_IPV4 => {
            let mut ip = [0u8; 4];
            stream.read_exact(&mut ip).await?;
            Some(Destination::Address(SocketAddr::new(ip.into(), stream.read_u16().await?)))
        }
        ATYP_IPV6 => {
            let mut ip = [0u8; 16];
            stream.read_exact(&mut ip).await?;
            Some(Destination::Address(SocketAddr::new(ip.into(), stream.read_u16().await?)))
        }
        ATYP_NAME => {
            let name = read_counted(stream).await?;
            Destination::from_name(&name, stream.read_u16().await?)
        }
        other => {
            write_reply(stream, Version::Socks5, Reply::AddressTypeNotSupported, None).await?;
            return Err(HandshakeError::AddressType(other));
        }
    };
    if command != CONNECT {
        write_reply(stream, Version::Socks5, Reply::CommandNotSupported, None).await?;
        return Err(HandshakeError::Command(command));
    }
    match destination {
        Some(destination) => Ok(destination),
        None => {
            write_reply(stream, Version::Socks5, Reply::GeneralFailure, None).await?;
            Err(HandshakeError::Name)
        }
    }
}

/// SOCKS4 and SOCKS4a: `VN CD DSTPORT DSTIP USERID NUL`, then `NAME NUL` when `DSTIP` is
/// `0.0.0.x` with `x` not zero. The user id is not a credential and is ignored.
async fn socks4<S>(stream: &mut S, auth: Authentication<'_>) -> Result<Negotiated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let command = stream.read_u8().await?;
    let port = stream.read_u16().await?;
    let mut ip = [0u8; 4];
    stream.read_exact(&mut ip).await?;
    read_until_nul(stream).await?;
    let destination = match ip {
        [0, 0, 0, last] if last != 0 => {
            Destination::from_name(&read_until_nul(stream).await?, port)
        }
        _ => Some(Destination::Address(SocketAddr::new(ip.into(), port))),
    };
    let refusal = if matches!(auth, Authentication::Users(_)) {
        Some(HandshakeError::NoAcceptableMethod)
    } else if command != CONNECT {
        Some(HandshakeError::Command(command))
    } else if destination.is_none() {
        Some(HandshakeError::Name)
    } else {
        None
    };
    match (refusal, destination) {
        (None, Some(destination)) => {
            Ok(Negotiated { version: Version::Socks4, destination, user: None })
        }
        (refusal, _) => {
            write_reply(stream, Version::Socks4, Reply::NotAllowed, None).await?;
            Err(refusal.unwrap_or(HandshakeError::Name))
        }
    }
}

/// A one-byte count, then that many bytes (at most 255 by construction).
async fn read_counted<S>(stream: &mut S) -> io::Result<Vec<u8>>
where
    S: AsyncRead + Unpin,
{
    let count = stream.read_u8().await?;
    let mut bytes = vec![0u8; usize::from(count)];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// A NUL-terminated SOCKS4 field, refused past [`MAX_SOCKS4_FIELD`] bytes.
async fn read_until_nul<S>(stream: &mut S) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut field = Vec::new();
    loop {
        match stream.read_u8().await? {
            0 => return Ok(field),
            _ if field.len() == MAX_SOCKS4_FIELD => {
                return Err(HandshakeError::Malformed("SOCKS4 field too long"));
            }
            byte => field.push(byte),
        }
    }
}

/// Writes a reply in the client's protocol: SOCKS5 `VER REP RSV ATYP BND.ADDR BND.PORT`
/// (RFC 1928 §6), SOCKS4 `VN CD DSTPORT DSTIP`.
async fn write_reply<S>(
    stream: &mut S,
    version: Version,
    reply: Reply,
    bound: Option<SocketAddr>,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Vec::with_capacity(22);
    match version {
        Version::Socks5 => {
            out.extend([SOCKS5, reply.code(), 0x00]);
            match bound.ip() {
                IpAddr::V4(ip) => {
                    out.push(ATYP_IPV4);
                    out.extend(ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(ATYP_IPV6);
                    out.extend(ip.octets());
                }
            }
            out.extend(bound.port().to_be_bytes());
        }
        Version::Socks4 => {
            // SOCKS4 clients ignore the address; an IPv6 one cannot be written anyway.
            let ip = match bound.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            out.extend([0x00, reply.socks4_code()]);
            out.extend(bound.port().to_be_bytes());
            out.extend(ip.octets());
        }
    }
    write_flushed(stream, &out).await
}

async fn write_flushed<S>(stream: &mut S, bytes: &[u8]) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    stream.write_all(bytes).await?;
    stream.flush().await
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
