//! A shared HTTP cache (RFC 9111) for reverse routes and for the forward proxy's plain
//! `http://` requests.
//!
//! - [`key`]: the primary key (method and target URI) and the secondary key from the request
//!   fields a response's `Vary` names;
//! - [`policy`]: the RFC 9111 rules, pure functions with table tests;
//! - [`range`]: byte ranges served from complete stored responses (RFC 9110 §14);
//! - [`status`]: `Cache-Status` (RFC 9211) and the outcome logged and counted;
//! - [`object`]: one stored response;
//! - [`store`]: the bounded in-memory store of responses and their variants;
//! - [`body`]: a stored body that readers stream from while it is still being filled;
//! - [`fill`]: the response body that passes the origin's bytes to the first client and into
//!   the store at the same time;
//! - [`collapse`]: one request to the origin per key, with the others waiting for it;
//! - [`plan`]: what to do with a request before it goes to the origin, and with the
//!   origin's answer;
//! - [`answer`]: the response a stored object gives one request (Age, 304, 206/416, HEAD);
//! - [`background`]: refreshes and fills that go on after the client has its answer, tracked
//!   by graceful shutdown and bounded.

pub mod answer;
pub mod background;
pub mod body;
pub mod collapse;
pub mod fill;
pub mod key;
pub mod object;
pub mod plan;
pub mod policy;
pub mod range;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::config::CacheConfig;
use crate::shutdown::Shutdown;

use self::background::Background;
use self::collapse::Collapser;
use self::plan::Rules;
use self::policy::freshness::Heuristic;
use self::store::{Store, StoreLimits};

/// The cache one configuration generation uses: the store and the in-flight table (both kept
/// across reloads while the store's limits stay the same) and the `[cache]` settings.
#[derive(Debug)]
pub struct Cache {
    /// The stored responses.
    pub store: Arc<Store>,
    /// The requests on their way to the origin, by key.
    pub collapser: Arc<Collapser>,
    /// The `[cache]` section.
    pub config: CacheConfig,
    /// The RFC 9111 choices from it (the route adds its own `stale_when_down`).
    pub rules: Rules,
    /// Starts refreshes and fills that outlive their request, under the shutdown tracker.
    pub background: Background,
}

impl Cache {
    /// The cache for `config`, keeping `previous`'s stored responses when its store has the
    /// same limits (a reload that did not touch them keeps the cache warm). Its background
    /// tasks run under `shutdown`, and share `previous`'s bound when that is unchanged.
    pub fn new(config: &CacheConfig, previous: Option<&Cache>, shutdown: &Shutdown) -> Arc<Cache> {
        let limits = StoreLimits {
            max_bytes: config.max_bytes,
            max_object_bytes: config.max_object_bytes,
            max_variants: config.max_variants,
        };
        let (store, collapser) = match previous {
            Some(previous) if previous.store.limits() == limits => {
                (Arc::clone(&previous.store), Arc::clone(&previous.collapser))
            }
            _ => (Arc::new(Store::new(limits)), Collapser::new()),
        };
        let rules = Rules {
            targeted: config.targeted_fields.iter().cloned().collect(),
            heuristic: Heuristic { percent: config.heuristic_percent, max: config.max_heuristic },
            stale_when_down: None,
        };
        let background = match previous {
            Some(previous) if previous.background.max() == config.max_background => {
                previous.background.clone()
            }
            _ => Background::new(shutdown.clone(), config.max_background),
        };
        Arc::new(Cache { store, collapser, config: config.clone(), rules, background })
    }

    /// The rules for a route that lets stored responses stand in for a down upstream for
    /// `stale_when_down` past their freshness.
    pub fn rules_with(&self, stale_when_down: Option<Duration>) -> Rules {
        Rules { stale_when_down, ..self.rules.clone() }
    }
}
