//! `[cache]`: the shared HTTP cache's store and rules, as written in the file, as validated,
//! and as `sluice check` shows them. Which traffic is cached is switched per route
//! (`cache = true` on a `[[route]]`) and per listener for the forward proxy's plain `http://`
//! requests (`cache = true` on a `[[listener]]`); all of them share the one store.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// Default bound of the memory the store holds: 256 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `max_bytes` accepted: 1 TiB.
pub const MAX_CACHE_MAX_BYTES: u64 = 1 << 40;
/// Default largest response body stored: 16 MiB; larger ones pass through unstored.
pub const DEFAULT_CACHE_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// `max_object_bytes` may be at most this share of `max_bytes` (one in four), so one object
/// never needs most of the store.
pub const CACHE_OBJECTS_PER_STORE: u64 = 4;
/// Default bound of the disk tier's files, when `disk_dir` turns it on: 1 GiB.
pub const DEFAULT_CACHE_DISK_MAX_BYTES: u64 = 1 << 30;
/// Smallest `disk_max_bytes` accepted: 1 MiB.
pub const MIN_CACHE_DISK_MAX_BYTES: u64 = 1 << 20;
/// Largest `disk_max_bytes` accepted: 64 TiB.
pub const MAX_CACHE_DISK_MAX_BYTES: u64 = 1 << 46;
/// Default number of variants (by `Vary`) kept per URI.
pub const DEFAULT_CACHE_MAX_VARIANTS: u64 = 8;
/// Largest `max_variants` accepted.
pub const MAX_CACHE_MAX_VARIANTS: u64 = 64;
/// Default time a request waits for another request's response for the same URI.
pub const DEFAULT_COLLAPSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `collapse_timeout` accepted.
pub const MAX_COLLAPSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time allowed to finish storing a response after its first client went away.
pub const DEFAULT_FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `fill_timeout` accepted.
pub const MAX_FILL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default number of background tasks (refreshes, fills whose client left, disk writes) the
/// cache runs at once.
pub const DEFAULT_CACHE_MAX_BACKGROUND: u64 = 64;
/// Largest `max_background` accepted.
pub const MAX_CACHE_MAX_BACKGROUND: u64 = 4096;
/// Default share (percent) of the time since `Last-Modified` used as heuristic freshness.
pub const DEFAULT_HEURISTIC_PERCENT: u64 = 10;
/// Default cap on heuristic freshness: one day.
pub const DEFAULT_MAX_HEURISTIC: Duration = Duration::from_secs(86_400);
/// Longest `max_heuristic` accepted: one year.
pub const MAX_MAX_HEURISTIC: Duration = Duration::from_secs(365 * 86_400);
/// Longest `cache_stale_when_down` accepted: one week.
pub const MAX_STALE_WHEN_DOWN: Duration = Duration::from_secs(7 * 86_400);
/// Default name of this cache in `Cache-Status` (RFC 9211).
pub const DEFAULT_CACHE_NAME: &str = "sluice";

/// The validated `[cache]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound of the store's memory, in bytes (bodies, header fields and bookkeeping).
    pub max_bytes: u64,
    /// Largest response body stored.
    pub max_object_bytes: u64,
    /// Variants kept per URI.
    pub max_variants: usize,
    /// How long a request waits for another one's response before asking the origin itself.
    pub collapse_timeout: Duration,
    /// How long a response may take to finish storing after its first client went away.
    pub fill_timeout: Duration,
    /// Background tasks (refreshes, fills whose client left, disk writes) run at once.
    pub max_background: usize,
    /// Percentage of (Date − Last-Modified) used as heuristic freshness; 0 turns it off.
    pub heuristic_percent: u32,
    /// Cap on heuristic freshness.
    pub max_heuristic: Duration,
    /// Targeted cache-control fields obeyed instead of Cache-Control (RFC 9213), first first.
    pub targeted_fields: Vec<HeaderName>,
    /// This cache's name in `Cache-Status`.
    pub name: String,
    /// Whether responses carry `Cache-Status`.
    pub cache_status: bool,
    /// The directory of the disk tier; `None` (the default) keeps the cache in memory only.
    pub disk_dir: Option<PathBuf>,
    /// Bound of the disk tier's files, in bytes.
    pub disk_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_object_bytes: DEFAULT_CACHE_MAX_OBJECT_BYTES,
            max_variants: DEFAULT_CACHE_MAX_VARIANTS as usize,
            collapse_timeout: DEFAULT_COLLAPSE_TIMEOUT,
            fill_timeout: DEFAULT_FILL_TIMEOUT,
            max_background: DEFAULT_CACHE_MAX_BACKGROUND as usize,
            heuristic_percent: DEFAULT_HEURISTIC_PERCENT as u32,
            max_heuristic: DEFAULT_MAX_HEURISTIC,
            targeted_fields: Vec::new(),
            name: DEFAULT_CACHE_NAME.to_owned(),
            cache_status: true,
            disk_dir: None,
            disk_max_bytes: DEFAULT_CACHE_DISK_MAX_BYTES,
        }
    }
}

/// A route's caching, from its `cache` keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCache {
    /// Whether the route's responses are cached.
    pub enabled: bool,
    /// How long past its freshness a stored response may stand in when the upstream is down
    /// or failing (beyond what `stale-if-error` grants); `None`: only what responses grant.
    pub stale_when_down: Option<Duration>,
}

/// The `[cache]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    /// Bound of the store's memory, in bytes.
    pub max_bytes: Option<Spanned<i64>>,
    /// Largest response body stored, in bytes.
    pub max_object_bytes: Option<Spanned<i64>>,
    /// Variants kept per URI.
    pub max_variants: Option<Spanned<i64>>,
    /// Wait for another request's response.
    pub collapse_timeout: Option<Spanned<String>>,
    /// Finishing a response after its first client left.
    pub fill_timeout: Option<Spanned<String>>,
    /// Background tasks at once.
    pub max_background: Option<Spanned<i64>>,
    /// Heuristic freshness, percent of the time since Last-Modified.
    pub heuristic_percent: Option<Spanned<i64>>,
    /// Cap on heuristic freshness.
    pub max_heuristic: Option<Spanned<String>>,
    /// Targeted cache-control fields, e.g. ["CDN-Cache-Control"].
    pub targeted_fields: Option<Vec<Spanned<String>>>,
    /// Name in Cache-Status.
    pub name: Option<Spanned<String>>,
    /// Send Cache-Status.
    pub cache_status: Option<bool>,
    /// Directory of the disk tier.
    pub disk_dir: Option<Spanned<String>>,
    /// Bound of the disk tier, in bytes.
    pub disk_max_bytes: Option<Spanned<i64>>,
}

impl Checker<'_> {
    /// The `[cache]` section.
    pub(super) fn cache(&mut self, file: &FileCache) -> CacheConfig {
        let d = CacheConfig::default();
        let max_bytes = self.cache_count(
            "cache.max_bytes",
            &file.max_bytes,
            d.max_bytes,
            1 << 20,
            MAX_CACHE_MAX_BYTES,
        );
        let object_limit = max_bytes / CACHE_OBJECTS_PER_STORE;
        let max_object_bytes = self.cache_count(
            "cache.max_object_bytes",
            &file.max_object_bytes,
            d.max_object_bytes.min(object_limit),
            1,
            object_limit,
        );
        let max_variants = self.cache_count(
            "cache.max_variants",
            &file.max_variants,
            DEFAULT_CACHE_MAX_VARIANTS,
            1,
            MAX_CACHE_MAX_VARIANTS,
        );
        let max_background = self.cache_count(
            "cache.max_background",
            &file.max_background,
            DEFAULT_CACHE_MAX_BACKGROUND,
            1,
            MAX_CACHE_MAX_BACKGROUND,
        );
        let heuristic_percent = self.cache_count(
            "cache.heuristic_percent",
            &file.heuristic_percent,
            DEFAULT_HEURISTIC_PERCENT,
            0,
            100,
        );
        let targeted_fields = file
            .targeted_fields
            .iter()
            .flatten()
            .filter_map(|name| match HeaderName::from_bytes(name.get_ref().trim().as_bytes()) {
                Ok(field) => Some(field),
                Err(_) => {
                    self.report(
                        name.span(),
                        "cache.targeted_fields",
                        format!("`{}` is not a header field name", name.get_ref()),
                    );
                    None
                }
            })
            .collect();
        let name = match &file.name {
            Some(name)
                if name.get_ref().is_empty()
                    || !name.get_ref().chars().all(|c| c.is_ascii_graphic()) =>
            {
                self.report(
                    name.span(),
                    "cache.name",
                    format!("`{}` must be printable ASCII without spaces", name.get_ref()),
                );
                d.name
            }
            Some(name) => name.get_ref().clone(),
            None => d.name,
        };
        let disk_max_bytes = self.cache_count(
            "cache.disk_max_bytes",
            &file.disk_max_bytes,
            d.disk_max_bytes,
            MIN_CACHE_DISK_MAX_BYTES,
            MAX_CACHE_DISK_MAX_BYTES,
        );
        let disk_dir = match (&file.disk_dir, &file.disk_max_bytes) {
            (Some(dir), _) if dir.get_ref().trim().is_empty() => {
                self.report(dir.span(), "cache.disk_dir", "must name a directory".to_owned());
                None
            }
            (Some(dir), _) => Some(PathBuf::from(dir.get_ref())),
            (None, Some(bound)) => {
                self.report(
                    bound.span(),
                    "cache.disk_max_bytes",
                    "bounds the disk tier, which only `disk_dir` turns on".to_owned(),
                );
                None
            }
            (None, None) => None,
        };
        CacheConfig {
            max_bytes,
            max_object_bytes,
            max_variants: usize::try_from(max_variants).unwrap_or(usize::MAX),
            collapse_timeout: self.cache_duration(
                "cache.collapse_timeout",
                &file.collapse_timeout,
                d.collapse_timeout,
                MAX_COLLAPSE_TIMEOUT,
            ),
            fill_timeout: self.cache_duration(
                "cache.fill_timeout",
                &file.fill_timeout,
                d.fill_timeout,
                MAX_FILL_TIMEOUT,
            ),
            max_background: usize::try_from(max_background).unwrap_or(usize::MAX),
            heuristic_percent: u32::try_from(heuristic_percent).unwrap_or(100),
            max_heuristic: self.cache_duration(
                "cache.max_heuristic",
                &file.max_heuristic,
                d.max_heuristic,
                MAX_MAX_HEURISTIC,
            ),
            targeted_fields,
            name,
            cache_status: file.cache_status.unwrap_or(true),
            disk_dir,
            disk_max_bytes,
        }
    }

    /// A route's `cache` and `cache_stale_when_down` keys.
    pub(super) fn route_cache(
        &mut self,
        key: &str,
        enabled: Option<bool>,
        stale_when_down: &Option<Spanned<String>>,
    ) -> RouteCache {
        let stale_when_down = stale_when_down.as_ref().map(|_| {
            self.cache_duration(
                &format!("{key}.cache_stale_when_down"),
                stale_when_down,
                Duration::ZERO,
                MAX_STALE_WHEN_DOWN,
            )
        });
        RouteCache {
            enabled: enabled.unwrap_or(false),
            stale_when_down: stale_when_down.filter(|d| !d.is_zero()),
        }
    }

    /// A whole number within `min..=max`; `default` when absent or out of range.
    fn cache_count(
        &mut self,
        key: &str,
        value: &Option<Spanned<i64>>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let Some(value) = value else { return default };
        match u64::try_from(*value.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.report(
                    value.span(),
                    key,
                    format!("must be between {min} and {max}, got {}", value.get_ref()),
                );
                default
            }
        }
    }

    /// A duration such as `"10s"`, longer than zero and at most `max`; `default` when absent
    /// or invalid.
    fn cache_duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(parsed) if !parsed.is_zero() && parsed <= max => parsed,
            Ok(_) => {
                self.report(
                    value.span(),
                    key,
                    format!(
                        "must be longer than zero and at most {}",
                        humantime::format_duration(max)
                    ),
                );
                default
            }
            Err(err) => {
                self.report(
                    value.span(),
                    key,
                    format!(
                        "`{}` is not a duration ({err}); write e.g. \"10s\" or \"5m\"",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }
}

/// The `cache:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, config: &super::Config) {
    let routes: Vec<&str> = config
        .routes
        .iter()
        .filter(|route| route.cache.enabled)
        .map(|route| route.name.as_str())
        .collect();
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .filter(|listener| listener.cache && listener.modes.forward)
        .map(|listener| listener.address.to_string())
        .collect();
    if routes.is_empty() && listeners.is_empty() {
        return;
    }
    let c = &config.cache;
    let d = |d| humantime::format_duration(d).to_string();
    let _ = writeln!(
        out,
        "\ncache: {} bytes, objects up to {} bytes, {} variants per URI, collapse {}, fill {}, \
         {} background tasks, heuristic {}% up to {}, Cache-Status {}",
        c.max_bytes,
        c.max_object_bytes,
        c.max_variants,
        d(c.collapse_timeout),
        d(c.fill_timeout),
        c.max_background,
        c.heuristic_percent,
        d(c.max_heuristic),
        if c.cache_status { format!("as {}", c.name) } else { "off".to_owned() },
    );
    if let Some(dir) = &c.disk_dir {
        let _ = writeln!(out, "  disk tier {} up to {} bytes", dir.display(), c.disk_max_bytes);
    }
    if !c.targeted_fields.is_empty() {
        let names: Vec<&str> = c.targeted_fields.iter().map(HeaderName::as_str).collect();
        let _ = writeln!(out, "  targeted fields {}", names.join(", "));
    }
    let _ = writeln!(out, "  routes {}", super::list(routes.iter()));
    let _ = writeln!(out, "  forward listeners {}", super::list(listeners.iter()));
}

#[cfg(test)]
mod tests {
    use super::super::load::{no_env, parse_and_validate, refused};
    use super::*;

    #[test]
    fn defaults_and_values() {
        let config = parse_and_validate("", &no_env).unwrap();
        assert_eq!(config.cache, CacheConfig::default());
        let config = parse_and_validate(
            "[cache]\nmax_bytes = 1073741824\nmax_object_bytes = 67108864\nmax_variants = 4\n\
             collapse_timeout = \"2s\"\nheuristic_percent = 0\ntargeted_fields = [\"CDN-Cache-Control\"]\n\
             name = \"edge\"\ncache_status = false\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\ncache = true\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://h\"\ncache = true\ncache_stale_when_down = \"10m\"\n",
            &no_env,
        )
        .unwrap();
        let cache = &config.cache;
        assert_eq!(
            (cache.max_bytes, cache.max_object_bytes, cache.max_variants),
            (1 << 30, 64 << 20, 4)
        );
        assert_eq!(cache.collapse_timeout, Duration::from_secs(2));
        assert_eq!(cache.heuristic_percent, 0);
        assert_eq!(cache.targeted_fields, [HeaderName::from_static("cdn-cache-control")]);
        assert_eq!(cache.name, "edge");
        assert!(!cache.cache_status);
        assert!(config.listeners[0].cache);
        assert_eq!(
            config.routes[0].cache,
            RouteCache { enabled: true, stale_when_down: Some(Duration::from_secs(600)) }
        );
        let summary = crate::config::summary::effective(&config, "test");
        assert!(summary.contains("cache: 1073741824 bytes"), "{summary}");
    }

    #[test]
    fn bad_values_are_refused_with_their_keys() {
        let found = refused(
            "[cache]\nmax_bytes = 0\nmax_object_bytes = 999999999999\nmax_variants = 65\n\
             collapse_timeout = \"1h\"\nheuristic_percent = 101\ntargeted_fields = [\"bad name\"]\n\
             name = \"two words\"\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://h\"\ncache_stale_when_down = \"30d\"\n",
        );
        let keys: Vec<_> = found.iter().map(|issue| issue.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cache.max_bytes",
                "cache.max_object_bytes",
                "cache.max_variants",
                "cache.heuristic_percent",
                "cache.targeted_fields",
                "cache.name",
                "cache.collapse_timeout",
                "route[0].cache_stale_when_down",
            ]
        );
    }

    #[test]
    fn the_disk_tier_is_off_unless_a_directory_is_given() {
        let config = parse_and_validate(
            "[cache]\ndisk_dir = \"/var/cache/sluice\"\ndisk_max_bytes = 2097152\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://h\"\ncache = true\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(config.cache.disk_dir, Some(PathBuf::from("/var/cache/sluice")));
        assert_eq!(config.cache.disk_max_bytes, 2 << 20);
        let summary = crate::config::summary::effective(&config, "test");
        assert!(summary.contains("disk tier /var/cache/sluice up to 2097152 bytes"), "{summary}");
        let config = parse_and_validate("[cache]\ndisk_dir = \"d\"\n", &no_env).unwrap();
        assert_eq!(config.cache.disk_max_bytes, DEFAULT_CACHE_DISK_MAX_BYTES);
        let cases: &[(&str, &str)] = &[
            ("disk_max_bytes = 2097152\n", "cache.disk_max_bytes"),
            ("disk_dir = \"d\"\ndisk_max_bytes = 1024\n", "cache.disk_max_bytes"),
            ("disk_dir = \"d\"\ndisk_max_bytes = 70368744177665\n", "cache.disk_max_bytes"),
            ("disk_dir = \" \"\n", "cache.disk_dir"),
        ];
        for (lines, key) in cases {
            let found = refused(&format!("[cache]\n{lines}"));
            let keys: Vec<_> = found.iter().map(|issue| issue.key.as_str()).collect();
            assert_eq!(keys, [*key], "{lines}");
        }
    }
}
