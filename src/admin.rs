//! The admin listener (off unless `[admin]` is configured; loopback unless explicitly allowed):
//!
//! | request         | answer                                                            |
//! |-----------------|-------------------------------------------------------------------|
//! | `GET /healthz`  | 200 while the process runs (liveness)                             |
//! | `GET /readyz`   | 200 once listeners are bound and the config loaded; 503 draining  |
//! | `GET /metrics`  | Prometheus metrics, OpenMetrics text format                       |
//! | `GET /config`   | the effective configuration, secrets redacted                     |
//! | `GET /upstreams`| every route's upstreams as JSON: targets, health, load, ejection  |
//! | `POST /reload`  | re-reads the config file; 200 with what changed, else 422/500;    |
//! |                 | 503 while shutdown drains                                         |
//! | `POST /cache/purge?url=URL` | removes the stored responses for one URL (all variants) |
//! | `POST /cache/purge?prefix=URL` | removes those under a URL prefix, by whole path segments |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cache::key::CacheKey;
use crate::observe::cache_metrics::StoreSample;
use crate::observe::metrics;
use crate::reload::{ReloadError, Reloader, chain};

/// Serves admin requests on `listener` until the returned future is dropped.
///
/// The admin listener is not part of the drain: it keeps answering while the proxy drains, so
/// `/readyz` can tell a load balancer "shutting down" (503) until the process exits. Its
/// connections live in a set owned by this future, so dropping it closes them all.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "admin listening");
    }
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
        };
        let reloader = reloader.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(respond(request, &reloader).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, "admin connection ended: {err}");
            }
        });
    }
}

async fn respond(request: Request<Incoming>, reloader: &Reloader) -> Response<Full<Bytes>> {
    let method = request.method();
    let allowed = match request.uri().path() {
        "/healthz" | "/readyz" | "/metrics" | "/config" | "/upstreams" => "GET, HEAD",
        "/reload" | "/cache/purge" => "POST",
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz /readyz /metrics /config /upstreams /reload /cache/purge\n",
            );
        }
    };
    let get = method == Method::GET || method == Method::HEAD;
    match (request.uri().path(), get, method == Method::POST) {
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
    let purged =
        if by_prefix { cache.store.purge_prefix(key.url()) } else { cache.store.invalidate(&key) };
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
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
