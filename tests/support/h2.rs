//! Raw HTTP/2 (RFC 9113) for what hyper's client will not send: it strips connection-specific
//! fields such as `transfer-encoding` from HTTP/2 requests, so such a request has to be
//! written frame by frame.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// One frame: the 9-byte header (RFC 9113 §4.1) and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing, new name", no Huffman coding.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127, "short fields only");
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// How the server answered stream 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A response head; `Some(code)` when the status was a static-table entry.
    Status(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed first.
    Closed,
}

/// Sends one request as stream 1 (`fields` as the header block, `body` as one DATA frame
/// ending the stream) and reads frames until the server answers it.
pub async fn request(addr: SocketAddr, fields: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &header_block(fields)));
    out.extend(frame(DATA, END_STREAM, 1, body));
    stream.write_all(&out).await.unwrap();
    within(async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return Answer::Closed;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return Answer::Closed;
            }
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                HEADERS if id == 1 => {
                    // Indexed static entries 8..=14 are :status 200 204 206 304 400 404 500.
                    let status = match payload.first() {
                        Some(0x88) => Some(200),
                        Some(0x89) => Some(204),
                        Some(0x8a) => Some(206),
                        Some(0x8b) => Some(304),
                        Some(0x8c) => Some(400),
                        Some(0x8d) => Some(404),
                        Some(0x8e) => Some(500),
                        _ => None,
                    };
                    return Answer::Status(status);
                }
                RST_STREAM if id == 1 => {
                    return Answer::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                GOAWAY => {
                    return Answer::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
    })
    .await
}

const WINDOW_UPDATE: u8 = 0x8;
const PING: u8 = 0x6;

/// RST_STREAM and GOAWAY error code REFUSED_STREAM (RFC 9113 §7).
pub const REFUSED_STREAM: u32 = 0x7;

/// One raw frame as read: type, flags, stream id, payload.
#[derive(Debug)]
pub struct Frame {
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A response head (HEADERS).
    pub fn is_headers(&self) -> bool {
        self.kind == HEADERS
    }

    /// The error code of an RST_STREAM frame.
    pub fn reset_code(&self) -> Option<u32> {
        (self.kind == RST_STREAM && self.payload.len() >= 4)
            .then(|| u32::from_be_bytes(self.payload[..4].try_into().unwrap()))
    }

    /// The error code of a GOAWAY frame.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY && self.payload.len() >= 8)
            .then(|| u32::from_be_bytes(self.payload[4..8].try_into().unwrap()))
    }

    /// A DATA frame's payload.
    pub fn data(&self) -> Option<&[u8]> {
        (self.kind == DATA).then_some(&self.payload[..])
    }
}

/// A raw HTTP/2 client connection that has finished the SETTINGS exchange, so the server's
/// settings (SETTINGS_MAX_CONCURRENT_STREAMS among them) are in force.
pub struct Session {
    stream: TcpStream,
    /// The server's SETTINGS, as (identifier, value) pairs.
    pub server_settings: Vec<(u16, u32)>,
}

impl Session {
    /// Connects and exchanges SETTINGS; `settings` are the client's own (identifier, value)
    /// pairs, such as `(0x4, 0)` for SETTINGS_INITIAL_WINDOW_SIZE 0.
    pub async fn open(addr: SocketAddr, settings: &[(u16, u32)]) -> Session {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &payload));
        stream.write_all(&out).await.unwrap();
        let mut session = Session { stream, server_settings: Vec::new() };
        let (mut theirs, mut acked) = (false, false);
        while !(theirs && acked) {
            let frame = session.next_frame().await.expect("the server closed during SETTINGS");
            match (frame.kind, frame.flags & ACK) {
                (SETTINGS, 0) => {
                    session.server_settings = frame
                        .payload
                        .chunks_exact(6)
                        .map(|c| {
                            (
                                u16::from_be_bytes([c[0], c[1]]),
                                u32::from_be_bytes(c[2..].try_into().unwrap()),
                            )
                        })
                        .collect();
                    session.send(&super::h2::frame(SETTINGS, ACK, 0, &[])).await;
                    theirs = true;
                }
                (SETTINGS, _) => acked = true,
                _ => {}
            }
        }
        session
    }

    /// Writes raw bytes (frames made with [`frame`]).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Opens streams `ids` at once, each a request with `fields` and no body.
    pub async fn requests(&mut self, ids: impl Iterator<Item = u32>, fields: &[(&str, &str)]) {
        let block = header_block(fields);
        let mut out = Vec::new();
        for id in ids {
            out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        }
        self.send(&out).await;
    }

    /// Gives stream `id` (0: the connection) `increment` more bytes of window.
    pub async fn window_update(&mut self, id: u32, increment: u32) {
        self.send(&frame(WINDOW_UPDATE, 0, id, &increment.to_be_bytes())).await;
    }

    /// The next frame, answering PINGs on the way; `None` once the server closes. Not bounded:
    /// wrap the wait in [`within`] or a timeout.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let mut head = [0u8; 9];
            self.stream.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.ok()?;
            if head[3] == PING && head[4] & ACK == 0 {
                let _ = self.stream.write_all(&frame(PING, ACK, 0, &payload)).await;
                continue;
            }
            return Some(Frame { kind: head[3], flags: head[4], stream, payload });
        }
    }
}
