//! The admin listener (off unless `[admin]` is configured; loopback unless explicitly allowed):
//!
//! | request            | answer                                                          |
//! |--------------------|-----------------------------------------------------------------|
//! | `GET /`            | the status page, HTML ([`page`])                                |
//! | `GET /status.json` | what the status page shows, as JSON ([`status`])                |
//! | `GET /healthz`     | 200 while the process runs (liveness)                           |
//! | `GET /readyz`      | 200 once listeners are bound and the config loaded; 503 draining|
//! | `GET /metrics`     | Prometheus metrics, OpenMetrics text format                     |
//! | `GET /config`      | the effective configuration, secrets redacted                   |
//! | `GET /upstreams`   | every route's upstreams as JSON: targets, health, load, ejection|
//! | `POST /reload`     | re-reads the config file; 200 with what changed, else 422/500;  |
//! |                    | 503 while shutdown drains                                       |
//! | `POST /cache/purge?url=URL` | removes the stored responses for one URL (all variants) |
//! | `POST /cache/purge?prefix=URL` | removes those under a URL prefix, by whole path segments |
//!
//! The admin listener also takes the status page's traffic samples, once a second, into a
//! [`History`] it owns: without an admin listener there is nobody to show them to.

pub mod ai_card;
pub mod format;
pub mod page;
pub mod status;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

use crate::admin::status::Status;
use crate::cache::key::CacheKey;
use crate::observe::cache_metrics::StoreSample;
use crate::observe::history::{History, SAMPLE_INTERVAL};
use crate::observe::metrics;
use crate::reload::{ReloadError, Reloader, chain};

/// What `GET` answers on an unknown path.
const NOT_FOUND: &str = "not found; try / /status.json /healthz /readyz /metrics /config /upstreams /reload \
     /cache/purge\n";

/// Serves admin requests on `listener` until the returned future is dropped.
///
/// The admin listener is not part of the drain: it keeps answering while the proxy drains, so
/// `/readyz` can tell a load balancer "shutting down" (503) until the process exits. Its
/// connections live in a set owned by this future, so dropping it closes them all.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "admin listening");
    }
    let window =
        reloader.config().await.admin.map_or(crate::config::DEFAULT_ADMIN_HISTORY, |a| a.history);
    let history = Arc::new(Mutex::new(History::new(window)));
    let start = tokio::time::Instant::now() + SAMPLE_INTERVAL;
    let mut samples = tokio::time::interval_at(start, SAMPLE_INTERVAL);
    // A late tick takes its sample late rather than two at once.
    samples.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("admin accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next() => continue,
            _ = samples.tick() => {
                let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
                history.sample(reloader.metrics().traffic(), SystemTime::now());
                continue;
            }
        };
        let reloader = reloader.clone();
        let history = history.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let reloader = reloader.clone();
                let history = history.clone();
                async move { Ok::<_, Infallible>(respond(request, &reloader, &history).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, "admin connection ended: {err}");
            }
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    reloader: &Reloader,
    history: &Mutex<History>,
) -> Response<Full<Bytes>> {
    let method = request.method();
    let allowed = match request.uri().path() {
        "/" | "/status.json" | "/healthz" | "/readyz" | "/metrics" | "/config" | "/upstreams" => {
            "GET, HEAD"
        }
        "/reload" | "/cache/purge" => "POST",
        _ => return text(StatusCode::NOT_FOUND, NOT_FOUND),
    };
    let get = method == Method::GET || method == Method::HEAD;
    match (request.uri().path(), get, method == Method::POST) {
        ("/", true, _) => {
            let status = Status::collect(reloader, history).await;
            let mut response =
                with_type(StatusCode::OK, page::render(&status), "text/html; charset=utf-8");
            let headers = response.headers_mut();
            if let Ok(policy) = header::HeaderValue::from_str(&page::CONTENT_SECURITY_POLICY) {
                headers.insert(header::CONTENT_SECURITY_POLICY, policy);
            }
            headers
                .insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
            headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
            response
        }
        ("/status.json", true, _) => {
            let status = Status::collect(reloader, history).await;
            match serde_json::to_vec(&status) {
                Ok(json) => with_type(StatusCode::OK, json, "application/json"),
                Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("status: {err}\n")),
            }
        }
        ("/healthz", true, _) => text(StatusCode::OK, "ok\n"),
        ("/readyz", true, _) if reloader.shutdown().is_signalled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        ("/readyz", true, _) => text(StatusCode::OK, "ready\n"),
        ("/metrics", true, _) => {
            if let Some(cache) = reloader.cache().await {
                let store = &cache.store;
                let sample = StoreSample {
                    bytes: store.bytes(),
                    objects: store.objects(),
                    evictions: store.evictions(),
                    background_running: cache.background.running() as u64,
                    background_skipped: cache.background.skipped(),
                    disk_bytes: cache.disk.as_ref().map_or(0, |disk| disk.bytes()),
                    disk_objects: cache.disk.as_ref().map_or(0, |disk| disk.objects()),
                };
                reloader.metrics().cache().sample(sample);
            }
            reloader.proxy().await.router.publish_health(reloader.metrics());
            let mut response = text(StatusCode::OK, reloader.metrics().encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        ("/upstreams", true, _) => {
            let view = reloader.proxy().await.router.upstreams();
            let mut response = text(StatusCode::OK, format!("{view:#}\n"));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            response
        }
        ("/config", true, _) => {
            let config = reloader.config().await;
            text(
                StatusCode::OK,
                crate::config::summary::effective(&config, "running configuration"),
            )
        }
        ("/cache/purge", _, true) => purge(request.uri().query(), reloader).await,
        ("/reload", _, true) => match reloader.reload().await {
            Ok(report) => text(StatusCode::OK, format!("{report}\n")),
            Err(ReloadError::ShuttingDown) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down; reload refused\n")
            }
            Err(err @ ReloadError::Config(_)) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "reload refused, the running configuration is unchanged:\n{}\n",
                    chain(&err)
                ),
            ),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "reload refused, the running configuration is unchanged:\n{}\n",
                    chain(&err)
                ),
            ),
        },
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            response
        }
    }
}

/// `POST /cache/purge?url=...` or `?prefix=...`: removes stored responses from the HTTP cache.
async fn purge(query: Option<&str>, reloader: &Reloader) -> Response<Full<Bytes>> {
    let Some(cache) = reloader.cache().await else {
        return text(StatusCode::NOT_FOUND, "no route or listener caches\n");
    };
    let (by_prefix, target) = match query.and_then(|q| q.split_once('=')) {
        Some(("url", value)) => (false, percent_decode(value)),
        Some(("prefix", value)) => (true, percent_decode(value)),
        _ => (false, None),
    };
    let Some(key) = target.as_deref().and_then(CacheKey::for_url) else {
        return text(
            StatusCode::BAD_REQUEST,
            "give one absolute URL: ?url=http://host/path or ?prefix=http://host/path\n",
        );
    };
    let purged = if by_prefix { cache.purge_prefix(key.url()) } else { cache.invalidate(&key) };
    tracing::info!(target = key.url(), by_prefix, purged, "cache purge");
    text(StatusCode::OK, format!("purged {purged} stored responses\n"))
}

/// A query value with its `%XX` escapes decoded; `None` when that is not valid UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

/// A response of `content_type`. The status page and its JSON change every second, and none
/// of the admin answers should be cached or sniffed as something else.
fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    response
}
