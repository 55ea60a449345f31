//! Stage two of loading: turn a [`FileConfig`] into a runtime [`Config`], collecting every
//! problem with its line and key path instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::file::{FileConfig, FileDns, FileLimits, FileTimeouts};
use super::{Config, ConfigIssue, Limits, MIN_REQUEST_HEAD_BYTES, Timeouts};
use crate::tls::files::CertificateFiles;

/// Looks up an environment variable for `${VAR}` expansion.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses TOML text and validates it; on failure returns every issue found.
#[cfg(test)]
pub(super) fn parse_and_validate(source: &str, env: Env<'_>) -> Result<Config, Vec<ConfigIssue>> {
    parse_and_validate_at(source, Path::new(""), env)
}

/// As [`parse_and_validate`], resolving relative file paths (certificates) against `base`,
/// the directory of the config file.
pub(super) fn parse_and_validate_at(
    source: &str,
    base: &Path,
    env: Env<'_>,
) -> Result<Config, Vec<ConfigIssue>> {
    let file = parse(source).map_err(|issue| vec![issue])?;
    let mut checker = Checker { source, base, env, issues: Vec::new() };
    let config = checker.config(file);
    if checker.issues.is_empty() { Ok(config) } else { Err(checker.issues) }
}

fn parse(source: &str) -> Result<FileConfig, ConfigIssue> {
    let deserializer = toml::de::Deserializer::parse(source).map_err(|err| ConfigIssue {
        line: err.span().map(|span| line_of(source, span.start)),
        key: "(syntax)".to_owned(),
        message: err.message().to_owned(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // `Spanned` values deserialize through a private struct whose field shows in the path.
        let path = err.path().to_string();
        let key = match path.split(".$__serde_spanned").next() {
            Some(".") | None => "(top level)".to_owned(),
            Some(key) => key.to_owned(),
        };
        let inner = err.into_inner();
        ConfigIssue {
            line: inner.span().map(|span| line_of(source, span.start)),
            key,
            message: inner.message().to_owned(),
        }
    })
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(source: &str, offset: usize) -> usize {
    let before = source.get(..offset).unwrap_or(source);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}

/// Turns the file's sections into runtime values, collecting every problem on the way. Each
/// section adds its own methods beside its types (`listener.rs`, `route.rs`, ...); the core
/// here reads scalars (durations, counts, paths, certificate files) the same way for all.
pub(super) struct Checker<'a> {
    /// The file's text, for line numbers.
    pub(super) source: &'a str,
    /// Directory relative paths are resolved against.
    pub(super) base: &'a Path,
    /// `${VAR}` lookups.
    pub(super) env: Env<'a>,
    /// Every problem found so far, in the order found.
    pub(super) issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    /// Records a problem at the line of `span`.
    pub(super) fn report(&mut self, span: Range<usize>, key: &str, message: String) {
        self.issues.push(ConfigIssue {
            line: Some(line_of(self.source, span.start)),
            key: key.to_owned(),
            message,
        });
    }

    /// The whole file, section by section; the order of the sections is the order in which
    /// their problems are listed.
    fn config(&mut self, file: FileConfig) -> Config {
        let auth = self.auth(&file.auth);
        let access = self.access(&file.access);
        let users = !auth.users.is_empty();
        let listeners = self.listeners(&file.listeners, &access, users);
        let workers = file.workers.and_then(|w| {
            let span = w.span();
            let value = w.into_inner();
            let workers = usize::try_from(value).ok().and_then(NonZeroUsize::new);
            if workers.is_none() {
                self.report(span, "workers", format!("must be at least 1, got {value}"));
            }
            workers
        });
        let timeouts = self.timeouts(file.timeouts);
        let limits = self.limits(file.limits);
        let cache = self.cache(&file.cache);
        let routes = self.routes(&file.routes, &timeouts, &limits);
        let destinations = self.destinations(&file.destinations);
        let rate_limit_per_ip =
            file.rate_limit.per_ip.as_ref().and_then(|r| self.rate("rate_limit.per_ip", r));
        let dns_hosts = self.dns(&file.dns);
        Config {
            listeners,
            workers,
            timeouts,
            limits,
            headers: self.headers(file.headers),
            routes,
            auth,
            access,
            destinations,
            rate_limit_per_ip,
            dns_hosts,
            access_log: self.access_log(&file.access_log),
            admin: file.admin.as_ref().and_then(|admin| self.admin(admin)),
            request_id: self.request_id(&file.request_id),
            cache,
        }
    }

    /// `[dns] hosts`: names lower-cased without a trailing dot, each to its addresses.
    fn dns(&mut self, file: &FileDns) -> BTreeMap<String, Vec<IpAddr>> {
        let mut dns_hosts = BTreeMap::new();
        for (name, addresses) in &file.hosts {
            let parsed: Vec<IpAddr> = addresses
                .iter()
                .filter_map(|a| {
                    let ip = a.get_ref().parse().ok();
                    if ip.is_none() {
                        self.report(
                            a.span(),
                            &format!("dns.hosts.{name}"),
                            format!("`{}` is not an IP address", a.get_ref()),
                        );
                    }
                    ip
                })
                .collect();
            dns_hosts.insert(name.trim_end_matches('.').to_ascii_lowercase(), parsed);
        }
        dns_hosts
    }

    /// A file path from the config, relative to the config file's directory.
    pub(super) fn path(&self, value: &Spanned<String>) -> PathBuf {
        self.base.join(value.get_ref())
    }

    /// A certificate/key pair, loaded once now so a bad file stops start-up with its name.
    pub(super) fn certificate_files(
        &mut self,
        key: &str,
        certificate: &Spanned<String>,
        private_key: &Spanned<String>,
    ) -> Option<CertificateFiles> {
        let files =
            CertificateFiles { certificate: self.path(certificate), key: self.path(private_key) };
        match crate::tls::files::certified_key(&files) {
            Ok(_) => Some(files),
            Err(err) => {
                self.report(certificate.span(), key, err.to_string());
                None
            }
        }
    }

    fn timeouts(&mut self, file: FileTimeouts) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: self.duration("timeouts.connect", file.connect, d.connect),
            response_header: self.duration(
                "timeouts.response_header",
                file.response_header,
                d.response_header,
            ),
            request_header: self.duration(
                "timeouts.request_header",
                file.request_header,
                d.request_header,
            ),
            tunnel_idle: self.duration("timeouts.tunnel_idle", file.tunnel_idle, d.tunnel_idle),
            upstream_idle: self.duration(
                "timeouts.upstream_idle",
                file.upstream_idle,
                d.upstream_idle,
            ),
            shutdown_grace: self.duration(
                "timeouts.shutdown_grace",
                file.shutdown_grace,
                d.shutdown_grace,
            ),
            body_idle: self.duration("timeouts.body_idle", file.body_idle, d.body_idle),
            websocket_idle: self.duration(
                "timeouts.websocket_idle",
                file.websocket_idle,
                d.websocket_idle,
            ),
            tunnel_max_lifetime: self.duration(
                "timeouts.tunnel_max_lifetime",
                file.tunnel_max_lifetime,
                d.tunnel_max_lifetime,
            ),
            websocket_max_lifetime: self.duration(
                "timeouts.websocket_max_lifetime",
                file.websocket_max_lifetime,
                d.websocket_max_lifetime,
            ),
        }
    }

    /// A duration such as `"10s"`, longer than zero; `default` when absent or invalid.
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(parsed) if !parsed.is_zero() => parsed,
            Ok(_) => {
                self.report(value.span(), key, "must be longer than zero".to_owned());
                default
            }
            Err(err) => {
                self.report(
                    value.span(),
                    key,
                    format!(
                        "`{}` is not a duration ({err}); write e.g. \"10s\", \"500ms\" or \"5m\"",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn limits(&mut self, file: FileLimits) -> Limits {
        let d = Limits::default();
        Limits {
            max_request_head_bytes: self.count(
                "limits.max_request_head_bytes",
                file.max_request_head_bytes,
                d.max_request_head_bytes,
                MIN_REQUEST_HEAD_BYTES,
            ),
            max_request_headers: self.count(
                "limits.max_request_headers",
                file.max_request_headers,
                d.max_request_headers,
                1,
            ),
            max_connections: self.count(
                "limits.max_connections",
                file.max_connections,
                d.max_connections,
                1,
            ),
            max_idle_upstream_per_host: self.count(
                "limits.max_idle_upstream_per_host",
                file.max_idle_upstream_per_host,
                d.max_idle_upstream_per_host,
                0,
            ),
            max_request_line_bytes: self.count(
                "limits.max_request_line_bytes",
                file.max_request_line_bytes,
                d.max_request_line_bytes,
                64,
            ),
            max_request_body_bytes: self.count(
                "limits.max_request_body_bytes",
                file.max_request_body_bytes,
                usize::try_from(d.max_request_body_bytes).unwrap_or(usize::MAX),
                1,
            ) as u64,
            max_requests_per_connection: self.count(
                "limits.max_requests_per_connection",
                file.max_requests_per_connection,
                usize::try_from(d.max_requests_per_connection).unwrap_or(usize::MAX),
                1,
            ) as u64,
        }
    }

    /// A whole number of at least `min`; `default` when absent or invalid.
    pub(super) fn count(
        &mut self,
        key: &str,
        value: Option<Spanned<i64>>,
        default: usize,
        min: usize,
    ) -> usize {
        let Some(value) = value else { return default };
        match usize::try_from(*value.get_ref()) {
            Ok(n) if n >= min => n,
            _ => {
                self.report(
                    value.span(),
                    key,
                    format!("must be at least {min}, got {}", value.get_ref()),
                );
                default
            }
        }
    }
}

/// Expands `${NAME}` references from `env`; returns the text and whether any were used.
/// A `$` not followed by `{` is literal. An unset variable is an error naming it.
pub(super) fn expand_env(template: &str, env: Env<'_>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut used = false;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let end = after.find('}').ok_or_else(|| "has `${` without a closing `}`".to_owned())?;
        let name = after.get(..end).unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{name}}}` is not a valid environment variable reference"));
        }
        let value = env(name).ok_or_else(|| {
            format!("environment variable {name} is not set (referenced as ${{{name}}})")
        })?;
        out.push_str(&value);
        used = true;
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok((out, used))
}

/// The test helpers the sections' tests share: an empty environment, and a config that must
/// be refused.
#[cfg(test)]
pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

/// The issues of a config that must be refused (with an empty environment).
#[cfg(test)]
pub(super) fn refused(toml: &str) -> Vec<ConfigIssue> {
    parse_and_validate(toml, &no_env).expect_err("config should be refused")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Modes;

    #[test]
    fn empty_file_is_the_default_forward_proxy() {
        let config = parse_and_validate("", &no_env).unwrap();
        assert_eq!(config.listeners, Config::default().listeners);
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.limits, Limits::default());
        assert!(config.headers.via);
    }

    #[test]
    fn values_are_parsed() {
        let config = parse_and_validate(
            "workers = 3\n[[listener]]\naddress = \"[::1]:9000\"\nreverse = true\n\
             [timeouts]\nconnect = \"250ms\"\ntunnel_idle = \"2m\"\n\
             [limits]\nmax_request_head_bytes = 16384\n[headers]\nvia = false\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(config.workers, NonZeroUsize::new(3));
        assert_eq!(config.listeners[0].address, "[::1]:9000".parse().unwrap());
        assert_eq!(config.listeners[0].modes, Modes { forward: true, reverse: true });
        assert_eq!(config.timeouts.connect, Duration::from_millis(250));
        assert_eq!(config.timeouts.tunnel_idle, Duration::from_secs(120));
        assert_eq!(config.limits.max_request_head_bytes, 16384);
        assert!(!config.headers.via);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let found = refused("[timeouts]\nconnect = \"1s\"\nconect = \"2s\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "timeouts.conect");
        assert!(found[0].message.contains("unknown field"), "{}", found[0].message);
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let found = refused("\n[limits]\nmax_connections = \"many\"\n");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "limits.max_connections");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let found = refused("[timeouts\nconnect = 1\n");
        assert_eq!(found[0].line, Some(1));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let found = refused(
            "[[listener]]\naddress = \"nowhere\"\n[timeouts]\nconnect = \"10 parsecs\"\n\
             shutdown_grace = \"0s\"\n[limits]\nmax_request_head_bytes = 100\n",
        );
        let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("listener[0].address", Some(2)),
                ("timeouts.connect", Some(4)),
                ("timeouts.shutdown_grace", Some(5)),
                ("limits.max_request_head_bytes", Some(7)),
            ]
        );
    }

    #[test]
    fn expansion_edge_cases() {
        let env = |name: &str| (name == "API_KEY").then(|| "sk-123".to_owned());
        assert_eq!(expand_env("a$b", &env).unwrap(), ("a$b".to_owned(), false));
        assert_eq!(expand_env("${API_KEY}${API_KEY}", &env).unwrap().0, "sk-123sk-123");
        assert!(expand_env("${API_KEY", &env).is_err());
        assert!(expand_env("${}", &env).is_err());
        assert!(expand_env("${A-B}", &env).is_err());
    }
}
