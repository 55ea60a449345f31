//! What went through the proxy: one [`Entry`] per request, tunnel and WebSocket session,
//! written to the [`access_log`] and counted in the [`metrics`] when it ends.
//!
//! `dispatch` starts an entry for each request. An ordinary response carries it in its body
//! ([`ObservedBody`]), so it is finished when the last byte is sent or the client goes away;
//! a tunnel or upgrade hands it to the relay task through a [`SessionLog`], so it is finished
//! when the session closes, with the bytes carried each way.

pub mod access_log;
pub mod completion;
pub mod metrics;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

pub use completion::{ObservedBody, SessionLog};

use crate::config::{Config, MAX_REQUEST_ID_BYTES, RequestIdConfig};
use crate::error::ErrorKind;
use access_log::{AccessLog, AccessLogError};
use metrics::{Completed, Metrics, RouteLabel, RouteSeries};

/// What kind of traffic an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// An absolute-form request through the forward proxy.
    Forward,
    /// A CONNECT tunnel.
    Tunnel,
    /// An origin-form request for a route.
    Reverse,
    /// An upgraded connection (WebSocket), through either mode.
    WebSocket,
}

impl Mode {
    /// Name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Tunnel => "tunnel",
            Mode::Reverse => "reverse",
            Mode::WebSocket => "websocket",
        }
    }
}

/// Why an entry did not complete normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// sluice refused the request or the upstream failed.
    Proxy(ErrorKind),
    /// The client went away before the response was complete.
    ClientClosed,
}

impl Failure {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Proxy(kind) => kind.as_str(),
            Failure::ClientClosed => "client_closed",
        }
    }
}

/// A request's id: generated here, or kept from the client when configured to trust it.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// Generated: a per-process random prefix and a sequence number.
    Local(u64),
    /// The client's own id (checked to be short and made of safe characters).
    Client(HeaderValue),
}

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A random prefix chosen once per process, so ids from two runs or two instances differ.
fn process_prefix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        // Truncation keeps 32 of the hash's 64 random bits, plenty to tell processes apart.
        hasher.finish() as u32
    })
}

impl RequestId {
    /// The id for a request with `headers`: the client's when trusted and well-formed, else a
    /// fresh one.
    pub fn for_request(headers: &HeaderMap, config: &RequestIdConfig) -> RequestId {
        if config.trust_incoming
            && let Some(value) = headers.get(&config.header)
            && is_safe_id(value.as_bytes())
        {
            return RequestId::Client(value.clone());
        }
        RequestId::Local(NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a header value, to pass upstream and back to the client.
    pub fn to_header_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(value) => value.clone(),
            RequestId::Local(sequence) => {
                // Hex by hand: this runs for every reverse-proxied request.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let value =
                    (u128::from(process_prefix()) << 48) | u128::from(sequence & 0xffff_ffff_ffff);
                let mut text = [0u8; 20];
                for (i, byte) in text.iter_mut().enumerate() {
                    let shift = 4 * (19 - i);
                    *byte = HEX.get(((value >> shift) & 0xf) as usize).copied().unwrap_or(b'0');
                }
                HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Local(sequence) => {
                write!(f, "{:08x}{:012x}", process_prefix(), sequence & 0xffff_ffff_ffff)
            }
            RequestId::Client(value) => {
                f.write_str(std::str::from_utf8(value.as_bytes()).unwrap_or("-"))
            }
        }
    }
}

/// An incoming id is kept only if it cannot break a log line or a header: 1 to 128 of
/// `A-Z a-z 0-9 - _ . : / + =`.
fn is_safe_id(bytes: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// The access log and the metrics, as one configuration generation uses them.
#[derive(Debug)]
pub struct Observer {
    /// The process-wide metrics.
    pub metrics: Arc<Metrics>,
    log: Option<AccessLog>,
}

impl Observer {
    /// Opens the access log `config` asks for (its file, if any, is opened now, so a reload
    /// reopens it: that is how logs are rotated).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Observer, AccessLogError> {
        let log = if config.access_log.enabled {
            Some(AccessLog::open(config, metrics.clone())?)
        } else {
            None
        };
        Ok(Observer { metrics, log })
    }

    /// Request header fields the access log wants copied from each request.
    fn wanted_headers(&self) -> &[HeaderName] {
        self.log.as_ref().map_or(&[], |log| log.wanted_headers())
    }

    fn finish(&self, entry: &Entry) {
        let duration = entry.started.elapsed();
        let received = entry.received();
        self.metrics.complete(&Completed {
            mode: entry.mode,
            route: &entry.route,
            method: &entry.method,
            status: entry.status,
            duration,
            upstream_ttfb: entry.upstream_ttfb,
            received,
            sent: entry.sent,
            error: match entry.failure {
                Some(Failure::Proxy(kind)) => Some(kind),
                _ => None,
            },
            series: entry.series.as_deref(),
        });
        if let Some(log) = &self.log {
            log.write(entry, duration, received);
        }
    }
}

/// One request, tunnel or WebSocket session, from its request head to its end.
#[derive(Debug)]
pub struct Entry {
    /// When the request head arrived (the log's wall-clock time is derived from it when the
    /// line is written, saving a clock read per request).
    pub started: Instant,
    /// The client.
    pub peer: SocketAddr,
    /// The request id.
    pub id: RequestId,
    /// The kind of traffic.
    pub mode: Mode,
    /// The request method.
    pub method: Method,
    /// The request target as received.
    pub target: Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// The route it matched, if any.
    pub route: RouteLabel,
    /// The metric handles of its route (or listener), when it has them.
    pub series: Option<Arc<RouteSeries>>,
    /// The status sent to the client.
    pub status: u16,
    /// Request body bytes, counted while the body streams upstream.
    pub received_meter: Option<Arc<AtomicU64>>,
    /// Bytes received from the client when counted by a relay.
    pub relayed_in: u64,
    /// Body (or tunnel) bytes sent to the client.
    pub sent: u64,
    /// Until the upstream's response head arrived.
    pub upstream_ttfb: Option<Duration>,
    /// The upstream address that answered.
    pub upstream: Option<SocketAddr>,
    /// Why it failed, when it did.
    pub failure: Option<Failure>,
    /// How a tunnel or WebSocket session ended.
    pub close: Option<&'static str>,
    /// Request header fields the access log asked for.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    observer: Arc<Observer>,
}

impl Entry {
    /// Starts the entry for a request just received.
    pub fn start<B>(
        observer: &Arc<Observer>,
        head: &http::Request<B>,
        peer: SocketAddr,
        id: RequestId,
        mode: Mode,
    ) -> Entry {
        let headers = observer
            .wanted_headers()
            .iter()
            .filter_map(|name| head.headers().get(name).map(|value| (name.clone(), value.clone())))
            .collect();
        Entry {
            started: Instant::now(),
            peer,
            id,
            mode,
            method: head.method().clone(),
            target: head.uri().clone(),
            version: head.version(),
            route: RouteLabel::default(),
            series: None,
            status: 0,
            received_meter: None,
            relayed_in: 0,
            sent: 0,
            upstream_ttfb: None,
            upstream: None,
            failure: None,
            close: None,
            headers,
            observer: observer.clone(),
        }
    }

    /// Bytes received from the client.
    pub fn received(&self) -> u64 {
        self.relayed_in + self.received_meter.as_ref().map_or(0, |m| m.load(Ordering::Relaxed))
    }

    /// Writes the log line and the metrics.
    pub fn finish(self) {
        self.observer.finish(&self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_fixed_width() {
        let headers = HeaderMap::new();
        let config = RequestIdConfig::default();
        let a = RequestId::for_request(&headers, &config).to_string();
        let b = RequestId::for_request(&headers, &config).to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        let id = RequestId::for_request(&headers, &config);
        assert_eq!(id.to_header_value().to_str().unwrap(), id.to_string());
    }

    #[test]
    fn client_ids_are_kept_only_when_trusted_and_safe() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        let mut config = RequestIdConfig::default();
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
        config.trust_incoming = true;
        assert_eq!(RequestId::for_request(&headers, &config).to_string(), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("a b\"c"));
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
        headers.insert("x-request-id", HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert!(matches!(RequestId::for_request(&headers, &config), RequestId::Local(_)));
    }
}
