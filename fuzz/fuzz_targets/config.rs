//! Config loading: bytes as UTF-8 -> `Config::from_toml_with_env`. Any text is either a valid
//! configuration or a list of issues; neither parsing, validation nor rendering may panic. A
//! valid configuration keeps every value within its documented bound (the `MAX_*` constants),
//! since the runtime sizes semaphores, allocations and timers from them, and its rate limits
//! can refuse a request without panicking.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sluice::config::cache;
use sluice::config::security::{MAX_BURST, MAX_CONNECTIONS_PER_IP, MAX_RATE, MIN_RATE};
use sluice::config::{self as c, Config, ConfigError, RateLimit};
use sluice::policy::rate::RateLimiter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_with_env(text, "fuzz.toml", &|_| Some("x".into())) {
        Ok(config) => {
            let _ = config.check_assembled();
            let _ = format!("{config:?}");
            let _ = c::summary::effective(&config, "fuzz.toml");
            within_bounds(&config);
            let limits = config
                .rate_limit_per_ip
                .iter()
                .chain(config.routes.iter().filter_map(|r| r.rate_limit.as_ref()));
            for limit in limits {
                // One token, then a refusal whose wait is computed from the rate.
                let limiter = RateLimiter::new(RateLimit { rate: limit.rate, burst: 1 });
                assert!(limiter.acquire(()).is_ok());
                assert!(limiter.acquire(()).is_err());
            }
        }
        Err(err) => {
            let _ = err.to_string();
            if let ConfigError::Invalid { issues, .. } = &err {
                assert!(!issues.is_empty(), "an invalid config names at least one issue");
            }
        }
    }
});

fn within_bounds(config: &Config) {
    assert!(config.workers.is_none_or(|w| w.get() <= c::MAX_WORKERS));
    let t = &config.timeouts;
    let timeouts: [(Duration, Duration); 10] = [
        (t.connect, c::MAX_CONNECT_TIMEOUT),
        (t.response_header, c::MAX_RESPONSE_HEADER_TIMEOUT),
        (t.request_header, c::MAX_REQUEST_HEADER_TIMEOUT),
        (t.tunnel_idle, c::MAX_TUNNEL_IDLE_TIMEOUT),
        (t.upstream_idle, c::MAX_UPSTREAM_IDLE_TIMEOUT),
        (t.shutdown_grace, c::MAX_SHUTDOWN_GRACE),
        (t.body_idle, c::MAX_BODY_IDLE_TIMEOUT),
        (t.websocket_idle, c::MAX_WEBSOCKET_IDLE_TIMEOUT),
        (t.tunnel_max_lifetime, c::MAX_TUNNEL_MAX_LIFETIME),
        (t.websocket_max_lifetime, c::MAX_WEBSOCKET_MAX_LIFETIME),
    ];
    for (value, max) in timeouts {
        assert!(!value.is_zero() && value <= max, "{value:?} > {max:?}");
    }
    let l = &config.limits;
    assert!(l.max_request_head_bytes <= c::MAX_REQUEST_HEAD_BYTES);
    assert!(l.max_request_headers <= c::MAX_REQUEST_HEADERS);
    assert!(l.max_connections <= c::MAX_CONNECTIONS);
    assert!(l.max_idle_upstream_per_host <= c::MAX_IDLE_UPSTREAM_PER_HOST);
    assert!(l.max_request_line_bytes <= c::MAX_REQUEST_LINE_BYTES);
    assert!(l.max_request_body_bytes <= c::MAX_REQUEST_BODY_BYTES);
    assert!(l.max_requests_per_connection <= c::MAX_REQUESTS_PER_CONNECTION);
    for listener in &config.listeners {
        let cap = listener.policy.max_connections_per_ip;
        assert!(cap.is_none_or(|cap| cap.get() <= MAX_CONNECTIONS_PER_IP));
        if let Some(tls) = &listener.tls {
            assert!(tls.reload_interval <= c::MAX_TLS_RELOAD_INTERVAL);
        }
    }
    let rates = config
        .rate_limit_per_ip
        .iter()
        .chain(config.routes.iter().filter_map(|r| r.rate_limit.as_ref()));
    for rate in rates {
        assert!(
            (MIN_RATE..=MAX_RATE).contains(&rate.rate) && (1..=MAX_BURST).contains(&rate.burst)
        );
    }
    let cache = &config.cache;
    assert!(cache.max_bytes <= cache::MAX_CACHE_MAX_BYTES);
    assert!(cache.max_object_bytes <= cache.max_bytes / cache::CACHE_OBJECTS_PER_STORE);
    assert!(cache.max_variants as u64 <= cache::MAX_CACHE_MAX_VARIANTS);
    assert!(cache.collapse_timeout <= cache::MAX_COLLAPSE_TIMEOUT);
    assert!(cache.fill_timeout <= cache::MAX_FILL_TIMEOUT);
    assert!((1..=cache::MAX_CACHE_MAX_BACKGROUND).contains(&(cache.max_background as u64)));
    assert!(cache.max_heuristic <= cache::MAX_MAX_HEURISTIC);
    assert!(
        (cache::MIN_CACHE_DISK_MAX_BYTES..=cache::MAX_CACHE_DISK_MAX_BYTES)
            .contains(&cache.disk_max_bytes)
    );
    for route in &config.routes {
        assert!(route.cache.stale_when_down.is_none_or(|d| d <= cache::MAX_STALE_WHEN_DOWN));
        assert!(route.timeouts.connect <= c::MAX_CONNECT_TIMEOUT);
        assert!(route.timeouts.response_header <= c::MAX_RESPONSE_HEADER_TIMEOUT);
        assert!(route.timeouts.body_idle <= c::MAX_BODY_IDLE_TIMEOUT);
        assert!(route.max_body_bytes <= c::MAX_REQUEST_BODY_BYTES);
        assert!(route.upstream.authority.port().is_none_or(|p| p.as_u16() != 0));
    }
}
