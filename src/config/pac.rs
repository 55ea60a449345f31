//! `[pac]`: the proxy auto-configuration file forward listeners serve at `/proxy.pac`, as
//! written in the file, as validated, and as `sluice check` shows it. Absent, no PAC file is
//! served.

use std::fmt::Write as _;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use crate::pac::{HostMatch, PacProxy, PacRules};

/// Most entries in each of `direct`, `proxied` and `proxies`: the file is generated for every
/// request of it and evaluated by the browser for every URL.
pub const MAX_PAC_ENTRIES: usize = 1024;

/// The `[pac]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePac {
    /// Host patterns (`name`, `*.suffix`) and networks reached directly.
    #[serde(default)]
    pub direct: Vec<Spanned<String>>,
    /// Host patterns and networks reached through the proxy; empty means everything else.
    #[serde(default)]
    pub proxied: Vec<Spanned<String>>,
    /// The proxies browsers use, in order: `http://host:port`, `https://host:port`,
    /// `socks5://host:port`; empty means the address the file was fetched from.
    #[serde(default)]
    pub proxies: Vec<Spanned<String>>,
}

impl Checker<'_> {
    pub(super) fn pac(&mut self, file: &FilePac) -> PacRules {
        PacRules {
            direct: self.host_matches("pac.direct", &file.direct),
            proxied: self.host_matches("pac.proxied", &file.proxied),
            proxies: self.pac_proxies(&file.proxies),
        }
    }

    fn host_matches(&mut self, key: &str, values: &[Spanned<String>]) -> Vec<HostMatch> {
        self.pac_bound(key, values);
        self.host_patterns(key, values)
    }

    /// Each of `values` as a [`HostMatch`]; one that is none is reported under `key`.
    pub(super) fn host_patterns(
        &mut self,
        key: &str,
        values: &[Spanned<String>],
    ) -> Vec<HostMatch> {
        values
            .iter()
            .filter_map(|value| {
                let parsed = HostMatch::parse(value.get_ref());
                if parsed.is_none() {
                    let text = value.get_ref().trim();
                    self.report(
                        value.span(),
                        key,
                        format!("`{text}` is not a host (\"name\", \"*.suffix\") or network"),
                    );
                }
                parsed
            })
            .collect()
    }

    fn pac_proxies(&mut self, values: &[Spanned<String>]) -> Vec<PacProxy> {
        self.pac_bound("pac.proxies", values);
        values
            .iter()
            .filter_map(|value| {
                let text = value.get_ref().trim();
                let parsed = text.split_once("://").and_then(|(scheme, at)| {
                    let at = at.trim_end_matches('/');
                    let authority = at.parse::<http::uri::Authority>().ok()?;
                    authority.port_u16()?;
                    match scheme.to_ascii_lowercase().as_str() {
                        "http" => Some(PacProxy::Http(at.to_owned())),
                        "https" => Some(PacProxy::Https(at.to_owned())),
                        "socks5" => Some(PacProxy::Socks5(at.to_owned())),
                        _ => None,
                    }
                });
                if parsed.is_none() {
                    self.report(
                        value.span(),
                        "pac.proxies",
                        format!(
                            "`{text}` is not http://, https:// or socks5:// with a host and port"
                        ),
                    );
                }
                parsed
            })
            .collect()
    }

    fn pac_bound(&mut self, key: &str, values: &[Spanned<String>]) {
        if let Some(extra) = values.get(MAX_PAC_ENTRIES) {
            self.report(extra.span(), key, format!("at most {MAX_PAC_ENTRIES} entries"));
        }
    }
}

/// The `pac:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, pac: Option<&PacRules>) {
    let Some(pac) = pac else { return };
    let shown = |matches: &[HostMatch]| {
        let names: Vec<String> = matches
            .iter()
            .map(|m| match m {
                HostMatch::Host(host) => host.clone(),
                HostMatch::Network(net) => net.to_string(),
            })
            .collect();
        if names.is_empty() { "-".to_owned() } else { names.join(", ") }
    };
    let proxies: Vec<String> = pac
        .proxies
        .iter()
        .map(|p| match p {
            PacProxy::Http(at) => format!("http://{at}"),
            PacProxy::Https(at) => format!("https://{at}"),
            PacProxy::Socks5(at) => format!("socks5://{at}"),
        })
        .collect();
    let _ = writeln!(
        out,
        "\npac: served at /proxy.pac on forward listeners\n  direct   {}\n  proxied  {}\n  proxies  {}",
        shown(&pac.direct),
        if pac.proxied.is_empty() { "everything else".to_owned() } else { shown(&pac.proxied) },
        if proxies.is_empty() {
            "the address the file is fetched from".to_owned()
        } else {
            proxies.join(", ")
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::load::refused;

    #[test]
    fn pac_entries_are_checked() {
        let found = refused(
            "[pac]\ndirect = [\"*.ok.example\", \"10.0.0.0/8\", \"bad/host\"]\n\
             proxies = [\"http://p.example:3128\", \"ftp://p.example:21\", \"socks5://p\"]\n",
        );
        let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["pac.direct", "pac.proxies", "pac.proxies"]);
    }
}
