//! Route selection: whole-segment prefix matching, longest prefix first, host-specific routes
//! before host-less ones.

use std::sync::Arc;

use http::HeaderValue;

use rustls::pki_types::ServerName;

use crate::config::{RouteConfig, UpstreamTls};
use crate::observe::Mode;
use crate::observe::metrics::{RouteLabel, RouteSeries};
use crate::policy::rate::RateLimiter;
use crate::tls::client::client_config;
use crate::tls::files::TlsFileError;
use crate::upstream::client::{Upstream, UpstreamSettings};
use crate::upstream::connect::{Connector, StaticHosts};
use crate::uri::path::segment_prefix;

/// A route ready to serve: its configuration and its own upstream pool.
#[derive(Debug)]
pub struct Route {
    /// The validated configuration.
    pub config: RouteConfig,
    /// The route's pooled client, with the route's timeouts.
    pub upstream: Upstream,
    /// `Host` sent upstream unless the route preserves the client's.
    pub upstream_host: HeaderValue,
    /// The route's request rate limit, shared by all clients.
    pub limiter: Option<RateLimiter<()>>,
    /// The route's name, shared with log entries and metric labels, with its metric handles
    /// for plain (not upgraded) requests.
    pub series: Arc<RouteSeries>,
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
    /// `tls.server_name` is not a DNS name or IP address.
    #[error("route {route}: `{name}` is not a valid TLS server name")]
    ServerName {
        /// The route's name.
        route: String,
        /// The configured name.
        name: String,
    },
}

impl Router {
    /// Builds every route's client; `pool` supplies the pool settings shared by all routes and
    /// `default_tls` the client configuration of routes without TLS settings of their own.
    pub fn new(
        configs: &[RouteConfig],
        pool: UpstreamSettings,
        default_tls: &Arc<rustls::ClientConfig>,
        hosts: &StaticHosts,
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
            let connector = Connector::new(settings.connect, hosts.clone(), None);
            let upstream = Upstream::new(settings, tls, config.protocol, server_name, connector)
                .with_route_pool(&config.upstream, upstream_host.clone());
            let name = RouteLabel(Some(Arc::from(config.name.as_str())));
            routes.push(Route {
                config: config.clone(),
                upstream,
                upstream_host,
                limiter: config.rate_limit.map(RateLimiter::new),
                series: Arc::new(RouteSeries::new(Mode::Reverse, name)),
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
