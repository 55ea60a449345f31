//! `[route.passive_health]` and `[route.health_check]`: how a route with several targets
//! notices a failing one, from its answers (ejection, cooling after `Retry-After`) and from
//! checks of its own. As written in the file, as validated, and as `sluice check` shows it.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// Default failures in a row that eject a target.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Largest `consecutive_failures`.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;
/// Default length of a first ejection.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Default cap on an ejection's length, however often the target was ejected.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// Default largest share of a group's targets ejected at once, in percent.
pub const DEFAULT_MAX_EJECTED_PERCENT: u8 = 50;
/// Default cap on how long a `Retry-After` may cool a target.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(300);
/// Longest `base_ejection` and `max_ejection`.
pub const MAX_EJECTION: Duration = Duration::from_secs(24 * 3600);
/// Longest `max_cooldown` (a provider's daily quota).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Default time between two checks of a target.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest `interval`: checks must not become load.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `interval`, `jitter` and `timeout` of the checks.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Default time a check may take before it counts as failed.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default largest random delay added to each interval, so checks from many sluice processes
/// (or of many targets) do not arrive in step.
pub const DEFAULT_CHECK_JITTER: Duration = Duration::from_secs(1);
/// Default passes in a row that bring a target back.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default failures in a row that take a target out.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Largest either threshold.
pub const MAX_CHECK_THRESHOLD: u32 = 100;
/// Default statuses of a passing HTTP check.
pub const DEFAULT_EXPECT_STATUS: ExpectStatus = ExpectStatus { low: 200, high: 399 };

/// How passive health judges a group's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failures in a row that eject a target; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// Length of a first ejection; each ejection in a row adds as much again.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Largest share of the group ejected at once, in percent (at least one target, unless 0).
    pub max_ejected_percent: u8,
    /// Longest cooling a `Retry-After` can ask for.
    pub max_cooldown: Duration,
}

impl Default for OutlierSettings {
    fn default() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
        }
    }
}

/// A route's active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What is checked.
    pub probe: ProbeKind,
    /// When and how strictly.
    pub settings: HealthSettings,
}

/// What an active check asks a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET path` (joined onto the target's base path), answered with an expected status.
    Http {
        /// The path, starting with `/`.
        path: String,
        /// Passing statuses.
        expect: ExpectStatus,
    },
    /// A TCP connection opens.
    Tcp,
}

/// When and how strictly a group's targets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between two checks of one target (plus jitter).
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Largest random delay added to each interval.
    pub jitter: Duration,
    /// Passes in a row that bring an unhealthy target back.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy target out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings {
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            jitter: DEFAULT_CHECK_JITTER,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

/// The statuses a passing HTTP check may answer with, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectStatus {
    /// Lowest passing status.
    pub low: u16,
    /// Highest passing status.
    pub high: u16,
}

impl ExpectStatus {
    /// Whether `status` passes.
    pub fn accepts(&self, status: StatusCode) -> bool {
        (self.low..=self.high).contains(&status.as_u16())
    }

    /// Parses `"200"` or `"200-399"`.
    pub fn parse(text: &str) -> Option<ExpectStatus> {
        let (low, high) = text.split_once('-').unwrap_or((text, text));
        let low: u16 = low.trim().parse().ok()?;
        let high: u16 = high.trim().parse().ok()?;
        ((100..600).contains(&low) && (low..600).contains(&high))
            .then_some(ExpectStatus { low, high })
    }
}

impl std::fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// `[route.passive_health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassiveHealth {
    /// Failures in a row that eject a target (0: never).
    pub consecutive_failures: Option<Spanned<i64>>,
    /// Length of a first ejection.
    pub base_ejection: Option<Spanned<String>>,
    /// Longest ejection.
    pub max_ejection: Option<Spanned<String>>,
    /// Largest share of the targets ejected at once, in percent.
    pub max_ejected_percent: Option<Spanned<i64>>,
    /// Longest cooling a `Retry-After` can ask for.
    pub max_cooldown: Option<Spanned<String>>,
}

/// `[route.health_check]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    /// `http` (the default) or `tcp`.
    pub kind: Option<Spanned<String>>,
    /// Path of an HTTP check.
    pub path: Option<Spanned<String>>,
    /// Passing statuses of an HTTP check: `"200"` or `"200-399"`.
    pub expect_status: Option<Spanned<String>>,
    /// Time between checks.
    pub interval: Option<Spanned<String>>,
    /// Time one check may take.
    pub timeout: Option<Spanned<String>>,
    /// Largest random delay added to each interval.
    pub jitter: Option<Spanned<String>>,
    /// Passes in a row that bring a target back.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Failures in a row that take a target out.
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

impl Checker<'_> {
    /// Passive health at `key` (`route[i].passive_health`), defaults for what is not given.
    pub(super) fn passive_health(
        &mut self,
        key: &str,
        file: Option<&FilePassiveHealth>,
    ) -> OutlierSettings {
        let d = OutlierSettings::default();
        let Some(file) = file else { return d };
        let base_ejection = self.duration(
            &format!("{key}.base_ejection"),
            file.base_ejection.clone(),
            d.base_ejection,
            MAX_EJECTION,
        );
        let max_ejection = self.duration(
            &format!("{key}.max_ejection"),
            file.max_ejection.clone(),
            d.max_ejection.max(base_ejection),
            MAX_EJECTION,
        );
        if max_ejection < base_ejection
            && let Some(value) = &file.max_ejection
        {
            self.report(
                value.span(),
                &format!("{key}.max_ejection"),
                "must not be shorter than base_ejection".to_owned(),
            );
        }
        OutlierSettings {
            consecutive_failures: self.count(
                &format!("{key}.consecutive_failures"),
                file.consecutive_failures.clone(),
                d.consecutive_failures,
                0..=MAX_CONSECUTIVE_FAILURES,
            ),
            base_ejection,
            max_ejection,
            max_ejected_percent: self.count(
                &format!("{key}.max_ejected_percent"),
                file.max_ejected_percent.clone(),
                d.max_ejected_percent,
                0..=100,
            ),
            max_cooldown: self.duration(
                &format!("{key}.max_cooldown"),
                file.max_cooldown.clone(),
                d.max_cooldown,
                MAX_COOLDOWN,
            ),
        }
    }

    /// Active checks at `key` (`route[i].health_check`), when the route has them.
    pub(super) fn health_check(
        &mut self,
        key: &str,
        file: Option<&FileHealthCheck>,
    ) -> Option<HealthCheck> {
        let file = file?;
        let d = HealthSettings::default();
        let tcp = match &file.kind {
            None => false,
            Some(kind) if kind.get_ref() == "http" => false,
            Some(kind) if kind.get_ref() == "tcp" => true,
            Some(kind) => {
                self.report(
                    kind.span(),
                    &format!("{key}.kind"),
                    format!("`{}` is not one of \"http\", \"tcp\"", kind.get_ref()),
                );
                false
            }
        };
        let probe = if tcp {
            for (name, given) in
                [("path", file.path.as_ref()), ("expect_status", file.expect_status.as_ref())]
            {
                if let Some(value) = given {
                    self.report(
                        value.span(),
                        &format!("{key}.{name}"),
                        "applies to HTTP checks only (kind = \"tcp\")".to_owned(),
                    );
                }
            }
            ProbeKind::Tcp
        } else {
            let path = match &file.path {
                None => "/".to_owned(),
                Some(path) if path.get_ref().starts_with('/') && !path.get_ref().contains('#') => {
                    path.get_ref().clone()
                }
                Some(path) => {
                    self.report(
                        path.span(),
                        &format!("{key}.path"),
                        format!("`{}` must start with \"/\"", path.get_ref()),
                    );
                    "/".to_owned()
                }
            };
            let expect = match &file.expect_status {
                None => DEFAULT_EXPECT_STATUS,
                Some(text) => ExpectStatus::parse(text.get_ref()).unwrap_or_else(|| {
                    self.report(
                        text.span(),
                        &format!("{key}.expect_status"),
                        format!("`{}` is not a status or a range like \"200-399\"", text.get_ref()),
                    );
                    DEFAULT_EXPECT_STATUS
                }),
            };
            ProbeKind::Http { path, expect }
        };
        let interval = self.duration(
            &format!("{key}.interval"),
            file.interval.clone(),
            d.interval,
            MAX_CHECK_INTERVAL,
        );
        if interval < MIN_CHECK_INTERVAL
            && let Some(value) = &file.interval
        {
            self.report(
                value.span(),
                &format!("{key}.interval"),
                format!("must be at least {}", humantime::format_duration(MIN_CHECK_INTERVAL)),
            );
        }
        let jitter = match &file.jitter {
            // Zero turns jitter off, unlike the other durations.
            Some(value) if value.get_ref().trim() == "0" || value.get_ref().trim() == "0s" => {
                Duration::ZERO
            }
            other => self.duration(
                &format!("{key}.jitter"),
                other.clone(),
                d.jitter.min(interval),
                MAX_CHECK_INTERVAL,
            ),
        };
        let threshold = |checker: &mut Self, name: &str, value: &Option<Spanned<i64>>, default| {
            checker.count(&format!("{key}.{name}"), value.clone(), default, 1..=MAX_CHECK_THRESHOLD)
        };
        let settings = HealthSettings {
            interval: interval.max(MIN_CHECK_INTERVAL),
            timeout: self.duration(
                &format!("{key}.timeout"),
                file.timeout.clone(),
                d.timeout,
                MAX_CHECK_INTERVAL,
            ),
            jitter,
            healthy_threshold: threshold(
                self,
                "healthy_threshold",
                &file.healthy_threshold,
                d.healthy_threshold,
            ),
            unhealthy_threshold: threshold(
                self,
                "unhealthy_threshold",
                &file.unhealthy_threshold,
                d.unhealthy_threshold,
            ),
        };
        Some(HealthCheck { probe, settings })
    }
}

/// The health lines of a route with targets, for `sluice check`.
pub(super) fn write_summary(
    out: &mut String,
    passive: &OutlierSettings,
    active: Option<&HealthCheck>,
) {
    let d = |d| humantime::format_duration(d).to_string();
    let _ = writeln!(
        out,
        "    passive health: eject after {} failures for {} (growing to {}), at most {}% ejected; Retry-After cools for up to {}",
        passive.consecutive_failures,
        d(passive.base_ejection),
        d(passive.max_ejection),
        passive.max_ejected_percent,
        d(passive.max_cooldown),
    );
    if let Some(check) = active {
        let what = match &check.probe {
            ProbeKind::Http { path, expect } => format!("GET {path} expecting {expect}"),
            ProbeKind::Tcp => "TCP connect".to_owned(),
        };
        let s = &check.settings;
        let _ = writeln!(
            out,
            "    health check: {what} every {} (+ up to {} jitter), timeout {}, down after {}, up after {}",
            d(s.interval),
            d(s.jitter),
            d(s.timeout),
            s.unhealthy_threshold,
            s.healthy_threshold,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_status_table() {
        for (text, expected) in [
            ("200", Some((200, 200))),
            ("200-399", Some((200, 399))),
            (" 204 - 204 ", Some((204, 204))),
            ("399-200", None),
            ("99", None),
            ("600", None),
            ("2xx", None),
            ("", None),
        ] {
            let parsed = ExpectStatus::parse(text).map(|e| (e.low, e.high));
            assert_eq!(parsed, expected, "{text}");
        }
        let range = ExpectStatus::parse("200-399").unwrap();
        assert!(range.accepts(StatusCode::FOUND));
        assert!(!range.accepts(StatusCode::NOT_FOUND));
        assert_eq!(range.to_string(), "200-399");
        assert_eq!(ExpectStatus::parse("204").unwrap().to_string(), "204");
    }
}
