//! Route selection: whole-segment prefix matching, longest prefix first, host-specific routes
//! before host-less ones.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use rustls::pki_types::ServerName;

use crate::config::{RouteConfig, UpstreamTls};
use crate::gateway::budget::{BudgetCounters, Holder};
use crate::headers::lookalike::OwnedNames;
use crate::headers::rules;
use crate::observe::Mode;
use crate::observe::metrics::Metrics;
use crate::observe::metrics::{RouteLabel, RouteSeries};
use crate::policy::rate::RateLimiter;
use crate::tls::client::client_config;
use crate::tls::files::TlsFileError;
use crate::upstream::client::{Upstream, UpstreamSettings};
use crate::upstream::connect::{Connector, StaticHosts};
use crate::upstream::egress::{Egress, ParentTrust};
use crate::upstream::group::endpoint::reached_over_plain_http1;
use crate::upstream::group::{Group, Moment, TargetError};
use crate::upstream::h1::FastPool;
use crate::uri::path::segment_prefix;

/// A route ready to serve: its configuration and its own upstream pool.
#[derive(Debug)]
pub struct Route {
    /// The validated configuration.
    pub config: RouteConfig,
    /// The route's pooled client, with the route's timeouts (for a route with targets, the
    /// first target's).
    pub upstream: Upstream,
    /// The targets, when the route has several: each with its own client, health and caps.
    pub group: Option<Arc<Group>>,
    /// `Host` sent upstream unless the route preserves the client's.
    pub upstream_host: HeaderValue,
    /// The route's request rate limit, shared by all clients.
    pub limiter: Option<RateLimiter<()>>,
    /// The route's name, shared with log entries and metric labels, with its metric handles
    /// for plain (not upgraded) requests.
    pub series: Arc<RouteSeries>,
    /// The request header names sluice writes on this route (its rules, and the global ones
    /// given to [`Router::claim_names`]), whose `_` look-alikes are dropped.
    pub owned_names: OwnedNames,
    /// The budget of an AI route that has one, with its counters' names.
    pub ai_budget: Option<Arc<BudgetCounters>>,
    /// The connections the HTTP/1 fast path owns, when the route can be served by it
    /// ([`serves_fast`]); a route with targets uses each target's own pool
    /// (`Endpoint::fast`) instead, and keeps this one empty.
    pub fast: Option<FastPool>,
}

/// Whether the HTTP/1 fast path (`proxy::fast`) can serve a route at all: its upstream, or
/// every one of its targets, plain `http://` speaking HTTP/1.1 (not HTTP/2 prior knowledge),
/// reached directly (no `upstream_proxy`); no cache, and not an AI route (which reads the
/// request body and taps the response).
pub fn serves_fast(route: &RouteConfig) -> bool {
    let upstreams = match &route.group {
        Some(group) => group.targets.iter().all(reached_over_plain_http1),
        None => {
            route.upstream.scheme == http::uri::Scheme::HTTP
                && route.protocol != crate::config::UpstreamProtocol::Http2
        }
    };
    upstreams && route.upstream_proxy.is_empty() && !route.cache.enabled && route.ai.is_none()
}

/// All routes, ordered so the first match is the best one.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// A route whose upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A TLS file of the route is unusable.
    #[error("route {route}: TLS to the upstream cannot be set up")]
    Tls {
        /// The route's name.
        route: String,
        /// Which file, and why.
        #[source]
        source: TlsFileError,
    },
    /// A `ca` file of the route's `upstream_proxy` is unusable.
    #[error("route {route}: TLS to its upstream_proxy cannot be set up")]
    ProxyTls {
        /// The route's name.
        route: String,
        /// Which file, and why (boxed: a rare error keeps the enum small).
        #[source]
        source: Box<TlsFileError>,
    },
    /// `tls.server_name` is not a DNS name or IP address.
    #[error("route {route}: `{name}` is not a valid TLS server name")]
    ServerName {
        /// The route's name.
        route: String,
        /// The configured name.
        name: String,
    },
    /// One of the route's targets cannot be set up.
    #[error("route {route}")]
    Target {
        /// The route's name.
        route: String,
        /// Which target, and why.
        #[source]
        source: TargetError,
    },
}

impl Router {
    /// Builds every route's client; `pool` supplies the pool settings shared by all routes and
    /// `default_tls` the client configuration of routes without TLS settings of their own. A
    /// route with targets that `previous` (the router being replaced) has too, by name, keeps
    /// the health of its unchanged targets.
    pub fn new(
        configs: &[RouteConfig],
        pool: UpstreamSettings,
        default_tls: &Arc<rustls::ClientConfig>,
        hosts: &StaticHosts,
        previous: Option<&Router>,
    ) -> Result<Router, RouteError> {
        let mut routes = Vec::with_capacity(configs.len());
        for config in configs {
            let settings = UpstreamSettings {
                connect: config.timeouts.connect,
                response_header: config.timeouts.response_header,
                body_idle: config.timeouts.body_idle,
                ..pool
            };
            let tls = if config.tls == UpstreamTls::default() {
                default_tls.clone()
            } else {
                if config.tls.insecure_skip_verify {
                    tracing::warn!(
                        route = %config.name,
                        "insecure_skip_verify: the upstream's TLS certificate is NOT verified"
                    );
                }
                client_config(&config.tls)
                    .map_err(|source| RouteError::Tls { route: config.name.clone(), source })?
            };
            let server_name = match &config.tls.server_name {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    RouteError::ServerName { route: config.name.clone(), name: name.clone() }
                })?),
                None => None,
            };
            // An authority is always a valid header value; skip the route rather than panic.
            let Ok(upstream_host) = HeaderValue::from_str(config.upstream.authority.as_str())
            else {
                continue;
            };
            let group = match &config.group {
                Some(group) => {
                    let before = previous.and_then(|router| router.group_of(config));
                    let built =
                        Group::build(config, group, pool, default_tls, hosts, before).map_err(
                            |source| RouteError::Target { route: config.name.clone(), source },
                        )?;
                    Some(built)
                }
                None => None,
            };
            let upstream = match group.as_ref().and_then(|group| {
                group.targets().member(0).map(|m| m.spec.endpoint.upstream.clone())
            }) {
                Some(first) => first,
                None => {
                    let mut connector = Connector::new(settings.connect, hosts.clone(), None)
                        .capped(settings.max_connections_per_address);
                    let mut trust = ParentTrust::new(default_tls);
                    trust.add(&config.upstream_proxy).map_err(|source| RouteError::ProxyTls {
                        route: config.name.clone(),
                        source: Box::new(source),
                    })?;
                    if let Some(egress) = Egress::for_upstream(
                        &config.upstream_proxy,
                        settings.connect,
                        hosts,
                        &trust,
                        config.protocol,
                    ) {
                        connector = connector.through(egress);
                    }
                    Upstream::new(settings, tls, config.protocol, server_name, connector)
                        .with_route_pool(&config.upstream, upstream_host.clone())
                }
            };
            let name = RouteLabel(Some(Arc::from(config.name.as_str())));
            let fast = serves_fast(config)
                .then(|| FastPool::for_route(settings.max_idle_per_host, settings.pool_idle));
            routes.push(Route {
                fast,
                config: config.clone(),
                upstream,
                group,
                upstream_host,
                limiter: config.rate_limit.map(RateLimiter::new),
                series: Arc::new(RouteSeries::new(Mode::Reverse, name)),
                owned_names: OwnedNames::new(rules::names(&config.request_headers)),
                ai_budget: config.ai.as_ref().filter(|ai| ai.budget.is_limited()).map(|ai| {
                    Arc::new(BudgetCounters::new(Holder::Route, &config.name, ai.budget))
                }),
            });
        }
        // Longest prefix first; for equal prefixes a route bound to a host comes first.
        routes.sort_by(|a, b| {
            b.config
                .prefix
                .len()
                .cmp(&a.config.prefix.len())
                .then(b.config.host.is_some().cmp(&a.config.host.is_some()))
        });
        Ok(Router { routes })
    }

    /// The group of this router's route with the name, host and prefix of `route`, if it
    /// has one.
    pub fn group_of(&self, route: &RouteConfig) -> Option<&Group> {
        self.routes
            .iter()
            .find(|mine| {
                mine.config.name == route.name
                    && mine.config.host == route.host
                    && mine.config.prefix == route.prefix
            })
            .and_then(|mine| mine.group.as_deref())
    }

    /// Every route and its upstreams as JSON, for the admin `GET /upstreams`: a route with
    /// targets shows each with its health; a route with one upstream, its URL.
    pub fn upstreams(&self) -> serde_json::Value {
        let now = Moment::now();
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|route| {
                let mut view = match &route.group {
                    Some(group) => group.view(now),
                    None => serde_json::json!({ "upstream": route.config.upstream.to_string() }),
                };
                if let Some(fields) = view.as_object_mut() {
                    fields.insert("route".to_owned(), route.config.name.clone().into());
                    fields.insert("prefix".to_owned(), route.config.prefix.clone().into());
                    fields.insert("host".to_owned(), route.config.host.clone().into());
                }
                view
            })
            .collect();
        serde_json::json!({ "routes": routes })
    }

    /// Publishes every target's health and requests in flight to `metrics`, replacing what
    /// an earlier generation published (read when the metrics are).
    pub fn publish_health(&self, metrics: &Metrics) {
        let now = Moment::now();
        metrics.upstreams.clear_health();
        for group in self.routes.iter().filter_map(|route| route.group.as_ref()) {
            for member in group.targets().members() {
                let state = &member.state;
                metrics.upstreams.publish_health(
                    &member.series,
                    state.healthy(now),
                    state.in_flight(),
                );
            }
        }
    }

    /// Adds `written`, the request header names sluice writes on every route (the global
    /// rules, forwarding headers, request id), to each route's own.
    pub fn claim_names(&mut self, written: &[HeaderName]) {
        for route in &mut self.routes {
            let own = rules::names(&route.config.request_headers);
            route.owned_names = OwnedNames::new(written.iter().chain(own));
        }
    }

    /// The best route for a request to `host` (no port) and `path`, if any.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| matches(&route.config, host, path))
    }
}

/// Whether `route` serves `path` on `host`.
pub fn matches(route: &RouteConfig, host: Option<&str>, path: &str) -> bool {
    let host_ok = match &route.host {
        None => true,
        Some(wanted) => host.is_some_and(|h| h.eq_ignore_ascii_case(wanted)),
    };
    host_ok && segment_prefix(&route.prefix, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, Timeouts};

    fn route(prefix: &str, host: Option<&str>, upstream: &str) -> RouteConfig {
        let mut route =
            RouteConfig::from_cli(&format!("{prefix}={upstream}"), &Timeouts::default()).unwrap();
        route.host = host.map(str::to_owned);
        route
    }

    #[test]
    fn longest_prefix_and_host_specific_routes_win() {
        let tls = crate::tls::client::default_client_config();
        let pool = UpstreamSettings::from_config(&crate::config::Config::default());
        let router = Router::new(
            &[
                route("/", None, "http://root"),
                route("/api", None, "http://api"),
                route("/api/v2", None, "http://v2"),
                route("/api", Some("a.test"), "http://a"),
            ],
            pool,
            &tls,
            &Default::default(),
            None,
        )
        .unwrap();
        let pick =
            |host, path| router.find(host, path).map(|r| r.config.upstream.authority.to_string());
        assert_eq!(pick(None, "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(pick(None, "/api/v3").as_deref(), Some("api"));
        assert_eq!(pick(Some("A.TEST"), "/api/v3").as_deref(), Some("a"));
        assert_eq!(pick(Some("b.test"), "/api").as_deref(), Some("api"));
        assert_eq!(pick(None, "/apiary").as_deref(), Some("root"));
    }
}
