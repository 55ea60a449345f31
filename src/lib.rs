//! sluice: an HTTP proxy that is a forward proxy and a reverse proxy on the same listener.
//!
//! The life of a request, module by module (`docs/ARCHITECTURE.md` has the long form):
//!
//! - [`server`] binds listeners, accepts connections and serves them with hyper;
//! - [`downstream`] is the client side of a connection: the framing guard in front of hyper,
//!   parking idle connections, the connection's place under the limits;
//! - [`proxy`] is the request path, phase by phase (admit, classify, route, pick upstream,
//!   prepare, send, respond, log) over one per-request context, rendering any error through
//!   [`error`] exactly once;
//! - [`upstream`] resolves, dials and pools upstream connections, with typed errors;
//! - [`policy`] holds the checks of who may do what; [`headers`] and [`uri`] are pure
//!   functions on header maps and request targets; [`relay`] copies tunnel bytes both ways;
//! - [`observe`] writes the access log and keeps the metrics and the traffic history;
//!   [`admin`] serves them, the status page, health and the effective config; [`reload`] applies a new configuration live; [`shutdown`]
//!   drains connections with a deadline;
//! - [`config`] loads and validates the configuration; [`tls`] configures rustls; [`body`] is
//!   the one body type; [`memory`] gives heap freed after a burst back to the system.
//!
//! The layers form a DAG: the leaves (`body`, `config`, `error`, `headers`, `observe`,
//! `policy`, `relay`, `shutdown`, `tls`, `uri`) never import the request path, `upstream`
//! never imports `proxy`, and `proxy` reaches the client connection only through
//! `downstream`.

pub mod admin;
pub mod body;
pub mod cache;
pub mod calendar;
pub mod config;
pub mod downstream;
pub mod error;
pub mod gateway;
pub mod h1;
pub mod headers;
pub mod memory;
pub mod observe;
pub mod pac;
pub mod policy;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod socks;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod uri;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::config::source::ConfigSource;
use crate::observe::metrics::Metrics;
use crate::proxy::state::BuildError;
use crate::reload::Reloader;
use crate::server::Bound;
use crate::shutdown::{Drained, Shutdown};

/// Serves `config` on the sockets in `bound` until `shutdown` resolves, then stops accepting
/// and lets in-flight requests and tunnels finish for up to `timeouts.shutdown_grace`.
///
/// Sockets are bound by the caller ([`server::bind`]), so tests can bind `127.0.0.1:0` and
/// read the ports. SIGHUP and the admin `POST /reload` read `source` again and apply it live
/// (see [`reload`]). Fails before serving anything if a route's upstream TLS or the access log
/// cannot be set up.
pub async fn run(
    source: ConfigSource,
    config: Config,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
) -> Result<Drained, BuildError> {
    #[cfg(unix)]
    let hangups = hangup_signals();
    let tracker = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    let (reloader, admin) = Reloader::start(source, config, bound, tracker.clone(), metrics)?;
    let shown = reloader.config().await;
    for listener in &shown.listeners {
        tracing::info!(address = %listener.address, modes = %listener.modes, "listening");
    }
    for line in config::summary::table(&shown).lines().filter(|line| !line.is_empty()) {
        tracing::info!("{line}");
    }
    // Not tracked: the admin listener answers (readiness 503) until the drain is over.
    let admin = admin.map(|admin| tokio::spawn(admin::serve(admin, reloader.clone())));
    #[cfg(unix)]
    tracker.spawn_service(reload_on_sighup(hangups, reloader.clone()));
    shutdown.await;
    let grace = reloader.config().await.timeouts.shutdown_grace;
    tracing::info!(
        in_flight = tracker.in_flight(),
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections; waiting for open connections, tunnels and upgrades"
    );
    let drained = tracker.drain(grace).await;
    match drained {
        Drained::Complete => tracing::info!("shutdown complete"),
        Drained::GraceExpired => tracing::warn!(
            still_running = tracker.in_flight(),
            "grace period expired; closing remaining connections"
        ),
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    Ok(drained)
}

/// Starts listening for SIGHUP at once, so a hang-up during start-up is not fatal.
#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(err) => {
            tracing::warn!(
                "cannot watch SIGHUP ({err}); reload through the admin listener instead"
            );
            None
        }
    }
}

/// Reloads the configuration (certificates and access-log files included) on SIGHUP.
#[cfg(unix)]
async fn reload_on_sighup(hangups: Option<tokio::signal::unix::Signal>, reloader: Arc<Reloader>) {
    let Some(mut hangups) = hangups else { return };
    let shutdown = reloader.shutdown().clone();
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => {}
            () = shutdown.signalled() => return,
        }
        tracing::info!("SIGHUP: reloading the configuration");
        // The outcome is logged by `reload` itself.
        let _ = reloader.reload().await;
    }
}
