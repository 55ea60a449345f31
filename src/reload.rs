//! Live reload: read the configuration again and serve it without dropping anything in flight.
//!
//! A reload builds everything the new configuration needs first (routes and their TLS clients,
//! the access log, listener certificates, sockets for new listeners) and only then commits, so
//! an invalid configuration changes nothing. On commit:
//!
//! - a listener whose address is still configured keeps its socket, its connections and its
//!   connection counts, and serves the new [`Serving`] from the next request on;
//! - a listener no longer configured stops accepting and asks its connections to finish
//!   gracefully (in-flight requests complete; keep-alive connections close after them);
//! - a new listener is bound and starts accepting.
//!
//! Tunnels, WebSocket sessions and streaming responses keep the generation they started under
//! (they hold an `Arc` of it) and run to their natural end; only shutdown stops them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::source::ConfigSource;
use crate::config::{Config, ConfigError, ListenerConfig, Modes};
use crate::observe::metrics::{Metrics, ReloadResult};
use crate::proxy::state::{BuildError, Proxy};
use crate::server::listener;
use crate::server::serving::{Live, Serving};
use crate::server::{BindError, Bound, BoundListener};
use crate::shutdown::Shutdown;
use tokio::net::TcpListener;

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is invalid (each problem with its line and key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A route's TLS client or the access log could not be set up.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound or its certificates loaded.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Shutdown has begun: the listeners are closing and nothing new may start.
    #[error("shutting down; the configuration is no longer reloaded")]
    ShuttingDown,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Every listener now serving, with its bound address.
    pub listening: Vec<(SocketAddr, Modes)>,
    /// Listeners the reload closed.
    pub closed: Vec<SocketAddr>,
    /// Routes now configured.
    pub routes: usize,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reloaded: {} routes; listening on", self.routes)?;
        for (i, (address, modes)) in self.listening.iter().enumerate() {
            write!(f, "{} {address} ({modes})", if i == 0 { "" } else { "," })?;
        }
        for address in &self.closed {
            write!(f, "; closed {address}")?;
        }
        Ok(())
    }
}

/// The outcome of the latest reload, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    /// When it finished.
    pub at: SystemTime,
    /// Whether it applied.
    pub result: ReloadResult,
    /// What changed, or why it was refused (as `POST /reload` answers and the log says:
    /// problems are named by file, line and key; values of secrets never appear in them).
    pub message: String,
}

/// One listener being served.
#[derive(Debug)]
struct Running {
    /// The address as configured (its port may be 0).
    configured: SocketAddr,
    /// The address actually bound.
    bound: SocketAddr,
    live: Live,
    stop: CancellationToken,
}

/// The served configuration and its listeners.
#[derive(Debug)]
struct State {
    config: Config,
    /// The generation being served: the next one takes over its cache and the health of its
    /// routes' targets.
    proxy: Arc<Proxy>,
    listeners: Vec<Running>,
}

/// Owns the running listeners and swaps in new configurations.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// The admin listener's bound address, shown by [`Reloader::config`].
    admin: Option<SocketAddr>,
    /// When serving started.
    started: SystemTime,
    /// The latest reload's outcome.
    last_reload: std::sync::Mutex<Option<ReloadRecord>>,
}

impl Reloader {
    /// Starts serving `config` on the already-bound listeners; reloads read `source`. Returns
    /// the admin socket for the caller to serve.
    pub fn start(
        source: ConfigSource,
        config: Config,
        bound: Bound,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Reloader>, Option<TcpListener>), BuildError> {
        let admin = bound.admin.as_ref().and_then(|socket| socket.local_addr().ok());
        let listeners = bound.listeners;
        let proxy = Arc::new(Proxy::new(config.clone(), shutdown.clone(), metrics.clone(), None)?);
        let mut running = Vec::with_capacity(listeners.len());
        for bound in listeners {
            let address = bound.local_addr().unwrap_or(bound.config.address);
            let configured = bound.config.address;
            let serving = Serving::new(proxy.clone(), bound.config, bound.tls);
            running.push(launch(&shutdown, bound.socket, serving, configured, address));
        }
        let state = Mutex::new(State { config, proxy, listeners: running });
        let reloader = Arc::new(Reloader {
            source,
            shutdown,
            metrics,
            state,
            admin,
            started: SystemTime::now(),
            last_reload: std::sync::Mutex::new(None),
        });
        Ok((reloader, bound.admin))
    }

    /// The process-wide metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The running generation's HTTP cache, when one is configured.
    pub async fn cache(&self) -> Option<Arc<Cache>> {
        self.state.lock().await.proxy.cache.clone()
    }

    /// When serving started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The latest reload's outcome, if there was a reload.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The shutdown handle the listeners run under.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The configuration being served, with each listener's bound address.
    pub async fn config(&self) -> Config {
        self.bound_config(&*self.state.lock().await)
    }

    /// The configuration being served (as [`Reloader::config`]) and the generation built from
    /// it, read together so that a reload cannot come between them.
    pub async fn serving(&self) -> (Config, Arc<Proxy>) {
        let state = self.state.lock().await;
        (self.bound_config(&state), state.proxy.clone())
    }

    fn bound_config(&self, state: &State) -> Config {
        let mut config = state.config.clone();
        for (listener, running) in config.listeners.iter_mut().zip(&state.listeners) {
            listener.address = running.bound;
        }
        if let (Some(admin), Some(bound)) = (config.admin.as_mut(), self.admin) {
            admin.address = bound;
        }
        config
    }

    /// The generation being served.
    pub async fn proxy(&self) -> Arc<Proxy> {
        self.state.lock().await.proxy.clone()
    }

    /// Reads the configuration again and applies it, or explains why not (logged too).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut state = self.state.lock().await;
        // A reload during the drain would open listeners (and accept) after shutdown closed
        // them. Checked under the lock, so a reload that started first commits before the
        // listeners are stopped, and none starts after.
        let outcome = if self.shutdown.is_signalled() {
            Err(ReloadError::ShuttingDown)
        } else {
            self.apply(&mut state).await
        };
        let (result, message) = match &outcome {
            Ok(report) => {
                tracing::info!("{report}");
                (ReloadResult::Applied, report.to_string())
            }
            Err(err @ ReloadError::ShuttingDown) => {
                tracing::warn!("reload refused: shutting down");
                (ReloadResult::Refused, err.to_string())
            }
            Err(err) => {
                let err_text = chain(err);
                tracing::error!(
                    "reload refused, the running configuration is unchanged: {err_text}"
                );
                (ReloadResult::Refused, err_text)
            }
        };
        self.metrics.reloaded(result);
        let record = ReloadRecord { at: SystemTime::now(), result, message };
        *self.last_reload.lock().unwrap_or_else(PoisonError::into_inner) = Some(record);
        outcome
    }

    async fn apply(&self, state: &mut State) -> Result<ReloadReport, ReloadError> {
        let mut config = self.source.load()?;
        // These two are fixed for the life of the process; the running values stay in force
        // (and in `/config`) until a restart.
        if config.workers != state.config.workers {
            tracing::warn!("`workers` changed; it applies at the next restart");
            config.workers = state.config.workers;
        }
        if config.admin != state.config.admin {
            tracing::warn!("[admin] changed; the admin listener changes at the next restart");
            config.admin = state.config.admin;
        }
        let proxy = Arc::new(Proxy::new(
            config.clone(),
            self.shutdown.clone(),
            self.metrics.clone(),
            Some(&state.proxy),
        )?);
        // Build everything before touching anything, so a failure leaves all as it was.
        let matched = match_listeners(&state.listeners, &config.listeners);
        let mut plan = Vec::with_capacity(config.listeners.len());
        for (wanted, existing) in config.listeners.iter().zip(&matched) {
            let step = match existing {
                Some(index) => {
                    let tls = crate::server::load_tls(wanted)?;
                    Step::Keep(*index, Box::new(Serving::new(proxy.clone(), wanted.clone(), tls)))
                }
                None => Step::Open(Box::new(crate::server::bind_listener(wanted).await?)),
            };
            plan.push(step);
        }
        // Commit.
        let mut previous: Vec<Option<Running>> =
            std::mem::take(&mut state.listeners).into_iter().map(Some).collect();
        let mut listeners = Vec::with_capacity(plan.len());
        for step in plan {
            match step {
                Step::Keep(index, serving) => {
                    if let Some(running) = previous.get_mut(index).and_then(Option::take) {
                        running.live.store(Arc::from(serving));
                        listeners.push(running);
                    }
                }
                Step::Open(bound) => {
                    let bound = *bound;
                    let address = bound.local_addr().unwrap_or(bound.config.address);
                    let configured = bound.config.address;
                    let serving = Serving::new(proxy.clone(), bound.config, bound.tls);
                    listeners.push(launch(
                        &self.shutdown,
                        bound.socket,
                        serving,
                        configured,
                        address,
                    ));
                }
            }
        }
        let mut closed = Vec::new();
        for running in previous.into_iter().flatten() {
            running.stop.cancel();
            closed.push(running.bound);
        }
        let report = ReloadReport {
            listening: listeners
                .iter()
                .map(|running| (running.bound, running.live.load().config.modes))
                .collect(),
            closed,
            routes: config.routes.len(),
        };
        state.listeners = listeners;
        state.config = config;
        state.proxy = proxy;
        Ok(report)
    }
}

/// What a reload does with one configured listener.
enum Step {
    /// Serve it from the running listener at this index.
    Keep(usize, Box<Serving>),
    /// Open it anew.
    Open(Box<BoundListener>),
}

/// Which running listener (by index) each wanted listener keeps, if any: first every wanted
/// address that names a bound address, then the rest by configured address (port 0 in tests),
/// each running listener used at most once. Two passes, so a new `:0` listener listed first
/// cannot claim a listener that a later entry names by its bound address.
fn match_listeners(running: &[Running], wanted: &[ListenerConfig]) -> Vec<Option<usize>> {
    let mut taken = vec![false; running.len()];
    let mut matched = vec![None; wanted.len()];
    let passes: [fn(&Running) -> SocketAddr; 2] = [|r| r.bound, |r| r.configured];
    for address_of in passes {
        for (slot, listener) in matched.iter_mut().zip(wanted) {
            if slot.is_some() {
                continue;
            }
            let free = running.iter().enumerate().find(|(i, r)| {
                address_of(r) == listener.address && !taken.get(*i).copied().unwrap_or(true)
            });
            if let Some((index, _)) = free {
                if let Some(flag) = taken.get_mut(index) {
                    *flag = true;
                }
                *slot = Some(index);
            }
        }
    }
    matched
}

/// Spawns the accept loop for a listener.
fn launch(
    shutdown: &Shutdown,
    socket: tokio::net::TcpListener,
    serving: Serving,
    configured: SocketAddr,
    bound: SocketAddr,
) -> Running {
    let live: Live = Arc::new(ArcSwap::from_pointee(serving));
    let stop = shutdown.listener_token();
    shutdown.spawn_service(listener::accept_loop(socket, live.clone(), stop.clone()));
    Running { configured, bound, live, stop }
}

/// An error and its causes, joined with ": " (a config error's own text already lists every
/// problem with its file, line and key).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}
