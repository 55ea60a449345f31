//! One stored response: its status, header fields, the `Vary` selection it answers, its
//! freshness and its body (in memory, possibly still arriving, or in a file of the disk tier).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use super::body::SharedBody;
use super::key::{Vary, VaryKey};
use super::policy::freshness::Freshness;

/// Bytes charged for each stored response on top of its header fields and body: the object,
/// its freshness and its place in the store's tables.
const OBJECT_OVERHEAD: u64 = 512;
/// Bytes charged for each header field on top of its name and value.
const FIELD_OVERHEAD: u64 = 32;

/// One stored response.
#[derive(Debug)]
pub struct Object {
    /// Its status code.
    pub status: StatusCode,
    /// Its header fields as stored (hop-by-hop and `private`-named fields removed).
    pub headers: HeaderMap,
    /// The `Vary` it was stored under.
    pub vary: Vary,
    /// The secondary key of the request it answered.
    pub vary_key: VaryKey,
    /// Its freshness, assessed when it arrived or was last validated.
    pub freshness: Freshness,
    /// Its body, possibly still arriving.
    pub body: Arc<SharedBody>,
}

impl Object {
    /// Bytes this object is charged for: its body (the announced length while it is still
    /// arriving, when larger), header fields, secondary key and fixed bookkeeping.
    pub fn weight(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().len() + value.len()) as u64 + FIELD_OVERHEAD)
            .sum();
        let body = self.body.len().max(self.body.expected_len().unwrap_or(0));
        OBJECT_OVERHEAD + headers + self.vary_key.heap_size() as u64 + body
    }

    /// A copy with other header fields and freshness (after a 304) and the same body.
    pub fn revalidated(&self, headers: HeaderMap, freshness: Freshness) -> Object {
        Object {
            status: self.status,
            headers,
            vary: self.vary.clone(),
            vary_key: self.vary_key.clone(),
            freshness,
            body: Arc::clone(&self.body),
        }
    }

    /// A copy with another body (a compacted one).
    pub fn with_body(&self, body: Arc<SharedBody>) -> Object {
        Object { body, ..self.revalidated(self.headers.clone(), self.freshness.clone()) }
    }
}
