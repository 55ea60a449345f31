//! `[headers]`: forwarding-header modes and configured set/append/remove rules (global here,
//! per route under `[route.headers]`), as written in the file, as validated, and as
//! `sluice check` shows them.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::validate::{Checker, expand_env};

/// How a forwarding header (`X-Forwarded-*`, `Forwarded`) is written on reverse-routed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Keep what the client sent and add this hop's value (the client may be another proxy).
    Append,
    /// Drop what the client sent and write only this hop's value (the client is untrusted).
    Replace,
    /// Leave the header alone.
    Off,
}

impl ForwardMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Append => "append",
            ForwardMode::Replace => "replace",
            ForwardMode::Off => "off",
        }
    }

    /// Parses the config spelling.
    pub fn parse(text: &str) -> Option<ForwardMode> {
        match text {
            "append" => Some(ForwardMode::Append),
            "replace" => Some(ForwardMode::Replace),
            "off" => Some(ForwardMode::Off),
            _ => None,
        }
    }
}

/// One configured header value. The value may hold a secret expanded from the environment, so
/// it is marked sensitive and only the `template` (with `${VAR}` unexpanded) is ever shown.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Field name.
    pub name: HeaderName,
    /// Field value with environment references expanded.
    pub value: HeaderValue,
    /// The value as written in the config, for display.
    pub template: String,
}

impl fmt::Debug for HeaderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.template)
    }
}

impl fmt::Display for HeaderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.name, self.template)
    }
}

/// Configured edits for one direction (requests or responses), applied in the order
/// remove, set, append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Fields whose every line is deleted.
    pub remove: Vec<HeaderName>,
    /// Fields replaced by one value.
    pub set: Vec<HeaderRule>,
    /// Field lines added.
    pub append: Vec<HeaderRule>,
}

impl HeaderRules {
    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.append.is_empty()
    }
}

/// Headers sluice adds to, or edits in, the messages it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSettings {
    /// Append `Via: <version> sluice` to requests and responses (RFC 9110 §7.6.3).
    pub via: bool,
    /// `X-Forwarded-For` on reverse-routed requests.
    pub x_forwarded_for: ForwardMode,
    /// `X-Forwarded-Proto` on reverse-routed requests.
    pub x_forwarded_proto: ForwardMode,
    /// `X-Forwarded-Host` on reverse-routed requests.
    pub x_forwarded_host: ForwardMode,
    /// RFC 7239 `Forwarded` on reverse-routed requests.
    pub forwarded: ForwardMode,
    /// Global rules for requests of reverse routes.
    pub request: HeaderRules,
    /// Global rules for responses of reverse routes.
    pub response: HeaderRules,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        HeaderSettings {
            via: true,
            x_forwarded_for: ForwardMode::Append,
            x_forwarded_proto: ForwardMode::Replace,
            x_forwarded_host: ForwardMode::Replace,
            forwarded: ForwardMode::Off,
            request: HeaderRules::default(),
            response: HeaderRules::default(),
        }
    }
}

/// The `[headers]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    /// Add a `Via` header to forwarded messages.
    pub via: Option<bool>,
    /// `X-Forwarded-For` handling: append, replace or off.
    pub x_forwarded_for: Option<Spanned<String>>,
    /// `X-Forwarded-Proto` handling.
    pub x_forwarded_proto: Option<Spanned<String>>,
    /// `X-Forwarded-Host` handling.
    pub x_forwarded_host: Option<Spanned<String>>,
    /// RFC 7239 `Forwarded` handling.
    pub forwarded: Option<Spanned<String>>,
    /// Rules for requests sent upstream by reverse routes.
    #[serde(default)]
    pub request: FileHeaderRules,
    /// Rules for responses of reverse routes.
    #[serde(default)]
    pub response: FileHeaderRules,
}

/// `set` / `append` / `remove` header rules; values may contain `${ENV_VAR}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderRules {
    /// Replace every field of the name with this value.
    #[serde(default)]
    pub set: BTreeMap<String, Spanned<String>>,
    /// Add one more field line.
    #[serde(default)]
    pub append: BTreeMap<String, Spanned<String>>,
    /// Delete every field of the name.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

impl Checker<'_> {
    pub(super) fn headers(&mut self, file: FileHeaders) -> HeaderSettings {
        let d = HeaderSettings::default();
        HeaderSettings {
            via: file.via.unwrap_or(d.via),
            x_forwarded_for: self.mode(
                "headers.x_forwarded_for",
                file.x_forwarded_for,
                d.x_forwarded_for,
            ),
            x_forwarded_proto: self.mode(
                "headers.x_forwarded_proto",
                file.x_forwarded_proto,
                d.x_forwarded_proto,
            ),
            x_forwarded_host: self.mode(
                "headers.x_forwarded_host",
                file.x_forwarded_host,
                d.x_forwarded_host,
            ),
            forwarded: self.mode("headers.forwarded", file.forwarded, d.forwarded),
            request: self.rules("headers.request", &file.request),
            response: self.rules("headers.response", &file.response),
        }
    }

    fn mode(
        &mut self,
        key: &str,
        value: Option<Spanned<String>>,
        default: ForwardMode,
    ) -> ForwardMode {
        let Some(value) = value else { return default };
        ForwardMode::parse(value.get_ref()).unwrap_or_else(|| {
            self.report(
                value.span(),
                key,
                format!("`{}` is not one of \"append\", \"replace\", \"off\"", value.get_ref()),
            );
            default
        })
    }

    /// Rules for one direction, global (`headers.request`) or per route.
    pub(super) fn rules(&mut self, key: &str, file: &FileHeaderRules) -> HeaderRules {
        let mut rules = HeaderRules::default();
        for name in &file.remove {
            if let Some(parsed) = self.header_name(&format!("{key}.remove"), name) {
                rules.remove.push(parsed);
            }
        }
        for (op, entries) in [("set", &file.set), ("append", &file.append)] {
            for (name, template) in entries {
                let rule_key = format!("{key}.{op}.{name}");
                let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
                    self.report(
                        template.span(),
                        &rule_key,
                        format!("`{name}` is not a valid header name"),
                    );
                    continue;
                };
                if let Some(value) = self.header_value(&rule_key, template) {
                    let rule =
                        HeaderRule { name: parsed, value, template: template.get_ref().clone() };
                    if op == "set" {
                        rules.set.push(rule);
                    } else {
                        rules.append.push(rule);
                    }
                }
            }
        }
        rules
    }

    /// A header field name, reported at `key` when it is not one.
    pub(super) fn header_name(&mut self, key: &str, name: &Spanned<String>) -> Option<HeaderName> {
        let parsed = HeaderName::from_bytes(name.get_ref().as_bytes()).ok();
        if parsed.is_none() {
            self.report(
                name.span(),
                key,
                format!("`{}` is not a valid header name", name.get_ref()),
            );
        }
        parsed
    }

    /// Expands `${VAR}` references and checks the result is a valid field value. A value that
    /// used the environment is marked sensitive so it never reaches a log.
    fn header_value(&mut self, key: &str, template: &Spanned<String>) -> Option<HeaderValue> {
        let (expanded, used_env) = match expand_env(template.get_ref(), self.env) {
            Ok(expanded) => expanded,
            Err(message) => {
                self.report(template.span(), key, message);
                return None;
            }
        };
        match HeaderValue::from_str(&expanded) {
            Ok(mut value) => {
                value.set_sensitive(used_env);
                Some(value)
            }
            Err(_) => {
                let what = if used_env { "after expanding ${...}" } else { "as written" };
                self.report(
                    template.span(),
                    key,
                    format!("is not a valid header value {what} (control characters or non-ASCII)"),
                );
                None
            }
        }
    }
}

/// The `headers:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, h: &HeaderSettings) {
    let _ = writeln!(
        out,
        "\nheaders:\n  via  {}\n  x_forwarded_for    {}\n  x_forwarded_proto  {}\n  x_forwarded_host   {}\n  forwarded          {}",
        h.via,
        h.x_forwarded_for.as_str(),
        h.x_forwarded_proto.as_str(),
        h.x_forwarded_host.as_str(),
        h.forwarded.as_str(),
    );
    write_rules(out, "  request", &h.request);
    write_rules(out, "  response", &h.response);
}

/// Header rules as written: templates only, so `${SECRET}` values are never printed expanded.
pub(super) fn write_rules(out: &mut String, label: &str, rules: &HeaderRules) {
    for name in &rules.remove {
        let _ = writeln!(out, "{label} remove {name}");
    }
    for rule in &rules.set {
        let _ = writeln!(out, "{label} set    {rule}");
    }
    for rule in &rules.append {
        let _ = writeln!(out, "{label} append {rule}");
    }
}
