//! Criterion micro-benchmarks of sluice's per-request hot paths: route selection
//! (`Router::find`), hop-by-hop header stripping (`hop_by_hop::strip`) and the reverse-proxy
//! path rewrite (`path::upstream_uri`). Run with `cargo bench --bench micro`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sluice::config::Config;
use sluice::headers::hop_by_hop;
use sluice::proxy::router::Router;
use sluice::upstream::client::UpstreamSettings;
use sluice::uri::path;

/// A gateway-sized configuration: a catch-all, 30 API prefixes and a host-bound route.
fn config() -> Option<Config> {
    let mut toml = String::from(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9000\"\n\n\
         [[route]]\nprefix = \"/api\"\nhost = \"api.example.com\"\n\
         upstream = \"http://127.0.0.1:9001/internal\"\n\n",
    );
    for i in 0..30 {
        toml.push_str(&format!(
            "[[route]]\nprefix = \"/api/v{i}/service\"\nupstream = \"http://127.0.0.1:{}/v{i}\"\n\n",
            9100 + i
        ));
    }
    match Config::from_toml(&toml, "micro.toml") {
        Ok(config) => Some(config),
        Err(e) => {
            eprintln!("benchmark config rejected: {e}");
            None
        }
    }
}

fn router(c: &mut Criterion) {
    let Some(config) = config() else { return };
    let tls = sluice::tls::client::default_client_config();
    let pool = UpstreamSettings::from_config(&config);
    let router = match Router::new(&config.routes, pool, &tls, &Default::default(), None) {
        Ok(router) => router,
        Err(e) => {
            eprintln!("router: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("router_find");
    group.bench_function("deep_prefix", |b| {
        b.iter(|| router.find(black_box(None), black_box("/api/v17/service/users/42")).is_some())
    });
    group.bench_function("host_route", |b| {
        b.iter(|| {
            router.find(black_box(Some("api.example.com")), black_box("/api/orders")).is_some()
        })
    });
    group.bench_function("catch_all", |b| {
        b.iter(|| router.find(black_box(None), black_box("/static/app.js")).is_some())
    });
    group.finish();
}

/// A typical browser request head, with the hop-by-hop fields a proxy must remove.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "www.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=abcdef0123456789; theme=dark"),
        ("connection", "keep-alive, x-trace"),
        ("keep-alive", "timeout=5"),
        ("x-trace", "1"),
        ("upgrade-insecure-requests", "1"),
        ("te", "trailers"),
    ] {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    h
}

fn headers(c: &mut Criterion) {
    let template = request_headers();
    let mut group = c.benchmark_group("hop_by_hop_strip");
    group.bench_function("browser_request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| hop_by_hop::strip(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut clean = template.clone();
    hop_by_hop::strip(&mut clean);
    group.bench_function("already_clean", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| hop_by_hop::strip(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let Some(config) = config() else { return };
    let Some(route) = config.routes.iter().find(|r| r.prefix == "/api/v17/service") else {
        eprintln!("route /api/v17/service missing");
        return;
    };
    let Some(root) = config.routes.iter().find(|r| r.prefix == "/") else { return };
    let deep = Uri::from_static("/api/v17/service/users/42/orders?limit=10&cursor=abc%2Fdef");
    let plain = Uri::from_static("/index.html");
    let mut group = c.benchmark_group("rewrite_upstream_uri");
    group.bench_function("strip_prefix_with_query", |b| {
        b.iter(|| path::upstream_uri(black_box(route), black_box(&deep)).is_ok())
    });
    group.bench_function("root_route", |b| {
        b.iter(|| path::upstream_uri(black_box(root), black_box(&plain)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, router, headers, rewrite);
criterion_main!(benches);
