//! The AI gateway's configuration: `[gateway]` (virtual keys, and Redis for counters shared
//! between instances) and a route's `[route.ai]` (its provider API, budget, usage, cache,
//! model aliases and tiers), as written in the file, as validated, and as `sluice check`
//! shows them. What the settings do is in `docs/AI-GATEWAY.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::security::Secret;
use super::validate::{Checker, expand_env};
use super::{ConfigIssue, RouteConfig};
use crate::gateway::budget::Budget;
use crate::gateway::provider::Provider;
use crate::gateway::virtual_key::{
    FileVirtualKey, KeySet, ModelPattern, VirtualKey, read_key_file,
};
use crate::state::FailMode;

/// How often a virtual key file is checked for changes.
pub const DEFAULT_VIRTUAL_KEYS_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Time allowed for one Redis operation; past it, the operation counts as failed.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest `timeout` accepted for Redis.
pub const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Redis is left alone after a failure before it is tried again.
pub const DEFAULT_REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `retry_interval` accepted.
pub const MAX_REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// What every Redis key of sluice starts with, so one server can serve other things too.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "sluice:";
/// Largest request body an AI route reads (to find `model`, to send it again on fallback);
/// a larger one is refused with 413 in the provider's shape.
pub const DEFAULT_AI_MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest `max_request_bytes` accepted.
pub const MAX_AI_MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;
/// How long a streamed answer may take to send its first event before the attempt counts as
/// failed and the request falls back (the time-to-first-token timeout).
pub const DEFAULT_FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `first_event_timeout` accepted.
pub const MAX_FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a provider key rests after a `429` that names no time (no `Retry-After`, no
/// rate-limit reset header).
pub const DEFAULT_KEY_COOLDOWN: Duration = Duration::from_secs(5);
/// Longest `key_cooldown` accepted.
pub const MAX_KEY_COOLDOWN: Duration = Duration::from_secs(86_400);
/// How long a provider key that got `401` or `403` stays out of service (a reload that
/// changes the key brings it back at once).
pub const DEFAULT_KEY_REMOVAL: Duration = Duration::from_secs(86_400);
/// Longest `key_removal` accepted.
pub const MAX_KEY_REMOVAL: Duration = Duration::from_secs(30 * 86_400);
/// How long an answer stays in the exact response cache.
pub const DEFAULT_AI_CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest `cache_ttl` accepted.
pub const MAX_AI_CACHE_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Largest request or token budget accepted (a budget larger than this is no budget).
pub const MAX_BUDGET: u64 = 1 << 50;
/// Most model aliases per route or tier.
pub const MAX_MODEL_ALIASES: usize = 256;

/// The validated `[gateway]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Virtual keys given in the configuration (`[[gateway.virtual_key]]`).
    pub virtual_keys: Vec<VirtualKey>,
    /// A file of more virtual keys, read again when it changes.
    pub virtual_keys_file: Option<PathBuf>,
    /// How often that file is checked.
    pub virtual_keys_check_interval: Duration,
    /// Redis for counters shared between instances; in memory when absent.
    pub redis: Option<RedisConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            virtual_keys: Vec::new(),
            virtual_keys_file: None,
            virtual_keys_check_interval: DEFAULT_VIRTUAL_KEYS_CHECK_INTERVAL,
            redis: None,
        }
    }
}

/// `[gateway.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, with `${VAR}` expanded; a secret, since it may
    /// hold a password.
    pub url: Secret,
    /// `host:port`, for logs.
    pub address: String,
    /// What every key starts with.
    pub key_prefix: String,
    /// Time allowed per operation.
    pub timeout: Duration,
    /// How long Redis is left alone after a failure.
    pub retry_interval: Duration,
    /// What to do while Redis cannot be reached.
    pub on_failure: FailMode,
}

/// A route's `[route.ai]`: it serves an AI provider's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiRoute {
    /// The API its upstream speaks (tier 0's, when tiers differ).
    pub provider: Provider,
    /// Whether clients must present a virtual key.
    pub virtual_keys: bool,
    /// Whether `stream_options.include_usage` is added to streamed OpenAI-format requests
    /// that lack it (and the usage-only chunk removed from what the client sees).
    pub include_usage: bool,
    /// Largest request body read.
    pub max_request_bytes: u64,
    /// Time to the first event of a streamed answer before the attempt fails.
    pub first_event_timeout: Duration,
    /// Rest of a key after a `429` that names no time.
    pub key_cooldown: Duration,
    /// Time a key refused with `401`/`403` stays out of service.
    pub key_removal: Duration,
    /// The route's own budget, across all its clients.
    pub budget: Budget,
    /// The exact response cache's time to live, when the cache is on.
    pub cache_ttl: Option<Duration>,
    /// Model aliases: a requested name and the model tier 0 (and every tier without its own
    /// alias for it) is asked for.
    pub aliases: BTreeMap<String, String>,
    /// Provider tiers beyond the first, with their own API and model names.
    pub tiers: Vec<AiTier>,
}

/// `[[route.ai.tier]]`: how a fallback tier (the route's targets of that tier) is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiTier {
    /// The tier's number (its targets' `tier`).
    pub tier: u8,
    /// The API of its provider.
    pub provider: Provider,
    /// Requested model names and what this tier is asked for instead.
    pub aliases: BTreeMap<String, String>,
    /// When not empty, the requested models this tier serves (others skip it).
    pub serves: Vec<ModelPattern>,
}

impl AiRoute {
    /// The provider of `tier`.
    pub fn provider_of(&self, tier: u8) -> Provider {
        self.tier(tier).map_or(self.provider, |t| t.provider)
    }

    /// The settings of tier `tier` beyond the first, if configured.
    pub fn tier(&self, tier: u8) -> Option<&AiTier> {
        self.tiers.iter().find(|t| t.tier == tier)
    }

    /// The model `tier` is asked for when the client asked for `requested`.
    pub fn model_for<'a>(&'a self, tier: u8, requested: &'a str) -> &'a str {
        self.tier(tier)
            .and_then(|t| t.aliases.get(requested))
            .or_else(|| self.aliases.get(requested))
            .map_or(requested, String::as_str)
    }

    /// Whether `tier` serves requests for `requested` (a tier without `serves` serves all).
    pub fn serves(&self, tier: u8, requested: Option<&str>) -> bool {
        match (self.tier(tier), requested) {
            (Some(t), Some(model)) if !t.serves.is_empty() => {
                t.serves.iter().any(|pattern| pattern.matches(model))
            }
            (Some(t), None) => t.serves.is_empty(),
            _ => true,
        }
    }
}

/// The `[gateway]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGateway {
    /// `[[gateway.virtual_key]]` tables.
    #[serde(default, rename = "virtual_key")]
    pub virtual_keys: Vec<FileVirtualKey>,
    /// A TOML file of `[[key]]` tables, re-read when it changes.
    pub virtual_keys_file: Option<Spanned<String>>,
    /// How often that file is checked.
    pub virtual_keys_check_interval: Option<Spanned<String>>,
    /// `[gateway.redis]`.
    pub redis: Option<FileRedis>,
}

/// The `[gateway.redis]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// `redis://…` URL; `${VAR}` is expanded.
    pub url: Spanned<String>,
    /// Key prefix.
    pub key_prefix: Option<Spanned<String>>,
    /// Time allowed per operation.
    pub timeout: Option<Spanned<String>>,
    /// Time Redis is left alone after a failure.
    pub retry_interval: Option<Spanned<String>>,
    /// `open` or `closed`.
    pub on_failure: Option<Spanned<String>>,
}

/// The `[route.ai]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAiRoute {
    /// `openai`, `anthropic` or `openai-compatible`.
    pub provider: Spanned<String>,
    /// Require a virtual key.
    pub virtual_keys: Option<bool>,
    /// Add `stream_options.include_usage` to streams.
    pub include_usage: Option<bool>,
    /// Largest request body read.
    pub max_request_bytes: Option<Spanned<i64>>,
    /// Time-to-first-token timeout.
    pub first_event_timeout: Option<Spanned<String>>,
    /// Rest of a key after a 429 without a time.
    pub key_cooldown: Option<Spanned<String>>,
    /// Time a refused key stays out.
    pub key_removal: Option<Spanned<String>>,
    /// Route budget: requests per minute.
    pub requests_per_minute: Option<Spanned<i64>>,
    /// Route budget: tokens per minute.
    pub tokens_per_minute: Option<Spanned<i64>>,
    /// Route budget: tokens per UTC day.
    pub tokens_per_day: Option<Spanned<i64>>,
    /// Exact response cache.
    pub cache: Option<bool>,
    /// Its time to live.
    pub cache_ttl: Option<Spanned<String>>,
    /// Model aliases.
    #[serde(default)]
    pub models: BTreeMap<String, Spanned<String>>,
    /// `[[route.ai.tier]]` tables.
    #[serde(default, rename = "tier")]
    pub tiers: Vec<FileAiTier>,
}

/// One `[[route.ai.tier]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAiTier {
    /// The tier number.
    pub tier: Spanned<i64>,
    /// Its provider API; the route's when absent.
    pub provider: Option<Spanned<String>>,
    /// Model aliases of this tier.
    #[serde(default)]
    pub models: BTreeMap<String, Spanned<String>>,
    /// The requested models this tier serves.
    #[serde(default)]
    pub serves: Vec<Spanned<String>>,
}

impl Checker<'_> {
    /// The `[gateway]` section.
    pub(super) fn gateway(&mut self, file: &FileGateway) -> GatewayConfig {
        let mut virtual_keys = Vec::new();
        for (index, key) in file.virtual_keys.iter().enumerate() {
            match key.to_key() {
                Ok(key) => virtual_keys.push(key),
                Err(message) => self.issues.push(ConfigIssue {
                    line: None,
                    key: format!("gateway.virtual_key[{index}]"),
                    message,
                }),
            }
        }
        let virtual_keys_file = file.virtual_keys_file.as_ref().map(|path| {
            let resolved = self.path(path);
            let keys = read_key_file(&resolved).map_err(|err| err.to_string());
            let all = keys.and_then(|keys| {
                let mut all = virtual_keys.clone();
                all.extend(keys);
                KeySet::new(all).map(|_| ()).map_err(|err| err.to_string())
            });
            if let Err(message) = all {
                self.report(path.span(), "gateway.virtual_keys_file", message);
            }
            resolved
        });
        if let (None, Err(err)) = (&virtual_keys_file, KeySet::new(virtual_keys.clone())) {
            self.issues.push(ConfigIssue {
                line: None,
                key: "gateway.virtual_key".to_owned(),
                message: err.to_string(),
            });
        }
        GatewayConfig {
            virtual_keys,
            virtual_keys_file,
            virtual_keys_check_interval: self.bounded_duration(
                "gateway.virtual_keys_check_interval",
                &file.virtual_keys_check_interval,
                DEFAULT_VIRTUAL_KEYS_CHECK_INTERVAL,
                Duration::from_secs(3600),
            ),
            redis: file.redis.as_ref().and_then(|redis| self.redis(redis)),
        }
    }

    fn redis(&mut self, file: &FileRedis) -> Option<RedisConfig> {
        let url = match expand_env(file.url.get_ref(), self.env) {
            Ok((url, _)) => url,
            Err(message) => {
                self.report(file.url.span(), "gateway.redis.url", message);
                return None;
            }
        };
        let address = url.rsplit('@').next().unwrap_or_default();
        let address = address
            .strip_prefix("redis://")
            .unwrap_or(address)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !url.starts_with("redis://") || address.is_empty() {
            self.report(
                file.url.span(),
                "gateway.redis.url",
                "must be redis://[:password@]host:port[/db]".to_owned(),
            );
            return None;
        }
        let on_failure = match &file.on_failure {
            None => FailMode::default(),
            Some(text) => FailMode::parse(text.get_ref()).unwrap_or_else(|| {
                self.report(
                    text.span(),
                    "gateway.redis.on_failure",
                    format!("`{}` is not one of \"open\", \"closed\"", text.get_ref()),
                );
                FailMode::default()
            }),
        };
        Some(RedisConfig {
            url: Secret::new(url),
            address,
            key_prefix: file
                .key_prefix
                .as_ref()
                .map_or(DEFAULT_REDIS_KEY_PREFIX.to_owned(), |p| p.get_ref().clone()),
            timeout: self.bounded_duration(
                "gateway.redis.timeout",
                &file.timeout,
                DEFAULT_REDIS_TIMEOUT,
                MAX_REDIS_TIMEOUT,
            ),
            retry_interval: self.bounded_duration(
                "gateway.redis.retry_interval",
                &file.retry_interval,
                DEFAULT_REDIS_RETRY_INTERVAL,
                MAX_REDIS_RETRY_INTERVAL,
            ),
            on_failure,
        })
    }

    /// A route's `[route.ai]`.
    pub(super) fn ai_route(&mut self, key: &str, file: &FileAiRoute) -> Option<AiRoute> {
        let provider = self.provider(&format!("{key}.ai.provider"), &file.provider)?;
        let budget = Budget {
            requests_per_minute: self
                .budget(&format!("{key}.ai.requests_per_minute"), &file.requests_per_minute),
            tokens_per_minute: self
                .budget(&format!("{key}.ai.tokens_per_minute"), &file.tokens_per_minute),
            tokens_per_day: self.budget(&format!("{key}.ai.tokens_per_day"), &file.tokens_per_day),
        };
        let max_request_bytes = self.count(
            &format!("{key}.ai.max_request_bytes"),
            file.max_request_bytes.clone(),
            DEFAULT_AI_MAX_REQUEST_BYTES,
            1024..=MAX_AI_MAX_REQUEST_BYTES,
        );
        let cache_ttl = file.cache.unwrap_or(false).then(|| {
            self.bounded_duration(
                &format!("{key}.ai.cache_ttl"),
                &file.cache_ttl,
                DEFAULT_AI_CACHE_TTL,
                MAX_AI_CACHE_TTL,
            )
        });
        let aliases = self.aliases(&format!("{key}.ai.models"), &file.models);
        let mut tiers = Vec::new();
        for (index, tier) in file.tiers.iter().enumerate() {
            let tier_key = format!("{key}.ai.tier[{index}]");
            let number = match u8::try_from(*tier.tier.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.report(
                        tier.tier.span(),
                        &format!("{tier_key}.tier"),
                        format!("must be a tier from 1 up, got {}", tier.tier.get_ref()),
                    );
                    continue;
                }
            };
            if tiers.iter().any(|t: &AiTier| t.tier == number) {
                self.report(
                    tier.tier.span(),
                    &format!("{tier_key}.tier"),
                    format!("tier {number} is configured twice"),
                );
                continue;
            }
            let tier_provider = match &tier.provider {
                Some(text) => self.provider(&format!("{tier_key}.provider"), text)?,
                None => provider,
            };
            if tier_provider.is_openai_format() != provider.is_openai_format() {
                // sluice passes requests through; it does not translate between formats.
                if let Some(text) = &tier.provider {
                    self.report(
                        text.span(),
                        &format!("{tier_key}.provider"),
                        format!(
                            "`{}` speaks another format than the route's `{}`: a fallback \
                             tier must accept the same requests",
                            tier_provider.as_str(),
                            provider.as_str()
                        ),
                    );
                }
                continue;
            }
            tiers.push(AiTier {
                tier: number,
                provider: tier_provider,
                aliases: self.aliases(&format!("{tier_key}.models"), &tier.models),
                serves: tier.serves.iter().map(|p| ModelPattern::parse(p.get_ref())).collect(),
            });
        }
        Some(AiRoute {
            provider,
            virtual_keys: file.virtual_keys.unwrap_or(true),
            include_usage: file.include_usage.unwrap_or(true),
            max_request_bytes,
            first_event_timeout: self.bounded_duration(
                &format!("{key}.ai.first_event_timeout"),
                &file.first_event_timeout,
                DEFAULT_FIRST_EVENT_TIMEOUT,
                MAX_FIRST_EVENT_TIMEOUT,
            ),
            key_cooldown: self.bounded_duration(
                &format!("{key}.ai.key_cooldown"),
                &file.key_cooldown,
                DEFAULT_KEY_COOLDOWN,
                MAX_KEY_COOLDOWN,
            ),
            key_removal: self.bounded_duration(
                &format!("{key}.ai.key_removal"),
                &file.key_removal,
                DEFAULT_KEY_REMOVAL,
                MAX_KEY_REMOVAL,
            ),
            budget,
            cache_ttl,
            aliases,
            tiers,
        })
    }

    fn provider(&mut self, key: &str, text: &Spanned<String>) -> Option<Provider> {
        let provider = Provider::parse(text.get_ref());
        if provider.is_none() {
            self.report(
                text.span(),
                key,
                format!(
                    "`{}` is not one of \"openai\", \"anthropic\", \"openai-compatible\"",
                    text.get_ref()
                ),
            );
        }
        provider
    }

    fn budget(&mut self, key: &str, value: &Option<Spanned<i64>>) -> Option<u64> {
        let value = value.as_ref()?;
        let budget = self.count(key, Some(value.clone()), 0, 1..=MAX_BUDGET);
        (budget > 0).then_some(budget)
    }

    fn aliases(
        &mut self,
        key: &str,
        file: &BTreeMap<String, Spanned<String>>,
    ) -> BTreeMap<String, String> {
        if file.len() > MAX_MODEL_ALIASES {
            self.issues.push(ConfigIssue {
                line: None,
                key: key.to_owned(),
                message: format!("at most {MAX_MODEL_ALIASES} aliases, got {}", file.len()),
            });
        }
        file.iter()
            .take(MAX_MODEL_ALIASES)
            .filter_map(|(alias, model)| {
                if model.get_ref().is_empty() {
                    self.report(model.span(), &format!("{key}.{alias}"), "is empty".to_owned());
                    return None;
                }
                Some((alias.clone(), model.get_ref().clone()))
            })
            .collect()
    }

    /// A duration longer than zero and at most `max`; `default` when absent or invalid.
    fn bounded_duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        self.duration(key, value.clone(), default, max)
    }
}

/// The `gateway:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, gateway: &GatewayConfig, routes: &[RouteConfig]) {
    let ai_routes: Vec<(&RouteConfig, &AiRoute)> =
        routes.iter().filter_map(|route| route.ai.as_ref().map(|ai| (route, ai))).collect();
    if ai_routes.is_empty() && gateway.virtual_keys.is_empty() && gateway.redis.is_none() {
        return;
    }
    let d = |d| humantime::format_duration(d).to_string();
    let _ = writeln!(out, "\ngateway:");
    let _ = writeln!(
        out,
        "  virtual keys: {} in the config{}",
        gateway.virtual_keys.len(),
        gateway.virtual_keys_file.as_ref().map_or(String::new(), |file| format!(
            ", more in {} (checked every {})",
            file.display(),
            d(gateway.virtual_keys_check_interval)
        )),
    );
    for key in &gateway.virtual_keys {
        let budget = &key.budget.budget;
        let _ = writeln!(
            out,
            "    {:<16} routes [{}], models [{}], {}",
            key.name,
            key.routes.join(", "),
            key.models.iter().map(pattern).collect::<Vec<_>>().join(", "),
            budget_text(budget),
        );
    }
    match &gateway.redis {
        None => {
            let _ = writeln!(out, "  counters: in memory (this instance only)");
        }
        Some(redis) => {
            let _ = writeln!(
                out,
                "  counters: redis {} (prefix {}, timeout {}, retry after {}, fail {})",
                redis.address,
                redis.key_prefix,
                d(redis.timeout),
                d(redis.retry_interval),
                redis.on_failure.as_str(),
            );
        }
    }
    for (route, ai) in ai_routes {
        let _ = writeln!(
            out,
            "  route {}: {} API, virtual keys {}, include_usage {}, body up to {} bytes, \
             first event within {}, {}, cache {}",
            route.name,
            ai.provider.as_str(),
            if ai.virtual_keys { "required" } else { "off" },
            ai.include_usage,
            ai.max_request_bytes,
            d(ai.first_event_timeout),
            budget_text(&ai.budget),
            ai.cache_ttl.map_or("off".to_owned(), |ttl| format!("ttl {}", d(ttl))),
        );
        if let Some(group) = &route.group {
            // The AI send phase decides by the provider's answers, not by the retry lists.
            let _ = writeln!(
                out,
                "    attempts: up to {} per request over the key pool and tiers, on 429, 401/403, \
                 5xx, failed connections and streams failing before their first event \
                 (retry statuses and methods do not apply)",
                group.retry.max_attempts
            );
        }
        for (alias, model) in &ai.aliases {
            let _ = writeln!(out, "    model {alias} -> {model}");
        }
        for tier in &ai.tiers {
            let _ = writeln!(
                out,
                "    tier {}: {} API{}",
                tier.tier,
                tier.provider.as_str(),
                if tier.serves.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", serves [{}]",
                        tier.serves.iter().map(pattern).collect::<Vec<_>>().join(", ")
                    )
                },
            );
            for (alias, model) in &tier.aliases {
                let _ = writeln!(out, "      model {alias} -> {model}");
            }
        }
    }
}

fn pattern(pattern: &ModelPattern) -> String {
    match pattern {
        ModelPattern::Exact(name) => name.clone(),
        ModelPattern::Prefix(prefix) => format!("{prefix}*"),
    }
}

fn budget_text(budget: &Budget) -> String {
    let part = |value: Option<u64>, unit: &str| value.map(|v| format!("{v} {unit}"));
    let parts: Vec<String> = [
        part(budget.requests_per_minute, "requests/min"),
        part(budget.tokens_per_minute, "tokens/min"),
        part(budget.tokens_per_day, "tokens/day"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() { "no budget".to_owned() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::super::load::{no_env, parse_and_validate, refused};
    use super::*;
    use crate::gateway::virtual_key::hash;

    #[test]
    fn an_ai_route_with_keys_budgets_tiers_and_redis() {
        let env = |name: &str| (name == "REDIS_PASSWORD").then(|| "hunter2".to_owned());
        let text = format!(
            "[gateway]\n\
             [[gateway.virtual_key]]\nname = \"alice\"\nhash = \"{}\"\nroutes = [\"chat\"]\n\
             models = [\"gpt-*\"]\ntokens_per_day = 1000\n\
             [gateway.redis]\nurl = \"redis://:${{REDIS_PASSWORD}}@10.0.0.5:6379/2\"\n\
             on_failure = \"closed\"\ntimeout = \"50ms\"\n\
             [[route]]\nname = \"chat\"\nprefix = \"/v1\"\nupstream = \"https://api.openai.com/v1\"\n\
             [route.ai]\nprovider = \"openai\"\nrequests_per_minute = 600\ncache = true\n\
             models = {{ fast = \"gpt-4o-mini\" }}\n\
             [[route.ai.tier]]\ntier = 1\nprovider = \"openai-compatible\"\n\
             models = {{ fast = \"claude-3-5-haiku\" }}\nserves = [\"fast\", \"gpt-4o*\"]\n",
            hash("sk-alice")
        );
        let config = parse_and_validate(&text, &env).unwrap();
        let gateway = &config.gateway;
        assert_eq!(gateway.virtual_keys.len(), 1);
        assert_eq!(gateway.virtual_keys[0].budget.budget.tokens_per_day, Some(1000));
        let redis = gateway.redis.as_ref().unwrap();
        assert_eq!(redis.address, "10.0.0.5:6379");
        assert_eq!(redis.url.expose(), "redis://:hunter2@10.0.0.5:6379/2");
        assert_eq!(redis.on_failure, FailMode::Closed);
        assert_eq!(redis.timeout, Duration::from_millis(50));
        assert_eq!(redis.retry_interval, DEFAULT_REDIS_RETRY_INTERVAL);
        let ai = config.routes[0].ai.as_ref().unwrap();
        assert_eq!(ai.provider, Provider::OpenAi);
        assert!(ai.virtual_keys && ai.include_usage);
        assert_eq!(ai.budget.requests_per_minute, Some(600));
        assert_eq!(ai.cache_ttl, Some(DEFAULT_AI_CACHE_TTL));
        assert_eq!(ai.provider_of(1), Provider::OpenAiCompatible);
        assert_eq!(ai.key_cooldown, DEFAULT_KEY_COOLDOWN);
        assert_eq!(ai.model_for(0, "fast"), "gpt-4o-mini");
        assert_eq!(ai.model_for(1, "fast"), "claude-3-5-haiku");
        assert_eq!(ai.model_for(1, "gpt-4o"), "gpt-4o");
        assert!(ai.serves(1, Some("fast")) && ai.serves(1, Some("gpt-4o-mini")));
        assert!(!ai.serves(1, Some("o3")) && ai.serves(0, Some("o3")));

        let summary = crate::config::summary::effective(&config, "x.toml");
        assert!(summary.contains("route chat: openai API"), "{summary}");
        assert!(summary.contains("model fast -> gpt-4o-mini"), "{summary}");
        assert!(summary.contains("counters: redis 10.0.0.5:6379"), "{summary}");
        assert!(!summary.contains("hunter2") && !summary.contains("sha256"), "{summary}");
    }

    #[test]
    fn bad_gateway_settings_are_named() {
        let found = refused(
            "[gateway]\nvirtual_keys_check_interval = \"0s\"\n\
             [[gateway.virtual_key]]\nname = \"a\"\nhash = \"md5:00\"\n\
             [gateway.redis]\nurl = \"http://x\"\n\
             [[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\n\
             [route.ai]\nprovider = \"gemini\"\n\
             [[route]]\nprefix = \"/b\"\nupstream = \"http://h\"\n\
             [route.ai]\nprovider = \"openai\"\ntokens_per_day = 0\nmax_request_bytes = 10\n\
             first_event_timeout = \"2h\"\n\
             [[route.ai.tier]]\ntier = 0\n\
             [[route.ai.tier]]\ntier = 2\nprovider = \"anthropic\"\n",
        );
        let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gateway.virtual_key[0]",
                "gateway.virtual_keys_check_interval",
                "gateway.redis.url",
                "route[0].ai.provider",
                "route[1].ai.tokens_per_day",
                "route[1].ai.max_request_bytes",
                "route[1].ai.tier[0].tier",
                "route[1].ai.tier[1].provider",
                "route[1].ai.first_event_timeout",
            ]
        );
    }

    #[test]
    fn duplicate_virtual_keys_are_refused() {
        let text = format!(
            "[[gateway.virtual_key]]\nname = \"a\"\nhash = \"{h}\"\n\
             [[gateway.virtual_key]]\nname = \"b\"\nhash = \"{h}\"\n",
            h = hash("same")
        );
        let found = parse_and_validate(&text, &no_env).unwrap_err();
        assert!(found[0].message.contains("same digest"), "{}", found[0].message);
    }

    #[test]
    fn keeping_clients_on_a_key_needs_their_virtual_keys() {
        let targets =
            "[[route.target]]\nurl = \"http://a\"\n[[route.target]]\nurl = \"http://b\"\n";
        let sticky = "balance = \"hash\"\nhash_on = \"virtual_key\"\n";
        let found = refused(&format!("[[route]]\nprefix = \"/a\"\n{sticky}{targets}"));
        assert_eq!(found[0].key, "route[0].hash_on");
        assert!(found[0].message.contains("[route.ai]"), "{}", found[0].message);
        let open = format!(
            "[[route]]\nprefix = \"/a\"\n{sticky}[route.ai]\nprovider = \"openai\"\n\
             virtual_keys = false\n{targets}"
        );
        assert_eq!(refused(&open)[0].key, "route[0].hash_on");
        let valid = format!(
            "[[route]]\nprefix = \"/a\"\n{sticky}[route.ai]\nprovider = \"openai\"\n{targets}"
        );
        assert!(parse_and_validate(&valid, &no_env).is_ok());
    }
}
