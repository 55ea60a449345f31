//! The accept loop: one per listener, bounded by a connection permit per client connection.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::sync::Semaphore;

use super::BoundListener;
use super::conn;
use crate::dispatch::Proxy;

/// Pause after a failed `accept` (typically EMFILE) so a full file table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until shutdown, serving each on its own task.
///
/// At most `limits.max_connections` connections are open at once: the loop waits for a permit
/// before accepting, so excess clients queue in the kernel backlog rather than in memory.
pub async fn accept_loop(listener: BoundListener, proxy: Arc<Proxy>) {
    let permits = Arc::new(Semaphore::new(proxy.config.limits.max_connections));
    let builder = Arc::new(conn::http_builder(&proxy.config, &listener.config));
    let scheme = if listener.tls.is_some() { "https" } else { "http" };
    let modes = listener.config.modes;
    let shutdown = proxy.shutdown.clone();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.signalled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            () = shutdown.signalled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(address = %listener.config.address, "accept failed: {err}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = conn::Connection {
            peer,
            modes,
            scheme,
            proxy: proxy.clone(),
            builder: builder.clone(),
        };
        let tls = listener.tls.as_ref().map(|tls| tls.acceptor.clone());
        shutdown.spawn(async move {
            match tls {
                Some(acceptor) => connection.serve_tls(stream, acceptor).await,
                None => connection.serve(stream).await,
            }
            drop(permit);
        });
    }
    tracing::debug!(address = %listener.config.address, "listener closed");
}

/// The hyper connection builder type every connection of a listener shares.
pub type HttpBuilder = auto::Builder<TokioExecutor>;
