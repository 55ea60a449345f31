//! Active health checks: a task per target asks it, at an interval with jitter, whether it
//! is up (an HTTP request with an expected status, or a TCP connect), and marks it down after
//! `unhealthy_threshold` failures in a row and up again after `healthy_threshold` passes in a
//! row. Each transition is logged once.
//!
//! The verdict and its streak live in the target's shared state, so they survive a reload for
//! a target that did not change: the new generation's checker takes over from the old one
//! (an epoch in the state tells the old checker to stop) and goes on counting where it left
//! off. A target starts healthy, so a start or a reload never refuses traffic while the first
//! checks are under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::balance::Rng;
use crate::body::Body;
use crate::config::health::{ExpectStatus, HealthSettings};
use crate::upstream::client::{Upstream, UpstreamError};
use crate::upstream::connect::{ConnectError, Connector};
use crate::upstream::egress::EgressError;

/// A change of a target's health, logged once when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Passed `healthy_threshold` checks in a row: back in service.
    Up,
    /// Failed `unhealthy_threshold` checks in a row: out of service.
    Down,
}

impl Transition {
    /// The log and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Up => "up",
            Transition::Down => "down",
        }
    }
}

/// One check's effect on a verdict: `healthy` with `streak` results in a row that disagree
/// with it, after a check that `passed`. Returns the new verdict, the new streak and the
/// transition if the verdict changed.
pub fn step(
    healthy: bool,
    streak: u32,
    passed: bool,
    settings: &HealthSettings,
) -> (bool, u32, Option<Transition>) {
    if passed == healthy {
        return (healthy, 0, None);
    }
    let streak = streak.saturating_add(1);
    let threshold =
        if healthy { settings.unhealthy_threshold } else { settings.healthy_threshold }.max(1);
    if streak < threshold {
        return (healthy, streak, None);
    }
    let transition = if passed { Transition::Up } else { Transition::Down };
    (passed, 0, Some(transition))
}

/// The wait before the next check: `interval` plus a random part of `jitter`.
pub fn jittered(interval: Duration, jitter: Duration, rng: &mut Rng) -> Duration {
    interval + jitter.mul_f64(rng.unit())
}

/// Bit of [`Active::state`] set while the target is marked down.
const DOWN: u32 = 1 << 31;

/// A target's active health, in atomics: the checker writes, requests read.
#[derive(Debug, Default)]
pub struct Active {
    /// [`DOWN`] while unhealthy; the low bits are the streak of disagreeing results.
    state: AtomicU32,
    /// Which checker owns the verdict; a checker whose epoch is no longer current stops.
    epoch: AtomicU64,
}

impl Active {
    /// Whether the checks (if any) consider the target up.
    pub fn is_healthy(&self) -> bool {
        self.state.load(Ordering::Relaxed) & DOWN == 0
    }

    /// Results in a row that disagree with the current verdict.
    pub fn streak(&self) -> u32 {
        self.state.load(Ordering::Relaxed) & !DOWN
    }

    /// Records one check. Only the current checker calls this, so a load and a store suffice.
    pub fn record(&self, passed: bool, settings: &HealthSettings) -> Option<Transition> {
        let (healthy, streak, transition) =
            step(self.is_healthy(), self.streak(), passed, settings);
        let streak = streak.min(!DOWN);
        self.state.store(if healthy { streak } else { streak | DOWN }, Ordering::Relaxed);
        transition
    }

    /// Marks the verdict healthy with no streak, and stops any checker of the target: for a
    /// target whose route no longer checks it.
    pub fn disown(&self) {
        self.take_over();
        self.state.store(0, Ordering::Relaxed);
    }

    /// Makes the caller the owner of the verdict; returns its epoch.
    fn take_over(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Whether the checker with `epoch` still owns the verdict.
    fn owned_by(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }
}

/// How one target is checked.
#[derive(Debug, Clone)]
pub enum Probe {
    /// A TCP connection to `host:port` opens.
    Tcp {
        /// Dials with the target's DNS and static hosts (through its `upstream_proxy`, if it
        /// has one).
        connector: Connector,
        /// The target's host.
        host: String,
        /// The target's port.
        port: u16,
    },
    /// An HTTP `GET` answers with an expected status (boxed: the client is large).
    Http(Box<HttpProbe>),
}

/// An HTTP check: a `GET` of `uri` through the target's own client (its TLS, protocol and
/// pool) that must answer with an expected status.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// The target's client.
    pub upstream: Upstream,
    /// Absolute URI of the check.
    pub uri: Uri,
    /// The target's authority, for error messages.
    pub authority: Authority,
    /// `Host` of the check.
    pub host: HeaderValue,
    /// Further request headers (the target's own, such as an API key).
    pub headers: HeaderMap,
    /// Passing statuses.
    pub expect: ExpectStatus,
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    /// No answer within the check timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The TCP connection could not be opened.
    #[error("connect failed")]
    Connect(#[source] ConnectError),
    /// No parent proxy (`upstream_proxy`) opened a tunnel to the target.
    #[error("no tunnel through the parent proxy")]
    Parent(#[source] EgressError),
    /// The HTTP exchange failed.
    #[error("request failed")]
    Exchange(#[source] UpstreamError),
    /// The target answered with a status outside the expected range.
    #[error("answered {0}")]
    Status(StatusCode),
}

impl Probe {
    /// Runs one check, bounded by `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), CheckFailure> {
        tokio::time::timeout(timeout, self.run())
            .await
            .unwrap_or(Err(CheckFailure::Timeout(timeout)))
    }

    async fn run(&self) -> Result<(), CheckFailure> {
        match self {
            Probe::Tcp { connector, host, port } => match connector.open(host, *port).await {
                // sluice's own caps on connections to the target are full: the check says
                // nothing about the target, which sluice is busy talking to.
                Ok(_)
                | Err(EgressError::Direct(
                    ConnectError::AtCapacity { .. } | ConnectError::TargetAtCapacity { .. },
                )) => Ok(()),
                Err(EgressError::Direct(err)) => Err(CheckFailure::Connect(err)),
                Err(err) => Err(CheckFailure::Parent(err)),
            },
            Probe::Http(http) => {
                let HttpProbe { upstream, uri, authority, host, headers, expect } = &**http;
                let mut request = Request::get(uri.clone())
                    .body(Body::empty())
                    .map_err(|_| CheckFailure::Connect(ConnectError::MissingHost))?;
                *request.headers_mut() = headers.clone();
                request.headers_mut().insert(http::header::HOST, host.clone());
                let answered = match upstream.send(request, authority, false).await {
                    Ok(answered) => answered,
                    // As for a TCP check: sluice's own connection cap, not the target.
                    Err(UpstreamError::Connect {
                        source:
                            ConnectError::AtCapacity { .. } | ConnectError::TargetAtCapacity { .. },
                        ..
                    }) => {
                        return Ok(());
                    }
                    Err(err) => return Err(CheckFailure::Exchange(err)),
                };
                // The body is dropped unread: a check is not worth a connection's reuse.
                let status = answered.response.status();
                if expect.accepts(status) { Ok(()) } else { Err(CheckFailure::Status(status)) }
            }
        }
    }
}

/// One target's checker: what to check, how often, and whose state to update.
#[derive(Debug)]
pub struct Checker {
    /// The target's shared state.
    pub state: Arc<super::TargetState>,
    /// How it is checked.
    pub probe: Probe,
    /// When and how strictly.
    pub settings: HealthSettings,
    /// `route/target`, for the transition log lines.
    pub name: Arc<str>,
}

/// Starts `checker` as a task that runs until `stop` is cancelled or a newer checker of the
/// same target takes over (after a reload).
pub fn spawn(checker: Checker, stop: CancellationToken) -> JoinHandle<()> {
    let epoch = checker.state.active.take_over();
    tokio::spawn(async move {
        let Checker { state, probe, settings, name } = checker;
        let mut rng = Rng::per_request();
        // The first check comes after a random part of the jitter, not a whole interval:
        // a freshly configured target is known quickly, and many start out of step.
        let mut wait = settings.jitter.mul_f64(rng.unit());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if !state.active.owned_by(epoch) {
                return;
            }
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = probe.check(settings.timeout) => result,
            };
            if !state.active.owned_by(epoch) {
                return;
            }
            match (state.active.record(result.is_ok(), &settings), result) {
                (Some(Transition::Down), Err(failure)) => tracing::warn!(
                    target_name = %name,
                    reason = %failure,
                    failures = settings.unhealthy_threshold,
                    "upstream target failed its health checks: out of service"
                ),
                (Some(Transition::Up), _) => tracing::info!(
                    target_name = %name,
                    passes = settings.healthy_threshold,
                    "upstream target passed its health checks: back in service"
                ),
                _ => {}
            }
            wait = jittered(settings.interval, settings.jitter, &mut rng);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamProtocol;
    use crate::upstream::client::UpstreamSettings;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicU16;
    use tokio::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    fn settings(healthy: u32, unhealthy: u32) -> HealthSettings {
        HealthSettings {
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            jitter: Duration::from_millis(5),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    #[test]
    fn step_table() {
        let s = settings(2, 3);
        for (healthy, streak, passed, expected) in [
            (true, 0, true, (true, 0, None)),
            (true, 0, false, (true, 1, None)),
            (true, 1, false, (true, 2, None)),
            (true, 2, false, (false, 0, Some(Transition::Down))),
            // A pass in between starts the count again.
            (true, 2, true, (true, 0, None)),
            (false, 0, false, (false, 0, None)),
            (false, 0, true, (false, 1, None)),
            (false, 1, true, (true, 0, Some(Transition::Up))),
            (false, 1, false, (false, 0, None)),
        ] {
            assert_eq!(step(healthy, streak, passed, &s), expected, "{healthy} {streak} {passed}");
        }
        // A threshold of 0 acts as 1.
        assert_eq!(step(true, 0, false, &settings(0, 0)), (false, 0, Some(Transition::Down)));
    }

    #[test]
    fn active_state_goes_down_and_up_with_thresholds() {
        let s = settings(2, 3);
        let active = Active::default();
        assert!(active.is_healthy());
        assert_eq!(active.record(false, &s), None);
        assert_eq!(active.record(false, &s), None);
        assert_eq!(active.streak(), 2);
        assert_eq!(active.record(false, &s), Some(Transition::Down));
        assert!(!active.is_healthy());
        assert_eq!(active.record(true, &s), None);
        assert!(!active.is_healthy());
        assert_eq!(active.record(true, &s), Some(Transition::Up));
        assert!(active.is_healthy());
        active.record(false, &s);
        active.disown();
        assert!(active.is_healthy());
        assert_eq!(active.streak(), 0);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut rng = Rng::seeded(11);
        let interval = Duration::from_secs(10);
        let jitter = Duration::from_secs(1);
        let waits: Vec<Duration> =
            (0..1000).map(|_| jittered(interval, jitter, &mut rng)).collect();
        assert!(waits.iter().all(|wait| *wait >= interval && *wait < interval + jitter));
        assert!(waits.iter().any(|wait| *wait > interval + jitter / 2));
        assert!(waits.iter().any(|wait| *wait < interval + jitter / 2));
        assert_eq!(jittered(interval, Duration::ZERO, &mut rng), interval);
    }

    /// What the test origin saw: a request's path and the status it answered.
    type Seen = mpsc::UnboundedReceiver<(String, u16)>;

    /// An origin on 127.0.0.1:0 that answers every request with the status in `status` and
    /// reports each request's path and answer on the returned channel.
    async fn origin(status: Arc<AtomicU16>) -> (SocketAddr, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, paths) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let status = status.clone();
                let seen = seen.clone();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let code = status.load(Ordering::SeqCst);
                    let _ = seen.send((request.uri().path().to_owned(), code));
                    async move {
                        let mut response =
                            http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *response.status_mut() = StatusCode::from_u16(code).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service),
                );
            }
        });
        (addr, paths)
    }

    fn connector() -> Connector {
        Connector::new(Duration::from_secs(2), Arc::default(), None)
    }

    fn http_probe(addr: SocketAddr, path: &str) -> Probe {
        let settings = UpstreamSettings {
            connect: Duration::from_secs(2),
            response_header: Duration::from_secs(5),
            body_idle: Duration::from_secs(5),
            pool_idle: Duration::from_secs(90),
            max_idle_per_host: 4,
            max_connections_per_address: 64,
            max_response_head: 16 * 1024,
        };
        let tls = crate::tls::client::default_client_config();
        let upstream = Upstream::new(settings, tls, UpstreamProtocol::Http1, None, connector());
        Probe::Http(Box::new(HttpProbe {
            upstream,
            uri: format!("http://{addr}{path}").parse().unwrap(),
            authority: addr.to_string().parse().unwrap(),
            host: HeaderValue::from_str(&addr.to_string()).unwrap(),
            headers: HeaderMap::new(),
            expect: crate::config::health::DEFAULT_EXPECT_STATUS,
        }))
    }

    #[tokio::test]
    async fn tcp_probe_passes_on_a_listener_and_fails_without_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::Tcp { connector: connector(), host: "127.0.0.1".into(), port };
        probe.check(WAIT).await.unwrap();
        drop(listener);
        let failure = probe.check(WAIT).await.unwrap_err();
        assert!(
            matches!(failure, CheckFailure::Connect(ConnectError::Refused { .. })),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn http_probe_checks_path_and_status() {
        let status = Arc::new(AtomicU16::new(200));
        let (addr, mut paths) = origin(status.clone()).await;
        let probe = http_probe(addr, "/healthz");
        probe.check(WAIT).await.unwrap();
        assert_eq!(paths.recv().await, Some(("/healthz".to_owned(), 200)));
        status.store(503, Ordering::SeqCst);
        let failure = probe.check(WAIT).await.unwrap_err();
        assert!(matches!(failure, CheckFailure::Status(StatusCode::SERVICE_UNAVAILABLE)));
    }

    #[tokio::test]
    async fn http_probe_times_out_on_a_silent_target() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let failure = http_probe(addr, "/").check(Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(failure, CheckFailure::Timeout(_)), "{failure}");
        held.abort();
    }

    /// Waits until the origin has answered `count` checks in a row from `path` with `code`,
    /// and then seen one more: the checker records a check before it sends the next, so by
    /// then all `count` are recorded.
    async fn answered(seen: &mut Seen, path: &str, code: u16, count: usize) {
        let mut run = 0;
        while run < count {
            let (seen_path, seen_code) =
                tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap();
            if seen_path == path {
                run = if seen_code == code { run + 1 } else { 0 };
            }
        }
        loop {
            let (seen_path, _) = tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap();
            if seen_path == path {
                return;
            }
        }
    }

    #[tokio::test]
    async fn checker_takes_a_target_out_and_brings_it_back() {
        let status = Arc::new(AtomicU16::new(200));
        let (addr, mut paths) = origin(status.clone()).await;
        let state = super::super::TargetState::new();
        let stop = CancellationToken::new();
        let checker = Checker {
            state: state.clone(),
            probe: http_probe(addr, "/health"),
            settings: settings(2, 3),
            name: Arc::from("route/a"),
        };
        let task = spawn(checker, stop.clone());
        answered(&mut paths, "/health", 200, 2).await;
        assert!(state.active.is_healthy());

        status.store(500, Ordering::SeqCst);
        answered(&mut paths, "/health", 500, 3).await;
        assert!(!state.active.is_healthy());

        status.store(200, Ordering::SeqCst);
        answered(&mut paths, "/health", 200, 2).await;
        assert!(state.active.is_healthy());

        stop.cancel();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_newer_checker_takes_over_and_keeps_the_verdict() {
        let status = Arc::new(AtomicU16::new(500));
        let (addr, mut paths) = origin(status.clone()).await;
        let state = super::super::TargetState::new();
        let stop = CancellationToken::new();
        let first = spawn(
            Checker {
                state: state.clone(),
                probe: http_probe(addr, "/old"),
                settings: settings(2, 1),
                name: Arc::from("route/a"),
            },
            stop.clone(),
        );
        answered(&mut paths, "/old", 500, 1).await;
        assert!(!state.active.is_healthy());

        // A reload: the new generation's checker takes over the same state, the old one stops
        // on its own, and the verdict carries over (down until two passes).
        let second = spawn(
            Checker {
                state: state.clone(),
                probe: http_probe(addr, "/new"),
                settings: settings(2, 1),
                name: Arc::from("route/a"),
            },
            CancellationToken::new(),
        );
        tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
        assert!(!state.active.is_healthy());
        status.store(200, Ordering::SeqCst);
        answered(&mut paths, "/new", 200, 2).await;
        assert!(state.active.is_healthy());
        second.abort();
        drop(stop);
    }
}
