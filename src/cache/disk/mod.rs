//! The optional disk tier: complete stored responses kept as files under one directory, with
//! a size bound of their own, found again after a restart.
//!
//! - [`record`]: the file format (prelude, head with its digest, body);
//! - [`index`]: what is on disk, kept in memory: files by URI and variant, their sizes, the
//!   least recently used order the bound evicts in.
//!
//! A file is written to a temporary name and renamed into place only once complete, so a
//! reader never sees half a file under a real name. Each write gets a new name (a number that
//! only grows), so a replacement never overwrites a file someone is streaming, and removing
//! the replaced file can never remove its successor. At start the directory is scanned and the
//! index rebuilt from the files' heads, oldest first; temporary files, and files that are cut
//! short or whose head does not match its digest, are removed. Any I/O error on the way makes
//! the request a miss and is logged; it never fails the request.
//!
//! Bodies are read back from their file in chunks, never whole (see
//! [`crate::cache::body`]); the cache promotes small ones into the memory tier.
//!
//! The directory belongs to one sluice process: two processes sharing it would remove each
//! other's files.

pub mod index;
pub mod record;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::background::Background;
use super::body::SharedBody;
use super::key::CacheKey;
use super::object::Object;

use self::index::{Entry, FileId, Found, Index};
use self::record::{PRELUDE_LEN, Prelude, RecordError};

/// Default bound of the disk tier's files, in bytes: 1 GiB.
pub const DEFAULT_DISK_MAX_BYTES: u64 = 1 << 30;

/// Suffix of a file still being written.
const TEMPORARY: &str = ".tmp";
/// Buffer between a body being written and its file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Why a stored response could not be read from the disk tier.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Reading or writing failed.
    #[error("disk cache I/O: {0}")]
    Io(#[from] io::Error),
    /// The file is not a valid stored response.
    #[error("disk cache file is damaged: {0}")]
    Damaged(#[from] RecordError),
    /// The file holds another URI than the index says.
    #[error("disk cache file holds another URI")]
    OtherKey,
}

/// What the disk tier holds for a request.
#[derive(Debug)]
pub enum DiskLookup {
    /// A response whose `Vary` matches the request; its body streams from its file.
    Found(Box<Object>),
    /// Responses for the URI, none for this request's selecting header fields.
    VaryMiss,
    /// Nothing usable for the URI.
    Miss,
}

/// The disk tier.
#[derive(Debug)]
pub struct Disk {
    /// The directory the files are in.
    dir: PathBuf,
    /// Bound of the files' total size.
    max_bytes: u64,
    /// What is on disk.
    index: Mutex<Index>,
    /// The number the next file is named after.
    next: AtomicU64,
}

impl Disk {
    /// Opens the tier in `dir` (created when missing), bounded to `max_bytes` and
    /// `max_variants` per URI, and rebuilds its index from the files there. Blocking: it is
    /// called while the configuration is put in place, before requests are served.
    pub fn open(dir: &Path, max_bytes: u64, max_variants: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(SystemTime, FileId, Entry)> = Vec::new();
        let mut highest = 0;
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = item.path();
            if let Some(id) = name.strip_suffix(TEMPORARY).and_then(parse_id) {
                highest = highest.max(id);
                remove_logged(&path);
                continue;
            }
            let Some(id) = parse_id(name) else { continue };
            highest = highest.max(id);
            match read_entry(&path) {
                Ok((modified, entry)) => found.push((modified, id, entry)),
                Err(err) => {
                    tracing::warn!(file = %path.display(), "removing a disk cache file: {err}");
                    remove_logged(&path);
                }
            }
        }
        // The most recently written last, so that it counts as the most recently used and,
        // for one variant found twice (a crash between a rename and the removal of the file
        // it replaced), the newer file wins.
        found.sort_by_key(|(modified, id, _)| (*modified, *id));
        let mut index = Index::new(max_bytes, max_variants);
        let mut unwanted = Vec::new();
        for (_, id, entry) in found {
            unwanted.extend(index.restore(id, entry));
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
            next: AtomicU64::new(highest.saturating_add(1)),
        };
        for id in unwanted {
            remove_logged(&disk.path(id));
        }
        tracing::info!(
            dir = %dir.display(),
            objects = disk.objects(),
            bytes = disk.bytes(),
            "disk cache opened"
        );
        Ok(disk)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bound of the files' total size.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index's methods leave it consistent at every point a panic could occur.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id:016x}"))
    }

    /// The stored response that fits `request` (its header fields) for `key`. A file that
    /// cannot be read or is damaged is removed and the request is a miss.
    pub async fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> DiskLookup {
        let id = match self.index().find(key, request) {
            Found::File(id) => id,
            Found::VaryMiss => return DiskLookup::VaryMiss,
            Found::Miss => return DiskLookup::Miss,
        };
        match self.read(key, id).await {
            Ok(object) => DiskLookup::Found(Box::new(object)),
            Err(err) => {
                tracing::warn!(key = key.url(), file = id, "disk cache miss: {err}");
                if self.index().remove(id) {
                    self.unlink(vec![id]);
                }
                DiskLookup::Miss
            }
        }
    }

    /// Reads the head of file `id` and opens its body.
    async fn read(&self, key: &CacheKey, id: FileId) -> Result<Object, DiskError> {
        let mut file = tokio::fs::File::open(self.path(id)).await?;
        let mut prelude = [0u8; PRELUDE_LEN];
        file.read_exact(&mut prelude).await?;
        let prelude = Prelude::parse(&prelude)?;
        prelude.check_len(file.metadata().await?.len())?;
        let mut head = vec![0u8; usize::try_from(prelude.head_len).unwrap_or(0)];
        file.read_exact(&mut head).await?;
        let head = record::decode(&prelude, &head)?;
        if head.key != *key {
            return Err(DiskError::OtherKey);
        }
        let file = file.into_std().await;
        Ok(Object {
            status: head.status,
            headers: head.headers,
            vary: head.vary,
            vary_key: head.vary_key,
            freshness: head.freshness,
            body: SharedBody::in_file(file, prelude.body_offset(), prelude.body_len),
        })
    }

    /// Writes `object`, whose body is complete, for `key`: to a temporary file, renamed into
    /// place, then added to the index (which may evict others). An error leaves nothing
    /// behind and is logged.
    pub async fn write(self: Arc<Self>, key: CacheKey, object: Arc<Object>) {
        if !object.body.is_complete() {
            return;
        }
        let body_len = object.body.len();
        let head = record::encode(&key, &object, body_len);
        let bytes = (head.len() as u64).saturating_add(body_len);
        if bytes > self.max_bytes {
            return;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.index().begin(id, key.clone());
        let temporary = self.dir.join(format!("{id:016x}{TEMPORARY}"));
        let written = async {
            let file = tokio::fs::File::create(&temporary).await?;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            out.write_all(&head).await?;
            let mut reader = object.body.reader();
            let mut length = 0u64;
            while let Some(frame) = reader.frame().await {
                let frame = frame.map_err(io::Error::other)?;
                if let Ok(data) = frame.into_data() {
                    length = length.saturating_add(data.len() as u64);
                    out.write_all(&data).await?;
                }
            }
            if length != body_len {
                return Err(io::Error::other("the body changed length while written"));
            }
            out.flush().await?;
            drop(out);
            if !self.index().is_pending(id) {
                return Err(io::Error::other("invalidated while written"));
            }
            tokio::fs::rename(&temporary, self.path(id)).await
        }
        .await;
        if let Err(err) = written {
            tracing::debug!(key = key.url(), "disk cache write dropped: {err}");
            let _ = tokio::fs::remove_file(&temporary).await;
            self.index().cancel(id);
            return;
        }
        let entry =
            Entry { key, vary: object.vary.clone(), vary_key: object.vary_key.clone(), bytes };
        let unwanted = self.index().insert(id, entry);
        // Removed here rather than on the blocking pool, so that graceful shutdown, which
        // waits for this write, also waits for the evictions it caused.
        for id in unwanted {
            if let Err(err) = tokio::fs::remove_file(self.path(id)).await
                && err.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = id, "cannot remove a disk cache file: {err}");
            }
        }
    }

    /// Removes every stored response for `key`'s URI; returns how many there were.
    pub fn invalidate(&self, key: &CacheKey) -> usize {
        let ids = self.index().remove_key(key);
        let count = ids.len();
        self.unlink(ids);
        count
    }

    /// Removes every stored response whose URI is under `prefix`; returns how many there
    /// were.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let ids = self.index().remove_prefix(prefix);
        let count = ids.len();
        self.unlink(ids);
        count
    }

    /// Removes files no longer in the index, off the async workers when there is a runtime.
    fn unlink(&self, ids: Vec<FileId>) {
        if ids.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = ids.into_iter().map(|id| self.path(id)).collect();
        let remove = move || paths.iter().for_each(|path| remove_logged(path));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }

    /// Bytes of the files held now.
    pub fn bytes(&self) -> u64 {
        self.index().bytes()
    }

    /// Stored responses held now.
    pub fn objects(&self) -> u64 {
        self.index().objects()
    }
}

/// Writes stored responses to the disk tier in the cache's background tasks (so graceful
/// shutdown waits for a write under way, and their number is bounded).
#[derive(Debug, Clone)]
pub struct DiskWriter {
    /// The tier.
    pub disk: Arc<Disk>,
    /// Where the writes run.
    pub background: Background,
}

impl DiskWriter {
    /// Writes `object` for `key` in the background; skipped (it stays in memory only) when
    /// every background slot is busy.
    pub fn write(&self, key: CacheKey, object: Arc<Object>) {
        let url = key.url().to_owned();
        if !self.background.try_spawn(Arc::clone(&self.disk).write(key, object)) {
            tracing::debug!(key = url, "disk cache write skipped: every background slot is busy");
        }
    }
}

/// The number a file name stands for: 16 hexadecimal digits.
fn parse_id(name: &str) -> Option<FileId> {
    (name.len() == 16).then(|| FileId::from_str_radix(name, 16).ok()).flatten()
}

/// Reads the head of the file at `path` (blocking) for the index.
fn read_entry(path: &Path) -> Result<(SystemTime, Entry), DiskError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    let mut prelude = [0u8; PRELUDE_LEN];
    file.read_exact(&mut prelude)?;
    let prelude = Prelude::parse(&prelude)?;
    prelude.check_len(metadata.len())?;
    let mut head = vec![0u8; usize::try_from(prelude.head_len).unwrap_or(0)];
    file.read_exact(&mut head)?;
    let head = record::decode(&prelude, &head)?;
    let modified = metadata.modified().unwrap_or(UNIX_EPOCH);
    let entry =
        Entry { key: head.key, vary: head.vary, vary_key: head.vary_key, bytes: metadata.len() };
    Ok((modified, entry))
}

/// Removes a file, logging a failure other than its being gone already.
fn remove_logged(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), "cannot remove a disk cache file: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::FILE_CHUNK;
    use crate::cache::key::Vary;
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::{Freshness, Heuristic};
    use crate::shutdown::Shutdown;
    use bytes::Bytes;
    use http::{HeaderValue, Method, StatusCode};
    use std::time::Duration;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-disk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Method::GET, "http", "a.test", path)
    }

    fn object(body: Vec<Bytes>) -> Arc<Object> {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let (directives, source) = effective(&headers, &[]);
        let now = SystemTime::now();
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
        let vary_key = vary.key(&HeaderMap::new());
        let body = SharedBody::complete(body);
        Arc::new(Object { status: StatusCode::OK, headers, vary, vary_key, freshness, body })
    }

    async fn body_of(object: &Object, start: u64, length: u64) -> Result<Vec<u8>, String> {
        let mut reader = object.body.range_reader(start, length);
        let mut out = Vec::new();
        while let Some(frame) = reader.frame().await {
            out.extend_from_slice(&frame.map_err(|err| err.to_string())?.into_data().unwrap());
        }
        Ok(out)
    }

    async fn found(disk: &Disk, path: &str) -> Option<Object> {
        match disk.lookup(&key(path), &HeaderMap::new()).await {
            DiskLookup::Found(object) => Some(*object),
            DiskLookup::VaryMiss | DiskLookup::Miss => None,
        }
    }

    #[tokio::test]
    async fn objects_survive_a_reopen_and_stream_from_their_file_in_chunks() {
        let dir = dir("reopen");
        let big: Vec<u8> = (0..(FILE_CHUNK * 2 + 5)).map(|n| (n % 251) as u8).collect();
        let chunks =
            vec![Bytes::copy_from_slice(&big[..1000]), Bytes::copy_from_slice(&big[1000..])];
        let stored = object(chunks);
        {
            let disk = Arc::new(Disk::open(&dir, 1 << 30, 8).unwrap());
            Arc::clone(&disk).write(key("/big"), Arc::clone(&stored)).await;
            Arc::clone(&disk).write(key("/small"), object(vec![Bytes::from_static(b"s")])).await;
            assert_eq!(disk.objects(), 2);
        }
        // A temporary file left by a write that never finished goes at start.
        std::fs::write(dir.join(format!("{:016x}{TEMPORARY}", 99)), b"half").unwrap();
        let disk = Disk::open(&dir, 1 << 30, 8).unwrap();
        assert_eq!(disk.objects(), 2);
        assert!(!dir.join(format!("{:016x}{TEMPORARY}", 99)).exists());
        let read = found(&disk, "/big").await.unwrap();
        assert!(read.body.is_in_file());
        assert_eq!(read.headers, stored.headers);
        assert_eq!(read.freshness, stored.freshness);
        assert_eq!(body_of(&read, 0, u64::MAX).await.unwrap(), big);
        assert_eq!(body_of(&read, 1, 3).await.unwrap(), &big[1..4]);
        // The reader says it has ended with its last chunk, not one frame later.
        let mut whole = read.body.reader();
        let mut seen = 0;
        while !http_body::Body::is_end_stream(&whole) {
            seen += whole.frame().await.unwrap().unwrap().into_data().unwrap().len();
        }
        assert_eq!(seen, big.len());
        let tail = FILE_CHUNK * 2;
        assert_eq!(body_of(&read, tail, 100).await.unwrap(), &big[tail as usize..]);
        // Purged while being read: the reader still has its file.
        assert_eq!(disk.purge_prefix("http://a.test/"), 2);
        assert!(found(&disk, "/big").await.is_none());
        assert_eq!(body_of(&read, 0, u64::MAX).await.unwrap().len(), big.len());
        // The next write is numbered past every file seen at start.
        assert_eq!(disk.next.load(Ordering::Relaxed), 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn damaged_files_are_misses_and_are_removed() {
        let dir = dir("damaged");
        let disk = Arc::new(Disk::open(&dir, 1 << 30, 8).unwrap());
        for path in ["/cut", "/flipped", "/later"] {
            Arc::clone(&disk)
                .write(key(path), object(vec![Bytes::from_static(b"0123456789")]))
                .await;
        }
        let file = |n: u64| dir.join(format!("{n:016x}"));
        // Cut short; a head byte flipped: found at start and removed.
        let cut = std::fs::read(file(1)).unwrap();
        std::fs::write(file(1), &cut[..cut.len() - 1]).unwrap();
        let mut flipped = std::fs::read(file(2)).unwrap();
        flipped[PRELUDE_LEN + 2] ^= 0x20;
        std::fs::write(file(2), flipped).unwrap();
        std::fs::write(dir.join("not-ours"), b"left alone").unwrap();
        let reopened = Disk::open(&dir, 1 << 30, 8).unwrap();
        assert_eq!(reopened.objects(), 1);
        assert!(!file(1).exists() && !file(2).exists() && dir.join("not-ours").exists());
        // Damaged while running: a miss when looked up, and removed.
        let later = std::fs::read(file(3)).unwrap();
        std::fs::write(file(3), &later[..PRELUDE_LEN]).unwrap();
        assert!(found(&reopened, "/later").await.is_none());
        assert_eq!(reopened.objects(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_size_bound_evicts_the_least_recently_used_and_writes_run_in_the_background() {
        let dir = dir("bound");
        let one = record::encode(&key("/0"), &object(vec![]), 0).len() as u64 + 1000;
        let disk = Arc::new(Disk::open(&dir, one * 3, 8).unwrap());
        let writer =
            DiskWriter { disk: Arc::clone(&disk), background: Background::new(Shutdown::new(), 4) };
        for n in 0..3 {
            Arc::clone(&disk)
                .write(key(&format!("/{n}")), object(vec![Bytes::from(vec![0u8; 1000])]))
                .await;
        }
        assert!(found(&disk, "/0").await.is_some(), "/1 is now the least recently used");
        writer.write(key("/3"), object(vec![Bytes::from(vec![0u8; 1000])]));
        tokio::time::timeout(Duration::from_secs(5), async {
            while found(&disk, "/3").await.is_none() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(found(&disk, "/1").await.is_none());
        assert!(found(&disk, "/0").await.is_some() && found(&disk, "/2").await.is_some());
        assert_eq!((disk.objects(), disk.bytes()), (3, one * 3));
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files <= 4, "{files} files");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
