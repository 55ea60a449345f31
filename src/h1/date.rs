//! The `Date` field a response sluice writes itself carries (RFC 9110 §6.6.1: an origin with a
//! clock sends one; hyper adds it to every response that lacks one, so the fast path does too).
//! Formatting a date costs more than a request's whole head, so each thread keeps the current
//! second's line and formats again only when the second changes.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::policy::date;

thread_local! {
    /// The Unix second and the `date: ...\r\n` line for it.
    static CURRENT: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

/// Appends `date: <IMF-fixdate>\r\n` for the current second to `out`.
pub fn append_line(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        if current.0 != second || current.1.is_empty() {
            let mut line = b"date: ".to_vec();
            line.extend_from_slice(date::format(now).as_bytes());
            line.extend_from_slice(b"\r\n");
            *current = (second, line);
        }
        out.extend_from_slice(&current.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_an_imf_fixdate() {
        let mut out = Vec::new();
        append_line(&mut out);
        let line = String::from_utf8(out).unwrap();
        let value = line.strip_prefix("date: ").unwrap().strip_suffix("\r\n").unwrap();
        assert!(date::parse(value, SystemTime::now()).is_some(), "{line:?}");
    }
}
