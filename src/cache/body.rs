//! A stored response body that readers stream from while it is still arriving.
//!
//! The origin's chunks are kept as the `Bytes` they arrived in (no copy) in a list that only
//! grows; a reader walks the list at its own pace and waits on a `watch` channel when it has
//! caught up with the writer. A body that ends early (the origin failed, or the response
//! outgrew the cache's object limit and was abandoned) tells every reader so: a reader never
//! mistakes a truncated body for a complete one.
//!
//! A body read back from the disk tier is complete from the start and stays in its file:
//! each reader reads its own way through it, a chunk at a time, with positional reads on the
//! one open file (so readers never share a file cursor, and a file removed from the directory
//! by eviction or purge stays readable by those already streaming it).

use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::ReusableBoxFuture;

/// Stored bodies at most this long are copied into one buffer of their own once complete.
/// The origin's chunks are slices of the connection's read buffer, which can be much larger
/// than a small body (a 1 KiB response may keep an 8 KiB buffer alive); large bodies fill the
/// buffers they arrive in, so copying them would only cost time.
pub const COMPACT_LIMIT: u64 = 256 * 1024;

/// Bytes read from a file at a time when a body is streamed from the disk tier.
pub const FILE_CHUNK: u64 = 128 * 1024;

/// How a body stopped growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte arrived.
    Complete,
    /// The cache gave up on storing it (it outgrew the object size limit); its chunks are
    /// gone, and readers that had not finished get an error.
    Abandoned,
    /// The origin's body failed before its end.
    Failed,
}

/// Why a reader could not deliver the whole body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body was abandoned by the cache before this reader finished.
    #[error("the cached response was abandoned before it was complete")]
    Abandoned,
    /// The origin's body failed before its end.
    #[error("the origin's response body failed before it was complete")]
    Failed,
    /// The body's file on the disk tier could not be read to its end.
    #[error("the cached response could not be read from disk")]
    Unreadable,
}

/// What the writer has produced so far.
#[derive(Debug, Default)]
struct Progress {
    /// Chunks in order; emptied when the body is abandoned.
    chunks: Vec<Bytes>,
    /// Total bytes pushed.
    length: u64,
    /// Set once the body stops growing.
    end: Option<BodyEnd>,
}

/// A body that grows while readers stream from it.
#[derive(Debug)]
pub struct SharedBody {
    /// The progress, shared with every reader.
    progress: watch::Sender<Progress>,
    /// The length announced by `Content-Length`, if any.
    expected: Option<u64>,
    /// Where the bytes are when they are in a file of the disk tier (the chunks are then
    /// empty).
    file: Option<InFile>,
}

/// A body's place in a file of the disk tier.
#[derive(Debug)]
struct InFile {
    /// The open file.
    file: Arc<std::fs::File>,
    /// Where the body starts in it.
    offset: u64,
}

impl SharedBody {
    /// An empty body that is about to be filled; `expected` is the announced length.
    pub fn filling(expected: Option<u64>) -> Arc<Self> {
        Arc::new(SharedBody {
            progress: watch::Sender::new(Progress::default()),
            expected,
            file: None,
        })
    }

    /// A body that is already complete.
    pub fn complete(chunks: Vec<Bytes>) -> Arc<Self> {
        let length = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        let progress = Progress { chunks, length, end: Some(BodyEnd::Complete) };
        Arc::new(SharedBody {
            progress: watch::Sender::new(progress),
            expected: Some(length),
            file: None,
        })
    }

    /// A complete body of `length` bytes at `offset` in `file` (on the disk tier).
    pub fn in_file(file: std::fs::File, offset: u64, length: u64) -> Arc<Self> {
        let progress = Progress { chunks: Vec::new(), length, end: Some(BodyEnd::Complete) };
        Arc::new(SharedBody {
            progress: watch::Sender::new(progress),
            expected: Some(length),
            file: Some(InFile { file: Arc::new(file), offset }),
        })
    }

    /// Whether the bytes are in a file of the disk tier rather than in memory.
    pub fn is_in_file(&self) -> bool {
        self.file.is_some()
    }

    /// Appends a chunk and wakes the readers waiting for it. Ignored once the body ended.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.progress.send_if_modified(|progress| {
            if progress.end.is_some() {
                return false;
            }
            progress.length += chunk.len() as u64;
            progress.chunks.push(chunk);
            true
        });
    }

    /// Marks the body as ended for `reason`. An abandoned body drops its chunks at once.
    pub fn end(&self, reason: BodyEnd) {
        self.progress.send_if_modified(|progress| {
            if progress.end.is_some() {
                return false;
            }
            progress.end = Some(reason);
            if reason == BodyEnd::Abandoned {
                progress.chunks = Vec::new();
            }
            true
        });
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.progress.borrow().length
    }

    /// Whether no byte has been received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The length announced by `Content-Length` when the body was created.
    pub fn expected_len(&self) -> Option<u64> {
        self.expected
    }

    /// How the body ended, if it has.
    pub fn ended(&self) -> Option<BodyEnd> {
        self.progress.borrow().end
    }

    /// Whether every byte is here.
    pub fn is_complete(&self) -> bool {
        self.ended() == Some(BodyEnd::Complete)
    }

    /// Waits until the body stops growing, for at most `limit`; `None` when it is still
    /// growing at the deadline.
    pub async fn wait_end(&self, limit: Duration) -> Option<BodyEnd> {
        let mut progress = self.progress.subscribe();
        let ended =
            tokio::time::timeout(limit, progress.wait_for(|progress| progress.end.is_some())).await;
        match ended {
            Ok(Ok(progress)) => progress.end,
            // The sender lives as long as `self`, so the channel cannot close here.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// The body copied into one buffer, if it is complete, small enough to be worth copying
    /// ([`COMPACT_LIMIT`]) and not already a single chunk.
    pub fn compacted(&self) -> Option<Arc<SharedBody>> {
        let progress = self.progress.borrow();
        if progress.end != Some(BodyEnd::Complete)
            || progress.length > COMPACT_LIMIT
            || progress.chunks.len() < 2
        {
            return None;
        }
        let mut joined = BytesMut::with_capacity(usize::try_from(progress.length).unwrap_or(0));
        for chunk in &progress.chunks {
            joined.extend_from_slice(chunk);
        }
        Some(SharedBody::complete(vec![joined.freeze()]))
    }

    /// A reader of the whole body.
    pub fn reader(self: &Arc<Self>) -> BodyReader {
        self.range_reader(0, u64::MAX)
    }

    /// A reader of `length` bytes starting at byte `start` (`u64::MAX` for the rest).
    pub fn range_reader(self: &Arc<Self>, start: u64, length: u64) -> BodyReader {
        BodyReader {
            progress: Some(self.progress.subscribe()),
            waiting: None,
            reading: None,
            next: 0,
            skip: start,
            remaining: length,
            body: Arc::clone(self),
        }
    }
}

/// Streams a [`SharedBody`] (or a byte range of it) as an HTTP body, waiting for chunks that
/// have not arrived yet.
pub struct BodyReader {
    /// The receiver, while it is not lent to `waiting`.
    progress: Option<watch::Receiver<Progress>>,
    /// The wait for the next change, which hands the receiver back.
    waiting: Option<ReusableBoxFuture<'static, watch::Receiver<Progress>>>,
    /// The read under way from the body's file, for a body on the disk tier.
    reading: Option<JoinHandle<std::io::Result<Bytes>>>,
    /// Index of the next chunk to send.
    next: usize,
    /// Bytes still to skip before the range starts (for a body in a file: the offset in the
    /// body of the next read).
    skip: u64,
    /// Bytes still to send.
    remaining: u64,
    /// Keeps the body alive (and with it the sender) while this reader exists.
    body: Arc<SharedBody>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("next", &self.next)
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// What the current progress offers a reader.
enum Step {
    /// A chunk to send (already cut to the range).
    Chunk(Bytes),
    /// Nothing more to send.
    Done,
    /// The body ended early.
    Error(BodyError),
    /// Nothing yet: wait for the writer.
    Wait,
}

impl BodyReader {
    /// Looks at the progress for the next thing to send.
    fn step(&mut self, progress: &mut watch::Receiver<Progress>) -> Step {
        let seen = progress.borrow_and_update();
        loop {
            if self.remaining == 0 {
                return Step::Done;
            }
            let Some(chunk) = seen.chunks.get(self.next) else {
                return match seen.end {
                    Some(BodyEnd::Complete) => Step::Done,
                    Some(BodyEnd::Abandoned) => Step::Error(BodyError::Abandoned),
                    Some(BodyEnd::Failed) => Step::Error(BodyError::Failed),
                    None => Step::Wait,
                };
            };
            self.next += 1;
            let length = chunk.len() as u64;
            if self.skip >= length {
                self.skip -= length;
                continue;
            }
            let start = usize::try_from(self.skip).unwrap_or(usize::MAX);
            self.skip = 0;
            let take = (length - start as u64).min(self.remaining);
            self.remaining -= take;
            let end = start.saturating_add(usize::try_from(take).unwrap_or(usize::MAX));
            return Step::Chunk(chunk.slice(start..end.min(chunk.len())));
        }
    }
}

impl BodyReader {
    /// The next chunk of a body in a file, read on the blocking pool (as `tokio::fs` reads),
    /// at most [`FILE_CHUNK`] bytes at a time.
    fn poll_file(
        &mut self,
        cx: &mut Context<'_>,
        in_file: &InFile,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if let Some(reading) = self.reading.as_mut() {
                let read = ready!(Pin::new(reading).poll(cx));
                self.reading = None;
                return match read {
                    Ok(Ok(chunk)) if !chunk.is_empty() => {
                        let length = chunk.len() as u64;
                        self.skip = self.skip.saturating_add(length);
                        self.remaining = self.remaining.saturating_sub(length);
                        if self.skip >= self.body.len() {
                            // The end of the body: the frame after this one is none.
                            self.remaining = 0;
                        }
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                        self.progress = None;
                        self.remaining = 0;
                        Poll::Ready(Some(Err(BodyError::Unreadable)))
                    }
                };
            }
            let left = self.body.len().saturating_sub(self.skip).min(self.remaining);
            if left == 0 {
                self.progress = None;
                return Poll::Ready(None);
            }
            let want = usize::try_from(left.min(FILE_CHUNK)).unwrap_or(0);
            let at = in_file.offset.saturating_add(self.skip);
            let file = Arc::clone(&in_file.file);
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0u8; want];
                file.read_exact_at(&mut buffer, at)?;
                Ok(Bytes::from(buffer))
            }));
        }
    }
}

impl http_body::Body for BodyReader {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.body.file.is_some() {
            let body = Arc::clone(&this.body);
            if let Some(in_file) = body.file.as_ref() {
                return this.poll_file(cx, in_file);
            }
        }
        loop {
            if let Some(waiting) = this.waiting.as_mut() {
                let receiver = ready!(waiting.poll(cx));
                this.progress = Some(receiver);
                this.waiting = None;
            }
            let Some(mut progress) = this.progress.take() else {
                return Poll::Ready(None);
            };
            match this.step(&mut progress) {
                Step::Chunk(chunk) => {
                    this.progress = Some(progress);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Step::Done => return Poll::Ready(None),
                Step::Error(error) => return Poll::Ready(Some(Err(error))),
                Step::Wait => {
                    let wait = async move {
                        // The sender lives in the body this reader keeps alive, so the channel
                        // stays open; a closed channel would end the wait all the same.
                        let _ = progress.changed().await;
                        progress
                    };
                    match this.waiting.as_mut() {
                        Some(waiting) => waiting.set(wait),
                        None => this.waiting = Some(ReusableBoxFuture::new(wait)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 || (self.progress.is_none() && self.waiting.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let total =
            self.body.expected_len().or_else(|| self.body.is_complete().then(|| self.body.len()));
        match total {
            Some(total) if self.next == 0 => {
                let exact = total.saturating_sub(self.skip).min(self.remaining);
                SizeHint::with_exact(exact)
            }
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;
    use http_body_util::BodyExt;

    async fn collect(reader: BodyReader) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        let mut reader = reader;
        while let Some(frame) = reader.frame().await {
            out.extend_from_slice(&frame?.into_data().unwrap());
        }
        Ok(out)
    }

    fn within<F: std::future::Future>(future: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(5), future)
    }

    #[tokio::test]
    async fn readers_stream_while_the_body_grows() {
        let body = SharedBody::filling(Some(6));
        let early = tokio::spawn(collect(body.reader()));
        body.push(Bytes::from_static(b"abc"));
        let middle = tokio::spawn(collect(body.reader()));
        tokio::task::yield_now().await;
        body.push(Bytes::from_static(b"def"));
        body.end(BodyEnd::Complete);
        let late = collect(body.reader());
        assert_eq!(within(early).await.unwrap().unwrap().unwrap(), b"abcdef");
        assert_eq!(within(middle).await.unwrap().unwrap().unwrap(), b"abcdef");
        assert_eq!(within(late).await.unwrap().unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn abandoning_fails_unfinished_readers() {
        let body = SharedBody::filling(None);
        body.push(Bytes::from_static(b"abc"));
        let reader = tokio::spawn(collect(body.reader()));
        tokio::task::yield_now().await;
        body.end(BodyEnd::Abandoned);
        assert_eq!(within(reader).await.unwrap().unwrap(), Err(BodyError::Abandoned));
        assert_eq!(body.len(), 3);
        body.push(Bytes::from_static(b"ignored"));
        assert_eq!(body.len(), 3);
        let failed = SharedBody::filling(None);
        failed.end(BodyEnd::Failed);
        assert_eq!(collect(failed.reader()).await, Err(BodyError::Failed));
    }

    #[tokio::test]
    async fn range_readers_cut_across_chunks() {
        let body = SharedBody::complete(vec![
            Bytes::from_static(b"0123"),
            Bytes::from_static(b"4567"),
            Bytes::from_static(b"89A"),
        ]);
        let cases: &[(u64, u64, &[u8])] = &[
            (0, u64::MAX, b"0123456789A"),
            (0, 2, b"01"),
            (1, 10, b"123456789A"),
            (3, 3, b"345"),
            (4, 4, b"4567"),
            (10, 1, b"A"),
            (11, 5, b""),
        ];
        for (start, length, expected) in cases {
            let reader = body.range_reader(*start, *length);
            assert_eq!(reader.size_hint().exact(), Some(expected.len() as u64), "{start} {length}");
            assert_eq!(collect(reader).await.unwrap(), *expected, "{start} {length}");
        }
    }

    #[tokio::test]
    async fn wait_end_is_bounded() {
        let body = SharedBody::filling(None);
        assert_eq!(body.wait_end(Duration::from_millis(20)).await, None);
        let waiter = {
            let body = Arc::clone(&body);
            tokio::spawn(async move { body.wait_end(Duration::from_secs(5)).await })
        };
        body.end(BodyEnd::Complete);
        assert_eq!(within(waiter).await.unwrap().unwrap(), Some(BodyEnd::Complete));
    }

    #[test]
    fn small_bodies_compact_into_one_chunk() {
        let body = SharedBody::filling(None);
        body.push(Bytes::from_static(b"ab"));
        assert!(body.compacted().is_none(), "not complete yet");
        body.push(Bytes::from_static(b"cd"));
        body.end(BodyEnd::Complete);
        let compact = body.compacted().unwrap();
        assert_eq!(compact.progress.borrow().chunks, [Bytes::from_static(b"abcd")]);
        assert!(compact.compacted().is_none(), "already one chunk");
    }

    proptest::proptest! {
        #[test]
        fn any_range_of_any_chunking_reads_the_right_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..20), 0..8),
            start in 0u64..200,
            length in 0u64..200,
        ) {
            let whole: Vec<u8> = chunks.concat();
            let body = SharedBody::complete(chunks.into_iter().map(Bytes::from).collect());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let got = runtime.block_on(collect(body.range_reader(start, length))).unwrap();
            let from = (start as usize).min(whole.len());
            let to = (start.saturating_add(length) as usize).min(whole.len());
            proptest::prop_assert_eq!(got, whole[from..to].to_vec());
        }
    }
}
