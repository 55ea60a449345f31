//! The exact response cache for completions, opt-in per route: an answer is reused only for
//! the same route, the same model and the same request body, compared as canonical JSON (keys
//! sorted, no insignificant whitespace), so two clients that serialise one request
//! differently share it. It lives in the HTTP cache's bounded store ([`super::store`]),
//! within the `[cache]` memory bound, for the route's time to live. A streamed answer is
//! stored frame by frame as it passes to its first client and replayed as a stream with the
//! same frames.
//!
//! Only complete `200` answers are stored: a stream that breaks or an error is abandoned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

use super::body::SharedBody;
use super::key::{CacheKey, Vary};
use super::policy::freshness::{Freshness, LifetimeSource};
use super::store::{Admission, Lookup, Object, Store};

/// The scheme part of the keys of AI answers: no request URI can take this form, so they never
/// meet the HTTP cache's entries.
const KEY_SCHEME: &str = "sluice-ai";

/// The key of an answer on route `route` for model `model` and request body `body`; `None`
/// when the body is not JSON (such a request is not cached).
pub fn key(route: &str, model: &str, body: &[u8]) -> Option<CacheKey> {
    // serde_json's map is ordered by key, so writing the value back out is canonical.
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let canonical = serde_json::to_vec(&value).ok()?;
    let mut digest = Sha256::new();
    for part in [route.as_bytes(), model.as_bytes(), &canonical] {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    let hex: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Some(CacheKey::new(&Method::POST, KEY_SCHEME, "answers", &format!("/{hex}")))
}

/// A stored answer for `key` that is still within its time to live at `now`.
pub fn lookup(store: &Store, key: &CacheKey, now: SystemTime) -> Option<Arc<Object>> {
    match store.lookup(key, &HeaderMap::new()) {
        Lookup::Found(object) if object.freshness.is_fresh(now) => Some(object),
        _ => None,
    }
}

/// Starts storing an answer with `content_type` for `key`, reusable for `ttl` from `now`; the
/// returned handle fills it (see [`super::fill::Tee`]). `None` when the store refuses.
pub fn admit(
    store: &Arc<Store>,
    key: CacheKey,
    content_type: Option<&http::HeaderValue>,
    ttl: Duration,
    now: SystemTime,
) -> Option<Admission> {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, content_type.clone());
    }
    let vary = Vary::of(&HeaderMap::new());
    let vary_key = vary.key(&HeaderMap::new());
    let freshness = Freshness {
        lifetime: ttl,
        source: LifetimeSource::MaxAge,
        initial_age: Duration::ZERO,
        response_time: now,
        no_cache: false,
        no_cache_fields: Vec::new(),
        must_revalidate: true,
        implied_revalidate: false,
        stale_while_revalidate: None,
        stale_if_error: None,
    };
    let object = Object {
        status: StatusCode::OK,
        headers,
        vary,
        vary_key,
        freshness,
        body: SharedBody::filling(None),
    };
    store.admit(key, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::BodyEnd;
    use crate::cache::store::StoreLimits;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    #[test]
    fn keys_follow_the_canonical_body() {
        let a = key("chat", "m", br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let b = key(
            "chat",
            "m",
            br#"{ "messages" : [ {"content":"hi", "role":"user"} ], "model":"m" }"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, key("chat", "m", br#"{"model":"m","messages":[]}"#));
        assert_ne!(
            a,
            key("other", "m", br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        );
        assert_ne!(
            key("chat", "m", br#"{"model":"m","stream":true}"#),
            key("chat", "m", br#"{"model":"m"}"#)
        );
        // The parts are length-prefixed: moving a byte between route and model changes the key.
        assert_ne!(key("ab", "c", b"{}"), key("a", "bc", b"{}"));
        assert!(key("chat", "m", b"not json").is_none());
    }

    #[tokio::test]
    async fn a_stored_stream_is_replayed_frame_by_frame_until_it_expires() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let key = key("chat", "m", br#"{"stream":true}"#).unwrap();
        let now = SystemTime::now();
        assert!(lookup(&store, &key, now).is_none());
        let content_type = http::HeaderValue::from_static("text/event-stream");
        let admission =
            admit(&store, key.clone(), Some(&content_type), Duration::from_secs(60), now).unwrap();
        for frame in ["data: 1\n\n", "data: 2\n\n"] {
            admission.object().body.push(Bytes::from_static(frame.as_bytes()));
        }
        admission.complete();
        let found = lookup(&store, &key, now + Duration::from_secs(30)).unwrap();
        assert_eq!(found.headers[CONTENT_TYPE], "text/event-stream");
        let mut reader = found.body.reader();
        let mut frames = Vec::new();
        while let Some(frame) = reader.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.concat(), b"data: 1\n\ndata: 2\n\n");
        assert!(lookup(&store, &key, now + Duration::from_secs(61)).is_none(), "expired");
    }

    #[tokio::test]
    async fn an_abandoned_answer_is_not_reused() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let key = key("chat", "m", b"{}").unwrap();
        let now = SystemTime::now();
        let admission = admit(&store, key.clone(), None, Duration::from_secs(60), now).unwrap();
        admission.object().body.push(Bytes::from_static(b"data: 1\n\n"));
        admission.abandon(BodyEnd::Failed);
        assert!(lookup(&store, &key, now).is_none());
    }
}
