//! The shared HTTP cache's metrics: requests by outcome, collapsed waits, revalidations, and
//! what the store holds, sampled when the metrics are read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A single `outcome` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A single `result` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The outcomes a request through the cache can have (`cache::status::Outcome::as_str`).
const OUTCOMES: [&str; 7] =
    ["hit", "stale", "revalidated", "miss", "collapsed", "bypass", "unavailable"];

/// How a revalidation with the origin came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revalidation {
    /// 304: the stored response is still good.
    NotModified,
    /// A new response replaced it.
    Modified,
    /// The origin could not be asked or failed.
    Failed,
}

impl Revalidation {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Revalidation::NotModified => "not_modified",
            Revalidation::Modified => "modified",
            Revalidation::Failed => "failed",
        }
    }
}

/// What the store holds, as the metrics are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSample {
    /// Bytes held, as weighed against the bound.
    pub bytes: u64,
    /// Stored responses.
    pub objects: u64,
    /// Stored responses evicted so far.
    pub evictions: u64,
    /// Background tasks (refreshes, fills, disk writes) running now.
    pub background_running: u64,
    /// Background tasks skipped so far because every slot was busy.
    pub background_skipped: u64,
    /// Bytes of the disk tier's files (0 without a disk tier).
    pub disk_bytes: u64,
    /// Responses the disk tier holds.
    pub disk_objects: u64,
}

/// The cache's metric handles.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    requests: Family<OutcomeLabel, Counter>,
    collapsed: Counter,
    revalidations: Family<ResultLabel, Counter>,
    stored_bytes: Gauge,
    stored_objects: Gauge,
    evictions: Counter,
    background_running: Gauge,
    background_skipped: Counter,
    disk_bytes: Gauge,
    disk_objects: Gauge,
}

impl CacheMetrics {
    /// Creates the handles and registers them in `registry`, every outcome's series at zero.
    pub fn register(registry: &mut Registry) -> CacheMetrics {
        let metrics = CacheMetrics::default();
        registry.register(
            "cache_requests",
            "Requests through the HTTP cache, by outcome (hit, stale, revalidated, miss, collapsed, bypass, unavailable)",
            metrics.requests.clone(),
        );
        registry.register(
            "cache_collapsed_waits",
            "Requests that waited for another request's response for the same URI",
            metrics.collapsed.clone(),
        );
        registry.register(
            "cache_revalidations",
            "Conditional requests sent to validate stored responses, by result",
            metrics.revalidations.clone(),
        );
        registry.register_with_unit(
            "cache_stored",
            "Bytes the cache's store holds, weighed against its bound",
            Unit::Bytes,
            metrics.stored_bytes.clone(),
        );
        registry.register(
            "cache_objects",
            "Responses the cache's store holds",
            metrics.stored_objects.clone(),
        );
        registry.register(
            "cache_evictions",
            "Stored responses evicted to keep the store within its bound",
            metrics.evictions.clone(),
        );
        registry.register(
            "cache_background_tasks",
            "Background tasks of the cache running now (refreshes, fills whose client left, disk writes)",
            metrics.background_running.clone(),
        );
        registry.register(
            "cache_background_skipped",
            "Background tasks not started because every slot was busy (cache.max_background)",
            metrics.background_skipped.clone(),
        );
        registry.register_with_unit(
            "cache_disk",
            "Bytes of the cache's disk tier files, weighed against cache.disk_max_bytes",
            Unit::Bytes,
            metrics.disk_bytes.clone(),
        );
        registry.register(
            "cache_disk_objects",
            "Responses the cache's disk tier holds",
            metrics.disk_objects.clone(),
        );
        for outcome in OUTCOMES {
            drop(metrics.requests.get_or_create(&OutcomeLabel { outcome }));
        }
        for result in [Revalidation::NotModified, Revalidation::Modified, Revalidation::Failed] {
            drop(metrics.revalidations.get_or_create(&ResultLabel { result: result.as_str() }));
        }
        metrics
    }

    /// Counts a request with `outcome` (a `cache::status::Outcome` name).
    pub fn request(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a request that waited for another request's response.
    pub fn collapsed_wait(&self) {
        self.collapsed.inc();
    }

    /// Counts a revalidation and its result.
    pub fn revalidated(&self, result: Revalidation) {
        self.revalidations.get_or_create(&ResultLabel { result: result.as_str() }).inc();
    }

    /// Records what the store holds now.
    pub fn sample(&self, sample: StoreSample) {
        self.stored_bytes.set(i64::try_from(sample.bytes).unwrap_or(i64::MAX));
        self.stored_objects.set(i64::try_from(sample.objects).unwrap_or(i64::MAX));
        catch_up(&self.evictions, sample.evictions);
        self.background_running.set(i64::try_from(sample.background_running).unwrap_or(i64::MAX));
        catch_up(&self.background_skipped, sample.background_skipped);
        self.disk_bytes.set(i64::try_from(sample.disk_bytes).unwrap_or(i64::MAX));
        self.disk_objects.set(i64::try_from(sample.disk_objects).unwrap_or(i64::MAX));
    }
}

/// Advances `counter` to `total`, a count kept elsewhere that only grows.
fn catch_up(counter: &Counter, total: u64) {
    let counted = counter.get();
    if total > counted {
        counter.inc_by(total - counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_from_the_start_and_evictions_only_grow() {
        let mut registry = Registry::default();
        let metrics = CacheMetrics::register(&mut registry);
        metrics.request("hit");
        metrics.collapsed_wait();
        metrics.revalidated(Revalidation::NotModified);
        metrics.sample(StoreSample {
            bytes: 10,
            objects: 2,
            evictions: 5,
            background_skipped: 2,
            ..StoreSample::default()
        });
        metrics.sample(StoreSample {
            bytes: 8,
            objects: 1,
            evictions: 3,
            background_running: 1,
            disk_bytes: 4096,
            disk_objects: 3,
            ..StoreSample::default()
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("cache_requests_total{outcome=\"hit\"} 1"), "{out}");
        assert!(out.contains("cache_requests_total{outcome=\"stale\"} 0"), "{out}");
        assert!(out.contains("cache_collapsed_waits_total 1"), "{out}");
        assert!(out.contains("cache_revalidations_total{result=\"not_modified\"} 1"), "{out}");
        assert!(out.contains("cache_stored_bytes 8"), "{out}");
        assert!(out.contains("cache_disk_bytes 4096"), "{out}");
        assert!(out.contains("cache_disk_objects 3"), "{out}");
        assert!(out.contains("cache_objects 1"), "{out}");
        assert!(out.contains("cache_evictions_total 5"), "{out}");
        assert!(out.contains("cache_background_tasks 1"), "{out}");
        assert!(out.contains("cache_background_skipped_total 2"), "{out}");
    }
}
