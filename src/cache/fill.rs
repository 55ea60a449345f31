//! Filling the store from a response as it streams to its first client.
//!
//! [`Tee`] wraps the origin's response body: every data frame goes to the client at once and
//! its bytes (the same `Bytes`, not a copy) are appended to the stored body, from which other
//! clients stream. When the body outgrows the object size limit the stored copy is abandoned
//! and the rest passes through untouched, so nothing is buffered for a response too large to
//! keep. When the first client goes away before the end, the rest of the body is read into
//! the store by a background task (tracked by graceful shutdown, and only while the cache's
//! bound on background tasks allows), within a time limit, so the clients streaming from the
//! store still get the whole response.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::background::Background;
use super::body::BodyEnd;
use super::store::Admission;

/// The default time allowed to finish storing a response in the background after its first
/// client went away.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The origin's response body, passed to the client and stored on the way.
pub struct Tee<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    /// The origin's body; `None` once it has ended.
    upstream: Option<B>,
    /// The stored response being filled; `None` when it is complete or was abandoned.
    admission: Option<Admission>,
    /// How long a background drain may take.
    drain_timeout: Duration,
    /// Where a background drain runs.
    background: Background,
}

impl<B> std::fmt::Debug for Tee<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee").field("storing", &self.admission.is_some()).finish()
    }
}

impl<B> Tee<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    /// Streams `upstream` and fills `admission` with it (or only streams, without one). When
    /// the client goes away first, the rest is stored by a task on `background`, for at most
    /// `drain_timeout`.
    pub fn new(
        upstream: B,
        admission: Option<Admission>,
        drain_timeout: Duration,
        background: &Background,
    ) -> Self {
        Tee { upstream: Some(upstream), admission, drain_timeout, background: background.clone() }
    }

    /// Whether the response is still being stored.
    pub fn is_storing(&self) -> bool {
        self.admission.is_some()
    }

    /// Appends a chunk to the stored body, abandoning the stored copy once it would exceed the
    /// object size limit.
    fn store(admission: &mut Option<Admission>, data: &Bytes) {
        let Some(filling) = admission.as_ref() else {
            return;
        };
        let body = &filling.object().body;
        if body.len().saturating_add(data.len() as u64) > filling.max_object_bytes() {
            if let Some(filling) = admission.take() {
                filling.abandon(BodyEnd::Abandoned);
            }
            return;
        }
        body.push(data.clone());
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(upstream).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    Self::store(&mut this.admission, data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.upstream = None;
                if let Some(filling) = this.admission.take() {
                    filling.abandon(BodyEnd::Failed);
                }
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.upstream = None;
                if let Some(filling) = this.admission.take() {
                    filling.complete();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.upstream.as_ref().map(Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl<B> Drop for Tee<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let (Some(upstream), Some(admission)) = (self.upstream.take(), self.admission.take())
        else {
            return;
        };
        // Without a free background slot, or a runtime (only at exit), the admission is
        // dropped with the task, which abandons it.
        self.background.try_spawn(drain(upstream, admission, self.drain_timeout));
    }
}

/// Reads the rest of `upstream` into the store, for at most `limit`.
async fn drain<B>(mut upstream: B, admission: Admission, limit: Duration)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    let mut admission = Some(admission);
    let finished = tokio::time::timeout(limit, async {
        while let Some(frame) = upstream.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        Tee::<B>::store(&mut admission, data);
                    }
                    if admission.is_none() {
                        return;
                    }
                }
                Err(_) => {
                    if let Some(filling) = admission.take() {
                        filling.abandon(BodyEnd::Failed);
                    }
                    return;
                }
            }
        }
        if let Some(filling) = admission.take() {
            filling.complete();
        }
    })
    .await;
    if finished.is_err()
        && let Some(filling) = admission.take()
    {
        filling.abandon(BodyEnd::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::body::SharedBody;
    use crate::cache::key::{CacheKey, Vary, VaryKey};
    use crate::cache::policy::directives::effective;
    use crate::cache::policy::freshness::{Freshness, Heuristic};
    use crate::cache::store::{Lookup, Object, Store, StoreLimits};
    use crate::shutdown::Shutdown;
    use http::{HeaderMap, Method, StatusCode};
    use http_body_util::StreamBody;
    use http_body_util::channel::Channel;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn key() -> CacheKey {
        CacheKey::new(&Method::GET, "http", "a.test", "/")
    }

    fn admit(store: &Arc<Store>, expected: Option<u64>) -> Admission {
        let headers = HeaderMap::new();
        let (directives, source) = effective(&headers, &[]);
        let now: SystemTime = UNIX_EPOCH;
        let object = Object {
            status: StatusCode::OK,
            freshness: Freshness::assess(
                StatusCode::OK,
                &headers,
                &directives,
                &source,
                now,
                now,
                Heuristic::default(),
            ),
            headers,
            vary: Vary::Nothing,
            vary_key: VaryKey::default(),
            body: SharedBody::filling(expected),
        };
        store.admit(key(), object).unwrap()
    }

    fn background() -> Background {
        Background::new(Shutdown::new(), 4)
    }

    fn stored(store: &Store) -> Option<Arc<Object>> {
        match store.lookup(&key(), &HeaderMap::new()) {
            Lookup::Found(object) => Some(object),
            _ => None,
        }
    }

    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let frames: Vec<_> =
            parts.iter().map(|part| Ok(Frame::data(Bytes::from_static(part)))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_client_gets_every_frame_and_the_store_the_whole_body() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let admission = admit(&store, None);
        let body = Arc::clone(&admission.object().body);
        let tee = Tee::new(
            chunks(&[b"abc", b"def"]),
            Some(admission),
            DEFAULT_DRAIN_TIMEOUT,
            &background(),
        );
        let client = tee.collect().await.unwrap().to_bytes();
        assert_eq!(client, "abcdef");
        assert!(body.is_complete());
        let object = stored(&store).unwrap();
        assert_eq!(object.body.len(), 6);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_abandoned_and_still_streamed() {
        let store =
            Arc::new(Store::new(StoreLimits { max_object_bytes: 4, ..StoreLimits::default() }));
        let admission = admit(&store, None);
        let body = Arc::clone(&admission.object().body);
        let mut tee = Tee::new(
            chunks(&[b"abc", b"def", b"ghi"]),
            Some(admission),
            DEFAULT_DRAIN_TIMEOUT,
            &background(),
        );
        let first = tee.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        assert!(tee.is_storing());
        let second = tee.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "def");
        assert!(!tee.is_storing());
        assert_eq!(body.ended(), Some(BodyEnd::Abandoned));
        assert!(stored(&store).is_none());
        let rest = tee.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "ghi");
    }

    #[tokio::test]
    async fn a_failing_origin_body_fails_the_stored_copy() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let admission = admit(&store, None);
        let body = Arc::clone(&admission.object().body);
        let (mut sender, upstream) = Channel::<Bytes, &'static str>::new(4);
        let mut tee = Tee::new(upstream, Some(admission), DEFAULT_DRAIN_TIMEOUT, &background());
        sender.send_data(Bytes::from_static(b"abc")).await.unwrap();
        sender.abort("origin went away");
        assert_eq!(tee.frame().await.unwrap().unwrap().into_data().unwrap(), "abc");
        assert!(tee.frame().await.unwrap().is_err());
        assert_eq!(body.ended(), Some(BodyEnd::Failed));
        assert!(stored(&store).is_none());
    }

    #[tokio::test]
    async fn the_rest_is_stored_after_the_first_client_leaves() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let admission = admit(&store, Some(6));
        let body = Arc::clone(&admission.object().body);
        let (mut sender, upstream) = Channel::<Bytes, Infallible>::new(4);
        let mut tee = Tee::new(upstream, Some(admission), DEFAULT_DRAIN_TIMEOUT, &background());
        sender.send_data(Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(tee.frame().await.unwrap().unwrap().into_data().unwrap(), "abc");
        drop(tee);
        let reader = tokio::spawn(body.reader().collect());
        sender.send_data(Bytes::from_static(b"def")).await.unwrap();
        drop(sender);
        let read =
            tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap();
        assert_eq!(read.to_bytes(), "abcdef");
        assert!(body.is_complete());
    }

    #[tokio::test]
    async fn a_stalled_background_drain_gives_up() {
        let store = Arc::new(Store::new(StoreLimits::default()));
        let admission = admit(&store, None);
        let body = Arc::clone(&admission.object().body);
        let (_sender, upstream) = Channel::<Bytes, Infallible>::new(4);
        drop(Tee::new(upstream, Some(admission), Duration::from_millis(20), &background()));
        assert_eq!(body.wait_end(Duration::from_secs(5)).await, Some(BodyEnd::Failed));
        assert!(stored(&store).is_none());
    }
}
