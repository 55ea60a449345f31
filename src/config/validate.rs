//! The core of stage two of loading: the [`Checker`] that collects every problem with its line
//! and key path instead of stopping at the first, and the readers of values every section uses
//! (durations, counts, paths, certificate files, `${VAR}` expansion). Each section adds its own
//! methods beside its types; `load.rs` parses the file and assembles the sections.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::ConfigIssue;
use crate::tls::files::CertificateFiles;

/// Looks up an environment variable for `${VAR}` expansion.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

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

    /// PEM CA files trusted besides the built-in roots (`ca` of a route's TLS or of parent
    /// proxies), each read now so a bad one stops start-up with its name and key.
    pub(super) fn ca_files(&mut self, key: &str, values: &[Spanned<String>]) -> Vec<PathBuf> {
        let mut paths = Vec::with_capacity(values.len());
        for value in values {
            let path = self.path(value);
            match crate::tls::files::certificates(&path) {
                Ok(_) => paths.push(path),
                Err(err) => self.report(value.span(), key, err.to_string()),
            }
        }
        paths
    }

    /// A duration such as `"10s"`, longer than zero and at most `max`; `default` when absent
    /// or invalid.
    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<Spanned<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(parsed) if parsed.is_zero() => {
                self.report(value.span(), key, "must be longer than zero".to_owned());
                default
            }
            Ok(parsed) if parsed > max => {
                self.report(
                    value.span(),
                    key,
                    format!(
                        "must be at most {}, got `{}`",
                        humantime::format_duration(max),
                        value.get_ref()
                    ),
                );
                default
            }
            Ok(parsed) => parsed,
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

    /// A whole number within `bounds`; `default` when absent or out of bounds.
    pub(super) fn count<T>(
        &mut self,
        key: &str,
        value: Option<Spanned<i64>>,
        default: T,
        bounds: RangeInclusive<T>,
    ) -> T
    where
        T: TryFrom<i64> + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(value) = value else { return default };
        let written = *value.get_ref();
        let message = match T::try_from(written) {
            Ok(n) if bounds.contains(&n) => return n,
            Ok(n) if n > *bounds.end() => {
                format!("must be at most {}, got {written}", bounds.end())
            }
            _ => format!("must be at least {}, got {written}", bounds.start()),
        };
        self.report(value.span(), key, message);
        default
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

#[cfg(test)]
mod tests {
    use super::*;

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
