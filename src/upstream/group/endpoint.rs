//! How a request reaches one target ([`Endpoint`]: its client, its `Host`, its header rules),
//! and what a route's configured targets become ([`Blueprint::specs`]): one member each, or
//! one per address for a host name expanded by DNS.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Uri};
use rustls::pki_types::ServerName;

use super::health::{HttpProbe, Probe};
use super::{Caps, MemberSpec, TargetSet};
use crate::config::group::{GroupConfig, TargetConfig};
use crate::config::health::ProbeKind;
use crate::config::{HeaderRules, RouteConfig, UpstreamProtocol, UpstreamTls, UpstreamUrl};
use crate::headers::rules;
use crate::tls::client::client_config;
use crate::tls::files::TlsFileError;
use crate::upstream::client::{Upstream, UpstreamSettings};
use crate::upstream::connect::{Connector, OpenConnections, StaticHosts};
use crate::upstream::egress::{Egress, ParentTrust};
use crate::upstream::h1::FastPool;
use crate::uri::path;

/// A target's client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A TLS file of the target is unusable.
    #[error("target {target}: TLS cannot be set up")]
    Tls {
        /// The target's name.
        target: String,
        /// Which file, and why.
        #[source]
        source: TlsFileError,
    },
    /// A `ca` file of the target's `upstream_proxy` is unusable.
    #[error("target {target}: TLS to its upstream_proxy cannot be set up")]
    ProxyTls {
        /// The target's name.
        target: String,
        /// Which file, and why (boxed: a rare error keeps the enum small).
        #[source]
        source: Box<TlsFileError>,
    },
    /// `tls.server_name` is not a DNS name or IP address.
    #[error("target {target}: `{name}` is not a valid TLS server name")]
    ServerName {
        /// The target's name.
        target: String,
        /// The configured name.
        name: String,
    },
}

/// One target as requests reach it.
#[derive(Debug)]
pub struct Endpoint {
    /// Its base URL.
    pub url: UpstreamUrl,
    /// Its own pooled client: its pool, TLS, protocol and timeouts.
    pub upstream: Upstream,
    /// `Host` sent to it unless the route preserves the client's.
    pub host: HeaderValue,
    /// Request rules applied after the route's.
    pub request_headers: HeaderRules,
    /// Response rules applied before the route's.
    pub response_headers: HeaderRules,
    /// The URL is the route's own (its first target's), so the URI the route phase built
    /// can be sent as it is.
    pub route_url: bool,
    /// Its open connections and their cap (`max_connections`), counted by its client's
    /// connector.
    pub connections: Arc<OpenConnections>,
    /// The connections the HTTP/1 fast path owns, when the target can be reached by it
    /// ([`reached_over_plain_http1`]); they are dialled through `upstream`'s connector, so
    /// they count under the same caps.
    pub fast: Option<FastPool>,
}

/// Whether `target` can be served by the HTTP/1 fast path: plain `http://` speaking HTTP/1.1
/// (not HTTP/2 prior knowledge), reached directly (no `upstream_proxy`).
pub fn reached_over_plain_http1(target: &TargetConfig) -> bool {
    target.upstream_proxy.is_empty()
        && target.url.scheme == http::uri::Scheme::HTTP
        && target.protocol != UpstreamProtocol::Http2
}

impl Endpoint {
    /// The absolute URI of `original` (the request target as received) on this target, for
    /// `route`; `routed` is that URI on the route's own URL, already built.
    pub fn uri(
        &self,
        route: &RouteConfig,
        original: &Uri,
        routed: &Uri,
    ) -> Result<Uri, path::RewriteError> {
        if self.route_url {
            return Ok(routed.clone());
        }
        path::target_uri(route, &self.url, original)
    }
}

/// What one configured target needs to become members, made once.
#[derive(Debug)]
struct TargetPlan {
    config: TargetConfig,
    tls: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    host: HeaderValue,
    fingerprint: u64,
}

/// What a route's targets are built from, kept to build them again when an expanded host
/// name resolves to other addresses.
#[derive(Debug)]
pub struct Blueprint {
    route_url: UpstreamUrl,
    route_request_headers: HeaderRules,
    settings: UpstreamSettings,
    hosts: StaticHosts,
    /// Verifies HTTPS parent proxies (`upstream_proxy`, with their `ca` files).
    parent_trust: ParentTrust,
    targets: Vec<TargetPlan>,
    probe: Option<ProbeKind>,
}

impl Blueprint {
    /// Reads `group`'s targets on `route`: their TLS files (once), names and fingerprints.
    /// `pool` has the pool settings every route shares; `default_tls` serves targets without
    /// TLS settings of their own.
    pub fn new(
        route: &RouteConfig,
        group: &GroupConfig,
        pool: UpstreamSettings,
        default_tls: &Arc<rustls::ClientConfig>,
        hosts: &StaticHosts,
    ) -> Result<Blueprint, TargetError> {
        let settings = UpstreamSettings {
            connect: route.timeouts.connect,
            response_header: group.retry.per_try_timeout.unwrap_or(route.timeouts.response_header),
            body_idle: route.timeouts.body_idle,
            ..pool
        };
        let mut targets = Vec::with_capacity(group.targets.len());
        let mut parent_trust = ParentTrust::new(default_tls);
        for config in &group.targets {
            parent_trust.add(&config.upstream_proxy).map_err(|source| TargetError::ProxyTls {
                target: config.name.clone(),
                source: Box::new(source),
            })?;
            let tls = if config.tls == UpstreamTls::default() {
                default_tls.clone()
            } else {
                if config.tls.insecure_skip_verify {
                    tracing::warn!(
                        route = %route.name,
                        target_name = %config.name,
                        "insecure_skip_verify: the target's TLS certificate is NOT verified"
                    );
                }
                client_config(&config.tls)
                    .map_err(|source| TargetError::Tls { target: config.name.clone(), source })?
            };
            let server_name = match &config.tls.server_name {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    TargetError::ServerName { target: config.name.clone(), name: name.clone() }
                })?),
                None => None,
            };
            // An authority is always a valid header value; an invalid one falls back to none.
            let host = HeaderValue::from_str(config.url.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            targets.push(TargetPlan {
                fingerprint: fingerprint(config),
                config: config.clone(),
                tls,
                server_name,
                host,
            });
        }
        Ok(Blueprint {
            route_url: route.upstream.clone(),
            route_request_headers: route.request_headers.clone(),
            settings,
            hosts: hosts.clone(),
            parent_trust,
            targets,
            probe: group.health_check.as_ref().map(|check| check.probe.clone()),
        })
    }

    /// The static host table every target dials with.
    pub fn hosts(&self) -> &StaticHosts {
        &self.hosts
    }

    /// The index in this blueprint of `other`'s target `index`, when this blueprint has the
    /// same target (name and fingerprint).
    pub fn position_of(&self, other: &Blueprint, index: usize) -> Option<usize> {
        let wanted = other.targets.get(index)?;
        self.targets.iter().position(|plan| {
            plan.config.name == wanted.config.name && plan.fingerprint == wanted.fingerprint
        })
    }

    /// How many configured targets there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Which configured targets expand into addresses: `(index, host, port, refresh)`.
    pub fn expanded(&self) -> impl Iterator<Item = (usize, String, u16, std::time::Duration)> {
        self.targets.iter().enumerate().filter_map(|(index, plan)| {
            let every = plan.config.dns_refresh?;
            let authority = &plan.config.url.authority;
            let port = authority.port_u16().unwrap_or(default_port(&plan.config.url));
            Some((index, authority.host().to_owned(), port, every))
        })
    }

    /// The members for the configured targets; `addresses[i]` holds the addresses target `i`
    /// expands into, once known (until then, and for targets that do not expand, the target
    /// is one member dialling its URL's host). A member already in `current` with the same
    /// name and fingerprint keeps its endpoint, and with it its connection pool.
    pub fn specs(
        &self,
        addresses: &[Option<Vec<SocketAddr>>],
        current: Option<&TargetSet>,
    ) -> Vec<MemberSpec> {
        let mut specs = Vec::new();
        for (index, plan) in self.targets.iter().enumerate() {
            match addresses.get(index).and_then(Option::as_ref) {
                Some(addrs) => {
                    for addr in addrs {
                        let name = format!("{}@{addr}", plan.config.name);
                        specs.push(self.spec(plan, Arc::from(name), Some(*addr), current));
                    }
                }
                None => {
                    let name = Arc::from(plan.config.name.as_str());
                    specs.push(self.spec(plan, name, None, current));
                }
            }
        }
        specs
    }

    fn spec(
        &self,
        plan: &TargetPlan,
        name: Arc<str>,
        addr: Option<SocketAddr>,
        current: Option<&TargetSet>,
    ) -> MemberSpec {
        let fingerprint = match addr {
            Some(addr) => {
                let mut hasher = std::hash::DefaultHasher::new();
                (plan.fingerprint, addr).hash(&mut hasher);
                hasher.finish()
            }
            None => plan.fingerprint,
        };
        let kept = current.and_then(|set| {
            set.members()
                .iter()
                .find(|m| m.spec.name == name && m.spec.fingerprint == fingerprint)
                .map(|m| m.spec.endpoint.clone())
        });
        let endpoint = kept.unwrap_or_else(|| Arc::new(self.endpoint(plan, addr)));
        // A kept endpoint keeps its pool and its count; a changed cap applies from now on.
        endpoint.connections.set_limit(plan.config.max_connections);
        MemberSpec {
            name,
            weight: plan.config.weight,
            tier: plan.config.tier,
            caps: Caps { max_in_flight: plan.config.max_in_flight },
            fingerprint,
            endpoint,
        }
    }

    /// A client for `plan`, dialling `addr` when given (under the URL's own host name, so
    /// `Host`, SNI and certificate checks are unchanged).
    fn endpoint(&self, plan: &TargetPlan, addr: Option<SocketAddr>) -> Endpoint {
        let hosts = match addr {
            Some(addr) => {
                let mut pinned: BTreeMap<String, Vec<std::net::IpAddr>> = (*self.hosts).clone();
                let name = plan.config.url.authority.host().trim_end_matches('.');
                pinned.insert(name.to_ascii_lowercase(), vec![addr.ip()]);
                Arc::new(pinned)
            }
            None => self.hosts.clone(),
        };
        let mut connector = Connector::new(self.settings.connect, hosts.clone(), None)
            .capped(self.settings.max_connections_per_address)
            .limited(plan.config.max_connections);
        if let Some(egress) = Egress::for_upstream(
            &plan.config.upstream_proxy,
            self.settings.connect,
            &hosts,
            &self.parent_trust,
            plan.config.protocol,
        ) {
            connector = connector.through(egress);
        }
        let connections = connector.connections().clone();
        let upstream = Upstream::new(
            self.settings,
            plan.tls.clone(),
            plan.config.protocol,
            plan.server_name.clone(),
            connector,
        )
        .with_route_pool(&plan.config.url, plan.host.clone());
        Endpoint {
            url: plan.config.url.clone(),
            upstream,
            host: plan.host.clone(),
            request_headers: plan.config.request_headers.clone(),
            response_headers: plan.config.response_headers.clone(),
            route_url: plan.config.url == self.route_url,
            connections,
            fast: reached_over_plain_http1(&plan.config).then(|| {
                FastPool::for_route(self.settings.max_idle_per_host, self.settings.pool_idle)
            }),
        }
    }

    /// How the member with `endpoint` is checked, when the route has checks.
    pub fn probe(&self, endpoint: &Endpoint) -> Option<Probe> {
        match self.probe.as_ref()? {
            ProbeKind::Tcp => {
                let authority = &endpoint.url.authority;
                Some(Probe::Tcp {
                    connector: endpoint.upstream.connector().clone(),
                    host: authority.host().to_owned(),
                    port: authority.port_u16().unwrap_or(default_port(&endpoint.url)),
                })
            }
            ProbeKind::Http { path, expect } => {
                let joined = path::join(&endpoint.url.base_path, path);
                let uri = Uri::builder()
                    .scheme(endpoint.url.scheme.clone())
                    .authority(endpoint.url.authority.clone())
                    .path_and_query(PathAndQuery::try_from(joined).ok()?)
                    .build()
                    .ok()?;
                // A check carries the credentials a request would (an API's health endpoint
                // may want its key too).
                let mut headers = HeaderMap::new();
                rules::apply(&self.route_request_headers, &mut headers);
                rules::apply(&endpoint.request_headers, &mut headers);
                Some(Probe::Http(Box::new(HttpProbe {
                    upstream: endpoint.upstream.clone(),
                    uri,
                    authority: endpoint.url.authority.clone(),
                    host: endpoint.host.clone(),
                    headers,
                    expect: *expect,
                })))
            }
        }
    }
}

/// The port a URL without one means.
fn default_port(url: &UpstreamUrl) -> u16 {
    if url.scheme == http::uri::Scheme::HTTPS { 443 } else { 80 }
}

/// A hash of everything that makes a target a different one when it changes: where it is,
/// how it is spoken to (its parent proxies included), and what is sent to it. Not its
/// weight, tier or caps: changing those keeps its health.
fn fingerprint(config: &TargetConfig) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    config.url.to_string().hash(&mut hasher);
    config.protocol.as_str().hash(&mut hasher);
    format!("{:?}", config.tls).hash(&mut hasher);
    for parent in &config.upstream_proxy {
        parent.url().hash(&mut hasher);
        parent.ca.hash(&mut hasher);
        if let Some((user, password)) = &parent.credentials {
            (user, password.expose()).hash(&mut hasher);
        }
    }
    for rules in [&config.request_headers, &config.response_headers] {
        for name in &rules.remove {
            name.as_str().hash(&mut hasher);
        }
        for rule in rules.set.iter().chain(&rules.append) {
            // The expanded value, not the template: a rotated key is a changed target.
            (rule.name.as_str(), rule.value.as_bytes()).hash(&mut hasher);
        }
    }
    hasher.finish()
}
