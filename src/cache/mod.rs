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
//! - [`disk`]: the optional disk tier, whose files outlive a restart;
//! - [`body`]: a stored body that readers stream from while it is still being filled;
//! - [`fill`]: the response body that passes the origin's bytes to the first client and into
//!   the store at the same time;
//! - [`exact`]: the exact response cache of AI completions, keyed by route, model and the
//!   canonical JSON body, in the same store;
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
pub mod disk;
pub mod exact;
#[cfg(test)]
mod fields;
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

use bytes::BytesMut;
use http::HeaderMap;
use http_body_util::BodyExt;

use crate::config::CacheConfig;
use crate::shutdown::Shutdown;

use self::background::Background;
use self::body::{COMPACT_LIMIT, SharedBody};
use self::collapse::Collapser;
use self::disk::{Disk, DiskLookup, DiskWriter};
use self::key::CacheKey;
use self::object::Object;
use self::plan::Rules;
use self::policy::freshness::Heuristic;
use self::store::{Admission, Lookup, Store, StoreLimits};

/// Which tier a stored response was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier (or nowhere).
    Memory,
    /// The disk tier.
    Disk,
}

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
    /// The disk tier, when `[cache] disk_dir` turns it on.
    pub disk: Option<Arc<Disk>>,
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
        let disk = config.disk_dir.as_ref().and_then(|dir| {
            let same = previous.and_then(|previous| previous.disk.as_ref()).filter(|disk| {
                disk.dir() == dir.as_path() && disk.max_bytes() == config.disk_max_bytes
            });
            if let Some(disk) = same {
                return Some(Arc::clone(disk));
            }
            match Disk::open(dir, config.disk_max_bytes, config.max_variants) {
                Ok(disk) => Some(Arc::new(disk)),
                Err(err) => {
                    tracing::error!(
                        dir = %dir.display(),
                        "the disk cache is off, its directory cannot be used: {err}"
                    );
                    None
                }
            }
        });
        Arc::new(Cache { store, collapser, config: config.clone(), rules, background, disk })
    }

    /// The stored response that fits `request` for `key`: from memory, else from the disk
    /// tier (a small one is promoted into memory on the way; a large one streams from its
    /// file), and the tier it came from.
    pub async fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> (Lookup, Tier) {
        let memory = self.store.lookup(key, request);
        let Some(disk) = self.disk.as_ref() else {
            return (memory, Tier::Memory);
        };
        if matches!(memory, Lookup::Found(_)) {
            return (memory, Tier::Memory);
        }
        match disk.lookup(key, request).await {
            DiskLookup::Found(object) => match self.promote(key, *object).await {
                Some(object) => (Lookup::Found(object), Tier::Disk),
                None => (memory, Tier::Memory),
            },
            DiskLookup::VaryMiss => (Lookup::VaryMiss, Tier::Memory),
            DiskLookup::Miss => (memory, Tier::Memory),
        }
    }

    /// `object` read back from disk, with its body read into the memory tier when it is
    /// small (no larger than what the memory tier compacts and its object limit), else as it
    /// is, streaming from its file. `None` when the body cannot be read.
    async fn promote(&self, key: &CacheKey, object: Object) -> Option<Arc<Object>> {
        let length = object.body.len();
        if length > COMPACT_LIMIT.min(self.store.limits().max_object_bytes) {
            return Some(Arc::new(object));
        }
        let mut bytes = BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
        let mut reader = object.body.reader();
        while let Some(frame) = reader.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Err(err) => {
                    tracing::warn!(key = key.url(), "disk cache miss: {err}");
                    if let Some(disk) = self.disk.as_ref() {
                        disk.invalidate(key);
                    }
                    return None;
                }
            }
        }
        let promoted = object.with_body(SharedBody::complete(vec![bytes.freeze()]));
        Some(self.store.promote(key, promoted))
    }

    /// Stores `object` for `key` in memory as its body arrives, and on disk once complete;
    /// see [`Store::admit`].
    pub fn admit(&self, key: CacheKey, object: Object) -> Option<Admission> {
        let admission = self.store.admit(key, object)?;
        Some(match self.disk_writer() {
            Some(writer) => admission.with_disk(writer),
            None => admission,
        })
    }

    /// Replaces `old` with `new` (a copy refreshed by a 304), in memory and on disk. A
    /// response whose body streams from the disk tier stays out of the memory tier.
    pub fn replace(&self, key: &CacheKey, old: &Arc<Object>, new: Object) -> Arc<Object> {
        let new =
            if new.body.is_in_file() { Arc::new(new) } else { self.store.replace(key, old, new) };
        if let Some(writer) = self.disk_writer() {
            writer.write(key.clone(), Arc::clone(&new));
        }
        new
    }

    /// Removes every stored response for `key`'s URI from both tiers; returns how many
    /// there were (one in both tiers counted once, as far as the larger tier's count says).
    pub fn invalidate(&self, key: &CacheKey) -> usize {
        let memory = self.store.invalidate(key);
        let disk = self.disk.as_ref().map_or(0, |disk| disk.invalidate(key));
        memory.max(disk)
    }

    /// Removes every stored response whose URI is under `prefix` from both tiers; returns
    /// how many there were, counted as [`Cache::invalidate`] does.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let memory = self.store.purge_prefix(prefix);
        let disk = self.disk.as_ref().map_or(0, |disk| disk.purge_prefix(prefix));
        memory.max(disk)
    }

    /// What writes to the disk tier, when there is one.
    fn disk_writer(&self) -> Option<DiskWriter> {
        let disk = Arc::clone(self.disk.as_ref()?);
        Some(DiskWriter { disk, background: self.background.clone() })
    }

    /// The rules for a route that lets stored responses stand in for a down upstream for
    /// `stale_when_down` past their freshness.
    pub fn rules_with(&self, stale_when_down: Option<Duration>) -> Rules {
        Rules { stale_when_down, ..self.rules.clone() }
    }
}
