//! Runtime header settings: forwarding-header modes and configured set/append/remove rules.

use std::fmt;

use http::{HeaderName, HeaderValue};

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
