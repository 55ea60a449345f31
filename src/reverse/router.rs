//! Route selection: whole-segment prefix matching, longest prefix first, host-specific routes
//! before host-less ones (DESIGN rule 11).

use std::sync::Arc;

use http::HeaderValue;

use crate::config::RouteConfig;
use crate::upstream::{Upstream, UpstreamSettings};

/// A route ready to serve: its configuration and its own upstream pool.
#[derive(Debug)]
pub struct Route {
    /// The validated configuration.
    pub config: RouteConfig,
    /// The route's pooled client, with the route's timeouts.
    pub upstream: Upstream,
    /// `Host` sent upstream unless the route preserves the client's.
    pub upstream_host: HeaderValue,
}

/// All routes, ordered so the first match is the best one.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds every route's client; `pool` supplies the pool settings shared by all routes.
    pub fn new(
        configs: &[RouteConfig],
        pool: UpstreamSettings,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Router {
        let mut routes: Vec<Route> = configs
            .iter()
            .filter_map(|config| {
                let settings = UpstreamSettings {
                    connect: config.timeouts.connect,
                    response_header: config.timeouts.response_header,
                    body_idle: config.timeouts.body_idle,
                    ..pool
                };
                let upstream_host =
                    HeaderValue::from_str(config.upstream.authority.as_str()).ok()?;
                Some(Route {
                    config: config.clone(),
                    upstream: Upstream::new(settings, tls.clone()),
                    upstream_host,
                })
            })
            .collect();
        // Longest prefix first; for equal prefixes a route bound to a host comes first.
        routes.sort_by(|a, b| {
            b.config
                .prefix
                .len()
                .cmp(&a.config.prefix.len())
                .then(b.config.host.is_some().cmp(&a.config.host.is_some()))
        });
        Router { routes }
    }

    /// The best route for a request to `host` (no port) and `path`, if any.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| matches(&route.config, host, path))
    }

    /// True when no routes are configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
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

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apiary`; `/` matches everything.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
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
    fn segments_table() {
        for (prefix, path, expected) in [
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/x/y", true),
            ("/api", "/apiary", false),
            ("/api", "/ap", false),
            ("/api", "/API", false),
            ("/api", "/api%2Fx", false),
            ("/", "/anything", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
        ] {
            assert_eq!(segment_prefix(prefix, path), expected, "{prefix} vs {path}");
        }
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
        );
        let pick =
            |host, path| router.find(host, path).map(|r| r.config.upstream.authority.to_string());
        assert_eq!(pick(None, "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(pick(None, "/api/v3").as_deref(), Some("api"));
        assert_eq!(pick(Some("A.TEST"), "/api/v3").as_deref(), Some("a"));
        assert_eq!(pick(Some("b.test"), "/api").as_deref(), Some("api"));
        assert_eq!(pick(None, "/apiary").as_deref(), Some("root"));
    }
}
