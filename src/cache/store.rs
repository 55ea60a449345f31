//! The bounded in-memory store of responses.
//!
//! Entries are kept in a `quick_cache` cache weighed in bytes. It was chosen over moka and foyer
//! for what an HTTP cache needs of it: its bound holds at every insert (eviction runs in the
//! inserting call, where moka applies its bound in deferred housekeeping and can overshoot it
//! under a burst of inserts), its CLOCK-Pro style admission keeps one-off responses from
//! pushing out popular ones, it has an entry API to update one URI's variants atomically and
//! a `retain` for purging by prefix, and it adds little per entry and few dependencies. foyer,
//! whose hybrid memory/disk design fits a disk tier, needs Rust 1.91 (sluice supports 1.88)
//! and a much larger dependency tree.
//!
//! One entry per primary key (URI) holds that URI's variants, most recent first, each with the
//! `Vary` it was stored under (RFC 9111 §4.1). So purging or invalidating a URI removes all of
//! its variants in one step, and each variant matches requests by its own `Vary`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::HeaderMap;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::body::BodyEnd;
use super::disk::DiskWriter;
use super::key::{CacheKey, under_prefix};
pub use super::object::Object;

/// Default bound of the store's memory, in bytes: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default largest response body that is stored: 16 MiB. Larger ones pass through unstored.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// Default number of variants (by `Vary`) kept per URI; the oldest goes first.
pub const DEFAULT_MAX_VARIANTS: usize = 8;

/// The smallest shard quick_cache is given, in multiples of the largest object, so that one
/// large object never takes most of a shard.
const OBJECTS_PER_SHARD: u64 = 4;
/// The most shards the store is split into (lock striping).
const MAX_SHARDS: u64 = 64;

/// The store's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bound of the memory held, in bytes (bodies, header fields and bookkeeping).
    pub max_bytes: u64,
    /// Largest body stored, in bytes.
    pub max_object_bytes: u64,
    /// Variants kept per URI.
    pub max_variants: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_variants: DEFAULT_MAX_VARIANTS,
        }
    }
}

/// A URI's stored responses, most recent first.
#[derive(Debug, Clone, Default)]
pub struct Variants {
    /// The responses.
    objects: Arc<[Arc<Object>]>,
    /// Their weight when this list was made. quick_cache weighs an entry again whenever it
    /// removes or updates it and expects the same answer as when it was inserted, so the
    /// weight of a body that grows is fixed here and only changes through [`Store::settle`].
    weight: u64,
}

impl Variants {
    /// A list of `objects`, weighed now.
    fn new(objects: Vec<Arc<Object>>) -> Self {
        let weight = objects.iter().map(|object| object.weight()).sum();
        Variants { objects: objects.into(), weight }
    }

    /// The stored responses.
    pub fn objects(&self) -> &[Arc<Object>] {
        &self.objects
    }
}

/// What the store holds for a request.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A response whose `Vary` matches the request.
    Found(Arc<Object>),
    /// Responses for the URI, none for this request's selecting header fields.
    VaryMiss,
    /// Nothing for the URI.
    Miss,
}

/// Counters shared with the eviction hook.
#[derive(Debug, Default)]
struct Counters {
    /// Stored responses evicted to stay within the bound.
    evictions: AtomicU64,
    /// Stored responses held now.
    objects: AtomicI64,
}

/// Charges an entry for its key and every variant.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<CacheKey, Variants> for ByBytes {
    fn weight(&self, key: &CacheKey, variants: &Variants) -> u64 {
        key.heap_size() as u64 + variants.weight
    }
}

/// Counts evictions.
#[derive(Debug, Clone)]
struct Evictions(Arc<Counters>);

impl Lifecycle<CacheKey, Variants> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, variants: Variants) {
        let count = variants.objects().len() as u64;
        self.0.evictions.fetch_add(count, Ordering::Relaxed);
        self.0.objects.fetch_sub(count as i64, Ordering::Relaxed);
    }
}

/// The response store.
pub struct Store {
    /// The entries, one per URI.
    entries: Cache<CacheKey, Variants, ByBytes, DefaultHashBuilder, Evictions>,
    /// The limits it was built with.
    limits: StoreLimits,
    /// Eviction and object counts.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("limits", &self.limits).field("bytes", &self.bytes()).finish()
    }
}

impl Store {
    /// An empty store with these limits.
    pub fn new(limits: StoreLimits) -> Self {
        let max_bytes = limits.max_bytes.max(1);
        let per_shard = limits.max_object_bytes.max(1).saturating_mul(OBJECTS_PER_SHARD);
        let shards = (max_bytes / per_shard).clamp(1, MAX_SHARDS);
        // quick_cache rounds the shard count up to a power of two; round down instead, so that
        // each shard still holds several of the largest objects.
        let shards = 1usize << (63 - shards.leading_zeros());
        let estimated_items =
            usize::try_from((max_bytes / 16_384).clamp(64, 1 << 20)).unwrap_or(1 << 20);
        let counters = Arc::new(Counters::default());
        let mut options = OptionsBuilder::new();
        options.shards(shards).weight_capacity(max_bytes).estimated_items_capacity(estimated_items);
        let entries = match options.build() {
            Ok(options) => Cache::with_options(
                options,
                ByBytes,
                DefaultHashBuilder::default(),
                Evictions(Arc::clone(&counters)),
            ),
            // Only unset fields make building fail, and both are set above.
            Err(_) => Cache::with(
                estimated_items,
                max_bytes,
                ByBytes,
                DefaultHashBuilder::default(),
                Evictions(Arc::clone(&counters)),
            ),
        };
        Store { entries, limits, counters }
    }

    /// The limits the store was built with.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The stored response that fits `request` (its header fields) for `key`, most recent
    /// first (RFC 9111 §4.1).
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let Some(variants) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        for object in variants.objects() {
            if object.vary.matches(&object.vary_key, &object.vary.key(request)) {
                return Lookup::Found(Arc::clone(object));
            }
        }
        if variants.objects().is_empty() { Lookup::Miss } else { Lookup::VaryMiss }
    }

    /// Stores `object` for `key`, replacing the variant with the same secondary key. Returns
    /// the handle that completes or abandons it once its body has arrived, or `None` when its
    /// announced length is over the object size limit (it is then not stored at all).
    pub fn admit(self: &Arc<Self>, key: CacheKey, object: Object) -> Option<Admission> {
        if object.body.expected_len().is_some_and(|length| length > self.limits.max_object_bytes)
            || object.body.len() > self.limits.max_object_bytes
        {
            return None;
        }
        let object = Arc::new(object);
        self.put(&key, &object, None);
        Some(Admission { store: Arc::clone(self), key, object, settled: false, disk: None })
    }

    /// Replaces `old` (if it is still stored) with `new`, a revalidated copy. Stores `new` as a
    /// variant of its own when `old` is gone.
    pub fn replace(&self, key: &CacheKey, old: &Arc<Object>, new: Object) -> Arc<Object> {
        let new = Arc::new(new);
        self.put(key, &new, Some(old));
        new
    }

    /// Swaps `old` for `compact`, a copy with its body in one buffer, if `old` is still
    /// stored. Weighing the whole body (`settle`) may have evicted it, and a compact copy must
    /// not bring back what eviction removed (nor count it twice).
    fn compact(&self, key: &CacheKey, old: &Arc<Object>, compact: Object) {
        let compact = Arc::new(compact);
        let _ = self.entries.entry(key, None, |_, variants| {
            if !variants.objects().iter().any(|existing| Arc::ptr_eq(existing, old)) {
                return EntryAction::Retain(());
            }
            let list = variants
                .objects()
                .iter()
                .map(|existing| {
                    if Arc::ptr_eq(existing, old) {
                        Arc::clone(&compact)
                    } else {
                        Arc::clone(existing)
                    }
                })
                .collect();
            *variants = Variants::new(list);
            EntryAction::Retain(())
        });
    }

    /// Stores `object`, whose body is complete, for `key` (a response read back from the disk
    /// tier), in place of the variant with its secondary key.
    pub fn promote(&self, key: &CacheKey, object: Object) -> Arc<Object> {
        let object = Arc::new(object);
        self.put(key, &object, None);
        object
    }

    /// Puts `object` into `key`'s variants: in place of `old` when given, else in place of the
    /// variant with its secondary key, else first.
    fn put(&self, key: &CacheKey, object: &Arc<Object>, old: Option<&Arc<Object>>) {
        let max_variants = self.limits.max_variants.max(1);
        let counters = &self.counters;
        let result = self.entries.entry(key, None, |_, variants| {
            let mut list: Vec<Arc<Object>> = Vec::with_capacity(variants.objects().len() + 1);
            list.push(Arc::clone(object));
            let before = variants.objects().len();
            for existing in variants.objects() {
                let replaced = match old {
                    Some(old) => Arc::ptr_eq(existing, old),
                    None => false,
                } || (existing.vary == object.vary
                    && existing.vary_key == object.vary_key);
                if !replaced && list.len() < max_variants {
                    list.push(Arc::clone(existing));
                }
            }
            counters.objects.fetch_add(list.len() as i64 - before as i64, Ordering::Relaxed);
            *variants = Variants::new(list);
            EntryAction::Retain(())
        });
        match result {
            EntryResult::Vacant(guard) => {
                let variants = Variants::new(vec![Arc::clone(object)]);
                if guard.insert(variants).is_ok() {
                    counters.objects.fetch_add(1, Ordering::Relaxed);
                }
            }
            EntryResult::Retained(())
            | EntryResult::Removed(..)
            | EntryResult::Replaced(..)
            | EntryResult::Timeout => {}
        }
    }

    /// Recomputes the weight of the entry holding `object` once its body has grown, or drops
    /// `object` from it.
    fn settle(&self, key: &CacheKey, object: &Arc<Object>, keep: bool) {
        let counters = &self.counters;
        let _ = self.entries.entry(key, None, |_, variants| {
            if !variants.objects().iter().any(|existing| Arc::ptr_eq(existing, object)) {
                return EntryAction::Retain(());
            }
            if keep {
                // Weighed again, now with the whole body.
                *variants = Variants::new(variants.objects().to_vec());
                return EntryAction::Retain(());
            }
            let list: Vec<Arc<Object>> = variants
                .objects()
                .iter()
                .filter(|existing| !Arc::ptr_eq(existing, object))
                .cloned()
                .collect();
            counters.objects.fetch_sub(1, Ordering::Relaxed);
            if list.is_empty() {
                return EntryAction::Remove;
            }
            *variants = Variants::new(list);
            EntryAction::Retain(())
        });
    }

    /// Removes every stored response for `key`'s URI; returns how many there were.
    pub fn invalidate(&self, key: &CacheKey) -> usize {
        match self.entries.remove(key) {
            Some((_, variants)) => {
                let count = variants.objects().len();
                self.counters.objects.fetch_sub(count as i64, Ordering::Relaxed);
                count
            }
            None => 0,
        }
    }

    /// Removes every stored response whose URI is under `prefix` (normalised as
    /// [`CacheKey::for_url`] does) by whole path segments, as routes match: `http://a/x`
    /// covers `http://a/x`, `http://a/x/y` and `http://a/x?q`, not `http://a/xy`. Returns how
    /// many there were.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let removed = AtomicU64::new(0);
        self.entries.retain(|key, variants| {
            let keep = !under_prefix(key.url(), prefix);
            if !keep {
                removed.fetch_add(variants.objects().len() as u64, Ordering::Relaxed);
            }
            keep
        });
        let removed = removed.into_inner();
        self.counters.objects.fetch_sub(removed as i64, Ordering::Relaxed);
        usize::try_from(removed).unwrap_or(usize::MAX)
    }

    /// Bytes held now, as weighed against the bound.
    pub fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    /// Stored responses held now.
    pub fn objects(&self) -> u64 {
        u64::try_from(self.counters.objects.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Stored responses evicted so far to stay within the bound.
    pub fn evictions(&self) -> u64 {
        self.counters.evictions.load(Ordering::Relaxed)
    }
}

/// A stored response whose body is still arriving. Its filler calls [`Admission::complete`] at
/// the end of the body or [`Admission::abandon`] when it cannot be stored after all; dropping
/// it unsettled abandons it.
#[derive(Debug)]
pub struct Admission {
    /// The store it was admitted to.
    store: Arc<Store>,
    /// Its key.
    key: CacheKey,
    /// The object in the store.
    object: Arc<Object>,
    /// Whether it was completed or abandoned.
    settled: bool,
    /// Where it is written once complete, when there is a disk tier.
    disk: Option<DiskWriter>,
}

impl Admission {
    /// The object being filled.
    pub fn object(&self) -> &Arc<Object> {
        &self.object
    }

    /// The key it is stored under.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Also writes the response to the disk tier once it is complete.
    pub fn with_disk(mut self, writer: DiskWriter) -> Self {
        self.disk = Some(writer);
        self
    }

    /// The store's object size limit.
    pub fn max_object_bytes(&self) -> u64 {
        self.store.limits.max_object_bytes
    }

    /// The body has fully arrived: marks it complete, charges the store for it, and swaps a
    /// small body for a compact copy.
    pub fn complete(mut self) {
        self.settled = true;
        self.object.body.end(BodyEnd::Complete);
        if self.object.body.len() > self.store.limits.max_object_bytes {
            self.store.settle(&self.key, &self.object, false);
            return;
        }
        self.store.settle(&self.key, &self.object, true);
        if let Some(compact) = self.object.body.compacted() {
            let object = self.object.with_body(compact);
            self.store.compact(&self.key, &self.object, object);
        }
        // The disk tier gets the object even when memory evicted it meanwhile: the tiers
        // are bounded each on its own.
        if let Some(writer) = self.disk.take() {
            writer.write(self.key.clone(), Arc::clone(&self.object));
        }
    }

    /// The response cannot be stored after all (too large, or its body failed): removes it
    /// from the store and ends its body with `reason` for anyone still reading it.
    pub fn abandon(mut self, reason: BodyEnd) {
        self.settled = true;
        self.object.body.end(reason);
        self.store.settle(&self.key, &self.object, false);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            self.object.body.end(BodyEnd::Failed);
            self.store.settle(&self.key, &self.object, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::SharedBody;
    use crate::cache::key::Vary;
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::Freshness;
    use crate::cache::policy::freshness::Heuristic;
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Method, StatusCode};
    use std::time::{Duration, UNIX_EPOCH};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Method::GET, "http", "a.test", path)
    }

    fn object(response: &[(&str, &str)], request: &[(&str, &str)], body: &[u8]) -> Object {
        let headers = headers(response);
        let (directives, source) = effective(&headers, &[]);
        let now = UNIX_EPOCH + Duration::from_secs(1_796_601_600);
        let freshness = Freshness::assess(
            StatusCode::OK,
            &headers,
            &directives,
            &source,
            now,
            now,
            Heuristic::default(),
        );
        let vary = Vary::of(&headers);
        let vary_key = vary.key(&self::headers(request));
        Object {
            status: StatusCode::OK,
            headers,
            vary,
            vary_key,
            freshness,
            body: SharedBody::complete(vec![Bytes::copy_from_slice(body)]),
        }
    }

    fn limits(max_bytes: u64, max_object_bytes: u64) -> StoreLimits {
        StoreLimits { max_bytes, max_object_bytes, max_variants: DEFAULT_MAX_VARIANTS }
    }

    #[test]
    fn lookup_selects_variants_by_vary() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        assert!(matches!(store.lookup(&key("/"), &HeaderMap::new()), Lookup::Miss));
        store
            .admit(key("/"), object(&[("vary", "foo")], &[("foo", "1")], b"one"))
            .unwrap()
            .complete();
        store
            .admit(key("/"), object(&[("vary", "foo")], &[("foo", "2")], b"two"))
            .unwrap()
            .complete();
        assert_eq!(store.objects(), 2);
        let body_of = |request: &[(&str, &str)]| match store.lookup(&key("/"), &headers(request)) {
            Lookup::Found(object) => object.body.len(),
            Lookup::VaryMiss => 0,
            Lookup::Miss => u64::MAX,
        };
        assert_eq!(body_of(&[("foo", "1")]), 3);
        assert_eq!(body_of(&[("foo", "2")]), 3);
        assert_eq!(body_of(&[("foo", "3")]), 0);
        assert_eq!(body_of(&[]), 0);
        // The same secondary key replaces its variant.
        store
            .admit(key("/"), object(&[("vary", "foo")], &[("foo", "1")], b"uno!"))
            .unwrap()
            .complete();
        assert_eq!(body_of(&[("foo", "1")]), 4);
        assert_eq!(store.objects(), 2);
        assert_eq!(store.invalidate(&key("/")), 2);
        assert_eq!(store.objects(), 0);
        assert!(matches!(store.lookup(&key("/"), &HeaderMap::new()), Lookup::Miss));
    }

    #[test]
    fn variants_per_uri_are_bounded() {
        let store = Arc::new(Store::new(StoreLimits { max_variants: 2, ..StoreLimits::default() }));
        for value in ["1", "2", "3"] {
            store
                .admit(key("/"), object(&[("vary", "foo")], &[("foo", value)], b"x"))
                .unwrap()
                .complete();
        }
        assert_eq!(store.objects(), 2);
        assert!(matches!(store.lookup(&key("/"), &headers(&[("foo", "1")])), Lookup::VaryMiss));
        assert!(matches!(store.lookup(&key("/"), &headers(&[("foo", "3")])), Lookup::Found(_)));
    }

    #[test]
    fn objects_over_the_size_limit_are_refused_or_abandoned() {
        let store = Arc::new(Store::new(limits(1 << 20, 10)));
        let mut big = object(&[], &[], b"");
        big.body = SharedBody::filling(Some(11));
        assert!(store.admit(key("/big"), big).is_none());
        // Unknown length: admitted, then too long at the end.
        let mut growing = object(&[], &[], b"");
        growing.body = SharedBody::filling(None);
        let admission = store.admit(key("/grow"), growing).unwrap();
        assert!(matches!(store.lookup(&key("/grow"), &HeaderMap::new()), Lookup::Found(_)));
        admission.object().body.push(Bytes::from_static(b"0123456789A"));
        admission.complete();
        assert!(matches!(store.lookup(&key("/grow"), &HeaderMap::new()), Lookup::Miss));
        assert_eq!(store.objects(), 0);
    }

    #[test]
    fn an_unsettled_admission_leaves_nothing_behind() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let mut growing = object(&[], &[], b"");
        growing.body = SharedBody::filling(None);
        let body = Arc::clone(&growing.body);
        drop(store.admit(key("/"), growing));
        assert_eq!(body.ended(), Some(BodyEnd::Failed));
        assert!(matches!(store.lookup(&key("/"), &HeaderMap::new()), Lookup::Miss));
        assert_eq!(store.objects(), 0);
    }

    #[test]
    fn completion_charges_the_whole_body_and_compacts_small_ones() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let mut growing = object(&[], &[], b"");
        growing.body = SharedBody::filling(None);
        let admission = store.admit(key("/"), growing).unwrap();
        let before = store.bytes();
        admission.object().body.push(Bytes::from(vec![1u8; 1000]));
        admission.object().body.push(Bytes::from(vec![2u8; 1000]));
        admission.complete();
        assert!(store.bytes() >= before + 2000, "{} vs {before}", store.bytes());
        let Lookup::Found(stored) = store.lookup(&key("/"), &HeaderMap::new()) else {
            panic!("stored")
        };
        assert!(stored.body.is_complete());
        assert!(stored.body.compacted().is_none(), "one chunk already");
        assert_eq!(store.objects(), 1);
    }

    #[test]
    fn the_memory_bound_holds_and_evictions_are_counted() {
        let store = Arc::new(Store::new(limits(64 * 1024, 4 * 1024)));
        for n in 0..200 {
            store.admit(key(&format!("/{n}")), object(&[], &[], &[0u8; 2048])).unwrap().complete();
            assert!(store.bytes() <= 64 * 1024, "{} after {n}", store.bytes());
        }
        assert!(store.evictions() > 150, "{}", store.evictions());
        assert_eq!(store.objects() + store.evictions(), 200);
    }

    #[test]
    fn purge_by_prefix_and_revalidated_replacement() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        for path in ["/a", "/a/b", "/ab", "/b"] {
            store.admit(key(path), object(&[], &[], b"x")).unwrap().complete();
        }
        assert_eq!(store.purge_prefix("http://a.test/a/"), 1);
        assert_eq!(store.purge_prefix("http://a.test/a"), 1);
        assert_eq!(store.objects(), 2);
        assert!(under_prefix("http://a.test/a?q", "http://a.test/a"));
        assert!(!under_prefix("http://a.test/ab", "http://a.test/a"));
        assert!(under_prefix("http://a.test/ab", "http://a.test/"));
        let Lookup::Found(old) = store.lookup(&key("/b"), &HeaderMap::new()) else {
            panic!("stored")
        };
        let new = old.revalidated(headers(&[("x", "1")]), old.freshness.clone());
        store.replace(&key("/b"), &old, new);
        let Lookup::Found(now) = store.lookup(&key("/b"), &HeaderMap::new()) else {
            panic!("stored")
        };
        assert_eq!(now.headers.get("x").unwrap(), "1");
        assert!(Arc::ptr_eq(&now.body, &old.body));
        assert_eq!(store.objects(), 2);
    }
}
