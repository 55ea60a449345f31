//! Virtual keys: the keys sluice issues to its clients, each with a name, the routes and
//! models it may use, and a budget. The provider's own keys never leave sluice; a client's
//! virtual key never goes upstream.
//!
//! Keys are stored as SHA-256 digests (`sha256:<64 hex digits>`), in the configuration or in
//! a key file that is re-read when it changes. A fast digest, not a password hash, because a
//! virtual key is a long random secret, not a password: there is no dictionary to slow down,
//! and argon2 or bcrypt would cost milliseconds of CPU on every request. Lookup hashes the
//! presented key, finds the candidates by the digest's first eight bytes and compares the
//! whole digest in constant time, so the time taken depends only on the digest of what the
//! client sent, never on how much of a stored key it matched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::gateway::budget::{Budget, BudgetCounters, Holder};

/// Largest key file read; a larger one is refused (and the keys in use are kept).
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The prefix of a key digest as written in configuration.
const SHA256_PREFIX: &str = "sha256:";

/// A model name, or a prefix of names ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    /// This model exactly.
    Exact(String),
    /// Every model whose name starts with this.
    Prefix(String),
}

impl ModelPattern {
    /// Reads `gpt-4o` (exact) or `claude-*` (prefix).
    pub fn parse(text: &str) -> ModelPattern {
        match text.strip_suffix('*') {
            Some(prefix) => ModelPattern::Prefix(prefix.to_owned()),
            None => ModelPattern::Exact(text.to_owned()),
        }
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        match self {
            ModelPattern::Exact(name) => name == model,
            ModelPattern::Prefix(prefix) => model.starts_with(prefix.as_str()),
        }
    }
}

/// One virtual key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKey {
    /// Its name, for logs, metrics and budgets.
    pub name: Arc<str>,
    digest: [u8; 32],
    /// Route names it may use; empty means every AI route.
    pub routes: Vec<String>,
    /// Models it may ask for; empty means any.
    pub models: Vec<ModelPattern>,
    /// Its budget, with its counters' names.
    pub budget: BudgetCounters,
}

impl VirtualKey {
    /// A key named `name` whose digest is `digest`.
    pub fn new(
        name: &str,
        digest: [u8; 32],
        routes: Vec<String>,
        models: Vec<ModelPattern>,
        budget: Budget,
    ) -> VirtualKey {
        VirtualKey {
            name: Arc::from(name),
            digest,
            routes,
            models,
            budget: BudgetCounters::new(Holder::VirtualKey, name, budget),
        }
    }

    /// Whether this key may use the route named `route`.
    pub fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|allowed| allowed == route)
    }

    /// Whether this key may ask for `model` (a request that names no model passes only a key
    /// without a model list).
    pub fn allows_model(&self, model: Option<&str>) -> bool {
        match model {
            _ if self.models.is_empty() => true,
            Some(model) => self.models.iter().any(|pattern| pattern.matches(model)),
            None => false,
        }
    }
}

/// The SHA-256 digest of a key as written in configuration: `sha256:` and 64 hex digits.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SHA256_PREFIX}{hex}")
}

/// Reads a digest written as `sha256:<64 hex digits>`.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex = text.trim().strip_prefix(SHA256_PREFIX).ok_or_else(|| {
        format!("`{text}` is not a key digest: write `sha256:` and 64 hex digits")
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{text}` is not a key digest: `sha256:` takes 64 hex digits"));
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| "not hex".to_owned())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|err| err.to_string())?;
    }
    Ok(digest)
}

/// The virtual keys in force, found by the digest of a presented key.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VirtualKey>>,
    by_prefix: HashMap<u64, Vec<usize>>,
}

/// Two keys in one set share a name or a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Names identify keys in logs, metrics and budgets.
    #[error("virtual key name `{0}` is used twice")]
    DuplicateName(String),
    /// The same key given twice (under names `{0}` and `{1}`).
    #[error("virtual keys `{0}` and `{1}` have the same digest")]
    DuplicateDigest(String, String),
}

fn prefix_of(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

impl KeySet {
    /// The set of `keys`; refused when two share a name or a digest.
    pub fn new(keys: Vec<VirtualKey>) -> Result<KeySet, KeySetError> {
        let mut set = KeySet::default();
        let mut names = HashMap::new();
        for (index, key) in keys.into_iter().enumerate() {
            if names.insert(key.name.clone(), index).is_some() {
                return Err(KeySetError::DuplicateName(key.name.to_string()));
            }
            if let Some(other) = set.lookup(&key.digest) {
                return Err(KeySetError::DuplicateDigest(
                    other.name.to_string(),
                    key.name.to_string(),
                ));
            }
            set.by_prefix.entry(prefix_of(&key.digest)).or_default().push(index);
            set.keys.push(Arc::new(key));
        }
        Ok(set)
    }

    /// The key a client presented, if it is one of the set.
    pub fn find(&self, presented: &str) -> Option<&Arc<VirtualKey>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.lookup(&digest)
    }

    fn lookup(&self, digest: &[u8; 32]) -> Option<&Arc<VirtualKey>> {
        let candidates = self.by_prefix.get(&prefix_of(digest))?;
        candidates
            .iter()
            .filter_map(|index| self.keys.get(*index))
            .find(|key| bool::from(key.digest.ct_eq(digest)))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VirtualKey>> {
        self.keys.iter()
    }
}

/// One `[[key]]` of a key file (and of the configuration's virtual keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVirtualKey {
    /// Its name.
    pub name: String,
    /// `sha256:<64 hex digits>` of the key.
    pub hash: String,
    /// Route names it may use.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Models it may ask for (`*` at the end matches a prefix).
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens per UTC day.
    pub tokens_per_day: Option<u64>,
}

impl FileVirtualKey {
    /// The key as configured; an error names what is wrong.
    pub fn to_key(&self) -> Result<VirtualKey, String> {
        if self.name.is_empty() {
            return Err("a virtual key needs a name".to_owned());
        }
        let digest = parse_hash(&self.hash)?;
        let budget = Budget {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            tokens_per_day: self.tokens_per_day,
        };
        let models = self.models.iter().map(|m| ModelPattern::parse(m)).collect();
        Ok(VirtualKey::new(&self.name, digest, self.routes.clone(), models, budget))
    }
}

/// A key file: `[[key]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileContents {
    #[serde(default)]
    key: Vec<FileVirtualKey>,
}

/// A key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read.
    #[error("key file {}: cannot be read", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    /// It is larger than [`MAX_KEY_FILE_BYTES`].
    #[error("key file {}: larger than {MAX_KEY_FILE_BYTES} bytes", .0.display())]
    TooLarge(PathBuf),
    /// It is not valid TOML of the expected shape.
    #[error("key file {}: {}", .0.display(), .1)]
    Invalid(PathBuf, String),
}

/// Reads the keys of a key file.
pub fn read_key_file(path: &Path) -> Result<Vec<VirtualKey>, KeyFileError> {
    let read = |err| KeyFileError::Read(path.to_owned(), err);
    if std::fs::metadata(path).map_err(read)?.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge(path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let invalid = |message: String| KeyFileError::Invalid(path.to_owned(), message);
    let contents: KeyFileContents =
        toml::from_str(&text).map_err(|err| invalid(err.message().to_owned()))?;
    contents
        .key
        .iter()
        .enumerate()
        .map(|(index, key)| {
            key.to_key().map_err(|message| invalid(format!("key[{index}]: {message}")))
        })
        .collect()
}

/// What identifies a version of a file without reading it.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The keys in force: those of the configuration, plus those of the key file, swapped
/// whole when the file changes, so a request sees either the old set or the new one.
#[derive(Debug)]
pub struct KeyStore {
    configured: Vec<VirtualKey>,
    file: Option<PathBuf>,
    stamp: Mutex<FileStamp>,
    current: ArcSwap<KeySet>,
}

impl KeyStore {
    /// The configured keys and, when given, those of `file` (read now: a bad file at start
    /// is an error).
    pub fn new(
        configured: Vec<VirtualKey>,
        file: Option<PathBuf>,
    ) -> Result<KeyStore, KeyStoreError> {
        let store = KeyStore {
            configured,
            file,
            stamp: Mutex::new(None),
            current: ArcSwap::from_pointee(KeySet::default()),
        };
        store.reload()?;
        Ok(store)
    }

    /// The keys in force now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Reads the key file again and puts the result in force; on failure the keys in force
    /// stay.
    pub fn reload(&self) -> Result<usize, KeyStoreError> {
        let mut keys = self.configured.clone();
        if let Some(path) = &self.file {
            *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp(path);
            keys.extend(read_key_file(path)?);
        }
        let set = KeySet::new(keys)?;
        let count = set.len();
        self.current.store(Arc::new(set));
        Ok(count)
    }

    /// Reloads when the key file's modification time or size changed since it was last read;
    /// `None` when it did not (or there is no file).
    pub fn reload_if_changed(&self) -> Option<Result<usize, KeyStoreError>> {
        let path = self.file.as_ref()?;
        let changed = *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) != stamp(path);
        changed.then(|| self.reload())
    }

    /// Checks the key file every `interval` for as long as the store is in use (the task
    /// ends once the last other holder drops it), logging each reload.
    pub async fn watch(store: std::sync::Weak<KeyStore>, interval: Duration) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(store) = store.upgrade() else { return };
            match store.reload_if_changed() {
                Some(Ok(count)) => tracing::info!(keys = count, "virtual keys reloaded"),
                Some(Err(err)) => {
                    tracing::warn!("virtual key file refused, keeping the keys in force: {err}")
                }
                None => {}
            }
        }
    }
}

/// The keys could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The key file is unusable.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The keys conflict.
    #[error(transparent)]
    Set(#[from] KeySetError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> VirtualKey {
        VirtualKey::new(name, parse_hash(&hash(secret)).unwrap(), vec![], vec![], Budget::default())
    }

    #[test]
    fn digests_round_trip_and_bad_ones_are_explained() {
        let text = hash("sk-virtual-1");
        assert_eq!(text.len(), 7 + 64);
        assert!(parse_hash(&text).is_ok());
        assert_eq!(
            hash(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for bad in ["", "sha256:", "sha256:abc", "md5:00", &format!("sha256:{}", "g".repeat(64))] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presented_keys_are_found_by_digest() {
        let set = KeySet::new(vec![key("alice", "sk-a"), key("bob", "sk-b")]).unwrap();
        assert_eq!(set.find("sk-a").map(|k| &*k.name), Some("alice"));
        assert_eq!(set.find("sk-b").map(|k| &*k.name), Some("bob"));
        assert!(set.find("sk-c").is_none());
        assert!(set.find("").is_none());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn duplicates_are_refused() {
        let err = KeySet::new(vec![key("a", "x"), key("a", "y")]).unwrap_err();
        assert_eq!(err, KeySetError::DuplicateName("a".into()));
        let err = KeySet::new(vec![key("a", "x"), key("b", "x")]).unwrap_err();
        assert_eq!(err, KeySetError::DuplicateDigest("a".into(), "b".into()));
    }

    #[test]
    fn routes_and_models_are_allowed_by_list() {
        let mut k = key("a", "x");
        assert!(k.allows_route("any") && k.allows_model(None) && k.allows_model(Some("m")));
        k.routes = vec!["openai".into()];
        k.models = vec![ModelPattern::parse("gpt-4o"), ModelPattern::parse("claude-*")];
        assert!(k.allows_route("openai") && !k.allows_route("anthropic"));
        let cases = [
            (Some("gpt-4o"), true),
            (Some("gpt-4o-mini"), false),
            (Some("claude-3-haiku"), true),
            (Some("claude"), false),
            (None, false),
        ];
        for (model, allowed) in cases {
            assert_eq!(k.allows_model(model), allowed, "{model:?}");
        }
    }

    #[test]
    fn a_key_file_reloads_when_it_changes_and_a_bad_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write(&format!(
            "[[key]]\nname = \"carol\"\nhash = \"{}\"\nmodels = [\"gpt-*\"]\ntokens_per_day = 10\n",
            hash("sk-c")
        ));
        let store = KeyStore::new(vec![key("alice", "sk-a")], Some(path.clone())).unwrap();
        assert_eq!(store.keys().len(), 2);
        let carol = store.keys().find("sk-c").cloned().unwrap();
        assert_eq!(carol.budget.budget.tokens_per_day, Some(10));
        assert!(store.reload_if_changed().is_none(), "unchanged");

        write("[[key]]\nname = \"dave\"\nhash = \"sha256:00\"\n");
        let err = store.reload_if_changed().unwrap().unwrap_err();
        assert!(err.to_string().contains("key[0]: `sha256:00` is not a key digest"), "{err}");
        assert!(store.keys().find("sk-c").is_some(), "the keys in force stay");

        write(&format!("[[key]]\nname = \"dave\"\nhash = \"{}\"\n", hash("sk-dave")));
        assert_eq!(store.reload_if_changed().unwrap().unwrap(), 2);
        assert!(store.keys().find("sk-c").is_none());
        assert!(store.keys().find("sk-dave").is_some());
        assert!(store.keys().find("sk-a").is_some(), "configured keys stay");

        write("[[key]]\nname = \"x\"\nhash = \"sha256:00\"\nextra = 1\n");
        assert!(store.reload().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
