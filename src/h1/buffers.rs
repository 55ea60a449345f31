//! Per-thread spare buffers for HTTP/1 connections. A keep-alive connection needs a read buffer
//! only while a message is arriving, and an exchange needs an output buffer only while it
//! writes; between requests a connection holds none (idle connections cost their socket and
//! little else). Taking a buffer from the thread's spares and giving it back costs a few
//! instructions instead of an allocation and a free per request.

use std::cell::RefCell;

/// Capacity of a buffer: a typical request head with room to spare, a small response whole,
/// and large bodies in pieces big enough to keep system calls few.
pub const BUFFER_BYTES: usize = 16 * 1024;

/// Spare buffers kept per thread; more are freed. A thread serving many connections at once
/// allocates beyond this, but keeps no more than this once they go quiet.
const SPARES: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`BUFFER_BYTES`] of capacity.
pub fn take() -> Vec<u8> {
    SPARE.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(BUFFER_BYTES))
}

/// Gives `buffer` back for reuse (emptied). A buffer that grew beyond the standard size is
/// freed instead, so a large head does not stay allocated.
pub fn give(mut buffer: Vec<u8>) {
    if buffer.capacity() != BUFFER_BYTES {
        return;
    }
    buffer.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARES {
            spare.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_empty_and_grown_ones_dropped() {
        let mut buffer = take();
        assert!(buffer.is_empty() && buffer.capacity() >= BUFFER_BYTES);
        buffer.extend_from_slice(b"abc");
        let pointer = buffer.as_ptr();
        give(buffer);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), pointer);
        let mut grown = again;
        grown.reserve(4 * BUFFER_BYTES);
        give(grown);
        // The grown buffer was freed, not kept: what comes next has the standard size.
        let fresh = take();
        assert_eq!(fresh.capacity(), BUFFER_BYTES);
    }
}
