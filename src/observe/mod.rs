//! What went through the proxy: one [`Event`] per request, tunnel and WebSocket session,
//! written to the [`access_log`] and counted in the [`metrics`] when it ends.
//!
//! The request path keeps everything about a request in its one per-request context; when the
//! response body ends, or a tunnel or WebSocket session closes, it hands [`Observer::finish`]
//! an [`Event`], a borrowed view of that context, once.
//!
//! Besides the Prometheus metrics, each route's requests are tallied in [`traffic`] (with
//! [`latency`] buckets fine enough for per-second percentiles), which [`history`] samples
//! once a second for the admin status page.

pub mod access_log;
pub mod ai;
pub mod cache_metrics;
pub mod event;
pub mod history;
pub mod latency;
pub mod metrics;
pub mod mode;
pub mod request_id;
pub mod traffic;
pub mod upstream;

use std::sync::Arc;

use http::HeaderName;

pub use event::{Event, Failure};
pub use mode::Mode;
pub use request_id::RequestId;

use crate::config::Config;
use crate::observe::access_log::{AccessLog, AccessLogError};
use crate::observe::metrics::{Completed, Metrics};

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
    pub fn wanted_headers(&self) -> &[HeaderName] {
        self.log.as_ref().map_or(&[], |log| log.wanted_headers())
    }

    /// Writes the access-log line and the metrics of a finished request or session.
    pub fn finish(&self, event: &Event<'_>) {
        let duration = event.started.elapsed();
        self.metrics.complete(&Completed {
            mode: event.mode,
            route: event.route,
            method: event.method,
            status: event.status,
            duration,
            upstream_ttfb: event.upstream_ttfb,
            received: event.received,
            sent: event.sent,
            error: match event.failure {
                Some(Failure::Proxy(kind)) => Some(kind),
                _ => None,
            },
            series: event.series,
        });
        if let (Some(ai), Some(route)) = (event.ai, &event.route.0) {
            self.metrics.ai.complete(route, event.status, ai);
        }
        if let Some(log) = &self.log {
            log.write(event, duration);
        }
    }
}
