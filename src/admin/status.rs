//! What the status page shows, as one serialisable snapshot: the document `GET /status.json`
//! returns and `GET /` renders. The schema is documented in docs/OPERATIONS.md ("The status
//! page") and kept stable: fields are only ever added, and `schema` changes if one is ever
//! removed or changes meaning.
//!
//! Nothing here can carry a secret: listeners and routes are described by the same fields
//! `config::summary` prints (upstream URLs cannot hold credentials; header rules, users and
//! TLS key paths are left out altogether), reload messages name problems by file, line
//! and key, and the AI gateway's usage names models, virtual keys and provider key ids only.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, ListenerConfig, RouteConfig};
use crate::observe::ai::{AiMetrics, AiTally};
use crate::observe::history::{History, SAMPLE_INTERVAL, Series};
use crate::proxy::router::Router;
use crate::reload::Reloader;
use crate::upstream::group::{Group, Member, Moment};

/// The version of the `/status.json` schema; see the module documentation.
pub const STATUS_SCHEMA: u32 = 1;

/// The whole status document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// [`STATUS_SCHEMA`].
    pub schema: u32,
    /// sluice's version.
    pub version: &'static str,
    /// When this snapshot was taken (milliseconds since the Unix epoch).
    pub generated_unix_ms: u64,
    /// When serving started.
    pub started_unix_ms: u64,
    /// `serving`, or `draining` once shutdown has begun.
    pub state: &'static str,
    /// Every proxy listener, in configuration order.
    pub listeners: Vec<ListenerStatus>,
    /// Every route, in configuration order.
    pub routes: Vec<RouteStatus>,
    /// What is open right now.
    pub connections: ConnectionStatus,
    /// The latest reload since start, if any.
    pub reload: Option<ReloadStatus>,
    /// Requests per route over the last minutes.
    pub traffic: TrafficStatus,
    /// The AI gateway's use since start; `null` when no route serves an AI provider.
    pub ai_usage: Option<AiUsage>,
}

/// The AI gateway's use since start, read from its metrics. Names only: models, virtual
/// keys, routes and provider key ids (a target's name), never a key or a key's hash.
#[derive(Debug, Clone, Serialize)]
pub struct AiUsage {
    /// Per model, busiest first.
    pub models: Vec<AiModelUsage>,
    /// Per virtual key, busiest first.
    pub virtual_keys: Vec<AiKeyUsage>,
    /// Every AI route, in configuration order, with its provider keys' state.
    pub routes: Vec<AiRouteStatus>,
}

/// One model's requests and tokens.
#[derive(Debug, Clone, Serialize)]
pub struct AiModelUsage {
    /// As the provider named it (`other` past the label cap; `""` when nothing named one).
    pub model: String,
    /// The counts.
    #[serde(flatten)]
    pub usage: AiCounts,
}

/// One virtual key's requests and tokens.
#[derive(Debug, Clone, Serialize)]
pub struct AiKeyUsage {
    /// The virtual key's name (`""` for requests without one).
    pub name: String,
    /// The counts.
    #[serde(flatten)]
    pub usage: AiCounts,
}

/// Requests and tokens since start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AiCounts {
    /// Requests finished, whatever the status.
    pub requests: u64,
    /// Input tokens the provider reported.
    pub input_tokens: u64,
    /// Output tokens the provider reported.
    pub output_tokens: u64,
    /// Input tokens the provider served from its prompt cache.
    pub cached_tokens: u64,
}

/// One AI route.
#[derive(Debug, Clone, Serialize)]
pub struct AiRouteStatus {
    /// The route's name.
    pub route: String,
    /// Attempts that failed and were tried on another key or provider.
    pub fallbacks: u64,
    /// Its provider keys, by key id.
    pub keys: Vec<AiProviderKey>,
}

/// One provider key's state, by its id (the target's name; never the key).
#[derive(Debug, Clone, Serialize)]
pub struct AiProviderKey {
    /// The target's name.
    pub key_id: String,
    /// `ready`, `resting` (after a 429) or `removed` (after a 401 or 403).
    pub state: &'static str,
    /// How long it still rests or stays out of service; `null` when ready.
    pub back_in_ms: Option<u64>,
    /// Times it was set to rest since start.
    pub cooldowns: u64,
    /// Times it was taken out of service since start.
    pub removals: u64,
}

/// One proxy listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    /// The bound address (the real port when the file said `0`).
    pub address: String,
    /// `forward`, `reverse` or `forward+reverse`.
    pub modes: String,
    /// The protocols it speaks, e.g. `https (h2, http/1.1)`.
    pub protocol: &'static str,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// Whether forward-proxy requests need credentials.
    pub auth: bool,
}

/// One route and where it sends requests.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// Its name (the prefix unless the file names it).
    pub name: String,
    /// The host it is limited to, if any.
    pub host: Option<String>,
    /// The path prefix it matches on whole segments.
    pub prefix: String,
    /// The upstream base URL; for a route with targets, the first target's.
    pub upstream: String,
    /// The HTTP version spoken upstream: `auto`, `http1` or `http2`.
    pub protocol: &'static str,
    /// `Upgrade` protocols let through.
    pub upgrades: Vec<String>,
    /// The route's request rate limit, if any.
    pub rate_limit: Option<RateStatus>,
    /// How a route with targets spreads its requests (`round_robin`, `least_request`, ...);
    /// `null` for a route with one upstream.
    pub balance: Option<&'static str>,
    /// A route's targets with their health now, by tier; empty for a route with one upstream.
    pub targets: Vec<TargetStatus>,
}

/// One target of a route with several, as its group sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Its name within the route.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// Its failover tier, 0 first.
    pub tier: u8,
    /// Its share of the tier's requests, relative to the other targets' weights.
    pub weight: u32,
    /// Whether it takes requests, and if not, why.
    pub state: TargetHealth,
    /// The health checks' verdict, `up` or `down`; `null` when the route has no checks.
    pub checks: Option<&'static str>,
    /// How long its ejection still lasts, when ejected.
    pub ejected_for_ms: Option<u64>,
    /// How long its cooling still lasts, when cooling.
    pub cooling_for_ms: Option<u64>,
    /// Failed requests in a row (the passive health streak).
    pub consecutive_failures: u32,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Its cap on requests in flight.
    pub max_in_flight: u32,
}

/// Whether a target takes requests now, and if not the first reason that holds, in this
/// order: its health checks outrank passive health, which outranks a `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetHealth {
    /// It takes requests.
    Healthy,
    /// Its health checks fail.
    Down,
    /// Passive health took it out for failing requests, for a while.
    Ejected,
    /// It asked for a pause with `Retry-After` (a 429 or 503 answer).
    Cooling,
}

impl TargetHealth {
    /// The name `/status.json` and the page give it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetHealth::Healthy => "healthy",
            TargetHealth::Down => "down",
            TargetHealth::Ejected => "ejected",
            TargetHealth::Cooling => "cooling",
        }
    }
}

/// A rate limit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateStatus {
    /// Sustained requests per second.
    pub rate: f64,
    /// Bucket capacity.
    pub burst: u32,
}

/// Open connections and sessions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConnectionStatus {
    /// Client connections (parked ones included).
    pub open: u64,
    /// Idle client connections parked outside the HTTP stack.
    pub parked: u64,
    /// CONNECT tunnels.
    pub tunnels: u64,
    /// WebSocket sessions.
    pub websockets: u64,
}

/// The latest reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// When it finished.
    pub at_unix_ms: u64,
    /// `applied` or `refused`.
    pub result: &'static str,
    /// What changed, or why it was refused.
    pub message: String,
}

/// The per-route time series.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficStatus {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// How far back the history reaches when full (`[admin] history`).
    pub history_seconds: u64,
    /// The length of every series' arrays.
    pub samples: usize,
    /// When the newest sample was taken; `null` before the first.
    pub end_unix_ms: Option<u64>,
    /// One per route (in configuration order), then the forward proxy's.
    pub series: Vec<SeriesStatus>,
}

/// One route's (or the forward proxy's) samples, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesStatus {
    /// The route's name; `null` for forward-proxy traffic.
    pub route: Option<String>,
    /// Requests finished per interval.
    pub requests: Vec<u32>,
    /// Of those, answered with a 5xx status.
    pub errors: Vec<u32>,
    /// Median latency per interval, milliseconds; `null` without requests.
    pub p50_ms: Vec<Option<f64>>,
    /// 99th-percentile latency per interval, milliseconds; `null` without requests.
    pub p99_ms: Vec<Option<f64>>,
    /// Figures over about the last minute.
    pub recent: RecentStatus,
}

/// A series' figures over about the last minute.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecentStatus {
    /// The span covered (shorter just after start).
    pub window_seconds: u64,
    /// Requests finished per second.
    pub requests_per_second: f64,
    /// Share of them answered with a 5xx status, 0 to 1; `null` without requests.
    pub error_ratio: Option<f64>,
    /// Median latency, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
}

impl Status {
    /// A snapshot of the running proxy.
    pub async fn collect(reloader: &Reloader, history: &Mutex<History>) -> Status {
        // One generation's routes and groups, or a reload in between could leave a route
        // without its targets.
        let (config, proxy) = reloader.serving().await;
        let active = reloader.metrics().active();
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let traffic = {
            let history = history.lock().unwrap_or_else(PoisonError::into_inner);
            traffic(&config, &history)
        };
        Status {
            schema: STATUS_SCHEMA,
            version: env!("CARGO_PKG_VERSION"),
            generated_unix_ms: unix_ms(SystemTime::now()),
            started_unix_ms: unix_ms(reloader.started()),
            state: if reloader.shutdown().is_signalled() { "draining" } else { "serving" },
            listeners: config.listeners.iter().map(listener).collect(),
            routes: config.routes.iter().map(|r| route(r, &proxy.router, Moment::now())).collect(),
            connections: ConnectionStatus {
                open: count(active.connections),
                parked: count(active.parked),
                tunnels: count(active.tunnels),
                websockets: count(active.websockets),
            },
            reload: reloader.last_reload().map(|record| ReloadStatus {
                at_unix_ms: unix_ms(record.at),
                result: record.result.as_str(),
                message: record.message,
            }),
            traffic,
            ai_usage: ai_usage(&config, &proxy.router, &reloader.metrics().ai, Moment::now()),
        }
    }

    /// The figures of the series for `route` (`None`: the forward proxy), if listed.
    pub fn series(&self, route: Option<&str>) -> Option<&SeriesStatus> {
        self.traffic.series.iter().find(|series| series.route.as_deref() == route)
    }
}

fn listener(listener: &ListenerConfig) -> ListenerStatus {
    ListenerStatus {
        address: listener.address.to_string(),
        modes: listener.modes.to_string(),
        protocol: listener.protocol_label(),
        tls: listener.tls.is_some(),
        auth: listener.modes.forward && listener.policy.auth_required,
    }
}

fn route(route: &RouteConfig, router: &Router, now: Moment) -> RouteStatus {
    let group = router.group_of(route);
    RouteStatus {
        name: route.name.clone(),
        host: route.host.clone(),
        prefix: route.prefix.clone(),
        upstream: route.upstream.to_string(),
        protocol: route.protocol.as_str(),
        upgrades: route.allow_upgrades.clone(),
        rate_limit: route.rate_limit.map(|r| RateStatus { rate: r.rate, burst: r.burst }),
        balance: group.map(|group| group.settings().balance.as_str()),
        targets: group.map_or_else(Vec::new, |group| targets(group, now)),
    }
}

/// Every target of `group` at `now`, as `GET /upstreams` reads them.
fn targets(group: &Group, now: Moment) -> Vec<TargetStatus> {
    let checked = group.settings().health_check.is_some();
    group.targets().members().iter().map(|member| target(member, checked, now)).collect()
}

fn target(member: &Member, checked: bool, now: Moment) -> TargetStatus {
    let (spec, state) = (&member.spec, &member.state);
    let passive = &state.passive;
    let remaining = |until: Option<Moment>| {
        let left = until.filter(|until| *until > now).map(|until| until.since(now).as_millis());
        left.map(|ms| u64::try_from(ms).unwrap_or(u64::MAX))
    };
    let checks_up = state.active.is_healthy();
    let health = if !checks_up {
        TargetHealth::Down
    } else if passive.ejected(now) {
        TargetHealth::Ejected
    } else if passive.cooling(now) {
        TargetHealth::Cooling
    } else {
        TargetHealth::Healthy
    };
    TargetStatus {
        name: spec.name.to_string(),
        url: spec.endpoint.url.to_string(),
        tier: spec.tier,
        weight: spec.weight,
        state: health,
        checks: checked.then_some(if checks_up { "up" } else { "down" }),
        ejected_for_ms: remaining(passive.ejected_until()),
        cooling_for_ms: remaining(passive.cooling_until()),
        consecutive_failures: passive.consecutive_failures(),
        in_flight: state.in_flight(),
        max_in_flight: spec.caps.max_in_flight,
    }
}

/// The AI gateway's use, when a route serves an AI provider.
fn ai_usage(config: &Config, router: &Router, metrics: &AiMetrics, now: Moment) -> Option<AiUsage> {
    if !config.routes.iter().any(|route| route.ai.is_some()) {
        return None;
    }
    let readout = metrics.usage();
    let counts = |t: AiTally| AiCounts {
        requests: t.requests,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        cached_tokens: t.cached_tokens,
    };
    let mut models: Vec<AiModelUsage> = readout
        .models
        .into_iter()
        .map(|(model, t)| AiModelUsage { model, usage: counts(t) })
        .collect();
    models.sort_by_key(|m| std::cmp::Reverse(m.usage.requests));
    let mut virtual_keys: Vec<AiKeyUsage> = readout
        .virtual_keys
        .into_iter()
        .map(|(name, t)| AiKeyUsage { name, usage: counts(t) })
        .collect();
    virtual_keys.sort_by_key(|k| std::cmp::Reverse(k.usage.requests));
    let routes = config
        .routes
        .iter()
        .filter(|route| route.ai.is_some())
        .map(|route| {
            let name: Arc<str> = Arc::from(route.name.as_str());
            let keys = router.group_of(route).map_or_else(Vec::new, |group| {
                let max_rest = group.settings().outlier.max_cooldown;
                group
                    .targets()
                    .members()
                    .iter()
                    .map(|member| provider_key(metrics, &name, member, max_rest, now))
                    .collect()
            });
            AiRouteStatus {
                fallbacks: readout.fallbacks.get(route.name.as_str()).copied().unwrap_or(0),
                route: route.name.clone(),
                keys,
            }
        })
        .collect();
    Some(AiUsage { models, virtual_keys, routes })
}

/// A provider key's state. A removal rests the key like a 429 does, only longer: a rest
/// longer than any 429 can cause (the route's `max_cooldown`) is a removal, and so is any
/// rest of a key that was removed and never cooled.
fn provider_key(
    metrics: &AiMetrics,
    route: &Arc<str>,
    member: &Member,
    max_rest: Duration,
    now: Moment,
) -> AiProviderKey {
    let (cooldowns, removals) = metrics.key_events(route, &member.spec.name);
    let left = member
        .state
        .passive
        .cooling_until()
        .filter(|until| *until > now)
        .map(|until| until.since(now));
    let state = match left {
        None => "ready",
        Some(left) if removals > 0 && (left > max_rest || cooldowns == 0) => "removed",
        Some(_) => "resting",
    };
    AiProviderKey {
        key_id: member.spec.name.to_string(),
        state,
        back_in_ms: left.map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        cooldowns,
        removals,
    }
}

/// A series per configured route name, and one for the forward proxy when a listener serves
/// forward traffic.
fn traffic(config: &Config, history: &History) -> TrafficStatus {
    let mut seen = HashSet::new();
    let mut labels: Vec<Option<&str>> = config
        .routes
        .iter()
        .map(|route| route.name.as_str())
        .filter(|name| seen.insert(*name))
        .map(Some)
        .collect();
    if config.listeners.iter().any(|listener| listener.modes.forward) {
        labels.push(None);
    }
    let series = labels
        .into_iter()
        .map(|name| series(name, &history.series(&name.map(Arc::from))))
        .collect();
    TrafficStatus {
        interval_seconds: SAMPLE_INTERVAL.as_secs(),
        history_seconds: history.capacity_span().as_secs(),
        samples: history.len(),
        end_unix_ms: history.end().map(unix_ms),
        series,
    }
}

fn series(route: Option<&str>, series: &Series) -> SeriesStatus {
    let recent = &series.recent;
    let seconds = recent.window.as_secs_f64();
    SeriesStatus {
        route: route.map(str::to_owned),
        requests: series.samples.iter().map(|s| s.requests).collect(),
        errors: series.samples.iter().map(|s| s.errors).collect(),
        p50_ms: series.samples.iter().map(|s| s.p50.map(millis)).collect(),
        p99_ms: series.samples.iter().map(|s| s.p99.map(millis)).collect(),
        recent: RecentStatus {
            window_seconds: recent.window.as_secs(),
            requests_per_second: if seconds > 0.0 {
                round(recent.requests as f64 / seconds, 1000.0)
            } else {
                0.0
            },
            error_ratio: (recent.requests > 0)
                .then(|| round(recent.errors as f64 / recent.requests as f64, 10_000.0)),
            p50_ms: recent.p50.map(millis),
            p99_ms: recent.p99.map(millis),
        },
    }
}

/// Milliseconds to the microsecond.
fn millis(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0, 1000.0)
}

fn round(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
