//! The cache's disk tier across restarts of the `sluice` process, against a real origin that
//! counts its requests: stored responses come back from disk with the origin left alone, the
//! tier keeps to its size bound, and a damaged file is a miss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use support::config::ADMIN;
use support::config::{reverse_config, route, write_config};
use support::process::{Sluice, address_field};
use support::tls::toml_path;
use support::upstream::{Origin, full};
use support::{sha256, within};

/// The body the origin sends for `path`: `/N` followed by a size in KiB, e.g. `/a-300`.
fn body_for(path: &str) -> Vec<u8> {
    let kib: usize = path.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let seed = path.bytes().fold(0u8, |acc, byte| acc.wrapping_add(byte));
    (0..kib * 1024).map(|n| (n as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// An origin answering every path with [`body_for`] it, fresh for an hour, and counting.
async fn origin() -> (Origin, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let origin = Origin::start(move |request: Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = body_for(request.uri().path());
        async move {
            let mut response = full(body);
            response.headers_mut().insert("cache-control", "max-age=3600".parse().unwrap());
            response
        }
    })
    .await;
    (origin, count)
}

/// A fresh, empty directory for test `name` under `CARGO_TARGET_TMPDIR`.
fn disk_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sluice-cache-disk").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A config file for a cached route to `origin` with the disk tier in `dir`, plus `[cache]`
/// lines `cache`.
fn config(name: &str, origin: &Origin, dir: &Path, cache: &str) -> PathBuf {
    let text = reverse_config(&format!(
        "{}[cache]\ndisk_dir = {}\n{cache}\n[access_log]\nenabled = false\n",
        route("/", &format!("http://{}", origin.addr), "cache = true\n"),
        toml_path(dir)
    ));
    write_config(name, &text)
}

async fn start(config: &Path) -> Sluice {
    let mut command = support::process::command("info");
    command.arg("--config").arg(config).args(["--workers", "1"]);
    Sluice::spawn(command).await
}

/// The admin listener's address, from the log of a `sluice` whose config has `[admin]`.
async fn admin_address(sluice: &mut Sluice) -> SocketAddr {
    const ADMIN_LINE: &str = " admin listening address=";
    let line = match sluice.log.iter().find(|line| line.contains(ADMIN_LINE)) {
        Some(line) => line.clone(),
        None => sluice.line_containing(ADMIN_LINE).await,
    };
    address_field(&line).unwrap()
}

/// `POST /cache/purge?{query}` on the admin listener at `admin`: the answer's text.
async fn purge(admin: SocketAddr, query: &str) -> String {
    let url = format!("http://{admin}/cache/purge?{query}");
    let response = within(reqwest::Client::new().post(url).send()).await.unwrap();
    within(response.text()).await.unwrap()
}

/// The host the client asks for: the cache key holds it, and it must stay the same when the
/// restarted proxy listens on another port.
const HOST: &str = "cache.test";

/// GETs `path` through `sluice` for [`HOST`]: the status, `Cache-Status` and the body's
/// digest.
async fn get(sluice: &Sluice, path: &str) -> (StatusCode, String, String) {
    let url = format!("http://{}{path}", sluice.addr);
    let request = reqwest::Client::new().get(url).header("host", HOST);
    let response = within(request.send()).await.unwrap();
    let status = response.status();
    let cache_status = response
        .headers()
        .get("cache-status")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = within(response.bytes()).await.unwrap();
    (status, cache_status, sha256(&body))
}

/// The stored-response files in `dir` (not temporary ones).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none())
        .collect();
    files.sort();
    files
}

/// The file holding the response for `path`, if any, found by the URI in its head.
fn find_file(dir: &Path, path: &str) -> Option<PathBuf> {
    let url = format!("http://{HOST}{path}");
    files(dir).into_iter().find(|file| {
        // A file evicted between listing and reading is simply not the one.
        std::fs::read(file).is_ok_and(|bytes| bytes.windows(url.len()).any(|w| w == url.as_bytes()))
    })
}

/// The file holding the response for `path`.
fn file_of(dir: &Path, path: &str) -> PathBuf {
    find_file(dir, path).unwrap_or_else(|| panic!("no file holds {path}"))
}

/// Waits until the response for `path` is on disk: it is written in the background after the
/// client has its answer, and the next request must not race it (for the eviction order, and
/// for a free background slot).
async fn until_on_disk(dir: &Path, path: &str) {
    within(async {
        while find_file(dir, path).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn stored_responses_are_served_from_disk_after_a_restart_without_asking_the_origin() {
    let (origin, count) = origin().await;
    let dir = disk_dir("restart");
    let config = config("cache-disk-restart.toml", &origin, &dir, "");
    // A small response (promoted into memory when read back) and a large one (streamed from
    // its file every time).
    let paths = ["/small-2", "/large-1024"];
    let sluice = start(&config).await;
    for path in paths {
        let (status, cache_status, digest) = get(&sluice, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_status, "sluice; fwd=uri-miss; fwd-status=200; stored");
        assert_eq!(digest, sha256(&body_for(path)));
    }
    // Graceful shutdown waits for the disk writes under way.
    sluice.stop().await;
    assert_eq!(files(&dir).len(), 2, "{:?}", files(&dir));

    let sluice = start(&config).await;
    for path in paths {
        let (status, cache_status, digest) = get(&sluice, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(cache_status.starts_with("sluice; hit; ttl="), "{path}: {cache_status}");
        assert!(cache_status.ends_with("; detail=disk"), "{path}: {cache_status}");
        assert_eq!(digest, sha256(&body_for(path)), "{path}");
    }
    // The small one is in memory now; the large one still comes from its file.
    let (_, cache_status, _) = get(&sluice, "/small-2").await;
    assert!(!cache_status.contains("detail=disk"), "{cache_status}");
    let (_, cache_status, digest) = get(&sluice, "/large-1024").await;
    assert!(cache_status.ends_with("; detail=disk"), "{cache_status}");
    assert_eq!(digest, sha256(&body_for("/large-1024")));
    assert_eq!(count.load(Ordering::SeqCst), 2, "the origin saw only the first two requests");
    sluice.stop().await;
}

#[tokio::test]
async fn the_disk_tier_keeps_to_its_bound_and_a_damaged_file_is_a_miss() {
    let (origin, count) = origin().await;
    let dir = disk_dir("bound");
    // 1 MiB on disk holds three responses of 300 KiB, not four.
    let config = config("cache-disk-bound.toml", &origin, &dir, "disk_max_bytes = 1048576\n");
    let paths = ["/a-300", "/b-300", "/c-300", "/d-300"];
    let sluice = start(&config).await;
    for path in paths {
        assert_eq!(get(&sluice, path).await.0, StatusCode::OK);
        until_on_disk(&dir, path).await;
    }
    sluice.stop().await;
    assert_eq!(files(&dir).len(), 3, "{:?}", files(&dir));
    // Damage one of the three that are kept: cut its last byte off.
    let damaged = file_of(&dir, "/c-300");
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() - 1]).unwrap();

    let sluice = start(&config).await;
    for path in ["/b-300", "/d-300"] {
        let (status, cache_status, digest) = get(&sluice, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(cache_status.ends_with("; detail=disk"), "{path}: {cache_status}");
        assert_eq!(digest, sha256(&body_for(path)));
    }
    assert_eq!(count.load(Ordering::SeqCst), 4);
    // The damaged one was removed at start and is a miss; the first one was evicted.
    assert!(!damaged.exists());
    for path in ["/c-300", "/a-300"] {
        let (status, cache_status, digest) = get(&sluice, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_status, "sluice; fwd=uri-miss; fwd-status=200; stored", "{path}");
        assert_eq!(digest, sha256(&body_for(path)));
    }
    assert_eq!(count.load(Ordering::SeqCst), 6);
    sluice.stop().await;
}

#[tokio::test]
async fn purges_and_unsafe_methods_reach_responses_only_on_disk() {
    let (origin, count) = origin().await;
    let dir = disk_dir("purge");
    let config = config("cache-disk-purge.toml", &origin, &dir, &format!("\n{ADMIN}"));
    let paths = ["/doc-1", "/docs/a-1", "/docs/b-1", "/post-1"];
    let sluice = start(&config).await;
    for path in paths {
        assert_eq!(get(&sluice, path).await.0, StatusCode::OK);
    }
    sluice.stop().await;
    assert_eq!(files(&dir).len(), 4);

    // After a restart memory is empty: what a purge or a POST removes is on disk only.
    let mut sluice = start(&config).await;
    let admin = admin_address(&mut sluice).await;
    assert_eq!(
        purge(admin, &format!("url=http://{HOST}/doc-1")).await,
        "purged 1 stored responses\n"
    );
    assert_eq!(
        purge(admin, &format!("prefix=http://{HOST}/docs")).await,
        "purged 2 stored responses\n"
    );
    let url = format!("http://{}/post-1", sluice.addr);
    let posted = reqwest::Client::new().post(url).header("host", HOST).body("x").send();
    assert_eq!(within(posted).await.unwrap().status(), StatusCode::OK);
    assert_eq!(count.load(Ordering::SeqCst), 5);
    for path in paths {
        let (status, cache_status, digest) = get(&sluice, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_status, "sluice; fwd=uri-miss; fwd-status=200; stored", "{path}");
        assert_eq!(digest, sha256(&body_for(path)));
    }
    assert_eq!(count.load(Ordering::SeqCst), 9, "every one of them went to the origin again");
    sluice.stop().await;
}
