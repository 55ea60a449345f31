//! Giving freed heap back to the operating system.
//!
//! A burst of clients makes hyper allocate 16 KiB of buffers per connection; when they go
//! quiet and are parked (see `server::park`) the buffers are freed, but glibc's allocator
//! keeps the pages for reuse: a proxy holding 10,000 idle keep-alive clients after a burst
//! was measured holding 97.7 MB from the system with 9.0 MB in use. [`release_freed_heap`]
//! watches how much of the heap is free and, when it has grown by [`RELEASE_STEP`] since the
//! last release, asks glibc to return the free pages (`malloc_trim`, which HAProxy also calls
//! after its pools shrink). Under steady load the free figure stays level and nothing is done.

use std::time::Duration;

/// How often the free heap is looked at: cheap (a walk of the allocator's free lists).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Growth of free heap, since the last release or the lowest level seen after it, that is
/// worth a release: large enough that steady traffic never triggers one.
pub const RELEASE_STEP: usize = 8 * 1024 * 1024;

/// Decides when free heap is worth releasing, from successive readings of free bytes.
#[derive(Debug, Default)]
pub struct ReleasePolicy {
    /// The free figure after the last release, lowered whenever free memory is reused.
    baseline: usize,
}

impl ReleasePolicy {
    /// Takes a reading of the free heap; true when the pages should be released now.
    pub fn should_release(&mut self, free: usize) -> bool {
        if free >= self.baseline.saturating_add(RELEASE_STEP) {
            // Released pages stay in the free lists (only their memory goes back), so the
            // figure does not drop after a release: it becomes the new baseline.
            self.baseline = free;
            return true;
        }
        self.baseline = self.baseline.min(free);
        false
    }
}

/// Runs for the life of the process, releasing free heap to the system when enough of it has
/// piled up. Spawn it once per process; it never returns.
pub async fn release_freed_heap() {
    let mut policy = ReleasePolicy::default();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(free) = heap::free_bytes() else { return };
        if policy.should_release(free) {
            // A release walks the free lists and makes one madvise call per run of free
            // pages: milliseconds on a large heap, so not on a worker thread.
            let _ = tokio::task::spawn_blocking(heap::release).await;
        }
    }
}

// The crate denies unsafe code; these two foreign calls are its only exception, and neither
// takes a pointer or has a precondition.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc's mallinfo2 and malloc_trim have no safe binding")]
mod heap {
    /// Bytes in the allocator's free chunks, over all arenas.
    pub fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 only reads the allocator's statistics under its own locks.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }

    /// Returns every whole free page of every arena to the system.
    pub fn release() {
        // SAFETY: malloc_trim is safe to call at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    /// Other allocators return memory on their own terms; nothing to watch.
    pub fn free_bytes() -> Option<usize> {
        None
    }

    /// Never called: [`free_bytes`] reports nothing.
    pub fn release() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn releases_after_free_heap_grows_by_a_step_and_not_while_it_stays_level() {
        let mut policy = ReleasePolicy::default();
        assert!(!policy.should_release(MIB));
        assert!(policy.should_release(9 * MIB), "8 MiB more free than the lowest reading");
        assert!(!policy.should_release(9 * MIB), "nothing new freed since the release");
        assert!(!policy.should_release(16 * MIB), "7 MiB more: under a step");
        // Traffic reuses free memory, then frees it again: the baseline follows it down.
        assert!(!policy.should_release(2 * MIB));
        assert!(policy.should_release(10 * MIB));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_returns_freed_pages_to_the_system() {
        fn resident_bytes() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            pages * 4096
        }
        // 64 MiB in 16 KiB blocks (below glibc's mmap threshold, so from the heap), touched;
        // every 16th is kept so the freed ones cannot merge into the top of the heap and be
        // trimmed on their own.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 * 1024]).collect();
        let mut kept = Vec::new();
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 16 == 0 {
                kept.push(block);
            }
        }
        let before = resident_bytes();
        heap::release();
        let after = resident_bytes();
        assert!(
            before.saturating_sub(after) > 32 * MIB,
            "released {} KiB of about 60 MiB freed",
            before.saturating_sub(after) / 1024
        );
        assert_eq!(kept.len(), 256);
    }
}
