//! A connection's timer, kept from one wait to the next.
//!
//! `tokio::time::timeout` makes a timer for every wait, registers it with the runtime's timer
//! wheel when the wait does not end at once, and takes it out again when the wait ends: two
//! updates of the wheel, under its lock, for each request that waits on a socket. A [`Timer`]
//! is made once per connection; a wait that ends at once never touches it, and arming it for a
//! later deadline than the last one only moves its expiry forward (the wheel finds the new
//! deadline when the old one comes round), so a keep-alive connection's waits cost the wheel
//! almost nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A timer for one wait at a time, made on its first use and reused after.
#[derive(Debug, Default)]
pub struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// A timer that has not been used yet (it allocates nothing until a wait needs it).
    pub const fn new() -> Timer {
        Timer { sleep: None }
    }

    /// `fut`'s output, or `None` when it has not finished within `limit` of now.
    pub async fn within<F: Future>(&mut self, limit: Duration, fut: F) -> Option<F::Output> {
        self.until(Deadline::After(limit), fut).await
    }

    /// `fut`'s output, or `None` when it has not finished by `deadline`.
    pub async fn within_at<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        self.until(Deadline::At(deadline), fut).await
    }

    async fn until<F: Future>(&mut self, deadline: Deadline, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if !armed {
                // Armed only once the wait has not ended at once; the clock is read then.
                armed = true;
                let at = deadline.instant();
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().poll(cx).map(|()| None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// When a wait gives up: a moment, or a limit counted from when the timer is armed.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    At(Instant),
    After(Duration),
}

impl Deadline {
    fn instant(self) -> Instant {
        match self {
            Deadline::At(at) => at,
            Deadline::After(limit) => Instant::now() + limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_end_with_their_future_or_at_their_deadline_and_the_timer_is_reused() {
        let mut timer = Timer::new();
        // Ready at once: the timer is not even made.
        assert_eq!(timer.within(Duration::from_secs(1), async { 7 }).await, Some(7));
        assert!(timer.sleep.is_none());
        // Never ready: gives up at the limit.
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert_eq!(timer.within(Duration::from_secs(5), never).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Reused for a later deadline, and for one that ends first by its future.
        let later = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(timer.within(Duration::from_secs(10), later).await, Some(()));
        let never = std::future::pending::<()>();
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(timer.within_at(deadline, never).await, None);
        assert_eq!(Instant::now(), deadline);
        // An earlier deadline than the one armed before still holds.
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert_eq!(timer.within(Duration::from_secs(1), never).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
