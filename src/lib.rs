//! sluice: an HTTP proxy that is a forward proxy and a reverse proxy on the same listener.
//!
//! The life of a request, module by module (see `docs/ARCHITECTURE.md` for the long form):
//!
//! - [`server`] binds listeners, accepts connections and serves them with hyper;
//! - [`dispatch`] classifies each request (CONNECT, absolute-form, origin-form) and renders any
//!   error through [`error`] exactly once;
//! - [`forward`] handles absolute-form requests and CONNECT tunnels;
//! - [`reverse`] matches routes and rewrites paths for origin-form requests;
//! - [`exchange`] is what both share once the target is known: head rewrite, send, response;
//! - [`headers`] removes hop-by-hop fields, adds `Via` and forwarding headers, applies rules;
//! - [`policy`] decides who may do what (access, auth, limits, destinations, smuggling);
//! - [`upgrade`] passes WebSocket (and allowed) upgrades through; [`tls`] configures rustls;
//! - [`upstream`] dials and pools upstream connections, with typed connect errors;
//! - [`relay`] copies tunnel bytes both ways with half-close and an idle timeout;
//! - [`config`] loads and validates the configuration; [`body`] and [`context`] are the types
//!   passed along the way.

pub mod body;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod headers;
pub mod policy;
pub mod relay;
pub mod reverse;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::Proxy;
use crate::reverse::router::RouteError;
use crate::server::shutdown::{Drained, Shutdown};
use crate::server::{BoundListener, listener};
use crate::tls::server::CertResolver;

/// Serves `listeners` with `config` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests and tunnels finish for up to `timeouts.shutdown_grace`.
///
/// Listeners are bound by the caller, so tests can bind `127.0.0.1:0` and read the port. Fails
/// before serving anything if a route's upstream TLS cannot be set up.
pub async fn run(
    config: Config,
    listeners: Vec<BoundListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<Drained, RouteError> {
    let grace = config.timeouts.shutdown_grace;
    let tracker = Shutdown::new();
    let proxy = Arc::new(Proxy::new(config, tracker.clone())?);
    let resolvers: Vec<_> =
        listeners.iter().filter_map(|l| l.tls.as_ref().map(|t| t.resolver.clone())).collect();
    for resolver in &resolvers {
        tracker.spawn(certificate_watch(resolver.clone(), tracker.clone()));
    }
    #[cfg(unix)]
    tracker.spawn(reload_on_sighup(resolvers, tracker.clone()));
    for bound in listeners {
        tracker.spawn(listener::accept_loop(bound, proxy.clone()));
    }
    shutdown.await;
    tracing::info!(
        in_flight = tracker.in_flight(),
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections; waiting for in-flight work"
    );
    let drained = tracker.drain(grace).await;
    match drained {
        Drained::Complete => tracing::info!("shutdown complete"),
        Drained::GraceExpired => tracing::warn!(
            still_running = tracker.in_flight(),
            "grace period expired; closing remaining connections"
        ),
    }
    Ok(drained)
}

/// Checks a TLS listener's certificate files for changes and reloads them until shutdown.
async fn certificate_watch(resolver: Arc<CertResolver>, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(resolver.reload_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.signalled() => return,
        }
        report_reload(resolver.reload_if_changed());
    }
}

/// Reloads every listener certificate on SIGHUP.
#[cfg(unix)]
async fn reload_on_sighup(resolvers: Vec<Arc<CertResolver>>, shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; certificates reload only when their files change");
        return;
    };
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => {}
            () = shutdown.signalled() => return,
        }
        tracing::info!("SIGHUP: reloading TLS certificates");
        for resolver in &resolvers {
            report_reload(Some(resolver.reload()));
        }
    }
}

fn report_reload(outcome: Option<Result<(), crate::tls::files::TlsFileError>>) {
    match outcome {
        Some(Ok(())) => tracing::info!("TLS certificates reloaded"),
        Some(Err(err)) => {
            tracing::warn!("TLS certificate reload refused, keeping the current ones: {err}")
        }
        None => {}
    }
}
