//! Shared test harness: real upstream servers, the real proxy, real clients, all on 127.0.0.1:0.
#![allow(dead_code)]

pub mod ai;
pub mod browser;
pub mod client;
pub mod config;
pub mod h2;
pub mod observe;
pub mod parent;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod sse;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

/// The bound on every wait in the suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out waiting")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// `bytes` in lowercase hex, two digits each (how digests are compared).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` deterministic pseudo-random bytes (xorshift), so large bodies are not all one value.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
