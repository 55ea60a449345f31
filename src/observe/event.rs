//! What the access log and the metrics are told about a finished request: the [`Event`], and
//! its [`Failure`] when it failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method, Uri, Version};

use crate::error::ErrorKind;
use crate::observe::ai::AiRecord;
use crate::observe::metrics::{RouteLabel, RouteSeries};
use crate::observe::mode::Mode;
use crate::observe::request_id::RequestId;

/// Why a request did not complete normally.
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

/// One finished request, tunnel or WebSocket session, as the access log and the metrics read
/// it: a borrowed view of the request's context, made once when it ends.
#[derive(Debug)]
pub struct Event<'a> {
    /// When the request head arrived (the log's wall-clock time is derived from it when the
    /// line is written, saving a clock read per request).
    pub started: Instant,
    /// The client.
    pub peer: SocketAddr,
    /// The request id.
    pub id: &'a RequestId,
    /// The kind of traffic.
    pub mode: Mode,
    /// The request method.
    pub method: &'a Method,
    /// The request target as received.
    pub target: &'a Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// The route it matched (empty when none).
    pub route: &'a RouteLabel,
    /// The metric handles of its route (or listener), when it has them.
    pub series: Option<&'a RouteSeries>,
    /// The status sent to the client.
    pub status: u16,
    /// Body (or tunnel) bytes received from the client.
    pub received: u64,
    /// Body (or tunnel) bytes sent to the client.
    pub sent: u64,
    /// Until the upstream's response head arrived.
    pub upstream_ttfb: Option<Duration>,
    /// The upstream address that answered.
    pub upstream: Option<SocketAddr>,
    /// The target of a route with several that answered (or failed last).
    pub upstream_target: Option<&'a str>,
    /// Attempts sent to a route's targets (0 for a route with one upstream).
    pub attempts: u8,
    /// Why it failed, when it did.
    pub failure: Option<Failure>,
    /// How a tunnel or WebSocket session ended.
    pub close: Option<&'static str>,
    /// What the cache did (`hit`, `miss`, ...), when the request went through it.
    pub cache: Option<&'static str>,
    /// Request header fields the access log asked for.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// What an AI route's request used: model, keys, tokens, timing.
    pub ai: Option<&'a AiRecord>,
}
