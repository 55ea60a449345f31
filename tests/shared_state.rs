//! The shared counters on a real `redis-server`: admissions atomic across instances, charges
//! and cooldowns seen by every instance, and what happens while Redis is unreachable
//! (fail-open counts locally, fail-closed refuses, both say so once and count failures); and
//! two `sluice` processes on one Redis enforcing one budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sluice::gateway::budget::{Budget, BudgetCounters, Holder, admission};
use sluice::state::redis::RedisCounters;
use sluice::state::{
    Admission, Charge, Check, Counters, FailMode, SharedState, StateError, StateMetrics, UnixTime,
    Window,
};
use support::ai::MockProvider;
use support::config::write_config;
use support::process::{Sluice, command};
use support::redis::RedisServer;
use support::within;

const TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is left alone after a failure, in these tests.
const RETRY: Duration = Duration::from_millis(100);

fn counters(server: &RedisServer, prefix: &str) -> RedisCounters {
    RedisCounters::new(&server.url(), prefix, TIMEOUT).unwrap()
}

#[tokio::test]
async fn two_instances_never_admit_more_than_the_budget_together() {
    let server = RedisServer::start().await;
    let one = Arc::new(counters(&server, "t1:"));
    let two = Arc::new(counters(&server, "t1:"));
    let check = [Check { name: "vk:alice:requests", window: Window::Day, cost: 1, limit: 20 }];
    let now = UnixTime::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move { store.admit(&check, now).await.unwrap() }));
    }
    let mut admitted = 0;
    for task in tasks {
        if within(task).await.unwrap() == Admission::Admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 20);
    let refused = one.admit(&check, now).await.unwrap();
    let Admission::Refused { check: 0, retry_after } = refused else { panic!("{refused:?}") };
    assert!(retry_after <= Duration::from_secs(86_400), "{retry_after:?}");
}

#[tokio::test]
async fn charged_tokens_spend_a_budget_for_every_instance() {
    let server = RedisServer::start().await;
    let one = counters(&server, "t2:");
    let two = counters(&server, "t2:");
    let budget = BudgetCounters::new(
        Holder::VirtualKey,
        "alice",
        Budget { tokens_per_minute: Some(100), tokens_per_day: Some(1000), ..Budget::default() },
    );
    let (checks, owners) = admission(&[&budget]);
    let now = UnixTime::now();
    assert_eq!(two.admit(&checks, now).await.unwrap(), Admission::Admitted);
    // A response on instance one reports 120 tokens.
    one.charge(&budget.charges(120).collect::<Vec<_>>(), now).await.unwrap();
    let Admission::Refused { check, .. } = two.admit(&checks, now).await.unwrap() else {
        panic!("admitted after the budget was spent")
    };
    assert_eq!(owners[check].1.as_str(), "tokens_per_minute");
    // A different prefix is a different set of counters.
    assert_eq!(counters(&server, "other:").admit(&checks, now).await.unwrap(), Admission::Admitted);
    // The next minute, the minute budget is back; the day still has room.
    let later = now.after(Duration::from_secs(60));
    assert_eq!(two.admit(&checks, later).await.unwrap(), Admission::Admitted);
    // Zero charges are not sent at all.
    one.charge(&[Charge { name: "x", window: Window::Minute, amount: 0 }], now).await.unwrap();
}

#[tokio::test]
async fn a_cooldown_set_by_one_instance_holds_for_all_and_ends() {
    let server = RedisServer::start().await;
    let one = counters(&server, "t3:");
    let two = counters(&server, "t3:");
    let now = UnixTime::now();
    one.cool("pool:openai:key-1", Duration::from_secs(30), now).await.unwrap();
    let cooling = two.cooling(&["pool:openai:key-1", "pool:openai:key-2"], now).await.unwrap();
    let left = cooling[0].unwrap();
    assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30), "{left:?}");
    assert_eq!(cooling[1], None);
    one.cool("pool:openai:key-2", Duration::from_millis(1), now).await.unwrap();
    within(async {
        while two.cooling(&["pool:openai:key-2"], now).await.unwrap()[0].is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// An address where nothing listens.
fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("redis://127.0.0.1:{port}/")
}

fn shared(url: &str, fail: FailMode) -> (SharedState, StateMetrics) {
    let metrics = StateMetrics::default();
    let redis = RedisCounters::new(url, "t4:", TIMEOUT).unwrap();
    (SharedState::redis(redis, fail, RETRY, metrics.clone()), metrics)
}

#[tokio::test]
async fn fail_open_counts_locally_while_redis_is_unreachable() {
    let (state, metrics) = shared(&nowhere(), FailMode::Open);
    let check = [Check { name: "vk:a:requests", window: Window::Minute, cost: 1, limit: 2 }];
    let now = UnixTime::now();
    assert_eq!(within(state.admit(&check, now)).await.unwrap(), Admission::Admitted);
    assert!(state.is_degraded());
    assert_eq!(state.admit(&check, now).await.unwrap(), Admission::Admitted);
    // Local counters still enforce the budget on this instance.
    assert!(matches!(state.admit(&check, now).await.unwrap(), Admission::Refused { .. }));
    // Within the retry interval Redis is not tried again: one failure counted.
    assert_eq!(metrics.errors.get(), 1);
    assert_eq!(metrics.degraded.get(), 1);
    // Cooldowns are kept locally too.
    state.cool("k", Duration::from_secs(10), now).await.unwrap();
    assert!(state.cooling(&["k"], now).await.unwrap()[0].is_some());
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_unreachable() {
    let (state, metrics) = shared(&nowhere(), FailMode::Closed);
    let check = [Check { name: "vk:a:requests", window: Window::Minute, cost: 1, limit: 2 }];
    let err = within(state.admit(&check, UnixTime::now())).await.unwrap_err();
    assert!(matches!(err, StateError::Redis { .. } | StateError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    let err = state.admit(&check, UnixTime::now()).await.unwrap_err();
    assert!(matches!(err, StateError::Resting { .. }), "{err:?}");
    assert_eq!(metrics.errors.get(), 1);
    assert!(state.describe().contains("fail closed"), "{}", state.describe());
}

#[tokio::test]
async fn a_server_that_never_answers_costs_the_timeout_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts connections and never answers.
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let redis = RedisCounters::new(&format!("redis://{addr}/"), "t5:", TIMEOUT).unwrap();
    let started = std::time::Instant::now();
    let check = [Check { name: "n", window: Window::Minute, cost: 1, limit: 1 }];
    let err = within(redis.admit(&check, UnixTime::now())).await.unwrap_err();
    assert!(matches!(err, StateError::Timeout { .. } | StateError::Redis { .. }), "{err:?}");
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn counting_moves_back_to_redis_when_it_returns() {
    let server = RedisServer::start().await;
    let url = server.url();
    let (state, metrics) = shared(&url, FailMode::Open);
    let check = [Check { name: "vk:b:requests", window: Window::Day, cost: 1, limit: 100 }];
    let now = UnixTime::now();
    assert_eq!(state.admit(&check, now).await.unwrap(), Admission::Admitted);
    assert!(!state.is_degraded());

    let port = server.stop().await;
    assert_eq!(within(state.admit(&check, now)).await.unwrap(), Admission::Admitted);
    assert!(state.is_degraded());
    assert_eq!(metrics.degraded.get(), 1);

    let Some(_restarted) = RedisServer::try_start(port).await else {
        // The port was taken in between by something else; nothing more to show.
        return;
    };
    within(async {
        while state.admit(&check, now).await.is_ok() && state.is_degraded() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!state.is_degraded());
    assert_eq!(metrics.degraded.get(), 0);
    // The restarted server is empty: it counts from what reached it since.
    let fresh = RedisCounters::new(&url, "t4:", TIMEOUT).unwrap();
    let tight = [Check { name: "vk:b:requests", window: Window::Day, cost: 0, limit: 2 }];
    assert_eq!(fresh.admit(&tight, now).await.unwrap(), Admission::Admitted);
}

/// Two `sluice` processes with one config on one Redis: a virtual key's budget of three
/// requests a minute holds across both, whichever instance the requests reach.
#[tokio::test]
async fn two_sluice_processes_on_one_redis_share_a_budget() {
    let server = RedisServer::start().await;
    let mock = MockProvider::start("a").await;
    let key = "sk-virtual-shared-0123456789";
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = false\nreverse = true\n\
         [gateway.redis]\nurl = \"{}\"\nkey_prefix = \"two-processes:\"\n\
         [[gateway.virtual_key]]\nname = \"team\"\nhash = \"{}\"\nrequests_per_minute = 3\n\
         [[route]]\nname = \"chat\"\nprefix = \"/v1\"\nupstream = \"{}\"\n\
         [route.headers.request]\nset = {{ authorization = \"Bearer sk-provider\" }}\n\
         [route.ai]\nprovider = \"openai\"\n",
        server.url(),
        sluice::gateway::virtual_key::hash(key),
        mock.url("/v1"),
    );
    let path = write_config("two-processes.toml", &config);
    let start = || {
        let mut sluice = command("info");
        sluice.arg("--config").arg(&path);
        Sluice::spawn(sluice)
    };
    let (one, two) = (start().await, start().await);
    let chat = |at: std::net::SocketAddr| async move {
        let response = within(
            support::client::direct()
                .post(format!("http://{at}/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(r#"{"model":"gpt-test","messages":[]}"#)
                .send(),
        )
        .await
        .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body = within(response.text()).await.unwrap();
        (status, retry_after, body)
    };
    assert_eq!(chat(one.addr).await.0, 200);
    assert_eq!(chat(two.addr).await.0, 200);
    assert_eq!(chat(one.addr).await.0, 200);
    for at in [two.addr, one.addr] {
        let (status, retry_after, body) = chat(at).await;
        assert_eq!(status, 429, "{body}");
        assert!(retry_after.is_some(), "{body}");
        assert!(body.contains("requests_per_minute_exceeded"), "{body}");
    }
    assert_eq!(mock.requests(), 3);
    one.kill().await;
    two.kill().await;
}

/// A provider key that answered 429 to one `sluice` rests for the other as well: the second
/// instance goes straight to the next key instead of finding out again.
#[tokio::test]
async fn a_key_rate_limited_at_one_sluice_rests_at_the_other() {
    let server = RedisServer::start().await;
    let mock = MockProvider::start("a").await;
    mock.on_key("sk-a", support::ai::Behaviour::RateLimited { retry_after: 60 });
    let mut config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = false\nreverse = true\n\
         [gateway.redis]\nurl = \"{}\"\nkey_prefix = \"rests:\"\n\
         [[route]]\nname = \"chat\"\nprefix = \"/v1\"\n\
         [route.ai]\nprovider = \"openai\"\nvirtual_keys = false\n",
        server.url(),
    );
    for (name, tier, key) in [("key-a", 0, "sk-a"), ("key-b", 1, "sk-b")] {
        config.push_str(&format!(
            "[[route.target]]\nname = \"{name}\"\nurl = \"{}\"\ntier = {tier}\n\
             [route.target.headers.request]\nset = {{ authorization = \"Bearer {key}\" }}\n",
            mock.url("/v1")
        ));
    }
    let path = write_config("shared-rests.toml", &config);
    let start = || {
        let mut sluice = command("info");
        sluice.arg("--config").arg(&path);
        Sluice::spawn(sluice)
    };
    let (one, two) = (start().await, start().await);
    let chat = |at: std::net::SocketAddr| async move {
        let response = within(
            support::client::direct()
                .post(format!("http://{at}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(r#"{"model":"gpt-test","messages":[]}"#)
                .send(),
        )
        .await
        .unwrap();
        response.status().as_u16()
    };
    assert_eq!(chat(one.addr).await, 200);
    let keys: Vec<_> = mock.keys().into_iter().flatten().collect();
    assert_eq!(keys, ["sk-a", "sk-b"]);
    server.wait_for_key("rests:cool:key:chat:key-a").await;
    assert_eq!(chat(two.addr).await, 200);
    let keys: Vec<_> = mock.keys().into_iter().flatten().collect();
    assert_eq!(keys, ["sk-a", "sk-b", "sk-b"]);
    one.kill().await;
    two.kill().await;
}
