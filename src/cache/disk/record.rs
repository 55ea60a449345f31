//! The file of one stored response on the disk tier: a fixed prelude, the head (everything but
//! the body), then the body as it was received.
//!
//! ```text
//! prelude  magic (8 bytes) | head length (u32 LE) | body length (u64 LE) | SHA-256 of the head
//! head     URI, status, header fields, Vary, secondary key, freshness (see `encode`)
//! body     exactly `body length` bytes
//! ```
//!
//! A file is taken only when its length is exactly prelude + head + body and the head's digest
//! matches, so a file cut short (a full disk, a crash before the rename) or garbled in its head
//! is recognised and removed, never served. The freshness is stored as it was assessed (the
//! corrected initial age already folds in the request and response times, and the response
//! time is what the age counts from), so an object read back ages exactly as in memory.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::cache::key::{CacheKey, Vary, VaryKey};
use crate::cache::object::Object;
use crate::cache::policy::freshness::{Freshness, LifetimeSource};

/// The first bytes of every file, with the format's version in the last one.
pub const MAGIC: [u8; 8] = *b"SLUICEC\x01";
/// Bytes of the prelude: magic, head length, body length, head digest.
pub const PRELUDE_LEN: usize = 8 + 4 + 8 + 32;
/// Largest head read back. Heads are header fields and a few numbers, far below this; a
/// larger length can only come from a damaged file.
pub const MAX_HEAD_BYTES: u32 = 1 << 20;

/// Why a file is not a stored response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The magic bytes (or the version in them) are not ours.
    #[error("not a stored response of this version")]
    Magic,
    /// The head length is over [`MAX_HEAD_BYTES`].
    #[error("head length {0} is over the limit")]
    HeadTooLarge(u32),
    /// The file is not as long as its prelude says.
    #[error("the file is {actual} bytes long, its prelude says {expected}")]
    Length {
        /// What the prelude says.
        expected: u64,
        /// What the file is.
        actual: u64,
    },
    /// The head does not match its digest.
    #[error("the head does not match its digest")]
    Digest,
    /// The head's fields do not decode.
    #[error("the head is malformed: {0}")]
    Malformed(&'static str),
}

/// The prelude of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prelude {
    /// Bytes of the head.
    pub head_len: u32,
    /// Bytes of the body.
    pub body_len: u64,
    /// SHA-256 of the head.
    digest: [u8; 32],
}

impl Prelude {
    /// Reads a prelude.
    pub fn parse(bytes: &[u8; PRELUDE_LEN]) -> Result<Self, RecordError> {
        let mut reader = Reader(bytes);
        if reader.take(8)? != MAGIC {
            return Err(RecordError::Magic);
        }
        let head_len = reader.u32()?;
        let body_len = reader.u64()?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(reader.take(32)?);
        if head_len > MAX_HEAD_BYTES {
            return Err(RecordError::HeadTooLarge(head_len));
        }
        Ok(Prelude { head_len, body_len, digest })
    }

    /// Where the body starts.
    pub fn body_offset(&self) -> u64 {
        PRELUDE_LEN as u64 + u64::from(self.head_len)
    }

    /// How long the whole file must be.
    pub fn file_len(&self) -> u64 {
        self.body_offset().saturating_add(self.body_len)
    }

    /// Whether a file of `actual` bytes is as long as this prelude says.
    pub fn check_len(&self, actual: u64) -> Result<(), RecordError> {
        let expected = self.file_len();
        if actual == expected { Ok(()) } else { Err(RecordError::Length { expected, actual }) }
    }
}

/// A stored response's head as read back: everything of the [`Object`] but its body.
#[derive(Debug, Clone)]
pub struct Head {
    /// The key it is stored under.
    pub key: CacheKey,
    /// Its status code.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: HeaderMap,
    /// The `Vary` it was stored under.
    pub vary: Vary,
    /// The secondary key of the request it answered.
    pub vary_key: VaryKey,
    /// Its freshness as assessed.
    pub freshness: Freshness,
}

/// The prelude and head of the file for `object` stored under `key`, whose body is `body_len`
/// bytes long (the body follows them in the file).
pub fn encode(key: &CacheKey, object: &Object, body_len: u64) -> Vec<u8> {
    let mut head = Writer(Vec::with_capacity(1024));
    head.bytes32(key.url().as_bytes());
    head.u16(object.status.as_u16());
    head.u32(u32::try_from(object.headers.len()).unwrap_or(u32::MAX));
    for (name, value) in &object.headers {
        head.bytes32(name.as_str().as_bytes());
        head.bytes32(value.as_bytes());
    }
    match &object.vary {
        Vary::Nothing => head.u8(0),
        Vary::Any => head.u8(1),
        Vary::Fields(fields) => {
            head.u8(2);
            head.names(fields);
        }
    }
    let values = object.vary_key.values();
    head.u32(u32::try_from(values.len()).unwrap_or(u32::MAX));
    for value in values {
        match value {
            Some(bytes) => {
                head.u8(1);
                head.bytes32(bytes);
            }
            None => head.u8(0),
        }
    }
    let freshness = &object.freshness;
    head.duration(freshness.lifetime);
    head.u8(match freshness.source {
        LifetimeSource::SharedMaxAge => 0,
        LifetimeSource::MaxAge => 1,
        LifetimeSource::Expires => 2,
        LifetimeSource::Heuristic => 3,
        LifetimeSource::None => 4,
    });
    head.duration(freshness.initial_age);
    head.duration(freshness.response_time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO));
    head.u8(u8::from(freshness.no_cache)
        | (u8::from(freshness.must_revalidate) << 1)
        | (u8::from(freshness.implied_revalidate) << 2));
    head.names(&freshness.no_cache_fields);
    head.optional_duration(freshness.stale_while_revalidate);
    head.optional_duration(freshness.stale_if_error);
    let head = head.0;

    let mut file = Writer(Vec::with_capacity(PRELUDE_LEN + head.len()));
    file.0.extend_from_slice(&MAGIC);
    file.u32(u32::try_from(head.len()).unwrap_or(u32::MAX));
    file.u64(body_len);
    file.0.extend_from_slice(&Sha256::digest(&head));
    file.0.extend_from_slice(&head);
    file.0
}

/// Decodes a head read after `prelude`.
pub fn decode(prelude: &Prelude, head: &[u8]) -> Result<Head, RecordError> {
    if Sha256::digest(head).as_slice() != prelude.digest {
        return Err(RecordError::Digest);
    }
    let mut reader = Reader(head);
    let url = std::str::from_utf8(reader.bytes32()?).map_err(|_| malformed("URI"))?;
    let key = CacheKey::for_url(url).filter(|key| key.url() == url).ok_or(malformed("URI"))?;
    let status = StatusCode::from_u16(reader.u16()?).map_err(|_| malformed("status"))?;
    let count = reader.u32()?;
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let name = HeaderName::from_bytes(reader.bytes32()?).map_err(|_| malformed("name"))?;
        let value = HeaderValue::from_bytes(reader.bytes32()?).map_err(|_| malformed("value"))?;
        headers.append(name, value);
    }
    let vary = match reader.u8()? {
        0 => Vary::Nothing,
        1 => Vary::Any,
        2 => Vary::Fields(reader.names()?.into_boxed_slice()),
        _ => return Err(malformed("Vary")),
    };
    let count = reader.u32()?;
    let mut values = Vec::new();
    for _ in 0..count {
        values.push(match reader.u8()? {
            0 => None,
            1 => Some(Box::from(reader.bytes32()?)),
            _ => return Err(malformed("secondary key")),
        });
    }
    let lifetime = reader.duration()?;
    let source = match reader.u8()? {
        0 => LifetimeSource::SharedMaxAge,
        1 => LifetimeSource::MaxAge,
        2 => LifetimeSource::Expires,
        3 => LifetimeSource::Heuristic,
        4 => LifetimeSource::None,
        _ => return Err(malformed("lifetime source")),
    };
    let initial_age = reader.duration()?;
    let response_time =
        UNIX_EPOCH.checked_add(reader.duration()?).ok_or(malformed("response time"))?;
    let flags = reader.u8()?;
    let no_cache_fields = reader.names()?;
    let stale_while_revalidate = reader.optional_duration()?;
    let stale_if_error = reader.optional_duration()?;
    if !reader.0.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    let freshness = Freshness {
        lifetime,
        source,
        initial_age,
        response_time,
        no_cache: flags & 1 != 0,
        no_cache_fields,
        must_revalidate: flags & 2 != 0,
        implied_revalidate: flags & 4 != 0,
        stale_while_revalidate,
        stale_if_error,
    };
    let vary_key = VaryKey::from_values(values);
    Ok(Head { key, status, headers, vary, vary_key, freshness })
}

fn malformed(what: &'static str) -> RecordError {
    RecordError::Malformed(what)
}

/// Builds a head: little-endian numbers, byte strings with a u32 length.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes32(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(bytes);
    }
    fn names(&mut self, names: &[HeaderName]) {
        self.u32(u32::try_from(names.len()).unwrap_or(u32::MAX));
        for name in names {
            self.bytes32(name.as_str().as_bytes());
        }
    }
    fn duration(&mut self, value: Duration) {
        self.u64(value.as_secs());
        self.u32(value.subsec_nanos());
    }
    fn optional_duration(&mut self, value: Option<Duration>) {
        match value {
            Some(value) => {
                self.u8(1);
                self.duration(value);
            }
            None => self.u8(0),
        }
    }
}

/// Reads what [`Writer`] wrote; every read is checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], RecordError> {
        if count > self.0.len() {
            return Err(malformed("cut short"));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], RecordError> {
        let length = usize::try_from(self.u32()?).map_err(|_| malformed("length"))?;
        self.take(length)
    }
    fn names(&mut self) -> Result<Vec<HeaderName>, RecordError> {
        let count = self.u32()?;
        let mut names = Vec::new();
        for _ in 0..count {
            names.push(HeaderName::from_bytes(self.bytes32()?).map_err(|_| malformed("name"))?);
        }
        Ok(names)
    }
    fn duration(&mut self) -> Result<Duration, RecordError> {
        let seconds = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(malformed("duration"));
        }
        Ok(Duration::new(seconds, nanos))
    }
    fn optional_duration(&mut self) -> Result<Option<Duration>, RecordError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.duration()?)),
            _ => Err(malformed("optional duration")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::SharedBody;
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::Heuristic;
    use bytes::Bytes;
    use http::Method;

    /// Header fields of a test case, as name/value pairs.
    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn object(response: Fields<'_>, request: Fields<'_>) -> Object {
        let mut headers = HeaderMap::new();
        for (name, value) in response {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        let mut asked = HeaderMap::new();
        for (name, value) in request {
            asked.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (directives, source) = effective(&headers, &[]);
        let at = UNIX_EPOCH + Duration::new(1_796_601_600, 123_456_789);
        let freshness = Freshness::assess(
            StatusCode::OK,
            &headers,
            &directives,
            &source,
            at - Duration::from_millis(250),
            at,
            Heuristic::default(),
        );
        let vary = Vary::of(&headers);
        let vary_key = vary.key(&asked);
        let body = SharedBody::complete(vec![Bytes::from_static(b"body")]);
        Object { status: StatusCode::OK, headers, vary, vary_key, freshness, body }
    }

    fn split(file: &[u8]) -> (Prelude, &[u8]) {
        let prelude: [u8; PRELUDE_LEN] = file[..PRELUDE_LEN].try_into().unwrap();
        (Prelude::parse(&prelude).unwrap(), &file[PRELUDE_LEN..])
    }

    #[test]
    fn heads_read_back_as_they_were_stored() {
        let cases: &[(Fields<'_>, Fields<'_>)] = &[
            (&[("cache-control", "max-age=60")], &[]),
            (
                &[
                    ("cache-control", "s-maxage=5, stale-while-revalidate=9, stale-if-error=7"),
                    ("vary", "Accept-Encoding, X-Missing"),
                    ("set-thing", "a"),
                    ("set-thing", "caf\u{e9}\tb"),
                ],
                &[("accept-encoding", "GZIP, br")],
            ),
            (&[("cache-control", "no-cache=\"x-a\", must-revalidate"), ("vary", "*")], &[]),
            (&[("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT"), ("x", "\u{e9}")], &[]),
        ];
        let key = CacheKey::new(&Method::GET, "http", "a.test:8080", "/p?q=1");
        for (response, request) in cases {
            let object = object(response, request);
            let file = encode(&key, &object, 4);
            let (prelude, head) = split(&file);
            assert_eq!(prelude.body_len, 4);
            assert_eq!(prelude.body_offset(), file.len() as u64);
            assert_eq!(prelude.check_len(file.len() as u64 + 4), Ok(()));
            let read = decode(&prelude, head).unwrap();
            assert_eq!(read.key, key);
            assert_eq!(read.status, object.status);
            assert_eq!(read.headers, object.headers);
            assert_eq!(read.vary, object.vary);
            assert_eq!(read.vary_key, object.vary_key);
            assert_eq!(read.freshness, object.freshness);
        }
    }

    #[test]
    fn damaged_files_are_recognised() {
        let key = CacheKey::new(&Method::GET, "http", "a.test", "/");
        let file = encode(&key, &object(&[("cache-control", "max-age=60")], &[]), 10);
        let (prelude, head) = split(&file);
        assert_eq!(
            prelude.check_len(file.len() as u64 + 9),
            Err(RecordError::Length {
                expected: file.len() as u64 + 10,
                actual: file.len() as u64 + 9
            })
        );
        let mut flipped = head.to_vec();
        flipped[3] ^= 1;
        assert_eq!(decode(&prelude, &flipped).unwrap_err(), RecordError::Digest);
        assert_eq!(decode(&prelude, &head[..head.len() - 1]).unwrap_err(), RecordError::Digest);
        let mut magic: [u8; PRELUDE_LEN] = file[..PRELUDE_LEN].try_into().unwrap();
        magic[7] = 2;
        assert_eq!(Prelude::parse(&magic), Err(RecordError::Magic));
        let mut long: [u8; PRELUDE_LEN] = file[..PRELUDE_LEN].try_into().unwrap();
        long[8..12].copy_from_slice(&(MAX_HEAD_BYTES + 1).to_le_bytes());
        assert_eq!(Prelude::parse(&long), Err(RecordError::HeadTooLarge(MAX_HEAD_BYTES + 1)));
        // A head whose digest matches but whose fields do not decode.
        let garbage = [0xffu8; 16];
        let mut forged = file[..PRELUDE_LEN].to_vec();
        forged[8..12].copy_from_slice(&16u32.to_le_bytes());
        forged[20..52].copy_from_slice(&Sha256::digest(garbage));
        let prelude = Prelude::parse(&forged.try_into().unwrap()).unwrap();
        assert!(matches!(decode(&prelude, &garbage), Err(RecordError::Malformed(_))));
    }
}
