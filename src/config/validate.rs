//! Stage two of loading: turn a [`FileConfig`] into a runtime [`Config`], collecting every
//! problem with its line and key path instead of stopping at the first.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::file::{FileConfig, FileLimits, FileListener, FileTimeouts};
use super::{
    Config, ConfigIssue, HeaderSettings, Limits, ListenerConfig, MIN_REQUEST_HEAD_BYTES, Modes,
    Timeouts,
};

/// Parses TOML text and validates it; on failure returns every issue found.
pub(super) fn parse_and_validate(source: &str) -> Result<Config, Vec<ConfigIssue>> {
    let file = parse(source).map_err(|issue| vec![issue])?;
    let mut checker = Checker {
        source,
        issues: Vec::new(),
    };
    let config = checker.config(file);
    if checker.issues.is_empty() {
        Ok(config)
    } else {
        Err(checker.issues)
    }
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
        let listeners = if file.listeners.is_empty() {
            defaults.listeners
        } else {
            file.listeners
                .iter()
                .enumerate()
                .filter_map(|(i, l)| self.listener(i, l))
                .collect()
        };
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
        Config {
            listeners,
            workers,
            timeouts: self.timeouts(file.timeouts),
            limits: self.limits(file.limits),
            headers: HeaderSettings {
                via: file.headers.via.unwrap_or(defaults.headers.via),
            },
        }
    }

    fn listener(&mut self, index: usize, listener: &FileListener) -> Option<ListenerConfig> {
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
        Some(ListenerConfig {
            address: address?,
            modes,
        })
    }

    fn duplicate_addresses(&mut self, listeners: &[FileListener]) {
        for (i, later) in listeners.iter().enumerate() {
            let earlier = listeners.iter().take(i).position(|l| {
                let same = parse_address(l.address.get_ref());
                same.is_some() && same == parse_address(later.address.get_ref())
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

/// Accepts `ip:port`, plus `localhost:port` as the loopback address users expect it to mean.
fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(toml: &str) -> Vec<ConfigIssue> {
        parse_and_validate(toml).expect_err("config should be refused")
    }

    #[test]
    fn empty_file_is_the_default_forward_proxy() {
        let config = parse_and_validate("").unwrap();
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
        )
        .unwrap();
        assert_eq!(config.workers, NonZeroUsize::new(3));
        assert_eq!(config.listeners[0].address, "[::1]:9000".parse().unwrap());
        assert_eq!(
            config.listeners[0].modes,
            Modes {
                forward: true,
                reverse: true
            }
        );
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
        assert!(
            found[0].message.contains("unknown field"),
            "{}",
            found[0].message
        );
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
        assert_eq!(
            parse_address("localhost:80"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_address("example.com:80"), None);
    }
}
