//! What the disk tier holds, kept in memory: for each URI its files (one per variant), each
//! file's `Vary` selection and size, the total size against the bound, and the order in which
//! files were last used, so the least recently used goes first when a new one needs room.
//!
//! Pure bookkeeping without I/O: every change returns the files that are no longer wanted, and
//! the caller removes them from the directory.

use std::collections::{BTreeMap, HashMap};

use http::HeaderMap;

use crate::cache::key::{CacheKey, Vary, VaryKey, under_prefix};

/// A file's number; its name in the directory is this number in hexadecimal.
pub type FileId = u64;

/// One stored response's file, as the index knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key it is stored under.
    pub key: CacheKey,
    /// The `Vary` it was stored under.
    pub vary: Vary,
    /// The secondary key of the request it answered.
    pub vary_key: VaryKey,
    /// Bytes of the file.
    pub bytes: u64,
}

/// What the index holds for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The file of a response whose `Vary` matches the request.
    File(FileId),
    /// Responses for the URI, none for this request's selecting header fields.
    VaryMiss,
    /// Nothing for the URI.
    Miss,
}

/// The index of the disk tier.
#[derive(Debug)]
pub struct Index {
    /// Bound of the total size of the files.
    max_bytes: u64,
    /// Variants kept per URI.
    max_variants: usize,
    /// Each URI's files, most recent first.
    keys: HashMap<CacheKey, Vec<FileId>>,
    /// Each file, with the tick it was last used at.
    files: HashMap<FileId, (Entry, u64)>,
    /// Files by the tick they were last used at: the first is the least recently used.
    recency: BTreeMap<u64, FileId>,
    /// Total bytes of the files.
    bytes: u64,
    /// The use counter.
    clock: u64,
    /// Files being written, with their key: an invalidation of the key cancels them, so a
    /// write that finishes after its URI was purged does not bring it back.
    pending: HashMap<FileId, CacheKey>,
}

impl Index {
    /// An empty index bounded to `max_bytes`, keeping `max_variants` variants per URI.
    pub fn new(max_bytes: u64, max_variants: usize) -> Self {
        Index {
            max_bytes,
            max_variants: max_variants.max(1),
            keys: HashMap::new(),
            files: HashMap::new(),
            recency: BTreeMap::new(),
            bytes: 0,
            clock: 0,
            pending: HashMap::new(),
        }
    }

    /// The file that answers `request` for `key`, marked as just used.
    pub fn find(&mut self, key: &CacheKey, request: &HeaderMap) -> Found {
        let Some(ids) = self.keys.get(key) else {
            return Found::Miss;
        };
        let found = ids.iter().copied().find(|id| {
            self.files.get(id).is_some_and(|(entry, _)| {
                entry.vary.matches(&entry.vary_key, &entry.vary.key(request))
            })
        });
        match found {
            Some(id) => {
                self.touch(id);
                Found::File(id)
            }
            None if ids.is_empty() => Found::Miss,
            None => Found::VaryMiss,
        }
    }

    /// Notes that file `id` for `key` is being written.
    pub fn begin(&mut self, id: FileId, key: CacheKey) {
        self.pending.insert(id, key);
    }

    /// Forgets the write of file `id`, which failed.
    pub fn cancel(&mut self, id: FileId) {
        self.pending.remove(&id);
    }

    /// Whether file `id` is still wanted (its key was not invalidated while it was written).
    pub fn is_pending(&self, id: FileId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Adds file `id` once it is written, unless its key was invalidated meanwhile; see
    /// [`Index::restore`] for what it displaces. Returns the files no longer wanted (the new
    /// one among them when it was cancelled).
    pub fn insert(&mut self, id: FileId, entry: Entry) -> Vec<FileId> {
        if self.pending.remove(&id).is_none() {
            return vec![id];
        }
        self.restore(id, entry)
    }

    /// Adds file `id` (found at start, or just written), which replaces the variant with the
    /// same secondary key; then drops the oldest variants past the limit and the least
    /// recently used files past the bound. Returns the files no longer wanted (the new one
    /// among them when it alone is over the bound).
    pub fn restore(&mut self, id: FileId, entry: Entry) -> Vec<FileId> {
        let mut unwanted = Vec::new();
        if entry.bytes > self.max_bytes {
            unwanted.push(id);
            return unwanted;
        }
        let ids = self.keys.entry(entry.key.clone()).or_default();
        let mut kept = vec![id];
        for existing in ids.drain(..) {
            let same = self
                .files
                .get(&existing)
                .is_some_and(|(old, _)| old.vary == entry.vary && old.vary_key == entry.vary_key);
            if same || kept.len() >= self.max_variants {
                unwanted.push(existing);
            } else {
                kept.push(existing);
            }
        }
        *ids = kept;
        for old in &unwanted {
            self.forget(*old);
        }
        self.bytes = self.bytes.saturating_add(entry.bytes);
        self.clock += 1;
        self.files.insert(id, (entry, self.clock));
        self.recency.insert(self.clock, id);
        while self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.recency.pop_first() else {
                break;
            };
            self.remove(oldest);
            unwanted.push(oldest);
        }
        unwanted
    }

    /// Removes file `id`; returns whether it was there.
    pub fn remove(&mut self, id: FileId) -> bool {
        let Some((entry, _)) = self.files.get(&id) else {
            return false;
        };
        let key = entry.key.clone();
        if let Some(ids) = self.keys.get_mut(&key) {
            ids.retain(|existing| *existing != id);
            if ids.is_empty() {
                self.keys.remove(&key);
            }
        }
        self.forget(id);
        true
    }

    /// Drops file `id` from the file table, the recency order and the total.
    fn forget(&mut self, id: FileId) {
        if let Some((entry, tick)) = self.files.remove(&id) {
            self.recency.remove(&tick);
            self.bytes = self.bytes.saturating_sub(entry.bytes);
        }
    }

    /// Removes every file for `key`'s URI, and cancels its writes; returns the files.
    pub fn remove_key(&mut self, key: &CacheKey) -> Vec<FileId> {
        self.pending.retain(|_, pending| pending != key);
        let ids = self.keys.get(key).cloned().unwrap_or_default();
        for id in &ids {
            self.remove(*id);
        }
        ids
    }

    /// Removes every file whose URI lies under `prefix` (as [`under_prefix`] says), and
    /// cancels their writes; returns the files.
    pub fn remove_prefix(&mut self, prefix: &str) -> Vec<FileId> {
        self.pending.retain(|_, pending| !under_prefix(pending.url(), prefix));
        let keys: Vec<CacheKey> =
            self.keys.keys().filter(|key| under_prefix(key.url(), prefix)).cloned().collect();
        keys.iter().flat_map(|key| self.remove_key(key)).collect()
    }

    /// Marks file `id` as just used.
    fn touch(&mut self, id: FileId) {
        if let Some((_, tick)) = self.files.get_mut(&id) {
            self.recency.remove(tick);
            self.clock += 1;
            *tick = self.clock;
            self.recency.insert(self.clock, id);
        }
    }

    /// Total bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of files.
    pub fn objects(&self) -> u64 {
        self.files.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue, Method};

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Method::GET, "http", "a.test", path)
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn entry(path: &str, vary: &[(&str, &str)], asked: &[(&str, &str)], bytes: u64) -> Entry {
        let vary = Vary::of(&request(vary));
        let vary_key = vary.key(&request(asked));
        Entry { key: key(path), vary, vary_key, bytes }
    }

    const NONE: [FileId; 0] = [];

    fn add(index: &mut Index, id: FileId, entry: Entry) -> Vec<FileId> {
        index.begin(id, entry.key.clone());
        index.insert(id, entry)
    }

    #[test]
    fn variants_are_selected_and_replaced_by_secondary_key() {
        let mut index = Index::new(1000, 2);
        let vary = &[("vary", "foo")];
        assert_eq!(add(&mut index, 1, entry("/", vary, &[("foo", "1")], 10)), NONE);
        assert_eq!(add(&mut index, 2, entry("/", vary, &[("foo", "2")], 10)), NONE);
        assert_eq!(index.find(&key("/"), &request(&[("foo", "1")])), Found::File(1));
        assert_eq!(index.find(&key("/"), &request(&[("foo", "2")])), Found::File(2));
        assert_eq!(index.find(&key("/"), &request(&[("foo", "3")])), Found::VaryMiss);
        assert_eq!(index.find(&key("/x"), &request(&[])), Found::Miss);
        // The same secondary key replaces its file.
        assert_eq!(add(&mut index, 3, entry("/", vary, &[("foo", "1")], 10)), [1]);
        assert_eq!(index.find(&key("/"), &request(&[("foo", "1")])), Found::File(3));
        // A third variant pushes out the oldest.
        assert_eq!(add(&mut index, 4, entry("/", vary, &[("foo", "4")], 10)), [2]);
        assert_eq!((index.objects(), index.bytes()), (2, 20));
    }

    #[test]
    fn the_least_recently_used_files_go_first_to_keep_the_bound() {
        let mut index = Index::new(100, 8);
        for id in 1..=4 {
            assert_eq!(add(&mut index, id, entry(&format!("/{id}"), &[], &[], 25)), NONE);
        }
        // Using 1 makes 2 the least recently used.
        assert_eq!(index.find(&key("/1"), &HeaderMap::new()), Found::File(1));
        assert_eq!(add(&mut index, 5, entry("/5", &[], &[], 40)), [2, 3]);
        assert_eq!(index.bytes(), 90);
        assert_eq!(index.find(&key("/2"), &HeaderMap::new()), Found::Miss);
        assert_eq!(index.find(&key("/1"), &HeaderMap::new()), Found::File(1));
        // A file over the whole bound is never kept.
        assert_eq!(add(&mut index, 6, entry("/6", &[], &[], 101)), [6]);
        assert_eq!(index.objects(), 3);
    }

    #[test]
    fn invalidation_removes_files_and_cancels_writes() {
        let mut index = Index::new(1000, 8);
        for (id, path) in [(1, "/a"), (2, "/a/b"), (3, "/ab"), (4, "/b")] {
            add(&mut index, id, entry(path, &[], &[], 1));
        }
        let mut purged = index.remove_prefix("http://a.test/a");
        purged.sort_unstable();
        assert_eq!(purged, [1, 2]);
        assert_eq!(index.objects(), 2);
        assert_eq!(index.remove_key(&key("/b")), [4]);
        assert_eq!(index.remove_key(&key("/b")), NONE);
        // A write under way when its URI is invalidated is dropped when it lands.
        index.begin(7, key("/c"));
        assert!(index.is_pending(7));
        assert_eq!(index.remove_key(&key("/c")), NONE);
        assert!(!index.is_pending(7));
        assert_eq!(index.insert(7, entry("/c", &[], &[], 1)), [7]);
        assert_eq!(index.find(&key("/c"), &HeaderMap::new()), Found::Miss);
        assert!(index.remove(3));
        assert!(!index.remove(3));
        assert_eq!((index.objects(), index.bytes()), (0, 0));
    }
}
