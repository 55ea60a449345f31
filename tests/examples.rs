//! The configs in `examples/` load, and do what their comments say once pointed at local
//! upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use sluice::config::Config;
use support::client::{raw_exchange, status_of};
use support::proxy::TestProxy;
use support::upstream::{Origin, full};
use support::within;
use tokio_tungstenite::tungstenite::Message;

fn example(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    Config::from_toml_with_env(&text, &path, env).unwrap()
}

/// Points the example's listeners at port 0 and route `index` at a local plain-HTTP upstream.
fn localise(config: &mut Config, routes: &[(usize, SocketAddr)]) {
    for listener in &mut config.listeners {
        listener.address = "127.0.0.1:0".parse().unwrap();
    }
    for &(index, addr) in routes {
        let upstream = &mut config.routes[index].upstream;
        upstream.scheme = http::uri::Scheme::HTTP;
        upstream.authority = addr.to_string().parse().unwrap();
    }
}

#[test]
fn every_example_is_valid() {
    let key = |name: &str| name.contains("API_KEY").then(|| "sk-x".to_owned());
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(err) = Config::from_toml_with_env(&text, &path.display().to_string(), &key) {
            panic!("{err}");
        }
    }
}

#[tokio::test]
async fn ai_gateway_injects_the_key_and_replaces_client_credentials() {
    let api = Origin::start(|request: Request<Incoming>| async move {
        let authorized = request.headers().get("authorization").map(|v| v.as_bytes())
            == Some(&b"Bearer sk-example"[..]);
        let mut response = full(if authorized { "data: ok\n\n" } else { "unauthorized" });
        if !authorized {
            *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        }
        response
    })
    .await;
    let mut config =
        example("ai-gateway.toml", &|name| (name == "OPENAI_API_KEY").then(|| "sk-example".into()));
    localise(&mut config, &[(0, api.addr)]);
    let proxy = TestProxy::with_config(config).await;
    let response = within(
        reqwest::Client::new()
            .post(format!("{}/defm/v1/chat/completions", proxy.url()))
            .header("cookie", "session=client")
            .header("x-api-key", "client-key")
            .body("{}")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(within(response.text()).await.unwrap(), "data: ok\n\n");
    let seen = api.only_request();
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.headers["host"], api.addr.to_string());
    for absent in ["cookie", "x-api-key", "x-forwarded-for", "x-forwarded-host"] {
        assert!(seen.headers.get(absent).is_none(), "{absent} was forwarded");
    }
}

#[tokio::test]
async fn ai_gateway_pool_spreads_over_its_keys_and_falls_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // The primary provider answers with the key it was given, until it fails.
    let failing = Arc::new(AtomicBool::new(false));
    let down = failing.clone();
    let primary = Origin::start(move |request: Request<Incoming>| {
        let key = request.headers()["authorization"].to_str().unwrap().to_owned();
        let failed = down.load(Ordering::SeqCst);
        async move {
            let mut response = full(key);
            if failed {
                *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            response
        }
    })
    .await;
    let fallback = Origin::start(|request: Request<Incoming>| async move {
        full(format!("fallback {}", request.headers()["authorization"].to_str().unwrap()))
    })
    .await;
    let env = |name: &str| Some(format!("sk-{}", name.to_lowercase()));
    let mut config = example("ai-gateway-pool.toml", &env);
    config.admin = None;
    localise(&mut config, &[]);
    let route = &mut config.routes[0];
    for target in &mut route.group.as_mut().unwrap().targets {
        let origin = if target.tier == 0 { primary.addr } else { fallback.addr };
        target.url.scheme = http::uri::Scheme::HTTP;
        target.url.authority = origin.to_string().parse().unwrap();
    }
    route.upstream = route.group.as_ref().unwrap().targets[0].url.clone();
    let proxy = TestProxy::with_config(config).await;
    let ask = || async {
        let response = within(
            reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", proxy.url()))
                .header("x-api-key", "client-key")
                .body("{\"model\":\"m\"}")
                .send(),
        )
        .await
        .unwrap();
        (response.status(), within(response.text()).await.unwrap())
    };
    let mut keys = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = ask().await;
        assert_eq!(status, 200);
        keys.insert(body);
    }
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["Bearer sk-openai_api_key_1", "Bearer sk-openai_api_key_2"]
    );
    assert!(primary.seen().iter().all(|seen| seen.uri == "/v1/chat/completions"));
    assert!(primary.seen().iter().all(|seen| seen.headers.get("x-api-key").is_none()));
    // Both keys fail: the POST is retried, on the other key and then the fallback provider.
    failing.store(true, Ordering::SeqCst);
    assert_eq!(ask().await, (http::StatusCode::OK, "fallback Bearer sk-openrouter_api_key".into()));
    assert_eq!(fallback.only_request().uri, "/api/v1/chat/completions");
}

#[tokio::test]
async fn site_and_api_split_by_host_and_path() {
    let site = Origin::echo().await;
    let api = Origin::start(|_request: Request<Incoming>| async move {
        let mut response = full("api");
        response.headers_mut().insert("server", "api-server/1.0".parse().unwrap());
        response
    })
    .await;
    let mut config = example("site-and-api.toml", &|_| None);
    localise(&mut config, &[(0, site.addr), (1, api.addr), (2, api.addr)]);
    let proxy = TestProxy::with_config(config).await;

    let get = |host: &'static str, path: &'static str| {
        let addr = proxy.addr;
        async move {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            raw_exchange(addr, request.as_bytes()).await
        }
    };
    let page = get("www.example.test", "/index.html").await;
    assert_eq!(status_of(&page), 200);
    assert_eq!(site.only_request().headers["host"], "www.example.test", "site keeps its Host");

    let api_via_site = get("www.example.test", "/api/users?id=1").await;
    assert_eq!(status_of(&api_via_site), 200);
    assert!(!api_via_site.to_lowercase().contains("server: api-server"), "{api_via_site}");
    let api_direct = get("API.example.test:8080", "/users").await;
    assert!(
        api_direct.to_lowercase().contains("access-control-allow-origin: https://www.example.test")
    );
    let seen: Vec<String> = api.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(seen, ["/v2/users?id=1", "/v2/users"]);

    assert_eq!(status_of(&get("other.test", "/").await), 404);
}

#[tokio::test]
async fn websocket_example_relays_messages() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (path_tx, path_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut path_tx = Some(path_tx);
        #[allow(clippy::result_large_err)]
        let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                        response| {
            if let Some(tx) = path_tx.take() {
                let _ = tx.send(request.uri().to_string());
            }
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            }
        }
    });
    let mut config = example("websocket.toml", &|_| None);
    localise(&mut config, &[(0, backend)]);
    let proxy = TestProxy::with_config(config).await;
    let (mut ws, _) =
        within(tokio_tungstenite::connect_async(format!("ws://{}/ws/room/1", proxy.addr)))
            .await
            .unwrap();
    ws.send(Message::text("hello room")).await.unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello room"));
    assert_eq!(within(path_rx).await.unwrap(), "/room/1");
}

#[tokio::test]
async fn ai_gateway_keys_admits_its_virtual_keys_and_falls_back_to_the_second_provider() {
    use support::ai::{Behaviour, MockProvider};
    const WEB: &str = "sk-example-web-0123456789";
    const BATCH: &str = "sk-example-batch-0123456789";
    let openai = MockProvider::start("openai").await;
    let openrouter = MockProvider::start("openrouter").await;
    let env = |name: &str| Some(format!("sk-{}", name.to_lowercase()));
    let mut config = example("ai-gateway-keys.toml", &env);
    config.admin = None;
    config.access_log.enabled = false;
    localise(&mut config, &[]);
    let route = &mut config.routes[0];
    for target in &mut route.group.as_mut().unwrap().targets {
        let mock = if target.tier == 0 { &openai } else { &openrouter };
        target.url.scheme = http::uri::Scheme::HTTP;
        target.url.authority = mock.addr.to_string().parse().unwrap();
    }
    route.upstream = route.group.as_ref().unwrap().targets[0].url.clone();
    let proxy = TestProxy::with_config(config).await;
    let ask = |key: &'static str, model: &'static str| {
        let url = format!("{}/v1/chat/completions", proxy.url());
        async move {
            let response = within(
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"model":"{model}","messages":[]}}"#))
                    .send(),
            )
            .await
            .unwrap();
            let status = response.status().as_u16();
            (status, within(response.text()).await.unwrap())
        }
    };
    // The web key is admitted; "fast" is asked of the pool as gpt-4o-mini, with a pool key.
    assert_eq!(ask(WEB, "fast").await.0, 200);
    let seen = &openai.seen()[0];
    assert_eq!(seen.json()["model"], "gpt-4o-mini");
    assert!(seen.key.as_deref().unwrap().starts_with("sk-openai_api_key_"), "{:?}", seen.key);
    // The batch key may use the small models only; an unknown key is refused.
    assert_eq!(ask(BATCH, "gpt-4o").await.0, 403);
    assert_eq!(ask("sk-unknown-0123456789", "fast").await.0, 401);
    // Both pool keys rate limited: the second provider answers, with its own model name.
    openai.set_default(Behaviour::RateLimited { retry_after: 30 });
    let (status, body) = ask(BATCH, "fast").await;
    assert_eq!(status, 200, "{body}");
    let seen = &openrouter.seen()[0];
    assert_eq!(seen.json()["model"], "openai/gpt-4o-mini");
    assert_eq!(seen.key.as_deref(), Some("sk-openrouter_api_key"));
}

/// The AI gateway configuration in README.md is one a user can run.
#[test]
fn the_readmes_ai_gateway_config_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## AI gateway").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let toml = &section[start..start + section[start..].find("```").unwrap()];
    let env = |name: &str| name.starts_with("OPENAI_API_KEY").then(|| "sk-x".to_owned());
    let config = Config::from_toml_with_env(toml, "README.md", &env).unwrap();
    assert!(config.routes[0].ai.is_some());
}
