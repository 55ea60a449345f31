//! Stage two of loading: turn a [`FileConfig`] into a runtime [`Config`], collecting every
//! problem with its line and key path instead of stopping at the first.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use http::{HeaderName, HeaderValue};

use ipnet::IpNet;

use super::file::{FileAccessLog, FileAdmin, FileRequestId};
use super::file::{
    FileAuth, FileConfig, FileHeaderRules, FileHeaders, FileLimits, FileListener, FileListenerTls,
    FileRate, FileRoute, FileRouteTls, FileTimeouts,
};
use super::route::{normalize_prefix, parse_upstream_url};
use super::{AccessLogConfig, AdminConfig, LogDestination, LogFormat, RequestIdConfig};
use super::{
    AccessRules, AuthConfig, Credential, DestinationRules, ListenerPolicy, RateLimit, Secret, User,
};
use super::{
    CertificateFiles, DEFAULT_TLS_RELOAD_INTERVAL, ListenerTls, SniCertificate, UpstreamProtocol,
    UpstreamTls,
};
use super::{
    Config, ConfigIssue, ForwardMode, HeaderRule, HeaderRules, HeaderSettings, Limits,
    ListenerConfig, MIN_REQUEST_HEAD_BYTES, Modes, RouteConfig, RouteTimeouts, Timeouts,
};

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
fn line_of(source: &str, offset: usize) -> usize {
    let before = source.get(..offset).unwrap_or(source);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}

struct Checker<'a> {
    source: &'a str,
    base: &'a Path,
    env: Env<'a>,
    issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, key: &str, message: String) {
        self.issues.push(ConfigIssue {
            line: Some(line_of(self.source, span.start)),
            key: key.to_owned(),
            message,
        });
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let defaults = Config::default();
        let auth = self.auth(&file.auth);
        let access = AccessRules {
            allow: self.networks("access.allow", &file.access.allow),
            deny: self.networks("access.deny", &file.access.deny),
        };
        let users = !auth.users.is_empty();
        let listeners: Vec<ListenerConfig> = if file.listeners.is_empty() {
            defaults.listeners
        } else {
            file.listeners
                .iter()
                .enumerate()
                .filter_map(|(i, l)| self.listener(i, l, users))
                .collect()
        };
        for (i, listener) in listeners.iter().enumerate() {
            if let Some(message) = listener.open_proxy_problem(&access)
                && let Some(file_listener) = file.listeners.get(i)
            {
                self.report(file_listener.address.span(), &format!("listener[{i}]"), message);
            }
        }
        self.duplicate_addresses(&file.listeners);
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
        let routes: Vec<RouteConfig> = file
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| self.route(i, route, &timeouts, &limits))
            .collect();
        for issue in duplicate_routes(&routes) {
            // Point at the later duplicate's prefix line.
            let line = issue
                .key
                .strip_prefix("route[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|index| index.parse::<usize>().ok())
                .and_then(|index| file.routes.get(index))
                .map(|route| line_of(self.source, route.prefix.span().start));
            self.issues.push(ConfigIssue { line, ..issue });
        }
        let destinations = DestinationRules {
            deny_hosts: file
                .destinations
                .deny_hosts
                .iter()
                .map(|h| h.get_ref().trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            deny_networks: self
                .networks("destinations.deny_networks", &file.destinations.deny_networks),
        };
        let rate_limit_per_ip =
            file.rate_limit.per_ip.as_ref().and_then(|r| self.rate("rate_limit.per_ip", r));
        let mut dns_hosts = std::collections::BTreeMap::new();
        for (name, addresses) in &file.dns.hosts {
            let parsed: Vec<std::net::IpAddr> = addresses
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
        }
    }

    fn access_log(&mut self, file: &FileAccessLog) -> AccessLogConfig {
        let defaults = AccessLogConfig::default();
        let format = match &file.format {
            None => defaults.format,
            Some(format) => match format.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.report(
                        format.span(),
                        "access_log.format",
                        format!("`{other}` is not a format; use \"text\" or \"json\""),
                    );
                    defaults.format
                }
            },
        };
        let destination = match &file.path {
            None => defaults.destination,
            Some(path) if path.get_ref() == "-" => LogDestination::Stdout,
            Some(path) if path.get_ref().is_empty() => {
                self.report(
                    path.span(),
                    "access_log.path",
                    "is empty; use \"-\" for standard output".to_owned(),
                );
                defaults.destination
            }
            Some(path) => LogDestination::File(self.path(path)),
        };
        let headers = file
            .headers
            .iter()
            .filter_map(|name| self.header_name("access_log.headers", name))
            .collect();
        AccessLogConfig {
            enabled: file.enabled.unwrap_or(defaults.enabled),
            format,
            destination,
            drop_query: file.drop_query.unwrap_or(defaults.drop_query),
            headers,
        }
    }

    fn admin(&mut self, file: &FileAdmin) -> Option<AdminConfig> {
        let Some(address) = parse_address(file.address.get_ref()) else {
            self.report(
                file.address.span(),
                "admin.address",
                format!(
                    "`{}` is not an IP address and port such as \"127.0.0.1:9901\"",
                    file.address.get_ref()
                ),
            );
            return None;
        };
        if !address.ip().is_loopback() && !file.allow_remote.unwrap_or(false) {
            self.report(
                file.address.span(),
                "admin.address",
                format!(
                    "{address} is not a loopback address; the admin listener can reload the \
                     config and shows its routes, so expose it only with `allow_remote = true` \
                     behind a firewall"
                ),
            );
        }
        Some(AdminConfig { address })
    }

    fn request_id(&mut self, file: &FileRequestId) -> RequestIdConfig {
        let defaults = RequestIdConfig::default();
        RequestIdConfig {
            header: file
                .header
                .as_ref()
                .and_then(|name| self.header_name("request_id.header", name))
                .unwrap_or(defaults.header),
            trust_incoming: file.trust_incoming.unwrap_or(defaults.trust_incoming),
        }
    }

    fn auth(&mut self, file: &FileAuth) -> AuthConfig {
        let mut auth = AuthConfig::default();
        if let Some(realm) = &file.realm {
            if realm.get_ref().contains(['"', '\\'])
                || realm.get_ref().chars().any(|c| c.is_control())
            {
                self.report(
                    realm.span(),
                    "auth.realm",
                    "must not contain quotes, backslashes or control characters".to_owned(),
                );
            } else {
                auth.realm = realm.get_ref().clone();
            }
        }
        for (i, user) in file.users.iter().enumerate() {
            let key = format!("auth.user[{i}]");
            let name = user.name.get_ref();
            if name.is_empty() || name.contains(':') {
                self.report(
                    user.name.span(),
                    &format!("{key}.name"),
                    "must be non-empty and contain no `:`".to_owned(),
                );
                continue;
            }
            let credential = match (&user.password, &user.password_hash) {
                (Some(password), None) => match expand_env(password.get_ref(), self.env) {
                    Ok((value, _)) => Credential::Password(Secret::new(value)),
                    Err(message) => {
                        self.report(password.span(), &format!("{key}.password"), message);
                        continue;
                    }
                },
                (None, Some(hash)) => {
                    let text = hash.get_ref().trim();
                    if text.starts_with("$argon2") && argon2::PasswordHash::new(text).is_ok() {
                        Credential::Argon2(text.to_owned())
                    } else if text.starts_with("$2") && text.len() == 60 {
                        Credential::Bcrypt(text.to_owned())
                    } else {
                        self.report(hash.span(), &format!("{key}.password_hash"), "is neither an Argon2 PHC string ($argon2id$...) nor a bcrypt hash ($2b$...)".to_owned());
                        continue;
                    }
                }
                _ => {
                    self.report(
                        user.name.span(),
                        &key,
                        "needs exactly one of `password` or `password_hash`".to_owned(),
                    );
                    continue;
                }
            };
            if auth.users.iter().any(|u: &User| u.name == *name) {
                self.report(
                    user.name.span(),
                    &format!("{key}.name"),
                    format!("user `{name}` is defined twice"),
                );
                continue;
            }
            auth.users.push(User { name: name.clone(), credential });
        }
        auth
    }

    fn networks(&mut self, key: &str, values: &[Spanned<String>]) -> Vec<IpNet> {
        values
            .iter()
            .filter_map(|value| {
                let text = value.get_ref().trim();
                // A bare address means just that address.
                let parsed = text
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                if parsed.is_none() {
                    self.report(
                        value.span(),
                        key,
                        format!("`{text}` is not a network (\"10.0.0.0/8\") or address"),
                    );
                }
                parsed
            })
            .collect()
    }

    fn rate(&mut self, key: &str, file: &FileRate) -> Option<RateLimit> {
        let rate = *file.rate.get_ref();
        let burst = u32::try_from(*file.burst.get_ref()).ok().filter(|b| *b >= 1);
        if !(rate.is_finite() && rate > 0.0) {
            self.report(
                file.rate.span(),
                &format!("{key}.rate"),
                "must be a positive number of requests per second".to_owned(),
            );
            return None;
        }
        let Some(burst) = burst else {
            self.report(
                file.burst.span(),
                &format!("{key}.burst"),
                "must be at least 1".to_owned(),
            );
            return None;
        };
        Some(RateLimit { rate, burst })
    }

    fn headers(&mut self, file: FileHeaders) -> HeaderSettings {
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

    fn rules(&mut self, key: &str, file: &FileHeaderRules) -> HeaderRules {
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

    fn header_name(&mut self, key: &str, name: &Spanned<String>) -> Option<HeaderName> {
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

    fn route(
        &mut self,
        index: usize,
        file: &FileRoute,
        defaults: &Timeouts,
        limits: &Limits,
    ) -> Option<RouteConfig> {
        let key = format!("route[{index}]");
        let prefix = normalize_prefix(file.prefix.get_ref())
            .map_err(|message| self.report(file.prefix.span(), &format!("{key}.prefix"), message))
            .ok();
        let upstream = parse_upstream_url(file.upstream.get_ref())
            .map_err(|message| {
                self.report(file.upstream.span(), &format!("{key}.upstream"), message)
            })
            .ok();
        let host = file.host.as_ref().and_then(|host| {
            let text = host.get_ref().trim().to_ascii_lowercase();
            let valid = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !text.is_empty()
                        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                }
            };
            if !valid {
                self.report(
                    host.span(),
                    &format!("{key}.host"),
                    format!(
                        "`{}` is not a host name (give it without a port: the port is ignored \
                         when matching)",
                        host.get_ref()
                    ),
                );
            }
            valid.then_some(text)
        });
        let allow_upgrades = match &file.allow_upgrades {
            None => vec!["websocket".to_owned()],
            Some(list) => list.iter().map(|p| p.get_ref().trim().to_ascii_lowercase()).collect(),
        };
        let timeouts = RouteTimeouts {
            connect: self.duration(
                &format!("{key}.timeouts.connect"),
                file.timeouts.connect.clone(),
                defaults.connect,
            ),
            response_header: self.duration(
                &format!("{key}.timeouts.response_header"),
                file.timeouts.response_header.clone(),
                defaults.response_header,
            ),
            body_idle: self.duration(
                &format!("{key}.timeouts.body_idle"),
                file.timeouts.body_idle.clone(),
                defaults.body_idle,
            ),
        };
        let request_headers = self.rules(&format!("{key}.headers.request"), &file.headers.request);
        let response_headers =
            self.rules(&format!("{key}.headers.response"), &file.headers.response);
        let protocol = match &file.protocol {
            None => UpstreamProtocol::Auto,
            Some(text) => UpstreamProtocol::parse(text.get_ref()).unwrap_or_else(|| {
                self.report(
                    text.span(),
                    &format!("{key}.protocol"),
                    format!("`{}` is not one of \"auto\", \"http1\", \"http2\"", text.get_ref()),
                );
                UpstreamProtocol::Auto
            }),
        };
        let tls = self.upstream_tls(&key, &file.tls);
        let max_body_bytes = self.count(
            &format!("{key}.max_body_bytes"),
            file.max_body_bytes.clone(),
            usize::try_from(limits.max_request_body_bytes).unwrap_or(usize::MAX),
            1,
        ) as u64;
        let rate_limit =
            file.rate_limit.as_ref().and_then(|r| self.rate(&format!("{key}.rate_limit"), r));
        let prefix = prefix?;
        Some(RouteConfig {
            protocol,
            tls,
            max_body_bytes,
            rate_limit,
            name: file.name.as_ref().map_or_else(|| prefix.clone(), |n| n.get_ref().clone()),
            prefix,
            host,
            upstream: upstream?,
            strip_prefix: file.strip_prefix.unwrap_or(true),
            preserve_host: file.preserve_host.unwrap_or(false),
            allow_upgrades,
            timeouts,
            request_headers,
            response_headers,
        })
    }

    fn listener(
        &mut self,
        index: usize,
        listener: &FileListener,
        users_configured: bool,
    ) -> Option<ListenerConfig> {
        let key = format!("listener[{index}]");
        let modes = Modes {
            forward: listener.forward.unwrap_or(true),
            reverse: listener.reverse.unwrap_or(false),
        };
        if !modes.forward && !modes.reverse {
            self.report(
                listener.address.span(),
                &key,
                "serves nothing: set `forward = true` or `reverse = true`".to_owned(),
            );
        }
        let address = parse_address(listener.address.get_ref());
        if address.is_none() {
            self.report(
                listener.address.span(),
                &format!("{key}.address"),
                format!(
                    "`{}` is not an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    listener.address.get_ref()
                ),
            );
        }
        let tls = listener.tls.as_ref().and_then(|tls| self.listener_tls(&key, tls));
        let address = address?;
        let defaults = ListenerPolicy::defaults_for(address, users_configured);
        let connect_ports = match &listener.connect_ports {
            None => defaults.connect_ports,
            Some(ports) => ports
                .iter()
                .filter_map(|port| {
                    let parsed = u16::try_from(*port.get_ref()).ok().filter(|p| *p != 0);
                    if parsed.is_none() {
                        self.report(
                            port.span(),
                            &format!("{key}.connect_ports"),
                            format!("{} is not a port (1-65535)", port.get_ref()),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let policy = ListenerPolicy {
            auth_required: listener.auth.unwrap_or(defaults.auth_required),
            open: listener.open.unwrap_or(false),
            connect_ports,
            allow_private_destinations: listener
                .allow_private_destinations
                .unwrap_or(defaults.allow_private_destinations),
            max_connections_per_ip: self.count(
                &format!("{key}.max_connections_per_ip"),
                listener.max_connections_per_ip.clone(),
                defaults.max_connections_per_ip,
                1,
            ),
        };
        if policy.auth_required && !users_configured {
            self.report(
                listener.address.span(),
                &format!("{key}.auth"),
                "requires authentication but [auth] has no users".to_owned(),
            );
        }
        Some(ListenerConfig { address, modes, h2c: listener.h2c.unwrap_or(false), tls, policy })
    }

    fn path(&self, value: &Spanned<String>) -> PathBuf {
        self.base.join(value.get_ref())
    }

    /// A certificate/key pair, loaded once now so a bad file stops start-up with its name.
    fn certificate_files(
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

    fn listener_tls(&mut self, key: &str, tls: &FileListenerTls) -> Option<ListenerTls> {
        let tls_key = format!("{key}.tls");
        let default = self.certificate_files(&tls_key, &tls.certificate, &tls.key);
        let mut sni = Vec::new();
        for (i, entry) in tls.sni.iter().enumerate() {
            let entry_key = format!("{tls_key}.sni[{i}]");
            if entry.names.is_empty() {
                self.report(
                    entry.certificate.span(),
                    &format!("{entry_key}.names"),
                    "needs at least one server name".to_owned(),
                );
            }
            let names =
                entry.names.iter().map(|n| n.get_ref().trim().to_ascii_lowercase()).collect();
            if let Some(files) = self.certificate_files(&entry_key, &entry.certificate, &entry.key)
            {
                sni.push(SniCertificate { names, files });
            }
        }
        let reload_interval = self.duration(
            &format!("{tls_key}.reload_interval"),
            tls.reload_interval.clone(),
            DEFAULT_TLS_RELOAD_INTERVAL,
        );
        Some(ListenerTls { default: default?, sni, reload_interval })
    }

    fn upstream_tls(&mut self, key: &str, file: &FileRouteTls) -> UpstreamTls {
        let tls_key = format!("{key}.tls");
        let mut extra_roots = Vec::new();
        for ca in &file.ca {
            let path = self.path(ca);
            match crate::tls::files::certificates(&path) {
                Ok(_) => extra_roots.push(path),
                Err(err) => self.report(ca.span(), &format!("{tls_key}.ca"), err.to_string()),
            }
        }
        let client_certificate = match (&file.client_certificate, &file.client_key) {
            (Some(cert), Some(private_key)) => {
                self.certificate_files(&format!("{tls_key}.client_certificate"), cert, private_key)
            }
            (Some(one), None) | (None, Some(one)) => {
                self.report(
                    one.span(),
                    &tls_key,
                    "client_certificate and client_key must be given together".to_owned(),
                );
                None
            }
            (None, None) => None,
        };
        UpstreamTls {
            extra_roots,
            client_certificate,
            server_name: file.server_name.as_ref().and_then(|name| {
                let text = name.get_ref().trim().to_owned();
                let valid = rustls::pki_types::ServerName::try_from(text.clone()).is_ok();
                if !valid {
                    self.report(
                        name.span(),
                        &format!("{tls_key}.server_name"),
                        format!("`{text}` is not a DNS name or IP address"),
                    );
                }
                valid.then_some(text)
            }),
            insecure_skip_verify: file.insecure_skip_verify.unwrap_or(false),
        }
    }

    fn duplicate_addresses(&mut self, listeners: &[FileListener]) {
        for (i, later) in listeners.iter().enumerate() {
            let earlier = listeners.iter().take(i).position(|l| {
                let same = parse_address(l.address.get_ref());
                // Port 0 asks the system for a free port: two such listeners never collide.
                same.is_some_and(|a| a.port() != 0)
                    && same == parse_address(later.address.get_ref())
            });
            if let Some(first) = earlier {
                self.report(
                    later.address.span(),
                    &format!("listener[{i}].address"),
                    format!("duplicates listener[{first}].address"),
                );
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

    fn duration(
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

    fn count(
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

/// Every pair of routes with the same host and prefix, reported against the later one.
pub(super) fn duplicate_routes(routes: &[RouteConfig]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (i, later) in routes.iter().enumerate() {
        let earlier =
            routes.iter().take(i).position(|r| r.prefix == later.prefix && r.host == later.host);
        if let Some(first) = earlier {
            issues.push(ConfigIssue {
                line: None,
                key: format!("route[{i}].prefix"),
                message: format!(
                    "`{}`{} duplicates route[{first}]",
                    later.prefix,
                    later.host.as_ref().map_or(String::new(), |h| format!(" for host {h}"))
                ),
            });
        }
    }
    issues
}

/// Expands `${NAME}` references from `env`; returns the text and whether any were used.
/// A `$` not followed by `{` is literal. An unset variable is an error naming it.
fn expand_env(template: &str, env: Env<'_>) -> Result<(String, bool), String> {
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

/// Accepts `ip:port`, plus `localhost:port` as the loopback address users expect it to mean.
pub(super) fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn issues(toml: &str) -> Vec<ConfigIssue> {
        parse_and_validate(toml, &no_env).expect_err("config should be refused")
    }

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
        let found = issues("[timeouts]\nconnect = \"1s\"\nconect = \"2s\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "timeouts.conect");
        assert!(found[0].message.contains("unknown field"), "{}", found[0].message);
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let found = issues("\n[limits]\nmax_connections = \"many\"\n");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].key, "limits.max_connections");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let found = issues("[timeouts\nconnect = 1\n");
        assert_eq!(found[0].line, Some(1));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let found = issues(
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
    fn duplicate_listener_and_empty_modes_are_refused() {
        let found = issues(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[[listener]]\naddress = \"127.0.0.1:1\"\n\
             forward = false\n",
        );
        let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, vec!["listener[1]", "listener[1].address"]);
    }

    #[test]
    fn localhost_means_loopback() {
        assert_eq!(parse_address("localhost:80"), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(parse_address("example.com:80"), None);
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "API_KEY").then(|| "sk-123".to_owned())
    }

    #[test]
    fn routes_and_rules_are_parsed_with_secrets_expanded() {
        let config = parse_and_validate(
            "[[route]]\nprefix = \"/defm/\"\nupstream = \"https://api.example.com/v1\"\n\
             host = \"GW.Example\"\nallow_upgrades = []\n\
             [route.timeouts]\nresponse_header = \"5m\"\n\
             [route.headers.request]\nset = { authorization = \"Bearer ${API_KEY}\" }\n\
             remove = [\"cookie\"]\n\
             [headers]\nx_forwarded_for = \"replace\"\n[headers.response]\nappend = { x-a = \"1\" }\n",
            &env,
        )
        .unwrap();
        let route = &config.routes[0];
        assert_eq!(route.prefix, "/defm");
        assert_eq!(route.name, "/defm");
        assert_eq!(route.host.as_deref(), Some("gw.example"));
        assert!(route.allow_upgrades.is_empty());
        assert_eq!(route.timeouts.response_header, Duration::from_secs(300));
        assert_eq!(route.timeouts.connect, Timeouts::default().connect);
        let rule = &route.request_headers.set[0];
        assert_eq!(rule.value, "Bearer sk-123");
        assert!(rule.value.is_sensitive());
        assert!(!format!("{rule:?} {rule}").contains("sk-123"));
        assert_eq!(route.request_headers.remove, ["cookie"]);
        assert_eq!(config.headers.x_forwarded_for, ForwardMode::Replace);
        assert_eq!(config.headers.response.append[0].value, "1");
        assert!(!config.headers.response.append[0].value.is_sensitive());
    }

    #[test]
    fn unset_variable_is_named() {
        let found = parse_and_validate(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\n\
             [route.headers.request]\nset = { authorization = \"Bearer ${MISSING_KEY}\" }\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(found[0].key, "route[0].headers.request.set.authorization");
        assert_eq!(found[0].line, Some(5));
        assert!(found[0].message.contains("MISSING_KEY is not set"), "{}", found[0].message);
    }

    #[test]
    fn duplicate_and_bad_routes_are_reported() {
        let found = parse_and_validate(
            "[[route]]\nprefix = \"/a\"\nupstream = \"http://h\"\n\
             [[route]]\nprefix = \"/a/\"\nupstream = \"http://h2\"\n\
             [[route]]\nprefix = \"b\"\nupstream = \"ftp://h\"\n\
             [[route]]\nprefix = \"/a\"\nhost = \"x.test\"\nupstream = \"http://h\"\n",
            &env,
        )
        .unwrap_err();
        let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("route[2].prefix", Some(8)),
                ("route[2].upstream", Some(9)),
                ("route[1].prefix", Some(5)),
            ]
        );
    }

    #[test]
    fn expansion_edge_cases() {
        assert_eq!(expand_env("a$b", &env).unwrap(), ("a$b".to_owned(), false));
        assert_eq!(expand_env("${API_KEY}${API_KEY}", &env).unwrap().0, "sk-123sk-123");
        assert!(expand_env("${API_KEY", &env).is_err());
        assert!(expand_env("${}", &env).is_err());
        assert!(expand_env("${A-B}", &env).is_err());
    }
}
