//! Prometheus metrics, kept for the life of the process (a reload never resets them) and
//! served in the OpenMetrics text format by the admin listener.
//!
//! Every label comes from a fixed set: modes, methods, status classes and error kinds are
//! enums, and `route` is a configured route name (empty for forward-proxy traffic). Raw paths
//! and hosts never become labels, so the number of series stays bounded.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::observe::cache_metrics::CacheMetrics;
use crate::observe::mode::Mode;
use crate::observe::traffic::{RouteTally, Traffic};

/// Upper bounds (seconds) of the latency buckets: sub-millisecond proxying up to the minutes a
/// model server may take to stream a long answer.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A route name as a label value; empty for traffic that matched no route (forward proxy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RouteLabel(pub Option<Arc<str>>);

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

/// Labels of the per-request counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    mode: &'static str,
    route: RouteLabel,
    method: &'static str,
    status: &'static str,
}

/// Labels of the per-route histograms and byte counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    mode: &'static str,
    route: RouteLabel,
}

/// A single `kind` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// A single `result` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Why a client was turned away before a request reached the proxy path, or by policy on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A request-level refusal, named by its error kind (denied, auth, rate, limits, ...).
    Request(crate::error::ErrorKind),
    /// The client address already had `max_connections_per_ip` connections open.
    TooManyConnections,
    /// The request head could not be parsed (400 from the HTTP parser or the wire guard).
    MalformedRequest,
    /// The request head was larger than `limits.max_request_head_bytes` (431).
    RequestHeadTooLarge,
    /// No complete request head within `timeouts.request_header`.
    RequestHeadTimeout,
    /// A client that accepted nothing of its response for `timeouts.client_send` was
    /// disconnected (or, on HTTP/2, its stream given up).
    ClientSendTimeout,
}

impl Rejection {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Request(kind) => kind.as_str(),
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::MalformedRequest => "malformed_request",
            Rejection::RequestHeadTooLarge => "request_head_too_large",
            Rejection::RequestHeadTimeout => "request_head_timeout",
            Rejection::ClientSendTimeout => "client_send_timeout",
        }
    }
}

/// Which implementation of the request path served a request (`proxy::fast::decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPath {
    /// The HTTP/1 fast path: sluice's own codec on both sides.
    Fast,
    /// hyper's server and client.
    General,
}

impl RequestPath {
    /// The `path` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestPath::Fast => "fast",
            RequestPath::General => "general",
        }
    }
}

/// A single `path` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

/// Whether a reload applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is being served.
    Applied,
    /// It was refused; the old one is still served.
    Refused,
}

impl ReloadResult {
    /// The `result` label, and the status page's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Refused => "refused",
        }
    }
}

/// The `method` label values, in the order [`method_index`] numbers them.
const METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"];

/// The `status` label values, in the order [`status_index`] numbers them.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The series one (mode, route) pair writes to, kept by the route (or listener) that serves
/// it. Looking a labelled series up in its family hashes every label on every request; these
/// handles are looked up once, on first use, and then updated directly.
#[derive(Debug)]
pub struct RouteSeries {
    mode: Mode,
    route: RouteLabel,
    duration: OnceLock<Histogram>,
    upstream_ttfb: OnceLock<Histogram>,
    received: OnceLock<Counter>,
    sent: OnceLock<Counter>,
    /// `requests` by method, then status class.
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len()],
    /// The route's tally for the status page.
    tally: OnceLock<Arc<RouteTally>>,
}

impl RouteSeries {
    /// The handles for traffic of `mode` on `route`; a series is created in its family the
    /// first time it is written, exactly as it would be without the handles.
    pub fn new(mode: Mode, route: RouteLabel) -> RouteSeries {
        RouteSeries {
            mode,
            route,
            duration: OnceLock::new(),
            upstream_ttfb: OnceLock::new(),
            received: OnceLock::new(),
            sent: OnceLock::new(),
            requests: Default::default(),
            tally: OnceLock::new(),
        }
    }

    /// The route these handles are for.
    pub fn route(&self) -> &RouteLabel {
        &self.route
    }
}

/// What one finished request, tunnel or WebSocket session contributes to the metrics.
#[derive(Debug, Clone)]
pub struct Completed<'a> {
    /// What kind of traffic it was.
    pub mode: Mode,
    /// The route it matched.
    pub route: &'a RouteLabel,
    /// Its method.
    pub method: &'a Method,
    /// The status sent to the client.
    pub status: u16,
    /// From the first request byte to the last response byte (or the session's close).
    pub duration: Duration,
    /// Until the upstream's response head arrived, when an upstream answered.
    pub upstream_ttfb: Option<Duration>,
    /// Body (or tunnel) bytes received from the client.
    pub received: u64,
    /// Body (or tunnel) bytes sent to the client.
    pub sent: u64,
    /// The failure, when it failed.
    pub error: Option<crate::error::ErrorKind>,
    /// The handles of its (mode, route) pair, when the route or listener keeps them.
    pub series: Option<&'a RouteSeries>,
}

/// Every metric sluice keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Requests by the path that served them, fast then general (kept outside the family so
    /// counting costs no lookup).
    paths: [Counter; 2],
    duration: HistogramFamily,
    upstream_ttfb: HistogramFamily,
    received: Family<RouteLabels, Counter>,
    sent: Family<RouteLabels, Counter>,
    connections: Gauge,
    parked: Gauge,
    tunnels: Gauge,
    websockets: Gauge,
    upstream_errors: Family<KindLabel, Counter>,
    rejections: Family<KindLabel, Counter>,
    tls_handshake_failures: Counter,
    reloads: Family<ResultLabel, Counter>,
    access_log_dropped: Counter,
    cache: CacheMetrics,
    /// The targets of routes with several upstreams.
    pub upstreams: crate::observe::upstream::UpstreamMetrics,
    traffic: Traffic,
    /// The AI gateway: usage, fallbacks, keys, budgets, the shared counters.
    pub ai: crate::observe::ai::AiMetrics,
}

/// The open connections and sessions at one moment, as the gauges count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveCounts {
    /// Open client connections (parked ones included).
    pub connections: i64,
    /// Client connections parked outside the HTTP stack between requests.
    pub parked: i64,
    /// Open CONNECT tunnels.
    pub tunnels: i64,
    /// Open WebSocket sessions.
    pub websockets: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `sluice_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = HistogramFamily::new_with_constructor(latency_histogram);
        let upstream_ttfb = HistogramFamily::new_with_constructor(latency_histogram);
        let received = Family::<RouteLabels, Counter>::default();
        let sent = Family::<RouteLabels, Counter>::default();
        let upstream_errors = Family::<KindLabel, Counter>::default();
        let rejections = Family::<KindLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let (connections, tunnels, websockets) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let parked = Gauge::default();
        let tls_handshake_failures = Counter::default();
        let access_log_dropped = Counter::default();
        let upstreams = crate::observe::upstream::UpstreamMetrics::register(&mut registry);
        let ai = crate::observe::ai::AiMetrics::register(&mut registry);
        registry.register(
            "requests",
            "Requests, tunnels and WebSocket sessions completed, by mode, route, method and status class",
            requests.clone(),
        );
        // A counter's clone shares its value: the array holds the family's two series.
        let path_family = Family::<PathLabel, Counter>::default();
        let paths = [RequestPath::Fast, RequestPath::General]
            .map(|path| path_family.get_or_create(&PathLabel { path: path.as_str() }).clone());
        registry.register(
            "requests_path",
            "Requests by the implementation of the request path that served them: the HTTP/1 fast path or the general one",
            path_family,
        );
        registry.register_with_unit(
            "request_duration",
            "Time from the request head to the last response byte (or the session's close)",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "upstream_ttfb",
            "Time from the request head until the upstream's response head arrived",
            Unit::Seconds,
            upstream_ttfb.clone(),
        );
        registry.register_with_unit(
            "received",
            "Body and tunnel bytes received from clients",
            Unit::Bytes,
            received.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Body and tunnel bytes sent to clients",
            Unit::Bytes,
            sent.clone(),
        );
        registry.register("connections_active", "Open client connections", connections.clone());
        registry.register(
            "connections_parked",
            "Client connections waiting for their next request outside the HTTP stack, holding only their socket",
            parked.clone(),
        );
        registry.register("tunnels_active", "Open CONNECT and SOCKS tunnels", tunnels.clone());
        registry.register("websockets_active", "Open WebSocket sessions", websockets.clone());
        registry.register(
            "upstream_errors",
            "Failures reaching or hearing from upstreams, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "rejections",
            "Requests and connections refused by a limit or policy, by kind",
            rejections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        registry.register("config_reloads", "Configuration reloads by result", reloads.clone());
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        // Series an alert compares over time exist from the start, at zero, so the first event
        // shows up as an increase.
        for result in ["applied", "refused"] {
            drop(reloads.get_or_create(&ResultLabel { result }));
        }
        for kind in crate::error::ErrorKind::ALL {
            if kind.is_upstream() {
                drop(upstream_errors.get_or_create(&KindLabel { kind: kind.as_str() }));
            }
        }
        let cache = CacheMetrics::register(&mut registry);
        Metrics {
            cache,
            registry,
            requests,
            paths,
            duration,
            upstream_ttfb,
            received,
            sent,
            connections,
            parked,
            tunnels,
            websockets,
            upstream_errors,
            rejections,
            tls_handshake_failures,
            reloads,
            access_log_dropped,
            upstreams,
            traffic: Traffic::default(),
            ai,
        }
    }

    /// Records one finished request, tunnel or WebSocket session.
    pub fn complete(&self, done: &Completed<'_>) {
        let exchange = matches!(done.mode, Mode::Forward | Mode::Reverse);
        match done.series {
            Some(series) if series.mode == done.mode && series.route == *done.route => {
                self.complete_on(series, done);
                if exchange {
                    let tally = series.tally.get_or_init(|| self.traffic.tally(&series.route.0));
                    tally.record(done.status, done.duration);
                }
            }
            _ => {
                self.complete_by_labels(done);
                if exchange {
                    self.traffic.tally(&done.route.0).record(done.status, done.duration);
                }
            }
        }
        match done.error {
            Some(kind) if kind.is_upstream() => {
                self.upstream_errors.get_or_create(&KindLabel { kind: kind.as_str() }).inc();
            }
            Some(kind) => self.reject(Rejection::Request(kind)),
            None => {}
        }
    }

    /// Records a finished request through the handles its route keeps.
    fn complete_on(&self, series: &RouteSeries, done: &Completed<'_>) {
        let labels = || RouteLabels { mode: series.mode.as_str(), route: series.route.clone() };
        let (method, status) = (method_index(done.method), status_index(done.status));
        if let Some(requests) = series.requests.get(method).and_then(|row| row.get(status)) {
            let counter = requests.get_or_init(|| {
                let labels = RequestLabels {
                    mode: series.mode.as_str(),
                    route: series.route.clone(),
                    method: method_label(done.method),
                    status: status_class(done.status),
                };
                self.requests.get_or_create(&labels).clone()
            });
            counter.inc();
        }
        let duration =
            series.duration.get_or_init(|| self.duration.get_or_create(&labels()).clone());
        duration.observe(done.duration.as_secs_f64());
        if let Some(ttfb) = done.upstream_ttfb {
            let histogram = series
                .upstream_ttfb
                .get_or_init(|| self.upstream_ttfb.get_or_create(&labels()).clone());
            histogram.observe(ttfb.as_secs_f64());
        }
        if done.received > 0 {
            let counter =
                series.received.get_or_init(|| self.received.get_or_create(&labels()).clone());
            counter.inc_by(done.received);
        }
        if done.sent > 0 {
            let counter = series.sent.get_or_init(|| self.sent.get_or_create(&labels()).clone());
            counter.inc_by(done.sent);
        }
    }

    /// Records a finished request by looking its series up by label.
    fn complete_by_labels(&self, done: &Completed<'_>) {
        let route = RouteLabels { mode: done.mode.as_str(), route: done.route.clone() };
        self.requests
            .get_or_create(&RequestLabels {
                mode: route.mode,
                route: route.route.clone(),
                method: method_label(done.method),
                status: status_class(done.status),
            })
            .inc();
        self.duration.get_or_create(&route).observe(done.duration.as_secs_f64());
        if let Some(ttfb) = done.upstream_ttfb {
            self.upstream_ttfb.get_or_create(&route).observe(ttfb.as_secs_f64());
        }
        if done.received > 0 {
            self.received.get_or_create(&route).inc_by(done.received);
        }
        if done.sent > 0 {
            self.sent.get_or_create(&route).inc_by(done.sent);
        }
    }

    /// Counts a request served by `path`.
    pub fn request_path(&self, path: RequestPath) {
        let at = match path {
            RequestPath::Fast => 0,
            RequestPath::General => 1,
        };
        if let Some(counter) = self.paths.get(at) {
            counter.inc();
        }
    }

    /// Counts a refusal.
    pub fn reject(&self, rejection: Rejection) {
        self.rejections.get_or_create(&KindLabel { kind: rejection.as_str() }).inc();
    }

    /// Counts a failed or timed-out client TLS handshake; returns the new total.
    pub fn tls_handshake_failed(&self) -> u64 {
        self.tls_handshake_failures.inc() + 1
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ResultLabel { result: result.as_str() }).inc();
    }

    /// Counts an access-log line the writer had no room for.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Counts an open client connection until the returned guard is dropped.
    pub fn connection_opened(&self) -> Active {
        Active::new(&self.connections)
    }

    /// Counts a parked connection until the returned guard is dropped.
    pub fn connection_parked(&self) -> Active {
        Active::new(&self.parked)
    }

    /// Counts an open tunnel (CONNECT or SOCKS) or WebSocket session until the returned guard
    /// is dropped.
    pub fn session_opened(&self, mode: Mode) -> Active {
        let tunnel = matches!(mode, Mode::Tunnel | Mode::Socks);
        Active::new(if tunnel { &self.tunnels } else { &self.websockets })
    }

    /// The HTTP cache's metrics.
    pub fn cache(&self) -> &CacheMetrics {
        &self.cache
    }

    /// The open connections, parked connections, tunnels and WebSocket sessions now.
    pub fn active(&self) -> ActiveCounts {
        ActiveCounts {
            connections: self.connections.get(),
            parked: self.parked.get(),
            tunnels: self.tunnels.get(),
            websockets: self.websockets.get(),
        }
    }

    /// Every route's request tallies, for the status page's history.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a gauge one higher while it lives.
#[derive(Debug)]
pub struct Active(Gauge);

impl Active {
    fn new(gauge: &Gauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    METHODS.get(method_index(method)).copied().unwrap_or("OTHER")
}

/// The position of `method`'s label in [`METHODS`].
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// The `status` label: `2xx`, `4xx`, ...
fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES.get(status_index(status)).copied().unwrap_or("5xx")
}

/// The position of `status`'s class in [`STATUS_CLASSES`].
fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_completed_request_is_counted_once_with_fixed_labels() {
        let metrics = Metrics::new();
        let route = RouteLabel(Some(Arc::from("api")));
        metrics.complete(&Completed {
            mode: Mode::Reverse,
            route: &route,
            method: &Method::from_bytes(b"PROPFIND").unwrap(),
            status: 502,
            duration: Duration::from_millis(3),
            upstream_ttfb: None,
            received: 0,
            sent: 10,
            error: Some(ErrorKind::ConnectionRefused),
            series: None,
        });
        let text = metrics.encode();
        assert!(text.contains(
            "sluice_requests_total{mode=\"reverse\",route=\"api\",method=\"OTHER\",status=\"5xx\"} 1"
        ));
        assert!(text.contains("sluice_upstream_errors_total{kind=\"connection_refused\"} 1"));
        assert!(text.contains("sluice_sent_bytes_total{mode=\"reverse\",route=\"api\"} 10"));
    }

    #[test]
    fn route_handles_record_exactly_what_label_lookups_record() {
        let route = RouteLabel(Some(Arc::from("api")));
        let series = RouteSeries::new(Mode::Reverse, route.clone());
        let other_route = RouteLabel(Some(Arc::from("other")));
        let (by_handles, by_labels) = (Metrics::new(), Metrics::new());
        let methods = [Method::GET, Method::POST, Method::from_bytes(b"PROPFIND").unwrap()];
        for (i, method) in methods.iter().enumerate() {
            for status in [101, 200, 304, 404, 502] {
                for (mode, route) in [
                    (Mode::Reverse, &route),
                    // A WebSocket session, or another route: the handles must not be used.
                    (Mode::WebSocket, &route),
                    (Mode::Reverse, &other_route),
                ] {
                    let done = |series| Completed {
                        mode,
                        route,
                        method,
                        status,
                        duration: Duration::from_millis(status.into()),
                        upstream_ttfb: (i > 0).then(|| Duration::from_micros(300)),
                        received: i as u64 * 7,
                        sent: u64::from(status),
                        error: (status == 502).then_some(ErrorKind::ConnectionRefused),
                        series,
                    };
                    by_handles.complete(&done(Some(&series)));
                    by_labels.complete(&done(None));
                }
            }
        }
        let text = by_handles.encode();
        assert!(text.contains(
            "sluice_requests_total{mode=\"reverse\",route=\"api\",method=\"POST\",status=\"4xx\"} 1"
        ));
        assert!(text.contains(
            "sluice_requests_total{mode=\"websocket\",route=\"api\",method=\"GET\",status=\"1xx\"} 1"
        ));
        // Series order in the output follows hash-map order, so compare sorted lines.
        let sorted = |text: String| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(text), sorted(by_labels.encode()));
    }

    #[test]
    fn active_gauges_follow_their_guards() {
        let metrics = Metrics::new();
        let first = metrics.session_opened(Mode::Tunnel);
        let second = metrics.session_opened(Mode::Tunnel);
        drop(first);
        assert!(metrics.encode().contains("sluice_tunnels_active 1"));
        drop(second);
        assert!(metrics.encode().contains("sluice_tunnels_active 0"));
        let _parked = metrics.connection_parked();
        let _websocket = metrics.session_opened(Mode::WebSocket);
        let active = ActiveCounts { parked: 1, websockets: 1, ..ActiveCounts::default() };
        assert_eq!(metrics.active(), active);
    }

    #[test]
    fn requests_are_tallied_per_route_through_handles_or_labels_but_sessions_are_not() {
        let metrics = Metrics::new();
        let route = RouteLabel(Some(Arc::from("api")));
        let series = RouteSeries::new(Mode::Reverse, route.clone());
        for (mode, status, series) in [
            (Mode::Reverse, 200, Some(&series)),
            (Mode::Reverse, 503, None),
            (Mode::WebSocket, 101, Some(&series)),
        ] {
            metrics.complete(&Completed {
                mode,
                route: &route,
                method: &Method::GET,
                status,
                duration: Duration::from_millis(2),
                upstream_ttfb: None,
                received: 0,
                sent: 0,
                error: None,
                series,
            });
        }
        let tally = metrics.traffic().tally(&route.0).snapshot();
        assert_eq!((tally.requests(), tally.errors), (2, 1));
        assert_eq!(metrics.traffic().all().len(), 1);
    }
}
