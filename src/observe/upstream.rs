//! Metrics of the targets of routes with several upstreams: attempts, errors by kind, response
//! time, retries, ejections and the retry budget, counted as they happen; health and requests
//! in flight, published when the metrics are read.
//!
//! Labels are the route's and the target's configured names (an expanded host name adds the
//! address to the target's name), so the number of series is bounded by the configuration.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::upstream::group::TargetSeries;

/// The labels of `series`' target.
fn labels(series: &TargetSeries) -> TargetLabels {
    TargetLabels {
        route: NameLabel(series.route.clone()),
        target: NameLabel(series.target.clone()),
    }
}

/// The label of `route`.
fn route_only(route: &Arc<str>) -> RouteOnly {
    RouteOnly { route: NameLabel(route.clone()) }
}

/// Upper bounds (seconds) of the response-time buckets: a local service in a millisecond up
/// to a model server taking minutes to start answering.
const RESPONSE_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0];

/// A route's or target's name as a label value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameLabel(pub Arc<str>);

impl EncodeLabelValue for NameLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(&self.0)
    }
}

/// A route and one of its targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    route: NameLabel,
    target: NameLabel,
}

/// A route, one of its targets and an error kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetErrorLabels {
    route: NameLabel,
    target: NameLabel,
    kind: &'static str,
}

/// A route alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteOnly {
    route: NameLabel,
}

type ResponseFamily = Family<TargetLabels, Histogram, fn() -> Histogram>;

fn response_histogram() -> Histogram {
    Histogram::new(RESPONSE_BUCKETS)
}

/// What an attempt on a target came to, for its error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response below 500.
    Answered,
    /// A 5xx response.
    ServerError,
    /// No response: this kind of failure (an `ErrorKind` name).
    Failed(&'static str),
}

/// Every per-target metric.
#[derive(Debug)]
pub struct UpstreamMetrics {
    attempts: Family<TargetLabels, Counter>,
    errors: Family<TargetErrorLabels, Counter>,
    response: ResponseFamily,
    retries: Family<TargetLabels, Counter>,
    ejections: Family<TargetLabels, Counter>,
    healthy: Family<TargetLabels, Gauge>,
    in_flight: Family<TargetLabels, Gauge>,
    budget_exhausted: Family<RouteOnly, Counter>,
    unavailable: Family<RouteOnly, Counter>,
}

impl UpstreamMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> UpstreamMetrics {
        let metrics = UpstreamMetrics {
            attempts: Family::default(),
            errors: Family::default(),
            response: ResponseFamily::new_with_constructor(response_histogram),
            retries: Family::default(),
            ejections: Family::default(),
            healthy: Family::default(),
            in_flight: Family::default(),
            budget_exhausted: Family::default(),
            unavailable: Family::default(),
        };
        registry.register(
            "upstream_target_attempts",
            "Attempts sent to each target of a route with several (first tries and retries)",
            metrics.attempts.clone(),
        );
        registry.register(
            "upstream_target_errors",
            "Failed attempts by target and kind (http_5xx for a 5xx answer)",
            metrics.errors.clone(),
        );
        registry.register_with_unit(
            "upstream_target_response",
            "Time from sending an attempt to its response head, by target",
            Unit::Seconds,
            metrics.response.clone(),
        );
        registry.register(
            "upstream_target_retries",
            "Retries sent to each target after another attempt failed",
            metrics.retries.clone(),
        );
        registry.register(
            "upstream_target_ejections",
            "Times each target was ejected for failing repeatedly",
            metrics.ejections.clone(),
        );
        registry.register(
            "upstream_target_healthy",
            "1 when a target may take requests (checks pass, not ejected, not cooling), else 0",
            metrics.healthy.clone(),
        );
        registry.register(
            "upstream_target_in_flight",
            "Requests in flight to each target",
            metrics.in_flight.clone(),
        );
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries not sent because the route's retry budget was spent",
            metrics.budget_exhausted.clone(),
        );
        registry.register(
            "upstream_unavailable",
            "Requests refused at once because no target of the route could take them",
            metrics.unavailable.clone(),
        );
        metrics
    }

    /// Counts one attempt on `series`' target that took `elapsed` to come to `outcome`.
    pub fn attempt(&self, series: &TargetSeries, elapsed: Duration, outcome: AttemptOutcome) {
        series.attempts.get_or_init(|| self.attempts.get_or_create(&labels(series)).clone()).inc();
        if !matches!(outcome, AttemptOutcome::Failed(_)) {
            series
                .response
                .get_or_init(|| self.response.get_or_create(&labels(series)).clone())
                .observe(elapsed.as_secs_f64());
        }
        let kind = match outcome {
            AttemptOutcome::Answered => return,
            AttemptOutcome::ServerError => "http_5xx",
            AttemptOutcome::Failed(kind) => kind,
        };
        let TargetLabels { route, target } = labels(series);
        self.errors.get_or_create(&TargetErrorLabels { route, target, kind }).inc();
    }

    /// Counts a retry sent to `series`' target.
    pub fn retry(&self, series: &TargetSeries) {
        series.retries.get_or_init(|| self.retries.get_or_create(&labels(series)).clone()).inc();
    }

    /// Counts an ejection of `series`' target.
    pub fn ejected(&self, series: &TargetSeries) {
        self.ejections.get_or_create(&labels(series)).inc();
    }

    /// Counts a retry refused for want of budget on `route`.
    pub fn budget_exhausted(&self, route: &Arc<str>) {
        self.budget_exhausted.get_or_create(&route_only(route)).inc();
    }

    /// Counts a request refused at once because no target of `route` could take it.
    pub fn unavailable(&self, route: &Arc<str>) {
        self.unavailable.get_or_create(&route_only(route)).inc();
    }

    /// Forgets the published health of every target, before the current ones are published
    /// (so a target removed by a reload stops being reported).
    pub fn clear_health(&self) {
        self.healthy.clear();
        self.in_flight.clear();
    }

    /// Publishes `series`' target's health and requests in flight.
    pub fn publish_health(&self, series: &TargetSeries, healthy: bool, in_flight: u32) {
        let labels = labels(series);
        self.healthy.get_or_create(&labels).set(i64::from(healthy));
        self.in_flight.get_or_create(&labels).set(i64::from(in_flight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn target_series_are_labelled_by_route_and_target() {
        let mut registry = Registry::with_prefix("sluice");
        let metrics = UpstreamMetrics::register(&mut registry);
        let series = TargetSeries::new(Arc::from("api"), Arc::from("key-a"));
        metrics.attempt(&series, Duration::from_millis(3), AttemptOutcome::Answered);
        metrics.attempt(&series, Duration::from_millis(3), AttemptOutcome::ServerError);
        metrics.attempt(&series, Duration::ZERO, AttemptOutcome::Failed("connection_refused"));
        metrics.retry(&series);
        metrics.ejected(&series);
        metrics.publish_health(&series, false, 2);
        metrics.budget_exhausted(&Arc::from("api"));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "sluice_upstream_target_attempts_total{route=\"api\",target=\"key-a\"} 3",
            "sluice_upstream_target_errors_total{route=\"api\",target=\"key-a\",kind=\"http_5xx\"} 1",
            "sluice_upstream_target_errors_total{route=\"api\",target=\"key-a\",kind=\"connection_refused\"} 1",
            "sluice_upstream_target_retries_total{route=\"api\",target=\"key-a\"} 1",
            "sluice_upstream_target_ejections_total{route=\"api\",target=\"key-a\"} 1",
            "sluice_upstream_target_healthy{route=\"api\",target=\"key-a\"} 0",
            "sluice_upstream_target_in_flight{route=\"api\",target=\"key-a\"} 2",
            "sluice_upstream_retry_budget_exhausted_total{route=\"api\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        metrics.clear_health();
        let mut cleared = String::new();
        encode(&mut cleared, &registry).unwrap();
        assert!(!cleared.contains("sluice_upstream_target_healthy{"));
    }
}
