//! `[[listener]]`: the addresses sluice binds, the modes each serves and its TLS termination,
//! as written in the file, as validated, and as `sluice check` shows them.
//!
//! A listener's access policy (authentication, CONNECT ports, private destinations, the cap
//! per client address) is part of the security section: see [`super::security`].

use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::hostname::server_name_problem;
use super::security::{
    DEFAULT_MAX_CONNECTIONS_PER_IP, WrittenPolicy, write_connection_cap, write_forward_policy,
};
use super::validate::Checker;
use super::{AccessRules, ListenerPolicy};
use crate::tls::server::{ListenerTls, SniCertificate};

/// Address the proxy listens on when neither the file nor the CLI names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How often TLS certificate files are checked for changes.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Longest `tls.reload_interval` accepted.
pub const MAX_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// One listening address and the modes it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address to bind.
    pub address: SocketAddr,
    /// Which kinds of request this listener accepts.
    pub modes: Modes,
    /// Accept HTTP/2 with prior knowledge on a plain listener.
    pub h2c: bool,
    /// TLS termination, if any.
    pub tls: Option<ListenerTls>,
    /// Access policy for forward-proxy traffic.
    pub policy: ListenerPolicy,
    /// Whether the forward proxy's plain `http://` responses go through the shared cache.
    pub cache: bool,
}

impl ListenerConfig {
    /// A plain listener on `address` serving `modes`, with the default policy for its address.
    pub fn plain(address: SocketAddr, modes: Modes, users_configured: bool) -> ListenerConfig {
        let policy = ListenerPolicy::defaults_for(address, modes, users_configured);
        ListenerConfig { address, modes, h2c: false, tls: None, policy, cache: false }
    }

    /// Why this listener would be an open forward proxy, if it would be: forward mode or
    /// SOCKS on a non-loopback address with neither authentication nor a client allow list,
    /// and no explicit `open = true`.
    pub fn open_proxy_problem(&self, access: &AccessRules) -> Option<String> {
        let exposed = !self.address.ip().is_loopback();
        let unguarded = !self.policy.auth_required && access.allow.is_empty();
        let proxies = self.modes.forward || self.modes.socks;
        (proxies && exposed && unguarded && !self.policy.open).then(|| {
            format!(
                "a forward proxy on {} would be open to anyone who can reach it; add users \
                 under [auth], restrict clients with [access] allow = [\"10.0.0.0/8\", ...], \
                 or set `open = true` on this listener if that is really intended",
                self.address
            )
        })
    }

    /// The protocols it speaks, as the summaries and the status page show them.
    pub fn protocol_label(&self) -> &'static str {
        match (&self.tls, self.h2c) {
            (Some(_), _) => "https (h2, http/1.1)",
            (None, true) => "http (http/1.1, h2c)",
            (None, false) => "http (http/1.1)",
        }
    }
}

/// The proxy modes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Absolute-form requests and CONNECT tunnels.
    pub forward: bool,
    /// Origin-form requests matched against the routes.
    pub reverse: bool,
    /// SOCKS tunnels (SOCKS5, SOCKS4/4a), told apart from HTTP by the connection's first byte;
    /// plain listeners only.
    pub socks: bool,
}

impl Modes {
    /// A plain forward proxy that speaks SOCKS too, the default for a listener with no modes
    /// given.
    pub const FORWARD: Modes = Modes { forward: true, reverse: false, socks: true };

    /// Whether the listener serves HTTP at all (a SOCKS-only listener does not).
    pub fn http(self) -> bool {
        self.forward || self.reverse
    }
}

impl fmt::Display for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SOCKS beside `forward` is part of the forward proxy (the policy line says whether
        // it is on); it is named only where it is the listener's only proxy.
        let socks_alone = self.socks && !self.forward;
        let names = [(self.forward, "forward"), (self.reverse, "reverse"), (socks_alone, "socks")];
        let mut served = names.iter().filter(|(on, _)| *on).map(|(_, name)| *name).peekable();
        if served.peek().is_none() {
            return f.write_str("none");
        }
        for (i, name) in served.enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl ListenerPolicy {
    /// The defaults for a listener on `address` serving `modes`: a loopback listener serves
    /// its local user, who is trusted (any CONNECT port, private destinations allowed, no cap
    /// per client address); anything else gets the hardened defaults (CONNECT to 443 only,
    /// private destinations refused), and a cap per client address only when it is a forward
    /// proxy alone, since a listener serving routes may sit behind a load balancer whose few
    /// addresses carry every client. Authentication is required whenever users are configured.
    pub fn defaults_for(
        address: SocketAddr,
        modes: Modes,
        users_configured: bool,
    ) -> ListenerPolicy {
        let local = address.ip().is_loopback();
        ListenerPolicy {
            auth_required: users_configured,
            open: false,
            connect_ports: if local { Vec::new() } else { vec![443] },
            allow_private_destinations: local,
            max_connections_per_ip: (!local && !modes.reverse)
                .then_some(DEFAULT_MAX_CONNECTIONS_PER_IP),
        }
    }
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// `host:port` to bind.
    pub address: Spanned<String>,
    /// Serve absolute-form requests and CONNECT.
    pub forward: Option<bool>,
    /// Serve origin-form requests through the routes.
    pub reverse: Option<bool>,
    /// Serve SOCKS clients on this (plain) listener; on by default where `forward` is.
    pub socks: Option<bool>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain listener.
    pub h2c: Option<bool>,
    /// Terminate TLS on this listener.
    pub tls: Option<FileListenerTls>,
    /// Require proxy authentication for forward requests.
    pub auth: Option<bool>,
    /// Allow a forward proxy on a non-loopback address with neither auth nor an allow list.
    pub open: Option<bool>,
    /// Ports CONNECT may reach (empty: any).
    pub connect_ports: Option<Vec<Spanned<i64>>>,
    /// Let the forward proxy reach loopback, private and link-local addresses.
    pub allow_private_destinations: Option<bool>,
    /// Most concurrent connections from one client address.
    pub max_connections_per_ip: Option<Spanned<i64>>,
    /// Cache the forward proxy's plain `http://` responses in the shared cache.
    pub cache: Option<bool>,
}

/// `[listener.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListenerTls {
    /// PEM certificate chain served when no SNI entry matches.
    pub certificate: Spanned<String>,
    /// PEM private key of `certificate`.
    pub key: Spanned<String>,
    /// Further certificates chosen by SNI.
    #[serde(default)]
    pub sni: Vec<FileSniCertificate>,
    /// How often the files are checked for changes.
    pub reload_interval: Option<Spanned<String>>,
}

/// One `[[listener.tls.sni]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSniCertificate {
    /// Server names (`a.example`, `*.example`) that select this certificate.
    pub names: Vec<Spanned<String>>,
    /// PEM certificate chain.
    pub certificate: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
}

impl Checker<'_> {
    /// Every listener of the file, or the default one when there are none; then the checks
    /// across listeners (open proxies, duplicate addresses).
    pub(super) fn listeners(
        &mut self,
        file: &[FileListener],
        access: &AccessRules,
        users_configured: bool,
    ) -> Vec<ListenerConfig> {
        let listeners: Vec<ListenerConfig> = if file.is_empty() {
            super::Config::default().listeners
        } else {
            file.iter()
                .enumerate()
                .filter_map(|(i, l)| self.listener(i, l, users_configured))
                .collect()
        };
        for (i, listener) in listeners.iter().enumerate() {
            if let Some(message) = listener.open_proxy_problem(access)
                && let Some(file_listener) = file.get(i)
            {
                self.report(file_listener.address.span(), &format!("listener[{i}]"), message);
            }
        }
        self.duplicate_addresses(file);
        listeners
    }

    fn listener(
        &mut self,
        index: usize,
        listener: &FileListener,
        users_configured: bool,
    ) -> Option<ListenerConfig> {
        let key = format!("listener[{index}]");
        let forward = listener.forward.unwrap_or(true);
        let socks = listener.socks.unwrap_or(forward && listener.tls.is_none());
        let modes = Modes { forward, reverse: listener.reverse.unwrap_or(false), socks };
        if !modes.forward && !modes.reverse && !modes.socks {
            self.report(
                listener.address.span(),
                &key,
                "serves nothing: set `forward = true`, `reverse = true` or `socks = true`"
                    .to_owned(),
            );
        }
        if socks && listener.tls.is_some() {
            self.report(
                listener.address.span(),
                &format!("{key}.socks"),
                "SOCKS is not spoken inside TLS: serve it on a plain listener".to_owned(),
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
        let written = WrittenPolicy {
            at: listener.address.span(),
            auth: listener.auth,
            open: listener.open,
            connect_ports: listener.connect_ports.as_deref(),
            allow_private_destinations: listener.allow_private_destinations,
            max_connections_per_ip: listener.max_connections_per_ip.as_ref(),
        };
        let defaults = ListenerPolicy::defaults_for(address, modes, users_configured);
        let policy = self.listener_policy(&key, written, defaults, users_configured);
        Some(ListenerConfig {
            address,
            modes,
            h2c: listener.h2c.unwrap_or(false),
            tls,
            policy,
            cache: listener.cache.unwrap_or(false),
        })
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
            let mut names = Vec::new();
            for name in &entry.names {
                // Clients send names without the root's trailing dot (RFC 6066 §3).
                let text = name.get_ref().trim().to_ascii_lowercase();
                let text = text.strip_suffix('.').unwrap_or(&text).to_owned();
                match server_name_problem(&text) {
                    None => names.push(text),
                    Some(problem) => self.report(
                        name.span(),
                        &format!("{entry_key}.names"),
                        format!("`{}` {problem}", name.get_ref()),
                    ),
                }
            }
            if let Some(files) = self.certificate_files(&entry_key, &entry.certificate, &entry.key)
            {
                sni.push(SniCertificate { names, files });
            }
        }
        let reload_interval = self.duration(
            &format!("{tls_key}.reload_interval"),
            tls.reload_interval.clone(),
            DEFAULT_TLS_RELOAD_INTERVAL,
            MAX_TLS_RELOAD_INTERVAL,
        );
        Some(ListenerTls { default: default?, sni, reload_interval })
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
}

/// Accepts `ip:port`, plus `localhost:port` as the loopback address users expect it to mean.
pub(super) fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The `listeners:` part of the effective configuration.
pub(super) fn write_summary(out: &mut String, listeners: &[ListenerConfig]) {
    for listener in listeners {
        let protocol = listener.protocol_label();
        let _ = writeln!(
            out,
            "  {:<24} {:<16} {protocol}",
            listener.address.to_string(),
            listener.modes.to_string()
        );
        if listener.modes.forward || listener.modes.socks {
            write_forward_policy(out, &listener.policy);
        }
        if listener.modes.socks {
            let _ = writeln!(out, "    SOCKS5 and SOCKS4 on this port, with the same policy");
        }
        write_connection_cap(out, &listener.policy);
        if let Some(tls) = &listener.tls {
            let _ = writeln!(
                out,
                "    certificate {} (key {}), checked every {}",
                tls.default.certificate.display(),
                tls.default.key.display(),
                humantime::format_duration(tls.reload_interval)
            );
            for sni in &tls.sni {
                let _ = writeln!(
                    out,
                    "    sni {} -> {}",
                    sni.names.join(", "),
                    sni.files.certificate.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::refused;
    use super::*;

    #[test]
    fn duplicate_listener_and_empty_modes_are_refused() {
        let found = refused(
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

    #[test]
    fn loopback_listeners_are_trusted_others_hardened() {
        let local =
            ListenerPolicy::defaults_for("127.0.0.1:8080".parse().unwrap(), Modes::FORWARD, false);
        assert!(local.connect_ports.is_empty() && local.allow_private_destinations);
        let public =
            ListenerPolicy::defaults_for("0.0.0.0:3128".parse().unwrap(), Modes::FORWARD, true);
        assert_eq!(public.connect_ports, [443]);
        assert!(!public.allow_private_destinations && public.auth_required);
    }
}
