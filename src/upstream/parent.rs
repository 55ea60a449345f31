//! Tunnels through a parent proxy (chaining), over a connection to the parent that is already
//! open: `CONNECT` to an HTTP proxy (RFC 9110 §9.3.6) with Basic credentials (RFC 7617), the
//! same inside TLS to an HTTPS proxy, or a SOCKS5 `CONNECT` (RFC 1928) with username/password
//! (RFC 1929). The whole handshake runs under one deadline and every read is bounded.
//!
//! A SOCKS5 parent is given the destination's name, not an address sluice resolved: a parent
//! exists to reach what sluice cannot, names included.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::Secret;

/// The largest response head an HTTP parent may answer `CONNECT` with.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

/// SOCKS5 protocol bytes (RFC 1928, RFC 1929) for the client side.
const SOCKS5: u8 = 0x05;
const NO_AUTHENTICATION: u8 = 0x00;
const USERNAME_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHODS: u8 = 0xff;
const PASSWORD_VERSION: u8 = 0x01;
const CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// How sluice speaks to a parent proxy.
#[derive(Debug, Clone)]
pub enum ParentProtocol {
    /// Plain HTTP: `CONNECT` for tunnels.
    Http,
    /// HTTP inside TLS to the parent.
    Https(ParentTls),
    /// SOCKS5.
    Socks5,
}

/// TLS to an HTTPS parent.
#[derive(Debug, Clone)]
pub struct ParentTls {
    /// The client configuration; it should offer ALPN `http/1.1` or nothing, since `CONNECT`
    /// is sent as HTTP/1.1.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the parent's certificate is verified against.
    pub server_name: ServerName<'static>,
}

/// The credentials sluice presents to a parent.
#[derive(Debug, Clone)]
pub struct ParentCredentials {
    /// The user name.
    pub username: String,
    /// The password, never displayed.
    pub password: Secret,
}

/// One parent proxy.
#[derive(Debug, Clone)]
pub struct Parent {
    /// `host:port` of the parent, for messages (the caller dials it).
    pub address: Authority,
    /// How to speak to it.
    pub protocol: ParentProtocol,
    /// Credentials, when the parent wants them.
    pub credentials: Option<ParentCredentials>,
}

/// Why a tunnel through a parent did not open.
#[derive(Debug, thiserror::Error)]
pub enum ParentError {
    /// The parent could not be reached.
    #[error("cannot connect to the parent")]
    Connect(#[source] crate::upstream::dialer::ConnectError),
    /// The handshake with the parent took longer than the deadline.
    #[error("no tunnel through the parent within {}", humantime::format_duration(*after))]
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection to the parent failed or closed during the handshake.
    #[error("the connection to the parent failed")]
    Io(#[from] io::Error),
    /// The TLS handshake with an HTTPS parent failed.
    #[error("TLS to the parent failed")]
    Tls(#[source] io::Error),
    /// The parent closed the connection before answering.
    #[error("the parent closed the connection without answering")]
    Closed,
    /// An HTTP parent answered `CONNECT` with something other than 2xx.
    #[error("the parent answered {status}")]
    Status {
        /// The parent's status code.
        status: StatusCode,
    },
    /// An HTTP parent's answer is longer than [`MAX_RESPONSE_HEAD_BYTES`].
    #[error("the parent's answer is longer than {MAX_RESPONSE_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The parent's answer breaks its protocol.
    #[error("the parent's answer is malformed: {0}")]
    Malformed(&'static str),
    /// The destination cannot be put in a SOCKS5 request (a name longer than 255 bytes), or
    /// the credentials in a SOCKS5 sub-negotiation (longer than 255 bytes).
    #[error("{0} is too long for SOCKS5")]
    TooLong(&'static str),
    /// A SOCKS5 parent accepts none of the authentication methods offered.
    #[error("the SOCKS5 parent accepts none of the offered authentication methods")]
    NoAcceptableMethod,
    /// A SOCKS5 parent refused sluice's credentials.
    #[error("the SOCKS5 parent refused the credentials")]
    Credentials,
    /// A SOCKS5 parent answered the request with a failure.
    #[error("the SOCKS5 parent answered: {}", socks_reply_text(*code))]
    SocksReply {
        /// The `REP` byte (RFC 1928 §6).
        code: u8,
    },
}

impl ParentError {
    /// Whether the parent itself failed (down, slow, refusing sluice, speaking nonsense), so
    /// another parent may do better. A parent that reached a verdict on the destination (an
    /// HTTP 502 or 504, a SOCKS "host unreachable", "connection refused" or "TTL expired")
    /// did its job: another parent would reach the same destination and fail the same way.
    pub fn blames_parent(&self) -> bool {
        match self {
            ParentError::Status { status } => !matches!(status.as_u16(), 502 | 504),
            ParentError::SocksReply { code } => !matches!(code, 0x04..=0x06),
            ParentError::TooLong(_) => false,
            _ => true,
        }
    }
}

/// The meaning of a SOCKS5 reply code (RFC 1928 §6).
fn socks_reply_text(code: u8) -> &'static str {
    match code {
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "an unassigned reply code",
    }
}

/// A tunnel through a parent, ready to carry the client's bytes.
#[derive(Debug)]
pub struct ParentTunnel {
    /// Bytes the parent sent after its answer (a server that speaks first, such as SSH, may
    /// have its greeting in the same packet); read before the stream.
    early: Bytes,
    stream: ParentStream,
}

/// The connection to the parent under a [`ParentTunnel`].
#[derive(Debug)]
pub enum ParentStream {
    /// Plain TCP (HTTP and SOCKS5 parents), which the zero-copy relay can take.
    Plain(TcpStream),
    /// TLS to an HTTPS parent.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ParentTunnel {
    /// A tunnel over `stream` whose first bytes are `early`; with a plain TCP stream and no
    /// early bytes, simply that stream.
    pub fn from_parts(stream: ParentStream, early: Bytes) -> ParentTunnel {
        ParentTunnel { early, stream }
    }

    /// The connection to the parent, and the bytes already read from it that belong to the
    /// tunnel (to be sent to the client first).
    pub fn into_parts(self) -> (ParentStream, Bytes) {
        (self.stream, self.early)
    }
}

/// Opens a tunnel to `host:port` through `parent` over `stream`, a TCP connection to the
/// parent, within `timeout`.
pub async fn open(
    stream: TcpStream,
    parent: &Parent,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<ParentTunnel, ParentError> {
    tokio::time::timeout(timeout, handshake(stream, parent, host, port))
        .await
        .unwrap_or(Err(ParentError::Timeout { after: timeout }))
}

async fn handshake(
    mut stream: TcpStream,
    parent: &Parent,
    host: &str,
    port: u16,
) -> Result<ParentTunnel, ParentError> {
    let credentials = parent.credentials.as_ref();
    match &parent.protocol {
        ParentProtocol::Http => {
            let early = http_connect(&mut stream, host, port, credentials).await?;
            Ok(ParentTunnel { early, stream: ParentStream::Plain(stream) })
        }
        ParentProtocol::Https(tls) => {
            let mut stream = secure(stream, tls).await?;
            let early = http_connect(&mut stream, host, port, credentials).await?;
            Ok(ParentTunnel { early, stream: ParentStream::Tls(Box::new(stream)) })
        }
        ParentProtocol::Socks5 => {
            socks5_connect(&mut stream, host, port, credentials).await?;
            Ok(ParentTunnel { early: Bytes::new(), stream: ParentStream::Plain(stream) })
        }
    }
}

/// Makes `stream`, a TCP connection to an HTTPS parent, the TLS connection to it, within
/// `timeout`: what carries requests in absolute-form to such a parent.
pub async fn secure_within(
    stream: TcpStream,
    tls: &ParentTls,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ParentError> {
    tokio::time::timeout(timeout, secure(stream, tls))
        .await
        .unwrap_or(Err(ParentError::Timeout { after: timeout }))
}

/// The TLS handshake with an HTTPS parent over `stream`.
async fn secure(stream: TcpStream, tls: &ParentTls) -> Result<TlsStream<TcpStream>, ParentError> {
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    connector.connect(tls.server_name.clone(), stream).await.map_err(ParentError::Tls)
}

/// The `Proxy-Authorization` field value (Basic, RFC 7617) that presents `credentials`.
pub fn basic_authorization(credentials: &ParentCredentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password.expose());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// `host:port` as a request-target, an IPv6 address in brackets.
fn authority_text(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Sends `CONNECT host:port` and reads the parent's answer (RFC 9110 §9.3.6): any 2xx opens
/// the tunnel. Returns what the parent sent after its answer's head.
pub async fn http_connect<S>(
    stream: &mut S,
    host: &str,
    port: u16,
    credentials: Option<&ParentCredentials>,
) -> Result<Bytes, ParentError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = authority_text(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(credentials) = credentials {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&basic_authorization(credentials));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut received = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = memchr::memmem::find(&received, b"\r\n\r\n") {
            break at + 4;
        }
        let room = MAX_RESPONSE_HEAD_BYTES.saturating_sub(received.len());
        if room == 0 {
            return Err(ParentError::HeadTooLarge);
        }
        if stream.read_buf(&mut (&mut received).limit(room)).await? == 0 {
            return Err(ParentError::Closed);
        }
    };
    let head = received.split_to(head_end);
    let status = status_of(&head)?;
    if !status.is_success() {
        return Err(ParentError::Status { status });
    }
    Ok(received.freeze())
}

/// The status code of an HTTP/1 response head (`HTTP/1.1 200 Connection established`).
fn status_of(head: &[u8]) -> Result<StatusCode, ParentError> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") {
        return Err(ParentError::Malformed("not an HTTP/1 status line"));
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 {
        return Err(ParentError::Malformed("no three-digit status code"));
    }
    StatusCode::from_bytes(code).map_err(|_| ParentError::Malformed("no three-digit status code"))
}

/// The SOCKS5 client handshake (RFC 1928 §3, §4, §6 and RFC 1929): method selection,
/// username/password when the parent asks for it, then `CONNECT`, with a name sent as a name.
pub async fn socks5_connect<S>(
    stream: &mut S,
    host: &str,
    port: u16,
    credentials: Option<&ParentCredentials>,
) -> Result<(), ParentError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = socks5_request(host, port)?;
    let login = credentials.map(socks5_login).transpose()?;
    let greeting: &[u8] = match login {
        Some(_) => &[SOCKS5, 2, NO_AUTHENTICATION, USERNAME_PASSWORD],
        None => &[SOCKS5, 1, NO_AUTHENTICATION],
    };
    stream.write_all(greeting).await?;
    stream.flush().await?;
    let mut chosen = [0u8; 2];
    stream.read_exact(&mut chosen).await?;
    match (chosen, &login) {
        ([SOCKS5, NO_AUTHENTICATION], _) => {}
        ([SOCKS5, USERNAME_PASSWORD], Some(login)) => {
            stream.write_all(login).await?;
            stream.flush().await?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await?;
            if status != [PASSWORD_VERSION, 0x00] {
                return Err(ParentError::Credentials);
            }
        }
        ([SOCKS5, NO_ACCEPTABLE_METHODS], _) => return Err(ParentError::NoAcceptableMethod),
        ([SOCKS5, _], _) => return Err(ParentError::Malformed("a method that was not offered")),
        _ => return Err(ParentError::Malformed("not a SOCKS5 method selection")),
    }
    stream.write_all(&request).await?;
    stream.flush().await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let [version, code, _reserved, address_type] = head;
    if version != SOCKS5 {
        return Err(ParentError::Malformed("not a SOCKS5 reply"));
    }
    if code != 0x00 {
        return Err(ParentError::SocksReply { code });
    }
    // The bound address is of no use here, but it must be read off the stream.
    let bound = match address_type {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_NAME => usize::from(stream.read_u8().await?),
        _ => return Err(ParentError::Malformed("unknown address type in the reply")),
    };
    let mut skipped = [0u8; 255 + 2];
    let skipped = skipped.get_mut(..bound + 2).ok_or(ParentError::Malformed("reply address"))?;
    stream.read_exact(skipped).await?;
    Ok(())
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT` for a `CONNECT` to `host:port`.
fn socks5_request(host: &str, port: u16) -> Result<Vec<u8>, ParentError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut request = vec![SOCKS5, CONNECT, 0x00];
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            request.push(ATYP_IPV4);
            request.extend(ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            request.push(ATYP_IPV6);
            request.extend(ip.octets());
        }
        Err(_) => {
            let length = u8::try_from(bare.len()).map_err(|_| ParentError::TooLong("the name"))?;
            request.extend([ATYP_NAME, length]);
            request.extend(bare.as_bytes());
        }
    }
    request.extend(port.to_be_bytes());
    Ok(request)
}

/// The RFC 1929 sub-negotiation request: `VER ULEN UNAME PLEN PASSWD`.
fn socks5_login(credentials: &ParentCredentials) -> Result<Vec<u8>, ParentError> {
    let user = credentials.username.as_bytes();
    let password = credentials.password.expose().as_bytes();
    let user_length =
        u8::try_from(user.len()).map_err(|_| ParentError::TooLong("the user name"))?;
    let password_length =
        u8::try_from(password.len()).map_err(|_| ParentError::TooLong("the password"))?;
    let mut login = vec![PASSWORD_VERSION, user_length];
    login.extend(user);
    login.push(password_length);
    login.extend(password);
    Ok(login)
}

impl AsyncRead for ParentTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let take = this.early.len().min(buf.remaining());
            buf.put_slice(this.early.get(..take).unwrap_or_default());
            this.early.advance(take);
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
            ParentStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ParentStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ParentTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            ParentStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ParentStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            ParentStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ParentStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            ParentStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ParentStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        let cases: [(&[u8], Option<u16>); 7] = [
            (b"HTTP/1.1 200 Connection established\r\n\r\n", Some(200)),
            (b"HTTP/1.0 200\r\n\r\n", Some(200)),
            (b"HTTP/1.1 407 Proxy Authentication Required\r\nX: y\r\n\r\n", Some(407)),
            (b"HTTP/2 200\r\n\r\n", None),
            (b"SSH-2.0-OpenSSH\r\n\r\n", None),
            (b"HTTP/1.1 20 OK\r\n\r\n", None),
            (b"HTTP/1.1 2000 OK\r\n\r\n", None),
        ];
        for (head, expected) in cases {
            let got = status_of(head).ok().map(|status| status.as_u16());
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn socks5_requests_send_addresses_as_addresses_and_names_as_names() {
        assert_eq!(socks5_request("192.0.2.1", 443).unwrap(), [5, 1, 0, 1, 192, 0, 2, 1, 1, 187]);
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend([0, 80]);
        assert_eq!(socks5_request("[2001:db8::1]", 80).unwrap(), v6);
        assert_eq!(
            socks5_request("ex.org", 80).unwrap(),
            [5, 1, 0, 3, 6, b'e', b'x', b'.', b'o', b'r', b'g', 0, 80]
        );
        assert!(matches!(socks5_request(&"a".repeat(256), 80), Err(ParentError::TooLong(_))));
    }

    #[test]
    fn only_a_parent_at_fault_is_failed_over() {
        let status =
            |code: u16| ParentError::Status { status: StatusCode::from_u16(code).unwrap() };
        let reply = |code: u8| ParentError::SocksReply { code };
        let cases = [
            (status(407), true),
            (status(403), true),
            (status(503), true),
            (status(502), false),
            (status(504), false),
            (reply(0x01), true),
            (reply(0x02), true),
            (reply(0x04), false),
            (reply(0x05), false),
            (reply(0x06), false),
            (ParentError::Closed, true),
            (ParentError::Credentials, true),
            (ParentError::Timeout { after: Duration::from_secs(1) }, true),
        ];
        for (err, fail_over) in cases {
            assert_eq!(err.blames_parent(), fail_over, "{err}");
        }
        assert_eq!(reply(0x05).to_string(), "the SOCKS5 parent answered: connection refused");
    }
}
