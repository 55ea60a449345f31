//! What the request path shares: [`Proxy`], one configuration generation (config, routes,
//! policy, observer, shutdown tracker), and [`ListenerContext`], what one listener serves and
//! enforces.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;

use crate::cache::Cache;
use crate::config::{Config, ListenerConfig, ListenerPolicy, Modes, UpstreamProtocol};
use crate::gateway::Gateway;
use crate::gateway::virtual_key::{KeyStore, KeyStoreError};
use crate::headers::via::Via;
use crate::headers::{forwarded, rules};
use crate::observe::access_log::AccessLogError;
use crate::observe::metrics::{Metrics, RouteLabel, RouteSeries};
use crate::observe::{Mode, Observer};
use crate::policy::Policy;
use crate::policy::destination::{self, DestinationGuard};
use crate::proxy::router::{RouteError, Router};
use crate::shutdown::Shutdown;
use crate::state::redis::RedisCounters;
use crate::state::{SharedState, StateError};
use crate::upstream::client::{Upstream, UpstreamSettings};
use crate::upstream::connect::{Connector, Dialer, StaticHosts};
use crate::upstream::egress::{Egress, ParentTrust};
use crate::upstream::h1::FastPool;

/// Everything shared by all connections of one configuration generation: configuration,
/// policy, routes, the task tracker.
#[derive(Debug)]
pub struct Proxy {
    /// The configuration being served.
    pub config: Config,
    /// The reverse routes, each with its own pool.
    pub router: Router,
    /// Access, authentication and rate checks.
    pub policy: Policy,
    /// Tracks connections, tunnels and upgrades so shutdown can wait for them.
    pub shutdown: Shutdown,
    /// The access log and metrics.
    pub observer: Arc<Observer>,
    /// The shared HTTP cache, when a route or listener caches (an AI route's exact cache
    /// included).
    pub cache: Option<Arc<Cache>>,
    /// This instance's `Via` entry, whether or not it is written (loops are recognised by it).
    pub via_entry: Option<Via>,
    /// The parent-proxy rules forward-proxy traffic leaves by (tunnels, SOCKS sessions and
    /// absolute-form requests), shared by every listener's forward connector.
    pub egress: Arc<Egress>,
    /// The AI gateway's virtual keys and counters, when a route is an AI route.
    pub gateway: Option<Arc<Gateway>>,
    default_tls: Arc<rustls::ClientConfig>,
    hosts: StaticHosts,
    /// This host's own addresses, read for this generation (the forward proxy's guards refuse
    /// them with the private ranges).
    own_addresses: Arc<[IpAddr]>,
}

impl Proxy {
    /// Builds the shared state for `config`, including every route's upstream client and the
    /// access log, reporting into `metrics`. From `previous`, the generation being replaced,
    /// the cache (when one is needed) keeps its stored responses if its limits are unchanged,
    /// and the targets of routes with several keep their health if they did not change.
    pub fn new(
        config: Config,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
        previous: Option<&Proxy>,
    ) -> Result<Proxy, BuildError> {
        let default_tls = crate::tls::client::default_client_config();
        let hosts: StaticHosts = Arc::new(config.dns_hosts.clone());
        let settings = UpstreamSettings::from_config(&config);
        let previous_router = previous.map(|proxy| &proxy.router);
        let mut router =
            Router::new(&config.routes, settings, &default_tls, &hosts, previous_router)?;
        router.claim_names(&written_names(&config));
        let policy = Policy::new(&config);
        let observer = Arc::new(Observer::new(&config, metrics)?);
        let caching = config.routes.iter().any(|route| route.cache.enabled)
            || config.listeners.iter().any(|listener| listener.cache && listener.modes.forward)
            || config
                .routes
                .iter()
                .any(|route| route.ai.as_ref().is_some_and(|ai| ai.cache_ttl.is_some()));
        let previous_cache = previous.and_then(|proxy| proxy.cache.as_deref());
        let cache = caching.then(|| Cache::new(&config.cache, previous_cache, &shutdown));
        let gateway = gateway(&config, &observer.metrics, previous)?;
        let via_entry = Via::new(&config.headers.via_pseudonym);
        // Parents are dialled without the destination guard: the operator chose them.
        let parents = Dialer::new(settings.connect, hosts.clone(), None);
        let trust =
            ParentTrust::for_rules(&config.parents, &default_tls).map_err(BuildError::ParentTls)?;
        let egress = Arc::new(Egress::new(&config.parents, parents, &trust, settings.connect));
        let own_addresses = destination::own_addresses();
        tracing::debug!(addresses = ?own_addresses, "this host's own addresses");
        Ok(Proxy {
            config,
            router,
            policy,
            shutdown,
            observer,
            cache,
            gateway,
            via_entry,
            egress,
            default_tls,
            hosts,
            own_addresses,
        })
    }

    /// The `Via` entry to append to forwarded messages, when `headers.via` is on.
    pub fn via(&self) -> Option<&Via> {
        self.via_entry.as_ref().filter(|_| self.config.headers.via)
    }

    /// The per-listener state: its modes and policy, and a forward-proxy client whose
    /// connector enforces this listener's destination guard (a separate pool per listener, so
    /// a connection opened for a trusted listener is never reused for a guarded one) and
    /// leaves by the `[[parent]]` rules.
    pub fn listener_context(&self, listener: &ListenerConfig, secure: bool) -> ListenerContext {
        let guard = DestinationGuard::new(&listener.policy, &self.config.destinations)
            .with_own_addresses(&self.own_addresses);
        let guard = Arc::new(guard);
        let settings = UpstreamSettings::from_config(&self.config);
        let connector = Connector::new(settings.connect, self.hosts.clone(), Some(guard.clone()))
            .capped(settings.max_connections_per_address)
            .through(self.egress.clone());
        let forward = Upstream::new(
            settings,
            self.default_tls.clone(),
            UpstreamProtocol::Auto,
            None,
            connector,
        );
        // The fast path's connections to the same origins: its own idle stacks, the same
        // limits, and the same dialer (so the per-address cap counts both).
        let forward_pool = FastPool::keyed(settings.max_idle_per_host, settings.pool_idle);
        ListenerContext {
            cache: listener.cache && listener.modes.forward,
            modes: listener.modes,
            scheme: if secure { "https" } else { "http" },
            policy: listener.policy.clone(),
            guard,
            forward,
            forward_pool,
            forward_series: Arc::new(RouteSeries::new(Mode::Forward, RouteLabel::default())),
        }
    }
}

/// The request header names sluice writes on every routed request: the forwarding headers it
/// is configured to write, the request id and the global request rules' names.
fn written_names(config: &Config) -> Vec<HeaderName> {
    let mut names = forwarded::written_names(&config.headers);
    names.push(config.request_id.header.clone());
    names.extend(rules::names(&config.headers.request).cloned());
    names
}

/// The AI gateway of `config`, when a route is an AI route: its virtual keys (the key file
/// read now, and watched), and its counters, kept from `previous` when the shared store's
/// settings did not change, so a reload never resets a budget.
fn gateway(
    config: &Config,
    metrics: &Metrics,
    previous: Option<&Proxy>,
) -> Result<Option<Arc<Gateway>>, BuildError> {
    if !config.routes.iter().any(|route| route.ai.is_some()) {
        return Ok(None);
    }
    let settings = &config.gateway;
    let keys =
        Arc::new(KeyStore::new(settings.virtual_keys.clone(), settings.virtual_keys_file.clone())?);
    if settings.virtual_keys_file.is_some()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let interval = settings.virtual_keys_check_interval;
        runtime.spawn(KeyStore::watch(Arc::downgrade(&keys), interval));
    }
    let kept = previous
        .filter(|proxy| proxy.config.gateway.redis == settings.redis)
        .and_then(|proxy| proxy.gateway.as_ref())
        .map(|gateway| gateway.state.clone());
    let state = match (kept, &settings.redis) {
        (Some(state), _) => state,
        (None, None) => Arc::new(SharedState::memory()),
        (None, Some(redis)) => {
            let counters =
                RedisCounters::new(redis.url.expose(), &redis.key_prefix, redis.timeout)?;
            Arc::new(SharedState::redis(
                counters,
                redis.on_failure,
                redis.retry_interval,
                metrics.ai.state(),
            ))
        }
    };
    Ok(Some(Arc::new(Gateway { keys, state })))
}

/// Why the state for a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route's upstream client could not be set up.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The virtual keys could not be put in force.
    #[error(transparent)]
    VirtualKeys(#[from] KeyStoreError),
    /// The shared counters' store is not usable.
    #[error(transparent)]
    SharedState(#[from] StateError),
    /// A `ca` file of a `[[parent]]` rule is unusable.
    #[error("TLS to the [[parent]] proxies cannot be set up")]
    ParentTls(#[source] crate::tls::files::TlsFileError),
}

/// What one listener serves and enforces, shared by its connections.
#[derive(Debug)]
pub struct ListenerContext {
    /// Which kinds of request it accepts.
    pub modes: Modes,
    /// `https` for TLS listeners, else `http`.
    pub scheme: &'static str,
    /// Its forward-proxy policy.
    pub policy: ListenerPolicy,
    /// Its destination checks.
    pub guard: Arc<DestinationGuard>,
    /// Its forward-proxy upstream client.
    pub forward: Upstream,
    /// The HTTP/1 fast path's idle connections to its forward proxy's origins, per
    /// `host:port`, dialled by `forward`'s connector.
    pub forward_pool: FastPool,
    /// The metric handles of its forward-proxy requests.
    pub forward_series: Arc<RouteSeries>,
    /// Whether its forward proxy's plain `http://` requests go through the cache.
    pub cache: bool,
}
