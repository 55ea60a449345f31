//! The accept loop: one per listener, bounded by a connection permit per client connection and
//! a cap on connections from any one client address.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::downstream::h1::Prefixed;
use crate::downstream::hold::{ConnectionHold, PerAddress};
use crate::downstream::wire::WireGuard;
use crate::error::{self, Overload, ProxyError};
use crate::observe::metrics::Rejection;
use crate::server::conn;
use crate::server::serving::{Live, Serving};

/// Pause after a failed `accept` (typically EMFILE) so a full file table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `socket` until `stop` (a listener removed by a reload, or shutdown),
/// serving each on its own tracked task, and checks certificate files for changes.
///
/// At most `limits.max_connections` connections are open at once: the loop waits for a permit
/// before accepting, so excess clients queue in the kernel backlog rather than in memory. One
/// client address may hold at most `max_connections_per_ip`; beyond that it gets a 503. Both
/// counts survive reloads; a reload that changes `max_connections` resizes the permit pool.
pub async fn accept_loop(socket: TcpListener, live: Live, stop: CancellationToken) {
    let mut capacity = live.load().proxy.config.limits.max_connections;
    let permits = Arc::new(Semaphore::new(capacity));
    let per_address = Arc::new(PerAddress::default());
    let mut certificate_check = CertificateCheck::new(&live.load());
    let address = socket.local_addr().ok();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = certificate_check.tick() => {
                certificate_check.run(&live.load());
                continue;
            }
            () = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = certificate_check.tick() => {
                certificate_check.run(&live.load());
                continue;
            }
            () = stop.cancelled() => break,
        };
        let serving = live.load_full();
        let limits = &serving.proxy.config.limits;
        resize(&permits, &mut capacity, limits.max_connections);
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(?address, "accept failed: {err}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let metrics = &serving.proxy.observer.metrics;
        let cap = serving.config.policy.max_connections_per_ip;
        let Some(slot) = per_address.try_take(peer.ip(), cap) else {
            tracing::debug!(%peer, limit = "max_connections_per_ip", "connection refused");
            metrics.reject(Rejection::TooManyConnections);
            let plain = serving.tls.is_none();
            serving.proxy.shutdown.spawn(refuse(stream, plain));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hold = ConnectionHold::new(permit, slot, metrics.connection_opened());
        let connection = conn::Connection {
            peer,
            live: live.clone(),
            settings: conn::ConnectionSettings::of(&serving),
            hold: Arc::new(hold),
            stop: stop.clone(),
        };
        let max_head = limits.max_request_head_bytes;
        let timeouts = &serving.proxy.config.timeouts;
        let (first_request, client_send) = (timeouts.request_header, timeouts.client_send);
        // Each kind of connection is spawned as its own future, so a plain connection's task
        // is not as large as a TLS one's (a task's memory is all written when it starts).
        let tasks = &serving.proxy.shutdown;
        match serving.tls.as_ref() {
            Some(tls) => tasks.spawn(connection.serve_tls(stream, tls.acceptor.clone())),
            None if serving.context.modes.socks => {
                tasks.spawn(crate::server::detect::serve_plain(connection, stream, max_head))
            }
            // With the fast path on, a plain HTTP/1 connection starts there; off, hyper serves
            // it from its first byte, exactly as before the fast path existed.
            None if serving.fast_path() => tasks.spawn(connection.serve_plain(stream, max_head)),
            None => {
                let io = WireGuard::new(Prefixed::new(stream), max_head, first_request)
                    .counting_into(metrics.clone())
                    .sending_within(client_send, Some(metrics.clone()));
                tasks.spawn(connection.serve(io))
            }
        }
    }
    tracing::info!(?address, "listener closed");
}

/// Grows or shrinks the permit pool to `wanted` (shrinking takes only free permits; the rest
/// go as connections close, since forgotten permits are never returned).
fn resize(permits: &Semaphore, capacity: &mut usize, wanted: usize) {
    if wanted > *capacity {
        permits.add_permits(wanted - *capacity);
        *capacity = wanted;
    } else if wanted < *capacity {
        let forgotten = permits.forget_permits(*capacity - wanted);
        *capacity -= forgotten;
    }
}

/// Periodic checks of a TLS listener's certificate files, at the listener's reload interval.
struct CertificateCheck {
    ticks: Option<tokio::time::Interval>,
    every: Duration,
}

impl CertificateCheck {
    fn new(serving: &Serving) -> CertificateCheck {
        let mut check = CertificateCheck { ticks: None, every: Duration::ZERO };
        check.follow(serving);
        check
    }

    /// Matches the ticking to the listener's current TLS settings.
    fn follow(&mut self, serving: &Serving) {
        let every = serving.tls.as_ref().map(|tls| tls.resolver.reload_interval());
        match every {
            Some(every) if every != self.every || self.ticks.is_none() => {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                self.ticks = Some(ticks);
                self.every = every;
            }
            Some(_) => {}
            None => self.ticks = None,
        }
    }

    /// Resolves at the next check; never, for a plain listener.
    async fn tick(&mut self) {
        match &mut self.ticks {
            Some(ticks) => {
                ticks.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    fn run(&mut self, serving: &Serving) {
        if let Some(tls) = &serving.tls {
            match tls.resolver.reload_if_changed() {
                Some(Ok(())) => tracing::info!("TLS certificates reloaded"),
                Some(Err(err)) => {
                    tracing::warn!(
                        "TLS certificate reload refused, keeping the current ones: {err}"
                    )
                }
                None => {}
            }
        }
        self.follow(serving);
    }
}

/// Tells an over-limit client why it is turned away (in plain HTTP only: on a TLS listener a
/// handshake would cost what the limit protects) and closes. The refusal is rendered like any
/// other, but written straight to the socket: no request has been read, and reading one would
/// spend what the limit protects.
async fn refuse(mut stream: TcpStream, plain: bool) {
    if plain {
        let refusal =
            error::render_http1(&ProxyError::Overloaded(Overload::ConnectionsFromAddress));
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal)).await;
    }
    let _ = stream.shutdown().await;
}
