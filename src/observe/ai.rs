//! What the AI gateway adds to the access log and the metrics: per request the model, the
//! virtual key's name, the provider key's id (its target name, never the key), tokens in,
//! out and cached, time to first token and tokens per second ([`AiRecord`]); and counters of
//! fallbacks, key cooldowns and removals, budget refusals, exact-cache hits and the shared
//! state's failures ([`AiMetrics`]).
//!
//! Route, virtual key and key id labels come from the configuration. The model label comes
//! from the provider's answer (or the model sluice asked for), which clients influence, so
//! the number of distinct models is capped: past [`MAX_MODEL_LABELS`], further models are
//! counted as `other`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::gateway::metering::CacheResult;
use crate::gateway::usage::Usage;
use crate::state::StateMetrics;

/// Most distinct model names used as label values.
pub const MAX_MODEL_LABELS: usize = 256;

/// Upper bounds (seconds) of the time-to-first-token buckets.
const TTFT_BUCKETS: [f64; 14] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Upper bounds of the tokens-per-second buckets.
const RATE_BUCKETS: [f64; 12] =
    [1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 500.0, 1000.0];

/// What the access log and the metrics are told about one AI request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AiRecord {
    /// The model that answered (as the provider says), else the model sluice asked for.
    pub model: Option<String>,
    /// The virtual key's name.
    pub virtual_key: Option<Arc<str>>,
    /// The provider key's id: the name of the target that answered.
    pub key_id: Option<Arc<str>>,
    /// Tokens, when the provider reported them.
    pub usage: Option<Usage>,
    /// From the request's arrival to the first event (or first body byte).
    pub time_to_first_token: Option<Duration>,
    /// Output tokens per second after the first event.
    pub tokens_per_second: Option<f64>,
    /// Attempts that failed before the one that answered.
    pub fallbacks: u32,
    /// The exact cache's part, when the route caches.
    pub cache: Option<CacheResult>,
}

/// A route's, model's, virtual key's or key id's name as a label value (empty when absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Name(Option<Arc<str>>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    model: Name,
    virtual_key: Name,
    key_id: Name,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    route: Name,
    model: Name,
    virtual_key: Name,
    key_id: Name,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteModel {
    route: Name,
    model: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteReason {
    route: Name,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteKey {
    route: Name,
    key_id: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BudgetLabels {
    route: Name,
    holder: &'static str,
    name: Name,
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteResult {
    route: Name,
    result: &'static str,
}

type HistogramFamily = Family<RouteModel, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn rate_histogram() -> Histogram {
    Histogram::new(RATE_BUCKETS)
}

/// The AI gateway's metrics.
#[derive(Debug)]
pub struct AiMetrics {
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    ttft: HistogramFamily,
    tokens_per_second: HistogramFamily,
    fallbacks: Family<RouteReason, Counter>,
    cooled: Family<RouteKey, Counter>,
    removed: Family<RouteKey, Counter>,
    budget_refusals: Family<BudgetLabels, Counter>,
    cache: Family<RouteResult, Counter>,
    state: StateMetrics,
    models: Mutex<HashSet<Arc<str>>>,
    seen: Mutex<Seen>,
}

/// The label sets counted so far, so the counters can be read back ([`AiMetrics::usage`]):
/// the families cannot be iterated. Bounded like the labels themselves: routes, virtual keys
/// and key ids come from the configuration, models are capped, reasons are a short list.
#[derive(Debug, Default)]
struct Seen {
    requests: HashSet<SeriesLabels>,
    fallbacks: HashSet<RouteReason>,
}

/// A request series' labels, without the status class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesLabels {
    route: Name,
    model: Name,
    virtual_key: Name,
    key_id: Name,
}

/// The status classes requests are counted under.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What one model or virtual key has used since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AiTally {
    /// Requests finished.
    pub requests: u64,
    /// Input tokens providers reported.
    pub input_tokens: u64,
    /// Output tokens providers reported.
    pub output_tokens: u64,
    /// Of the input tokens, those the provider served from its prompt cache.
    pub cached_tokens: u64,
}

/// The AI gateway's use since start, read back from its counters (no key or secret in it:
/// only model, virtual-key and route names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AiUsageReadout {
    /// By model (`""` when neither the provider nor the request named one).
    pub models: BTreeMap<String, AiTally>,
    /// By virtual key name (`""` for requests without one).
    pub virtual_keys: BTreeMap<String, AiTally>,
    /// Fallbacks by route.
    pub fallbacks: BTreeMap<String, u64>,
}

impl AiTally {
    fn add(&mut self, other: AiTally) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// The label value of a status code's class.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl AiMetrics {
    /// Creates the metrics and registers them in `registry` (`sluice_ai_*`,
    /// `sluice_shared_state_*`).
    pub fn register(registry: &mut Registry) -> AiMetrics {
        let metrics = AiMetrics {
            requests: Family::default(),
            tokens: Family::default(),
            ttft: HistogramFamily::new_with_constructor(ttft_histogram),
            tokens_per_second: HistogramFamily::new_with_constructor(rate_histogram),
            fallbacks: Family::default(),
            cooled: Family::default(),
            removed: Family::default(),
            budget_refusals: Family::default(),
            cache: Family::default(),
            state: StateMetrics::default(),
            models: Mutex::new(HashSet::new()),
            seen: Mutex::new(Seen::default()),
        };
        registry.register(
            "ai_requests",
            "AI requests finished, by route, model, virtual key, provider key id and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "ai_tokens",
            "Tokens providers reported, by route, model, virtual key, provider key id and kind (input, output, cached)",
            metrics.tokens.clone(),
        );
        registry.register_with_unit(
            "ai_time_to_first_token",
            "Time from the request's arrival to the first event of the answer",
            Unit::Seconds,
            metrics.ttft.clone(),
        );
        registry.register(
            "ai_output_tokens_per_second",
            "Output tokens per second after the first event",
            metrics.tokens_per_second.clone(),
        );
        registry.register(
            "ai_fallbacks",
            "Attempts that failed before anything reached the client and were tried on another key or provider, by reason",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "ai_key_cooldowns",
            "Provider keys set to rest after a 429, by route and key id",
            metrics.cooled.clone(),
        );
        registry.register(
            "ai_key_removals",
            "Provider keys taken out of service after a 401 or 403, by route and key id",
            metrics.removed.clone(),
        );
        registry.register(
            "ai_budget_refusals",
            "Requests refused because a budget was spent, by route, holder, name and limit",
            metrics.budget_refusals.clone(),
        );
        registry.register(
            "ai_cache",
            "Exact response cache lookups, by route and result",
            metrics.cache.clone(),
        );
        registry.register(
            "shared_state_errors",
            "Operations on the shared counters' store (Redis) that failed or timed out",
            metrics.state.errors.clone(),
        );
        registry.register(
            "shared_state_degraded",
            "1 while the shared counters' store is unreachable (counting locally or refusing)",
            metrics.state.degraded.clone(),
        );
        metrics
    }

    /// The handles the shared state reports through.
    pub fn state(&self) -> StateMetrics {
        self.state.clone()
    }

    /// The model as a label: past [`MAX_MODEL_LABELS`] distinct names, `other`.
    fn model(&self, model: Option<&str>) -> Name {
        let Some(model) = model else { return Name(None) };
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = models.get(model) {
            return Name(Some(known.clone()));
        }
        if models.len() >= MAX_MODEL_LABELS {
            return Name(Some(Arc::from("other")));
        }
        let name: Arc<str> = Arc::from(model);
        models.insert(name.clone());
        Name(Some(name))
    }

    /// Records one finished AI request on `route` answered with `status`.
    pub fn complete(&self, route: &Arc<str>, status: u16, record: &AiRecord) {
        let route = Name(Some(route.clone()));
        let model = self.model(record.model.as_deref());
        let virtual_key = Name(record.virtual_key.clone());
        let key_id = Name(record.key_id.clone());
        self.seen().requests.insert(SeriesLabels {
            route: route.clone(),
            model: model.clone(),
            virtual_key: virtual_key.clone(),
            key_id: key_id.clone(),
        });
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                model: model.clone(),
                virtual_key: virtual_key.clone(),
                key_id: key_id.clone(),
                status: status_class(status),
            })
            .inc();
        if let Some(usage) = record.usage {
            for (kind, count) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cached", usage.cached_tokens),
            ] {
                self.tokens
                    .get_or_create(&TokenLabels {
                        route: route.clone(),
                        model: model.clone(),
                        virtual_key: virtual_key.clone(),
                        key_id: key_id.clone(),
                        kind,
                    })
                    .inc_by(count);
            }
        }
        let labels = RouteModel { route, model };
        if let Some(ttft) = record.time_to_first_token {
            self.ttft.get_or_create(&labels).observe(ttft.as_secs_f64());
        }
        if let Some(rate) = record.tokens_per_second {
            self.tokens_per_second.get_or_create(&labels).observe(rate);
        }
    }

    /// Counts an attempt on `route` that failed for `reason` and was tried elsewhere.
    pub fn fallback(&self, route: &Arc<str>, reason: &'static str) {
        let labels = RouteReason { route: Name(Some(route.clone())), reason };
        self.fallbacks.get_or_create(&labels).inc();
        self.seen().fallbacks.insert(labels);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The requests and tokens counted so far, summed by model and by virtual key, and the
    /// fallbacks by route: the `sluice_ai_requests`, `sluice_ai_tokens` and
    /// `sluice_ai_fallbacks` counters read back.
    pub fn usage(&self) -> AiUsageReadout {
        let (requests, fallbacks) = {
            let seen = self.seen();
            (
                seen.requests.iter().cloned().collect::<Vec<_>>(),
                seen.fallbacks.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let mut out = AiUsageReadout::default();
        for labels in requests {
            let tally = self.tally(&labels);
            let name = |n: &Name| n.0.as_deref().unwrap_or("").to_owned();
            out.models.entry(name(&labels.model)).or_default().add(tally);
            out.virtual_keys.entry(name(&labels.virtual_key)).or_default().add(tally);
        }
        for labels in fallbacks {
            let count = self.fallbacks.get(&labels).map_or(0, |c| c.get());
            let route = labels.route.0.as_deref().unwrap_or("").to_owned();
            *out.fallbacks.entry(route).or_default() += count;
        }
        out
    }

    /// One request series' counts over every status class.
    fn tally(&self, labels: &SeriesLabels) -> AiTally {
        let requests = STATUS_CLASSES
            .iter()
            .map(|status| {
                let labels = RequestLabels {
                    route: labels.route.clone(),
                    model: labels.model.clone(),
                    virtual_key: labels.virtual_key.clone(),
                    key_id: labels.key_id.clone(),
                    status,
                };
                self.requests.get(&labels).map_or(0, |c| c.get())
            })
            .sum();
        let tokens = |kind: &'static str| {
            let labels = TokenLabels {
                route: labels.route.clone(),
                model: labels.model.clone(),
                virtual_key: labels.virtual_key.clone(),
                key_id: labels.key_id.clone(),
                kind,
            };
            self.tokens.get(&labels).map_or(0, |c| c.get())
        };
        AiTally {
            requests,
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
            cached_tokens: tokens("cached"),
        }
    }

    /// How often provider key `key_id` of `route` was set to rest, and taken out of service.
    pub fn key_events(&self, route: &Arc<str>, key_id: &Arc<str>) -> (u64, u64) {
        let labels =
            RouteKey { route: Name(Some(route.clone())), key_id: Name(Some(key_id.clone())) };
        let count = |family: &Family<RouteKey, Counter>| family.get(&labels).map_or(0, |c| c.get());
        (count(&self.cooled), count(&self.removed))
    }

    /// Counts a provider key of `route` set to rest.
    pub fn key_cooled(&self, route: &Arc<str>, key_id: &Arc<str>) {
        let labels =
            RouteKey { route: Name(Some(route.clone())), key_id: Name(Some(key_id.clone())) };
        self.cooled.get_or_create(&labels).inc();
    }

    /// Counts a provider key of `route` taken out of service.
    pub fn key_removed(&self, route: &Arc<str>, key_id: &Arc<str>) {
        let labels =
            RouteKey { route: Name(Some(route.clone())), key_id: Name(Some(key_id.clone())) };
        self.removed.get_or_create(&labels).inc();
    }

    /// Counts a request on `route` refused by `holder` `name`'s `limit`.
    pub fn budget_refused(
        &self,
        route: &Arc<str>,
        holder: &'static str,
        name: &str,
        limit: &'static str,
    ) {
        let labels = BudgetLabels {
            route: Name(Some(route.clone())),
            holder,
            name: Name(Some(Arc::from(name))),
            limit,
        };
        self.budget_refusals.get_or_create(&labels).inc();
    }

    /// Counts an exact-cache lookup on `route`.
    pub fn cache(&self, route: &Arc<str>, result: CacheResult) {
        let labels = RouteResult { route: Name(Some(route.clone())), result: result.as_str() };
        self.cache.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn a_request_is_counted_with_its_tokens() {
        let mut registry = Registry::with_prefix("sluice");
        let metrics = AiMetrics::register(&mut registry);
        let route: Arc<str> = Arc::from("chat");
        let record = AiRecord {
            model: Some("gpt-x".to_owned()),
            virtual_key: Some(Arc::from("alice")),
            key_id: Some(Arc::from("key-1")),
            usage: Some(Usage { input_tokens: 12, output_tokens: 5, cached_tokens: 4 }),
            time_to_first_token: Some(Duration::from_millis(30)),
            tokens_per_second: Some(50.0),
            ..AiRecord::default()
        };
        metrics.complete(&route, 200, &record);
        metrics.fallback(&route, "rate_limited");
        metrics.key_cooled(&route, &Arc::from("key-1"));
        metrics.budget_refused(&route, "virtual_key", "alice", "tokens_per_day");
        metrics.cache(&route, CacheResult::Hit);
        metrics.state().errors.inc();
        let text = encoded(&registry);
        let labels = r#"route="chat",model="gpt-x",virtual_key="alice",key_id="key-1""#;
        for line in [
            format!("sluice_ai_requests_total{{{labels},status=\"2xx\"}} 1"),
            format!("sluice_ai_tokens_total{{{labels},kind=\"input\"}} 12"),
            format!("sluice_ai_tokens_total{{{labels},kind=\"output\"}} 5"),
            format!("sluice_ai_tokens_total{{{labels},kind=\"cached\"}} 4"),
            r#"sluice_ai_time_to_first_token_seconds_count{route="chat",model="gpt-x"} 1"#.to_owned(),
            r#"sluice_ai_fallbacks_total{route="chat",reason="rate_limited"} 1"#.to_owned(),
            r#"sluice_ai_key_cooldowns_total{route="chat",key_id="key-1"} 1"#.to_owned(),
            r#"sluice_ai_budget_refusals_total{route="chat",holder="virtual_key",name="alice",limit="tokens_per_day"} 1"#.to_owned(),
            r#"sluice_ai_cache_total{route="chat",result="hit"} 1"#.to_owned(),
            "sluice_shared_state_errors_total 1".to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn usage_reads_the_counters_back_by_model_and_virtual_key() {
        let mut registry = Registry::default();
        let metrics = AiMetrics::register(&mut registry);
        let route: Arc<str> = Arc::from("chat");
        let record = |model: &str, key: &str, input, output| AiRecord {
            model: Some(model.to_owned()),
            virtual_key: Some(Arc::from(key)),
            key_id: Some(Arc::from("key-1")),
            usage: Some(Usage { input_tokens: input, output_tokens: output, cached_tokens: 0 }),
            ..AiRecord::default()
        };
        metrics.complete(&route, 200, &record("a", "alice", 10, 2));
        metrics.complete(&route, 200, &record("a", "bob", 5, 1));
        metrics.complete(&route, 502, &record("b", "alice", 1, 0));
        metrics.complete(&route, 200, &AiRecord::default());
        metrics.fallback(&route, "rate_limited");
        metrics.fallback(&route, "server_error");
        metrics.key_cooled(&route, &Arc::from("key-1"));
        let usage = metrics.usage();
        let tally = |requests, input_tokens, output_tokens| AiTally {
            requests,
            input_tokens,
            output_tokens,
            cached_tokens: 0,
        };
        assert_eq!(usage.models["a"], tally(2, 15, 3));
        assert_eq!(usage.models["b"], tally(1, 1, 0));
        assert_eq!(usage.models[""], tally(1, 0, 0));
        assert_eq!(usage.virtual_keys["alice"], tally(2, 11, 2));
        assert_eq!(usage.virtual_keys["bob"], tally(1, 5, 1));
        assert_eq!(usage.fallbacks["chat"], 2);
        assert_eq!(metrics.key_events(&route, &Arc::from("key-1")), (1, 0));
        assert_eq!(metrics.key_events(&route, &Arc::from("key-2")), (0, 0));
    }

    #[test]
    fn models_past_the_cap_are_other() {
        let mut registry = Registry::default();
        let metrics = AiMetrics::register(&mut registry);
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(
                metrics.model(Some(&format!("m{i}"))).0.as_deref(),
                Some(format!("m{i}").as_str())
            );
        }
        assert_eq!(metrics.model(Some("m0")).0.as_deref(), Some("m0"));
        assert_eq!(metrics.model(Some("new")).0.as_deref(), Some("other"));
        assert_eq!(metrics.model(None).0, None);
    }
}
