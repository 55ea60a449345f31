//! The status page's text formats that more than one of its parts writes (the page, the AI
//! usage card), matching the script's (`span` and the thousands separator in page.js).

use std::time::Duration;

/// `text` safe inside HTML text and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in its two largest units, the smaller left out when zero: `3d 4h`, `2h`,
/// `4m 10s`, `5m`, `7s`.
pub fn span(duration: Duration) -> String {
    let s = duration.as_secs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |big: u64, a: &str, small: u64, b: &str| {
        if small > 0 { format!("{big}{a} {small}{b}") } else { format!("{big}{a}") }
    };
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => two(m, "m", s, "s"),
        (0, _, _) => two(h, "h", m, "m"),
        _ => two(d, "d", h, "h"),
    }
}

/// `n` with commas between thousands, as the script writes counts.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
