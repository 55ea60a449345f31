//! `[[parent]]`: parent proxies (chaining), as written in the file, as validated, and as
//! `sluice check` shows them. Rules are tried in order; the first whose `hosts` match the
//! destination decides: `direct = true`, or `via` one or more parents, tried in order until
//! one takes the connection. No rule matching means direct. A route's or target's
//! `upstream_proxy` ([`FileUpstreamProxy`]) names parents the same way for all its
//! connections.
//!
//! TLS to an `https://` parent is verified against the built-in web roots and, when the rule
//! (or `upstream_proxy`) has a `ca`, against those files too: a corporate parent usually
//! presents a certificate from an internal CA.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Secret;
use super::validate::{Checker, expand_env};
use crate::pac::HostMatch;

/// Most `[[parent]]` rules.
pub const MAX_PARENT_RULES: usize = 256;
/// Most parents in one rule's `via`.
pub const MAX_PARENTS_PER_RULE: usize = 16;
/// Most host patterns or networks in one rule's `hosts`.
pub const MAX_PARENT_HOSTS: usize = 1024;

/// How sluice speaks to a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentScheme {
    /// `http://`: `CONNECT` to an HTTP proxy.
    Http,
    /// `https://`: `CONNECT` inside TLS to the proxy.
    Https,
    /// `socks5://`.
    Socks5,
}

impl ParentScheme {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            ParentScheme::Http => "http",
            ParentScheme::Https => "https",
            ParentScheme::Socks5 => "socks5",
        }
    }
}

/// One parent proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProxy {
    /// How to speak to it.
    pub scheme: ParentScheme,
    /// Its host name or address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The user and password it wants, when it wants them.
    pub credentials: Option<(String, Secret)>,
    /// PEM CA files its certificate may chain to besides the built-in roots; only ever set
    /// for `https://` parents.
    pub ca: Vec<PathBuf>,
}

impl ParentProxy {
    /// `scheme://host:port`, as logs and summaries show it (never the credentials).
    pub fn url(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

/// Where a rule sends the destinations it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentRoute {
    /// Straight to the destination.
    Direct,
    /// Through these parents, tried in order.
    Via(Vec<ParentProxy>),
}

/// One `[[parent]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRule {
    /// The destinations it matches (host patterns; networks match IP-literal destinations);
    /// empty matches every destination.
    pub hosts: Vec<HostMatch>,
    /// Where they go.
    pub route: ParentRoute,
}

/// One `[[parent]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParent {
    /// Destination host patterns and networks; absent matches every destination.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Connect directly.
    pub direct: Option<Spanned<bool>>,
    /// Parents as `http://host:port`, `https://host:port` or `socks5://host:port`.
    #[serde(default)]
    pub via: Vec<Spanned<String>>,
    /// User name for these parents.
    pub username: Option<Spanned<String>>,
    /// Password for these parents, usually `${ENV_VAR}`.
    pub password: Option<Spanned<String>>,
    /// PEM CA files trusted for TLS to the `https://` parents in `via`.
    #[serde(default)]
    pub ca: Vec<Spanned<String>>,
}

/// `upstream_proxy` of a route or target: the parents every connection to its upstream goes
/// through, tried in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamProxy {
    /// Parents as `http://host:port`, `https://host:port` or `socks5://host:port`.
    pub via: Vec<Spanned<String>>,
    /// User name for these parents.
    pub username: Option<Spanned<String>>,
    /// Password for these parents, usually `${ENV_VAR}`.
    pub password: Option<Spanned<String>>,
    /// PEM CA files trusted for TLS to the `https://` parents in `via`.
    #[serde(default)]
    pub ca: Vec<Spanned<String>>,
}

impl Checker<'_> {
    /// The parents of the `upstream_proxy` at `key`.
    pub(super) fn upstream_proxy(
        &mut self,
        key: &str,
        file: &FileUpstreamProxy,
    ) -> Vec<ParentProxy> {
        let credentials = self.parent_credentials(key, &file.username, &file.password);
        let ca = self.parent_ca(key, &file.ca, &file.via);
        if let Some(extra) = file.via.get(MAX_PARENTS_PER_RULE) {
            self.report(
                extra.span(),
                &format!("{key}.via"),
                format!("at most {MAX_PARENTS_PER_RULE} parents"),
            );
        }
        let parents: Vec<ParentProxy> = file
            .via
            .iter()
            .filter_map(|url| self.parent_url(&format!("{key}.via"), url, &credentials, &ca))
            .collect();
        if file.via.is_empty() {
            let span = file.username.as_ref().map(Spanned::span).unwrap_or_default();
            self.report(span, &format!("{key}.via"), "needs at least one parent".to_owned());
        }
        parents
    }

    pub(super) fn parents(&mut self, file: &[FileParent]) -> Vec<ParentRule> {
        if let Some(extra) = file.get(MAX_PARENT_RULES) {
            let span = extra.via.first().map(|v| v.span()).unwrap_or_default();
            self.report(span, "parent", format!("at most {MAX_PARENT_RULES} rules"));
        }
        file.iter().enumerate().filter_map(|(i, rule)| self.parent(i, rule)).collect()
    }

    fn parent(&mut self, index: usize, file: &FileParent) -> Option<ParentRule> {
        let key = format!("parent[{index}]");
        let hosts = self.parent_hosts(&format!("{key}.hosts"), &file.hosts);
        let credentials = self.parent_credentials(&key, &file.username, &file.password);
        let ca = self.parent_ca(&key, &file.ca, &file.via);
        let direct = file.direct.as_ref().is_some_and(|d| *d.get_ref());
        let route = match (direct, file.via.is_empty()) {
            (true, true) => ParentRoute::Direct,
            (false, false) => {
                if let Some(extra) = file.via.get(MAX_PARENTS_PER_RULE) {
                    self.report(
                        extra.span(),
                        &format!("{key}.via"),
                        format!("at most {MAX_PARENTS_PER_RULE} parents"),
                    );
                }
                let parents: Vec<ParentProxy> = file
                    .via
                    .iter()
                    .filter_map(|url| {
                        self.parent_url(&format!("{key}.via"), url, &credentials, &ca)
                    })
                    .collect();
                ParentRoute::Via(parents)
            }
            _ => {
                let span = file
                    .direct
                    .as_ref()
                    .map(|d| d.span())
                    .unwrap_or_else(|| file.via.first().map(|v| v.span()).unwrap_or_default());
                self.report(span, &key, "needs either `direct = true` or `via = [...]`".to_owned());
                return None;
            }
        };
        Some(ParentRule { hosts, route })
    }

    fn parent_hosts(&mut self, key: &str, values: &[Spanned<String>]) -> Vec<HostMatch> {
        if let Some(extra) = values.get(MAX_PARENT_HOSTS) {
            self.report(extra.span(), key, format!("at most {MAX_PARENT_HOSTS} entries"));
        }
        self.host_patterns(key, values)
    }

    fn parent_credentials(
        &mut self,
        key: &str,
        username: &Option<Spanned<String>>,
        password: &Option<Spanned<String>>,
    ) -> Option<(String, Secret)> {
        match (username, password) {
            (None, None) => None,
            (Some(user), Some(password)) => {
                let expanded = match expand_env(password.get_ref(), self.env) {
                    Ok((expanded, _)) => expanded,
                    Err(message) => {
                        self.report(password.span(), &format!("{key}.password"), message);
                        return None;
                    }
                };
                if user.get_ref().contains(':')
                    || user.get_ref().len() > 255
                    || expanded.len() > 255
                {
                    self.report(
                        user.span(),
                        &format!("{key}.username"),
                        "a user name without `:`, and both at most 255 bytes (SOCKS5 carries no more)"
                            .to_owned(),
                    );
                }
                Some((user.get_ref().clone(), Secret::new(expanded)))
            }
            (Some(user), None) => {
                self.report(user.span(), &format!("{key}.password"), "is missing".to_owned());
                None
            }
            (None, Some(password)) => {
                self.report(password.span(), &format!("{key}.username"), "is missing".to_owned());
                None
            }
        }
    }

    /// The `ca` files of the rule (or `upstream_proxy`) at `key`, read now; refused where
    /// `via` names no `https://` parent, since nothing else would ever use them.
    fn parent_ca(
        &mut self,
        key: &str,
        ca: &[Spanned<String>],
        via: &[Spanned<String>],
    ) -> Vec<PathBuf> {
        let ca_key = format!("{key}.ca");
        let Some(first) = ca.first() else { return Vec::new() };
        let https = via.iter().any(|url| {
            url.get_ref().trim().split_once("://").is_some_and(|(scheme, _)| {
                scheme.eq_ignore_ascii_case(ParentScheme::Https.as_str())
            })
        });
        if !https {
            self.report(
                first.span(),
                &ca_key,
                "applies only to https:// parents, and `via` names none".to_owned(),
            );
            return Vec::new();
        }
        self.ca_files(&ca_key, ca)
    }

    fn parent_url(
        &mut self,
        key: &str,
        url: &Spanned<String>,
        credentials: &Option<(String, Secret)>,
        ca: &[PathBuf],
    ) -> Option<ParentProxy> {
        let text = url.get_ref().trim();
        let parsed = text.split_once("://").and_then(|(scheme, rest)| {
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "http" => ParentScheme::Http,
                "https" => ParentScheme::Https,
                "socks5" | "socks5h" => ParentScheme::Socks5,
                _ => return None,
            };
            let authority = rest.trim_end_matches('/').parse::<http::uri::Authority>().ok()?;
            if authority.as_str().contains('@') {
                return None;
            }
            let port = authority.port_u16()?;
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
            let ca = if scheme == ParentScheme::Https { ca.to_vec() } else { Vec::new() };
            Some(ParentProxy { scheme, host, port, credentials: credentials.clone(), ca })
        });
        if parsed.is_none() {
            self.report(
                url.span(),
                key,
                format!(
                    "`{text}` is not http://, https:// or socks5:// with a host and port \
                     (credentials go in `username` and `password`)"
                ),
            );
        }
        parsed
    }
}

/// The `parents:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, rules: &[ParentRule]) {
    if rules.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nparents (first match wins, otherwise direct):");
    for rule in rules {
        let hosts: Vec<String> = rule
            .hosts
            .iter()
            .map(|m| match m {
                HostMatch::Host(host) => host.clone(),
                HostMatch::Network(net) => net.to_string(),
            })
            .collect();
        let hosts =
            if hosts.is_empty() { "every destination".to_owned() } else { hosts.join(", ") };
        let route = match &rule.route {
            ParentRoute::Direct => "direct".to_owned(),
            ParentRoute::Via(parents) => describe_via(parents),
        };
        let _ = writeln!(out, "  {hosts} -> {route}");
    }
}

/// `via URL, then URL as USER, trusting CA`: parents as `sluice check` shows them (never the
/// password).
pub(super) fn describe_via(parents: &[ParentProxy]) -> String {
    let urls: Vec<String> = parents.iter().map(ParentProxy::url).collect();
    let user = parents.first().and_then(|p| p.credentials.as_ref());
    let user = user.map(|(name, _)| format!(" as {name}")).unwrap_or_default();
    let ca = parents.iter().find(|p| !p.ca.is_empty()).map(|p| &p.ca);
    let ca = ca
        .map(|files| {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            format!(", trusting {}", files.join(", "))
        })
        .unwrap_or_default();
    format!("via {}{user}{ca}", urls.join(", then "))
}

#[cfg(test)]
mod tests {
    use super::super::load::{no_env, parse_and_validate, refused};
    use super::*;

    #[test]
    fn rules_parse_in_order_with_credentials_from_the_environment() {
        let env = |name: &str| (name == "PARENT_PASSWORD").then(|| "s3cret".to_owned());
        let config = parse_and_validate(
            "[[parent]]\nhosts = [\"*.internal.example\", \"10.0.0.0/8\"]\ndirect = true\n\
             [[parent]]\nvia = [\"socks5://a.example:1080\", \"http://[::1]:3128\"]\n\
             username = \"relay\"\npassword = \"${PARENT_PASSWORD}\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.parents.len(), 2);
        assert_eq!(config.parents[0].route, ParentRoute::Direct);
        let ParentRoute::Via(parents) = &config.parents[1].route else { panic!() };
        assert_eq!(parents[0].url(), "socks5://a.example:1080");
        assert_eq!(parents[1].url(), "http://[::1]:3128");
        let (user, password) = parents[1].credentials.as_ref().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("relay", "s3cret"));
        assert!(config.parents[1].hosts.is_empty());
        let _ = no_env;
    }

    #[test]
    fn upstream_proxy_is_the_routes_and_a_targets_own_overrides_it() {
        let env = |name: &str| (name == "EGRESS").then(|| "s3cret".to_owned());
        let config = parse_and_validate(
            "[[route]]\nprefix = \"/\"\n\
             [route.upstream_proxy]\nvia = [\"http://egress:3128\", \"socks5://b:1080\"]\n\
             username = \"svc\"\npassword = \"${EGRESS}\"\n\
             [[route.target]]\nurl = \"http://a.test\"\nmax_connections = 8\n\
             [[route.target]]\nurl = \"http://b.test\"\n\
             [route.target.upstream_proxy]\nvia = [\"https://other:443\"]\n",
            &env,
        )
        .unwrap();
        let route = &config.routes[0];
        let urls =
            |parents: &[ParentProxy]| parents.iter().map(ParentProxy::url).collect::<Vec<_>>();
        assert_eq!(urls(&route.upstream_proxy), ["http://egress:3128", "socks5://b:1080"]);
        let (user, password) = route.upstream_proxy[0].credentials.as_ref().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("svc", "s3cret"));
        let targets = &route.group.as_ref().unwrap().targets;
        assert_eq!(urls(&targets[0].upstream_proxy), urls(&route.upstream_proxy));
        assert_eq!(targets[0].max_connections, Some(8));
        assert_eq!(urls(&targets[1].upstream_proxy), ["https://other:443"]);
        assert_eq!(targets[1].max_connections, None);
    }

    #[test]
    fn bad_upstream_proxies_and_connection_caps_are_refused() {
        let found = refused(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://a.test\"\n\
             [route.upstream_proxy]\nvia = []\n\
             [[route]]\nprefix = \"/b\"\nupstream = \"http://b.test\"\n\
             [route.upstream_proxy]\nvia = [\"ftp://x:21\"]\nusername = \"u\"\n\
             [[route]]\nprefix = \"/c\"\n\
             [[route.target]]\nurl = \"http://c.test\"\nmax_connections = 0\n",
        );
        let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route[0].upstream_proxy.via",
                "route[1].upstream_proxy.password",
                "route[1].upstream_proxy.via",
                "route[2].target[0].max_connections"
            ]
        );
    }

    /// A PEM CA certificate written for test `name`, and its path as TOML text.
    fn ca_file(name: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("sluice-parent-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.pem"));
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let toml = format!("'{}'", path.display());
        (path, toml)
    }

    #[test]
    fn a_rules_ca_goes_to_its_https_parents_only() {
        let (path, toml) = ca_file("rule");
        let config = parse_and_validate(
            &format!(
                "[[parent]]\nvia = [\"https://corp.example:3129\", \"http://b:3128\", \
                 \"socks5://c:1080\", \"HTTPS://d:443\"]\nca = [{toml}]\n\
                 [[parent]]\nvia = [\"https://public.example:443\"]\n\
                 [[route]]\nprefix = \"/\"\nupstream = \"http://api.test\"\n\
                 [route.upstream_proxy]\nvia = [\"https://egress:8443\"]\nca = [{toml}]\n"
            ),
            &no_env,
        )
        .unwrap();
        let ParentRoute::Via(parents) = &config.parents[0].route else { panic!() };
        let cas: Vec<&[PathBuf]> = parents.iter().map(|p| p.ca.as_slice()).collect();
        let with = [path.clone()];
        assert_eq!(cas, [&with[..], &[], &[], &with[..]]);
        let ParentRoute::Via(parents) = &config.parents[1].route else { panic!() };
        assert!(parents[0].ca.is_empty(), "a rule without `ca` trusts the built-in roots only");
        assert_eq!(config.routes[0].upstream_proxy[0].ca, with);
        let summary = crate::config::summary::effective(&config, "test");
        let shown = format!("trusting {}", path.display());
        assert_eq!(summary.matches(&shown).count(), 2, "{summary}");
    }

    #[test]
    fn a_ca_without_an_https_parent_or_unreadable_is_refused() {
        let (_, toml) = ca_file("refused");
        let found = refused(&format!(
            "[[parent]]\nhosts = [\"a.test\"]\ndirect = true\nca = [{toml}]\n\
             [[parent]]\nvia = [\"http://x:3128\", \"socks5://y:1080\"]\nca = [{toml}]\n\
             [[parent]]\nvia = [\"https://x:3129\"]\nca = [\"/nonexistent/ca.pem\", \"/dev/zero\"]\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://a.test\"\n\
             [route.upstream_proxy]\nvia = [\"socks5://z:1080\"]\nca = [{toml}]\n"
        ));
        let issues: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.message.as_str())).collect();
        let none = "applies only to https:// parents, and `via` names none";
        // Routes are checked before the parent rules.
        assert_eq!(issues[0], ("route[0].upstream_proxy.ca", none));
        assert_eq!(issues[1], ("parent[0].ca", none));
        assert_eq!(issues[2], ("parent[1].ca", none));
        assert_eq!(issues[3].0, "parent[2].ca");
        assert!(issues[3].1.contains("/nonexistent/ca.pem"), "{}", issues[3].1);
        assert_eq!(
            issues[4],
            ("parent[2].ca", "cannot read /dev/zero: it is a character device, not a regular file")
        );
        assert_eq!(issues.len(), 5, "{issues:?}");
    }

    #[test]
    fn bad_rules_are_refused() {
        let found = refused(
            "[[parent]]\nvia = [\"ftp://x:21\", \"http://user:pw@x:1\"]\n\
             [[parent]]\nhosts = [\"bad/host\"]\ndirect = true\n\
             [[parent]]\ndirect = true\nvia = [\"http://x:1\"]\n\
             [[parent]]\nvia = [\"socks5://x:1\"]\nusername = \"u\"\n",
        );
        let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "parent[0].via",
                "parent[0].via",
                "parent[1].hosts",
                "parent[2]",
                "parent[3].password"
            ]
        );
    }
}
