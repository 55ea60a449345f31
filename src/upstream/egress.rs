//! Egress: how a connection leaves sluice for its destination. The `[[parent]]` rules, in
//! order, decide by the destination's host: straight there, or through parent proxies tried
//! in turn until one takes the connection ([`ParentError::blames_parent`] decides whether the
//! next is worth trying). A route's `upstream_proxy` is one such rule for all its requests
//! ([`Egress::via`]).
//!
//! A tunnel (`CONNECT`, SOCKS, an `https://` origin) is opened through the parent. Plain HTTP
//! for an `http://` origin goes to an HTTP or HTTPS parent in absolute-form over a connection
//! to the parent itself, as a client configured with that proxy would send it (RFC 9112
//! §3.2.2), with the rule's credentials in `Proxy-Authorization` on each request
//! ([`Egress::authorization`]); through a SOCKS5 parent it is a tunnel too. A rule that mixes
//! SOCKS5 and HTTP parents *and* has credentials tunnels plain HTTP through every parent: a
//! request prepared with the credentials could otherwise reach an origin through a SOCKS
//! tunnel.
//!
//! The destination guard still judges what the client asked for: a name by the denied-host
//! patterns (before this point), an address literal by the address rules here, since the
//! parent, not sluice, resolves and connects.
//!
//! TLS to an `https://` parent is verified by [`ParentTrust`]: the built-in roots, plus the
//! `ca` files of the parent's rule.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::uri::Authority;
use rustls::pki_types::ServerName;

use crate::config::UpstreamProtocol;
use crate::config::parent::{ParentProxy, ParentRoute, ParentRule, ParentScheme};
use crate::pac::HostMatch;
use crate::tls::client::{UpstreamTls, client_config};
use crate::tls::files::TlsFileError;
use crate::upstream::dialer::{ConnectError, Dialer, StaticHosts, UpstreamSlot, UpstreamTcp};
use crate::upstream::parent::{
    self, Parent, ParentCredentials, ParentError, ParentProtocol, ParentStream, ParentTls,
    ParentTunnel,
};

/// Where a connection's bytes go.
#[derive(Debug)]
pub enum Dialed {
    /// A TCP connection to the destination itself, counted under the dialer's caps.
    Direct(UpstreamTcp),
    /// A connection through a parent.
    Parent {
        /// The tunnel, or the connection to the parent that carries absolute-form requests.
        tunnel: ParentTunnel,
        /// The parent's address.
        parent: SocketAddr,
        /// Which of the two it is.
        carriage: Carriage,
    },
}

/// How a connection through a parent carries its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    /// A tunnel to the destination: the bytes on it are the destination's.
    Tunnel,
    /// A connection to an HTTP(S) parent: each request names its destination in
    /// absolute-form and the parent forwards it.
    Forward,
}

/// What a connection will carry, which decides how a parent is used for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Bytes the parent must pass on unread: a client's tunnel, or TLS to the destination.
    Opaque,
    /// Plain HTTP requests for an `http://` destination, which an HTTP(S) parent can forward.
    PlainHttp,
}

impl Dialed {
    /// The address at the other end of sluice's socket: the destination, or the parent.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Dialed::Direct(stream) => stream.get_ref().peer_addr().ok(),
            Dialed::Parent { parent, .. } => Some(*parent),
        }
    }

    /// sluice's own end of that socket (a SOCKS reply's bound address).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Dialed::Direct(stream) => stream.get_ref().local_addr().ok(),
            Dialed::Parent { .. } => None,
        }
    }
    /// The connection for a tunnel: its stream, what a parent sent after its answer (to reach
    /// the client first), and a direct socket's place under the connection caps, held until
    /// the relay ends.
    pub fn into_tunnel(self) -> (ParentStream, Bytes, Option<UpstreamSlot>) {
        match self {
            Dialed::Direct(stream) => {
                let (stream, slot) = stream.into_parts();
                (ParentStream::Plain(stream), Bytes::new(), Some(slot))
            }
            Dialed::Parent { tunnel, .. } => {
                let (stream, early) = tunnel.into_parts();
                (stream, early, None)
            }
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    /// Connecting straight to the destination failed (or its address is prohibited).
    #[error(transparent)]
    Direct(#[from] ConnectError),
    /// Every parent tried failed; this is the last one's error.
    #[error("no parent proxy took the connection (last tried: {parent})")]
    Parent {
        /// The last parent tried.
        parent: String,
        /// What it failed with (shared, so a pooled client's error can be handed on).
        #[source]
        source: Arc<ParentError>,
    },
}

/// How plain HTTP leaves through a rule's parents.
#[derive(Debug, Clone)]
enum PlainHttp {
    /// Through tunnels only.
    Tunnelled,
    /// In absolute-form to the HTTP(S) parents, with this `Proxy-Authorization`, if any.
    Forwarded(Option<HeaderValue>),
}

/// One rule at run time: what it matches, and its parents (none: direct).
#[derive(Debug)]
struct Rule {
    hosts: Vec<HostMatch>,
    parents: Option<Vec<Parent>>,
    plain_http: PlainHttp,
}

/// How TLS to `https://` parents is verified: the client configuration of upstreams without
/// TLS settings of their own (the built-in roots), or for a parent with a `ca`, those roots
/// plus its files. Both offer only HTTP/1.1 by ALPN, since `CONNECT` and forwarded requests
/// are HTTP/1.1. The files are read when a configuration is built, so one that went bad after
/// the check fails that build (start-up or reload) with its name, not a connection later.
#[derive(Debug, Clone)]
pub struct ParentTrust {
    /// For parents without a `ca`.
    default: Arc<rustls::ClientConfig>,
    /// One configuration per distinct `ca` list.
    with_ca: Vec<(Vec<PathBuf>, Arc<rustls::ClientConfig>)>,
}

impl ParentTrust {
    /// Verification by `default`, the configuration of upstreams without TLS settings.
    pub fn new(default: &Arc<rustls::ClientConfig>) -> ParentTrust {
        ParentTrust { default: http1_only(default), with_ca: Vec::new() }
    }

    /// Also a configuration for the `ca` files of each of `parents` that has them.
    pub fn add(&mut self, parents: &[ParentProxy]) -> Result<(), TlsFileError> {
        for parent in parents {
            if parent.ca.is_empty() || self.with_ca.iter().any(|(ca, _)| *ca == parent.ca) {
                continue;
            }
            // The same roots as a route's `tls.ca`: built-in ones plus the files.
            let tls = UpstreamTls { extra_roots: parent.ca.clone(), ..UpstreamTls::default() };
            let config = client_config(&tls)?;
            self.with_ca.push((parent.ca.clone(), http1_only(&config)));
        }
        Ok(())
    }

    /// The trust of every parent of `rules`.
    pub fn for_rules(
        rules: &[ParentRule],
        default: &Arc<rustls::ClientConfig>,
    ) -> Result<ParentTrust, TlsFileError> {
        let mut trust = ParentTrust::new(default);
        for rule in rules {
            if let ParentRoute::Via(parents) = &rule.route {
                trust.add(parents)?;
            }
        }
        Ok(trust)
    }

    /// The configuration that verifies `parent`. A `ca` not [`add`](Self::add)ed falls back to
    /// the built-in roots alone, which trust less, never more.
    fn config_for(&self, parent: &ParentProxy) -> &Arc<rustls::ClientConfig> {
        self.with_ca.iter().find(|(ca, _)| *ca == parent.ca).map_or(&self.default, |(_, c)| c)
    }
}

/// `config`, offering only HTTP/1.1 by ALPN.
fn http1_only(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut http1 = (**config).clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(http1)
}

/// The parent rules of a configuration, or of a route's `upstream_proxy`, ready to dial.
#[derive(Debug)]
pub struct Egress {
    rules: Vec<Rule>,
    /// Dials parents: no destination guard (a parent is chosen by the operator, and is often
    /// on a private network), the connect timeout.
    connector: Dialer,
    /// The deadline of each parent's handshake.
    handshake: Duration,
}

impl Egress {
    /// The rules of `parents`, dialled by `connector` (which must not carry a guard), with
    /// TLS to HTTPS parents verified by `trust` and each handshake bounded by `handshake`.
    pub fn new(
        parents: &[ParentRule],
        connector: Dialer,
        trust: &ParentTrust,
        handshake: Duration,
    ) -> Egress {
        let rules = parents
            .iter()
            .map(|rule| {
                let parents: Option<Vec<Parent>> = match &rule.route {
                    ParentRoute::Direct => None,
                    ParentRoute::Via(parents) => {
                        Some(parents.iter().filter_map(|p| runtime_parent(p, trust)).collect())
                    }
                };
                let plain_http = parents.as_deref().map_or(PlainHttp::Tunnelled, plain_http_of);
                Rule { hosts: rule.hosts.clone(), parents, plain_http }
            })
            .collect();
        Egress { rules, connector, handshake }
    }

    /// A route's (or a target's) `upstream_proxy`: every connection through `parents`, tried
    /// in order, as one rule that matches every destination.
    pub fn via(
        parents: &[ParentProxy],
        connector: Dialer,
        trust: &ParentTrust,
        handshake: Duration,
    ) -> Egress {
        let rule = ParentRule { hosts: Vec::new(), route: ParentRoute::Via(parents.to_vec()) };
        Egress::new(std::slice::from_ref(&rule), connector, trust, handshake)
    }

    /// The egress of a route's or a target's `upstream_proxy` (`None` without one): its
    /// `parents` dialled within `timeout`, with `hosts`, verified by `trust`. A client that
    /// speaks HTTP/2 with prior knowledge (`protocol = "http2"`) to a plain `http://` upstream
    /// tunnels it, since a parent forwards HTTP/1.1 only.
    pub fn for_upstream(
        parents: &[ParentProxy],
        timeout: Duration,
        hosts: &StaticHosts,
        trust: &ParentTrust,
        protocol: UpstreamProtocol,
    ) -> Option<Arc<Egress>> {
        if parents.is_empty() {
            return None;
        }
        let dialer = Dialer::new(timeout, hosts.clone(), None);
        let egress = Egress::via(parents, dialer, trust, timeout);
        Some(Arc::new(match protocol {
            UpstreamProtocol::Http2 => egress.tunnelling_only(),
            UpstreamProtocol::Auto | UpstreamProtocol::Http1 => egress,
        }))
    }

    /// The same rules with plain HTTP tunnelled through every parent: for a client that
    /// speaks HTTP/2 with prior knowledge to `http://` origins, which a parent would not
    /// forward.
    pub fn tunnelling_only(mut self) -> Egress {
        for rule in &mut self.rules {
            rule.plain_http = PlainHttp::Tunnelled;
        }
        self
    }

    /// Whether there are no rules (every connection direct).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The longest opening a connection through these rules may take: every parent of the
    /// longest rule tried, each with its connection and its handshake.
    pub fn longest_dial(&self) -> Duration {
        let most = self.rules.iter().filter_map(|rule| rule.parents.as_ref().map(Vec::len)).max();
        let each = self.connector.timeout().saturating_add(self.handshake);
        each.saturating_mul(u32::try_from(most.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    /// The first rule that matches `host`.
    fn rule_for(&self, host: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.hosts.is_empty() || rule.hosts.iter().any(|m| m.matches(host)))
    }

    /// The parents for `host`, or none for a direct connection.
    pub fn parents_for(&self, host: &str) -> Option<&[Parent]> {
        self.rule_for(host)?.parents.as_deref()
    }

    /// Whether plain HTTP for `host` may go to a parent in absolute-form, so a request for it
    /// cannot be written in origin-form before its connection is known.
    pub fn forwards(&self, host: &str) -> bool {
        self.rule_for(host).is_some_and(|rule| {
            rule.parents.is_some() && matches!(rule.plain_http, PlainHttp::Forwarded(_))
        })
    }

    /// The `Proxy-Authorization` a plain HTTP request for `host` carries: the rule's
    /// credentials, when its parents take such requests in absolute-form.
    pub fn authorization(&self, host: &str) -> Option<&HeaderValue> {
        let rule = self.rule_for(host)?;
        rule.parents.as_ref()?;
        match &rule.plain_http {
            PlainHttp::Forwarded(authorization) => authorization.as_ref(),
            PlainHttp::Tunnelled => None,
        }
    }

    /// Opens a connection to `host:port` that will carry `payload`: through the parents its
    /// rule names, else with `direct` (whose guard, if any, judges every resolved address;
    /// through parents it judges an address literal).
    pub async fn open(
        &self,
        direct: &Dialer,
        host: &str,
        port: u16,
        payload: Payload,
    ) -> Result<Dialed, EgressError> {
        let rule = self.rule_for(host);
        let Some(parents) = rule.and_then(|rule| rule.parents.as_deref()) else {
            return Ok(Dialed::Direct(direct.connect(host, port).await?));
        };
        if let Some(guard) = direct.guard()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && !guard.address_allowed(ip)
        {
            return Err(ConnectError::Prohibited { addr: SocketAddr::new(ip, port) }.into());
        }
        let forwarded = payload == Payload::PlainHttp
            && rule.is_some_and(|rule| matches!(rule.plain_http, PlainHttp::Forwarded(_)));
        let mut last = None;
        for parent in parents {
            let carriage = match parent.protocol {
                ParentProtocol::Http | ParentProtocol::Https(_) if forwarded => Carriage::Forward,
                _ => Carriage::Tunnel,
            };
            match self.through(parent, host, port, carriage).await {
                Ok(dialed) => return Ok(dialed),
                Err(err) => {
                    tracing::debug!(parent = %parent.address, "parent proxy failed: {err}");
                    let blames_parent = err.blames_parent();
                    last = Some(EgressError::Parent {
                        parent: parent.address.to_string(),
                        source: Arc::new(err),
                    });
                    if !blames_parent {
                        break;
                    }
                }
            }
        }
        Err(last
            .unwrap_or(EgressError::Direct(ConnectError::NoAddresses { host: host.to_owned() })))
    }

    async fn through(
        &self,
        parent: &Parent,
        host: &str,
        port: u16,
        carriage: Carriage,
    ) -> Result<Dialed, ParentError> {
        let (parent_host, parent_port) =
            (parent.address.host(), parent.address.port_u16().unwrap_or(0));
        let stream =
            self.connector.connect(parent_host, parent_port).await.map_err(ParentError::Connect)?;
        // Parents are not capped (the operator sized them); the socket goes on bare.
        let (stream, _) = stream.into_parts();
        let at = stream.peer_addr().map_err(ParentError::Io)?;
        let tunnel = match (carriage, &parent.protocol) {
            (Carriage::Tunnel, _) => {
                parent::open(stream, parent, host, port, self.handshake).await?
            }
            (Carriage::Forward, ParentProtocol::Https(tls)) => {
                let tls = parent::secure_within(stream, tls, self.handshake).await?;
                ParentTunnel::from_parts(ParentStream::Tls(Box::new(tls)), Bytes::new())
            }
            (Carriage::Forward, _) => {
                ParentTunnel::from_parts(ParentStream::Plain(stream), Bytes::new())
            }
        };
        Ok(Dialed::Parent { tunnel, parent: at, carriage })
    }
}

/// How plain HTTP leaves through `parents`: in absolute-form to the HTTP(S) ones when they
/// all present the same credentials, and no credentials could reach an origin through a
/// SOCKS5 tunnel of the same rule; through tunnels otherwise.
fn plain_http_of(parents: &[Parent]) -> PlainHttp {
    let same = |a: Option<&ParentCredentials>, b: Option<&ParentCredentials>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.username == b.username && a.password.expose() == b.password.expose()
        }
        _ => false,
    };
    let mut http = parents.iter().filter(|p| !matches!(p.protocol, ParentProtocol::Socks5));
    let Some(first) = http.next() else { return PlainHttp::Tunnelled };
    let credentials = first.credentials.as_ref();
    if !http.all(|p| same(p.credentials.as_ref(), credentials)) {
        return PlainHttp::Tunnelled;
    }
    let Some(credentials) = credentials else { return PlainHttp::Forwarded(None) };
    if parents.iter().any(|p| matches!(p.protocol, ParentProtocol::Socks5)) {
        return PlainHttp::Tunnelled;
    }
    match HeaderValue::from_str(&parent::basic_authorization(credentials)) {
        Ok(mut value) => {
            // Kept out of any header dump, as every secret is.
            value.set_sensitive(true);
            PlainHttp::Forwarded(Some(value))
        }
        Err(_) => PlainHttp::Tunnelled,
    }
}

/// A configured parent as the handshake needs it.
fn runtime_parent(config: &ParentProxy, trust: &ParentTrust) -> Option<Parent> {
    let address: Authority = config.url().split_once("://")?.1.parse().ok()?;
    let protocol = match config.scheme {
        ParentScheme::Http => ParentProtocol::Http,
        ParentScheme::Socks5 => ParentProtocol::Socks5,
        ParentScheme::Https => ParentProtocol::Https(ParentTls {
            config: trust.config_for(config).clone(),
            server_name: ServerName::try_from(config.host.clone()).ok()?,
        }),
    };
    let credentials = config.credentials.as_ref().map(|(username, password)| ParentCredentials {
        username: username.clone(),
        password: password.clone(),
    });
    Some(Parent { address, protocol, credentials })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn parent(protocol: ParentProtocol, user: Option<(&str, &str)>) -> Parent {
        Parent {
            address: "parent.test:3128".parse().unwrap(),
            protocol,
            credentials: user.map(|(name, password)| ParentCredentials {
                username: name.to_owned(),
                password: Secret::new(password.to_owned()),
            }),
        }
    }

    /// `None`: tunnelled; `Some(authorization)`: forwarded in absolute-form with it.
    fn plain(parents: &[Parent]) -> Option<Option<String>> {
        match plain_http_of(parents) {
            PlainHttp::Tunnelled => None,
            PlainHttp::Forwarded(value) => Some(value.map(|v| v.to_str().unwrap().to_owned())),
        }
    }

    #[test]
    fn plain_http_is_forwarded_only_where_no_credentials_can_leak_into_a_tunnel() {
        use ParentProtocol::{Http, Socks5};
        let alice = Some(("alice", "pw"));
        let basic = Some(Some("Basic YWxpY2U6cHc=".to_owned()));
        let cases: [(Vec<Parent>, Option<Option<String>>); 7] = [
            (vec![parent(Http, None)], Some(None)),
            (vec![parent(Http, alice)], basic.clone()),
            (vec![parent(Http, alice), parent(Http, alice)], basic),
            // Different credentials per parent: no one header fits every connection.
            (vec![parent(Http, alice), parent(Http, Some(("bob", "pw")))], None),
            (vec![parent(Http, alice), parent(Http, None)], None),
            (vec![parent(Socks5, None)], None),
            // Credentials prepared for an HTTP parent could reach an origin through the
            // SOCKS tunnel of the same rule.
            (vec![parent(Socks5, alice), parent(Http, alice)], None),
        ];
        for (index, (parents, expected)) in cases.into_iter().enumerate() {
            assert_eq!(plain(&parents), expected, "case {index}");
        }
        // Without credentials, a mixed rule forwards to its HTTP parents and tunnels through
        // the SOCKS ones.
        let mixed = [parent(Socks5, None), parent(Http, None)];
        assert_eq!(plain(&mixed), Some(None));
    }
}
