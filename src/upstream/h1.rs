//! Upstream connections the HTTP/1 fast path owns: plain TCP connections to an HTTP/1.1
//! upstream, each taken by a downstream connection's task for one exchange (it writes the
//! request and reads the response itself: no connection task, no channel, no wake-up in
//! between) and given back to its pool ([`FastPool`]) when the response has been read to its
//! end.
//!
//! A route's pool holds connections to its one upstream; the forward proxy's is keyed by
//! `host:port`. Idle connections wait last in, first out (the one used most recently is the
//! least likely to have been closed by the upstream), for at most the idle timeout; one the
//! upstream has closed meanwhile is found at checkout from its socket's readiness, without a
//! system call for those still open.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use tokio::time::Instant;

use crate::h1::response::ResponseError;
use crate::upstream::connect::{ConnectError, Connector, UpstreamTcp};

/// A connection to an upstream, owned by one exchange at a time.
#[derive(Debug)]
pub struct H1Conn {
    /// The socket, counted under the connector's per-address cap while it lives.
    pub stream: UpstreamTcp,
    /// The upstream's address.
    pub peer: Option<SocketAddr>,
    /// Whether an earlier exchange used it (it came from the pool).
    pub reused: bool,
}

/// Why an exchange over an owned connection failed once the request was on its way.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeFailure {
    /// The upstream closed the connection before its response was complete.
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    /// The upstream's response head is not usable HTTP/1.
    #[error(transparent)]
    Protocol(#[from] ResponseError),
    /// A read or write on the connection failed.
    #[error("the connection to the upstream failed")]
    Io(#[source] io::Error),
}

/// A connection waiting for its next exchange.
#[derive(Debug)]
struct Idle {
    stream: UpstreamTcp,
    peer: Option<SocketAddr>,
    since: Instant,
}

#[derive(Debug)]
enum Stacks {
    /// A route's pool: one upstream.
    One(Vec<Idle>),
    /// The forward proxy's: one stack per `host:port`.
    Keyed(HashMap<String, Vec<Idle>>),
}

#[derive(Debug)]
struct Inner {
    stacks: Mutex<Stacks>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether a task is evicting connections idle for longer than `idle_timeout`.
    sweeping: AtomicBool,
}

/// The idle connections of a route's upstream, or of the forward proxy's origins.
#[derive(Debug, Clone)]
pub struct FastPool {
    inner: Arc<Inner>,
}

impl FastPool {
    /// A route's pool: at most `max_idle` idle connections, each for at most `idle_timeout`.
    pub fn for_route(max_idle: usize, idle_timeout: Duration) -> FastPool {
        FastPool::with(Stacks::One(Vec::new()), max_idle, idle_timeout)
    }

    /// The forward proxy's pool: at most `max_idle` idle connections per `host:port`.
    pub fn keyed(max_idle: usize, idle_timeout: Duration) -> FastPool {
        FastPool::with(Stacks::Keyed(HashMap::new()), max_idle, idle_timeout)
    }

    fn with(stacks: Stacks, max_idle: usize, idle_timeout: Duration) -> FastPool {
        FastPool {
            inner: Arc::new(Inner {
                stacks: Mutex::new(stacks),
                max_idle,
                idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// An idle connection to `key` (`host:port`; a route's pool ignores it) that is still open
    /// and not too old (unless `fresh` asks for a new one), or a new one to `authority` dialled
    /// through `connector`. The authority is taken apart only to dial: most exchanges reuse a
    /// connection.
    pub async fn connection(
        &self,
        connector: &Connector,
        key: &str,
        authority: &Authority,
        fresh: bool,
    ) -> Result<H1Conn, ConnectError> {
        if !fresh && let Some(conn) = self.checkout(key) {
            return Ok(conn);
        }
        let (host, port) = (authority.host(), authority.port_u16().unwrap_or(80));
        // Boxed: dialling (resolution, connect, its deadline) is the rare case, and its state
        // would otherwise widen the future of every exchange.
        let stream = Box::pin(connector.connect(host, port)).await?;
        let peer = stream.get_ref().peer_addr().ok();
        Ok(H1Conn { stream, peer, reused: false })
    }

    /// The most recently used idle connection to `key` that is still usable.
    pub fn checkout(&self, key: &str) -> Option<H1Conn> {
        let mut stacks = self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner());
        let stack = match &mut *stacks {
            Stacks::One(stack) => stack,
            Stacks::Keyed(stacks) => stacks.get_mut(key)?,
        };
        while let Some(idle) = stack.pop() {
            if idle.since.elapsed() < self.inner.idle_timeout && still_open(&idle.stream) {
                return Some(H1Conn { stream: idle.stream, peer: idle.peer, reused: true });
            }
        }
        None
    }

    /// Keeps `conn` (at a message boundary, nothing unread on it) for the next exchange to
    /// `key`, unless its stack is full; starts the sweeper if none runs.
    pub fn release(&self, key: &str, conn: H1Conn) {
        let idle = Idle { stream: conn.stream, peer: conn.peer, since: Instant::now() };
        {
            let mut stacks = self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner());
            let stack = match &mut *stacks {
                Stacks::One(stack) => stack,
                Stacks::Keyed(stacks) => match stacks.get_mut(key) {
                    Some(stack) => stack,
                    None => stacks.entry(key.to_owned()).or_default(),
                },
            };
            if stack.len() >= self.inner.max_idle {
                return;
            }
            stack.push(idle);
        }
        if !self.inner.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
    }

    /// Idle connections held, for tests.
    pub fn idle_count(&self) -> usize {
        let stacks = self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner());
        match &*stacks {
            Stacks::One(stack) => stack.len(),
            Stacks::Keyed(stacks) => stacks.values().map(Vec::len).sum(),
        }
    }
}

/// Whether an idle connection is still open: the upstream neither closed it nor sent anything
/// unasked. A socket with nothing new to read answers from its cached readiness, without a
/// system call.
fn still_open(stream: &UpstreamTcp) -> bool {
    let stream = stream.get_ref();
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

/// Closes each idle connection when it has been idle for the idle timeout (waking at the
/// oldest one's deadline, as the route pool's sweeper does, so none outlives its timeout by a
/// sweep period); ends when no connection is left (the next release starts it again) or the
/// pool is gone.
async fn sweep(pool: Weak<Inner>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut stacks = pool.stacks.lock().unwrap_or_else(|p| p.into_inner());
            let timeout = pool.idle_timeout;
            let keep = |idle: &Idle| idle.since.elapsed() < timeout && still_open(&idle.stream);
            let oldest = match &mut *stacks {
                Stacks::One(stack) => {
                    stack.retain(keep);
                    stack.iter().map(|idle| idle.since).min()
                }
                Stacks::Keyed(stacks) => {
                    stacks.retain(|_, stack| {
                        stack.retain(keep);
                        !stack.is_empty()
                    });
                    stacks.values().flatten().map(|idle| idle.since).min()
                }
            };
            match oldest {
                // A deadline beyond what the clock can hold never comes.
                Some(oldest) => match oldest.checked_add(timeout) {
                    Some(deadline) => deadline,
                    None => return,
                },
                None => {
                    // Under the lock, so a release that follows sees the flag down and starts
                    // a new sweeper.
                    pool.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (UpstreamTcp, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let connector = Connector::new(Duration::from_secs(5), Arc::default(), None);
        let ip = addr.ip().to_string();
        let (client, accepted) =
            tokio::join!(connector.connect(&ip, addr.port()), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_last_in_first_out_unless_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = FastPool::keyed(2, Duration::from_secs(60));
        let (a, _a_server) = pair(&listener).await;
        let (b, mut b_server) = pair(&listener).await;
        let a_port = a.get_ref().local_addr().unwrap().port();
        pool.release("h:1", H1Conn { stream: a, peer: None, reused: false });
        pool.release("h:1", H1Conn { stream: b, peer: None, reused: false });
        assert_eq!(pool.idle_count(), 2);
        assert!(pool.checkout("other:1").is_none());
        // The upstream closes b while it is idle: the checkout skips it.
        b_server.shutdown().await.unwrap();
        drop(b_server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pool.checkout("h:1").expect("a is still open");
        assert_eq!(got.stream.get_ref().local_addr().unwrap().port(), a_port);
        assert!(got.reused);
        assert!(pool.checkout("h:1").is_none());
    }

    #[tokio::test]
    async fn a_full_stack_drops_what_is_released() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = FastPool::for_route(1, Duration::from_secs(60));
        let (a, _a) = pair(&listener).await;
        let (b, _b) = pair(&listener).await;
        pool.release("", H1Conn { stream: a, peer: None, reused: false });
        pool.release("", H1Conn { stream: b, peer: None, reused: false });
        assert_eq!(pool.idle_count(), 1);
    }
}
