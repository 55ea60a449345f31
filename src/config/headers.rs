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

/// The `received-by` name this instance writes in `Via` and recognises as its own (a request
/// that already carries it is a loop): `sluice-` and eight hex digits, chosen at random once
/// per process, so two instances never take each other for themselves, and a reload keeps it.
pub fn default_via_pseudonym() -> String {
    use std::hash::{BuildHasher, Hasher};
    static PSEUDONYM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PSEUDONYM
        .get_or_init(|| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            format!("sluice-{:08x}", hasher.finish() as u32)
        })
        .clone()
}

/// Headers sluice adds to, or edits in, the messages it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSettings {
    /// Append `Via: <version> <pseudonym>` to requests and responses (RFC 9110 §7.6.3).
    pub via: bool,
    /// The name this instance gives itself in `Via`; a request naming it is a loop (508).
    pub via_pseudonym: String,
    /// Answer `TRACE` with `Max-Forwards: 0` by reflecting the request (RFC 9110 §9.3.8);
    /// off, such a request gets 405.
    pub trace: bool,
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
            via_pseudonym: default_via_pseudonym(),
            trace: false,
            x_forwarded_for: ForwardMode::Append,
            x_forwarded_proto: ForwardMode::Replace,
            x_forwarded_host: ForwardMode::Replace,
            forwarded: ForwardMode::Off,
            request: HeaderRules::default(),
            response: HeaderRules::default(),
        }
    }
}

/// Which messages a set of header rules edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Requests sent upstream.
    Request,
    /// Responses returned to the client.
    Response,
}

/// Why sluice keeps a field to itself.
const FRAMING: &str = "frames the message (RFC 9112 section 6), which sluice writes itself";
const HOP_BY_HOP: &str = "is hop-by-hop (RFC 9110 section 7.6.1): it describes one connection, and \
                          sluice manages each of its connections itself";
const PROXY_AUTH: &str = "is proxy authentication between a client and sluice \
                          (RFC 9110 section 11.7), never sent on";

/// Fields that header rules may not set, append or remove, and why. sluice writes the framing
/// of every message it forwards and removes the hop-by-hop fields, so a rule on one of these
/// would either be undone or make the message lie about itself: `Content-Length: 5` on a
/// 42-byte body truncates it at the origin and desynchronises the connection. `Trailer` is
/// end-to-end, but it announces the trailer section, which belongs to the framing too.
const MANAGED_FIELDS: [(&str, &str); 11] = [
    ("content-length", FRAMING),
    ("transfer-encoding", FRAMING),
    (
        "trailer",
        "announces the trailer section (RFC 9110 section 6.6.2), part of the framing sluice \
         writes itself",
    ),
    ("connection", HOP_BY_HOP),
    ("keep-alive", HOP_BY_HOP),
    ("proxy-connection", HOP_BY_HOP),
    ("te", HOP_BY_HOP),
    ("upgrade", HOP_BY_HOP),
    ("http2-settings", HOP_BY_HOP),
    ("proxy-authenticate", PROXY_AUTH),
    ("proxy-authorization", PROXY_AUTH),
];

/// `Host` names the request's target (RFC 9110 §7.2), which the route decides (its upstream,
/// or the client's with `preserve_host`); in a response it means nothing and may be edited.
const HOST: &str = "names the request's target (RFC 9110 section 7.2), which the route \
                    decides; use `preserve_host` to send the client's";

/// Why header rules for `direction` may not touch `name`, if they may not.
pub fn managed_field(name: &HeaderName, direction: Direction) -> Option<&'static str> {
    if *name == http::header::HOST {
        return (direction == Direction::Request).then_some(HOST);
    }
    MANAGED_FIELDS.iter().find(|(field, _)| name == field).map(|(_, why)| *why)
}

/// The `[headers]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    /// Add a `Via` header to forwarded messages.
    pub via: Option<bool>,
    /// The name this instance gives itself in `Via`.
    pub via_pseudonym: Option<Spanned<String>>,
    /// Answer `TRACE` at `Max-Forwards: 0` by reflecting the request.
    pub trace: Option<bool>,
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
            via_pseudonym: self.via_pseudonym(file.via_pseudonym, d.via_pseudonym),
            trace: file.trace.unwrap_or(d.trace),
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
            request: self.rules("headers.request", &file.request, Direction::Request),
            response: self.rules("headers.response", &file.response, Direction::Response),
        }
    }

    /// A pseudonym is a token (RFC 9110 §5.6.2), so it stands alone as `received-by`.
    fn via_pseudonym(&mut self, value: Option<Spanned<String>>, default: String) -> String {
        let Some(value) = value else { return default };
        let text = value.get_ref();
        let token = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            self.report(
                value.span(),
                "headers.via_pseudonym",
                format!("`{text}` is not a token (letters, digits and !#$%&'*+-.^_`|~)"),
            );
            return default;
        }
        text.clone()
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
    pub(super) fn rules(
        &mut self,
        key: &str,
        file: &FileHeaderRules,
        direction: Direction,
    ) -> HeaderRules {
        let mut rules = HeaderRules::default();
        for name in &file.remove {
            let remove_key = format!("{key}.remove");
            if let Some(parsed) = self.header_name(&remove_key, name)
                && self.editable(&remove_key, name.span(), &parsed, direction)
            {
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
                if !self.editable(&rule_key, template.span(), &parsed, direction) {
                    continue;
                }
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

    /// Whether rules for `direction` may edit `name`; reported at `key` when not.
    fn editable(
        &mut self,
        key: &str,
        span: std::ops::Range<usize>,
        name: &HeaderName,
        direction: Direction,
    ) -> bool {
        let Some(why) = managed_field(name, direction) else { return true };
        self.report(
            span,
            key,
            format!("`{name}` {why}; header rules may not set, append or remove it"),
        );
        false
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
        "\nheaders:\n  via  {} (as {})\n  trace  {}\n  x_forwarded_for    {}\n  \
         x_forwarded_proto  {}\n  x_forwarded_host   {}\n  forwarded          {}",
        h.via,
        h.via_pseudonym,
        if h.trace { "answered at Max-Forwards 0" } else { "refused at Max-Forwards 0 (405)" },
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

#[cfg(test)]
mod tests {
    use super::super::load::{parse_and_validate, refused};
    use super::*;

    #[test]
    fn rules_may_not_touch_framing_hop_by_hop_or_proxy_fields() {
        let names = [
            "content-length",
            "Transfer-Encoding",
            "trailer",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "http2-settings",
            "proxy-authenticate",
            "proxy-authorization",
        ];
        for table in [
            "headers.request",
            "headers.response",
            "route.headers.request",
            "route.headers.response",
        ] {
            for name in names {
                for (op, rule) in [
                    ("set", format!("set = {{ {name:?} = \"5\" }}")),
                    ("append", format!("append = {{ {name:?} = \"5\" }}")),
                    ("remove", format!("remove = [{name:?}]")),
                ] {
                    let route = if table.starts_with("route") {
                        "[[route]]\nprefix = \"/\"\nupstream = \"http://h\"\n"
                    } else {
                        ""
                    };
                    let toml = format!("{route}[{table}]\n{rule}\n");
                    let found = refused(&toml);
                    let key = table.replace("route.", "route[0].");
                    let expected = match op {
                        "remove" => format!("{key}.remove"),
                        _ => format!("{key}.{op}.{name}"),
                    };
                    assert_eq!(found.len(), 1, "{toml}: {found:?}");
                    assert_eq!(found[0].key, expected, "{toml}");
                    assert_eq!(found[0].line, Some(toml.lines().count()), "{toml}");
                    let lower = name.to_ascii_lowercase();
                    assert!(
                        found[0].message.starts_with(&format!("`{lower}` ")),
                        "{toml}: {found:?}"
                    );
                    assert!(
                        found[0].message.ends_with("header rules may not set, append or remove it")
                    );
                }
            }
        }
    }

    #[test]
    fn host_is_refused_on_requests_only() {
        let found = refused("[headers.request]\nset = { host = \"evil.example\" }\n");
        assert_eq!(found[0].key, "headers.request.set.host");
        assert!(found[0].message.contains("preserve_host"), "{}", found[0].message);
        let config =
            parse_and_validate("[headers.response]\nremove = [\"host\"]\n", &|_| None).unwrap();
        assert_eq!(config.headers.response.remove, ["host"]);
    }

    #[test]
    fn ordinary_fields_stay_editable() {
        for name in ["authorization", "cookie", "x-forwarded-for", "via", "server", "date"] {
            for direction in [Direction::Request, Direction::Response] {
                let parsed = HeaderName::from_static(name);
                assert_eq!(managed_field(&parsed, direction), None, "{name}");
            }
        }
    }
}
