//! The one per-request context: what is known about a request as it moves through the
//! phases, each of which reads and writes it, and from which the log phase writes the access
//! log and the metrics, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::cache::status::Outcome;
use crate::downstream::Downstream;
use crate::downstream::hold::ConnectionHold;
use crate::downstream::streams::{OpenStream, OpenStreams};
use crate::gateway::metering::Metered;
use crate::observe::ai::AiRecord;
use crate::observe::metrics::{RouteLabel, RouteSeries};
use crate::observe::{Event, Failure, Mode, Observer, RequestId};
use crate::upstream::group::InFlight;
use crate::uri::owned;

/// Everything the request path knows about one request, from its head to its end.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id: logged, passed upstream on reverse routes, returned to the client.
    pub id: RequestId,
    /// The client.
    pub downstream: Downstream,
    /// `https` when the client reached sluice over TLS, else `http`.
    pub scheme: &'static str,
    /// The client connection's place under the connection limits, kept by tunnels.
    pub hold: Arc<ConnectionHold>,
    /// When the request head arrived.
    pub started: Instant,
    /// The kind of traffic, from the classify phase (a WebSocket once upgraded).
    pub mode: Mode,
    /// The request method as received.
    pub method: Method,
    /// The request target as received.
    pub target: Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// Request header fields the access log asked for, copied when the request arrived.
    pub logged_headers: Vec<(HeaderName, HeaderValue)>,
    /// The metric handles (and name) of the route the request matched, or of the listener's
    /// forward proxy; none for tunnels and refused requests.
    pub series: Option<Arc<RouteSeries>>,
    /// The upstream's address, once one answered.
    pub upstream: Option<SocketAddr>,
    /// From the request head until the upstream's response head (or an open tunnel).
    pub upstream_ttfb: Option<Duration>,
    /// The target of a route with several that gave the answer (or the last error).
    pub upstream_target: Option<Arc<str>>,
    /// Attempts sent to the targets of a route with several (0 otherwise).
    pub attempts: u8,
    /// The answering target's in-flight slot, given back when the request ends.
    pub upstream_slot: Option<InFlight>,
    /// Request body bytes received so far, when the request has a body.
    pub received: Option<Arc<AtomicU64>>,
    /// Bytes received from the client by a tunnel or WebSocket relay.
    pub relayed_in: u64,
    /// Body (or tunnel) bytes sent to the client.
    pub sent: u64,
    /// The status sent to the client.
    pub status: u16,
    /// Why the request failed, when it did.
    pub failure: Option<Failure>,
    /// How a tunnel or WebSocket session ended.
    pub close: Option<&'static str>,
    /// What the cache did, when the request's route or listener caches.
    pub cache: Option<Outcome>,
    /// What the AI gateway followed of an AI route's request, for the log phase.
    pub ai: Option<Box<Metered>>,
    /// The id as a header value, made once when first needed.
    id_header: Option<HeaderValue>,
    /// Keeps the request counted open on its connection until the context is finished.
    _open: Option<OpenStream>,
    /// The access log and metrics of the generation that served the request.
    observer: Arc<Observer>,
}

/// What the context keeps of a request's head.
#[derive(Debug)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// The request target.
    pub target: Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// The fields the access log asked for.
    pub logged_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether a body follows the head.
    pub has_body: bool,
}

/// The no-route label, for requests that matched no route.
static NO_ROUTE: RouteLabel = RouteLabel(None);

impl RequestContext {
    /// Starts the context of `request`, just received from `downstream` over `scheme` on the
    /// connection holding `hold`, as traffic of `mode`.
    pub fn start(
        request: &Request<Incoming>,
        mode: Mode,
        id: RequestId,
        downstream: Downstream,
        scheme: &'static str,
        hold: Arc<ConnectionHold>,
        observer: &Arc<Observer>,
    ) -> RequestContext {
        let logged_headers = observer
            .wanted_headers()
            .iter()
            .filter_map(|name| {
                request.headers().get(name).map(|value| (name.clone(), value.clone()))
            })
            .collect();
        let received = Received {
            method: request.method().clone(),
            target: request.uri().clone(),
            version: request.version(),
            logged_headers,
            has_body: !request.body().is_end_stream(),
        };
        RequestContext::begin(received, mode, id, downstream, scheme, hold, observer)
    }

    /// Starts the context of a request whose head said `received`.
    pub fn begin(
        received: Received,
        mode: Mode,
        id: RequestId,
        downstream: Downstream,
        scheme: &'static str,
        hold: Arc<ConnectionHold>,
        observer: &Arc<Observer>,
    ) -> RequestContext {
        let Received { method, target, version, logged_headers, has_body } = received;
        let open = downstream.streams.as_ref().map(OpenStreams::start);
        RequestContext {
            id,
            downstream,
            scheme,
            hold,
            started: Instant::now(),
            mode,
            method,
            target,
            version,
            logged_headers,
            series: None,
            upstream: None,
            upstream_ttfb: None,
            upstream_target: None,
            attempts: 0,
            upstream_slot: None,
            received: has_body.then(|| Arc::new(AtomicU64::new(0))),
            relayed_in: 0,
            sent: 0,
            status: 0,
            failure: None,
            close: None,
            cache: None,
            ai: None,
            id_header: None,
            _open: open,
            observer: observer.clone(),
        }
    }

    /// Copies what the context holds of the request head into buffers of its own, for a
    /// context that waits out a long session (a tunnel, an upgrade): the target, the id and
    /// the logged fields otherwise share hyper's read buffer, which they would keep alive.
    pub fn detach(&mut self) {
        self.target = owned::uri(&self.target);
        if let RequestId::Client(value) = &self.id {
            self.id = RequestId::Client(owned_value(value));
        }
        if let Some(value) = &self.id_header {
            self.id_header = Some(owned_value(value));
        }
        for (_, value) in &mut self.logged_headers {
            *value = owned_value(value);
        }
    }

    /// The request id as a header value.
    pub fn id_header(&mut self) -> HeaderValue {
        self.id_header.get_or_insert_with(|| self.id.to_header_value()).clone()
    }

    /// Whether the request matched a route.
    pub fn routed(&self) -> bool {
        self.series.as_ref().is_some_and(|series| series.route().0.is_some())
    }

    /// Records that an upstream at `peer` has answered (or a tunnel to it is open).
    pub fn answered_by(&mut self, peer: Option<SocketAddr>) {
        self.upstream = peer;
        if peer.is_some() {
            self.upstream_ttfb = Some(self.started.elapsed());
        }
    }

    /// Bytes received from the client.
    pub fn received(&self) -> u64 {
        self.relayed_in + self.received.as_ref().map_or(0, |m| m.load(Ordering::Relaxed))
    }

    /// Writes the access-log line and the metrics: the log phase, run once per request when
    /// its response body ends or its session closes.
    pub fn finish(self) {
        let series = self.series.as_deref();
        let ai = self.ai.as_deref().map(|metered| ai_record(metered, self.started));
        let event = Event {
            started: self.started,
            peer: self.downstream.addr,
            id: &self.id,
            mode: self.mode,
            method: &self.method,
            target: &self.target,
            version: self.version,
            route: series.map_or(&NO_ROUTE, RouteSeries::route),
            series,
            status: self.status,
            received: self.received(),
            sent: self.sent,
            upstream_ttfb: self.upstream_ttfb,
            upstream: self.upstream,
            upstream_target: self.upstream_target.as_deref(),
            attempts: self.attempts,
            failure: self.failure,
            close: self.close,
            cache: self.cache.map(Outcome::as_str),
            headers: &self.logged_headers,
            ai: ai.as_ref(),
        };
        self.observer.finish(&event);
    }
}

/// `value` in a buffer of its own, as sensitive as it was.
fn owned_value(value: &HeaderValue) -> HeaderValue {
    let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else {
        return value.clone();
    };
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// The log and metrics record of an AI request that started at `started`, charging its
/// budgets with the usage its provider reported.
fn ai_record(metered: &Metered, started: Instant) -> AiRecord {
    let record = metered.settle();
    AiRecord {
        model: record.model.clone().or_else(|| metered.model.clone()),
        virtual_key: metered.virtual_key.as_ref().map(|key| key.name.clone()),
        key_id: metered.key_id.clone(),
        usage: record.usage,
        time_to_first_token: record.time_to_first_token(started),
        tokens_per_second: record.tokens_per_second(),
        fallbacks: metered.fallbacks,
        cache: metered.cache,
    }
}
