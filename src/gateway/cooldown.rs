//! How long a provider key rests after a `429`: the provider's own rate-limit reset headers,
//! read where `Retry-After` is missing.
//!
//! OpenAI sends `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` as Go-style
//! durations (`1s`, `6m0s`, `1.5s`, `20ms`) beside `x-ratelimit-remaining-*`; Anthropic sends
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset` as RFC 3339 times
//! beside `anthropic-ratelimit-*-remaining`. The limit that ran out (remaining `0`) decides;
//! when none says so, the longest reset does, so a key is never tried again too early.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::calendar::days_from_civil;

/// The limits whose reset headers are read: (remaining header, reset header, format).
const RESETS: [(&str, &str, Format); 6] = [
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", Format::GoDuration),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", Format::GoDuration),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        Format::Rfc3339,
    ),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset", Format::Rfc3339),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        Format::Rfc3339,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        Format::Rfc3339,
    ),
];

#[derive(Debug, Clone, Copy)]
enum Format {
    GoDuration,
    Rfc3339,
}

/// How long the provider's reset headers say to wait, seen at `now`; `None` without any.
pub fn provider_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut exhausted = None;
    let mut longest = None;
    for (remaining, reset, format) in RESETS {
        let Some(value) = headers.get(reset).and_then(|v| v.to_str().ok()) else { continue };
        let wait = match format {
            Format::GoDuration => go_duration(value),
            Format::Rfc3339 => rfc3339(value).map(|at| at.duration_since(now).unwrap_or_default()),
        };
        let Some(wait) = wait else { continue };
        longest = longest.max(Some(wait));
        let spent = headers.get(remaining).is_some_and(|v| v.as_bytes() == b"0");
        if spent {
            exhausted = exhausted.max(Some(wait));
        }
    }
    exhausted.or(longest)
}

/// A Go duration string: decimal numbers with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`,
/// e.g. `6m0s`, `1.5s`, `20ms`.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest.get(..number_end)?.parse().ok()?;
        rest = rest.get(number_end..)?;
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match rest.get(..unit_end)? {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" => 1e-6, // µs
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = rest.get(unit_end..)?;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// An RFC 3339 date-time (`2024-06-01T12:00:30Z`, `…30.5+02:00`) as a point in time.
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if !separators.iter().all(|(at, sep)| text.as_bytes().get(*at) == Some(sep))
        || !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Fractions of a second, then the offset.
    let mut rest = text.get(19..)?;
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        let padded = format!("{:0<9}", fraction.get(..digits.min(9))?);
        nanos = padded.parse().ok()?;
        rest = fraction.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest.get(1..)?.split_once(':')?;
            sign * (hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(60)
            - offset;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn go_durations() {
        let cases = [
            ("1s", Some(1000)),
            ("6m0s", Some(360_000)),
            ("1.5s", Some(1500)),
            ("20ms", Some(20)),
            ("1h2m3s", Some(3_723_000)),
            ("0s", Some(0)),
            ("", None),
            ("5", None),
            ("5x", None),
            ("s", None),
            ("-1s", None),
        ];
        for (text, millis) in cases {
            assert_eq!(go_duration(text).map(|d| d.as_millis() as u64), millis, "{text}");
        }
    }

    #[test]
    fn rfc3339_times() {
        let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        let cases = [
            ("1970-01-01T00:00:00Z", at(0, 0)),
            ("2024-06-01T12:00:30Z", at(1_717_243_230, 0)),
            ("2024-06-01T12:00:30.25Z", at(1_717_243_230, 250_000_000)),
            ("2024-06-01T14:00:30+02:00", at(1_717_243_230, 0)),
            ("2024-02-29T00:00:00Z", at(1_709_164_800, 0)),
            ("2024-06-01 12:00:30Z", at(1_717_243_230, 0)),
            ("2024-06-01T12:00:30", None),
            ("2024-13-01T12:00:30Z", None),
            ("2024-06-01", None),
            ("1969-12-31T23:59:59Z", None),
            ("yesterday", None),
        ];
        for (text, expected) in cases {
            assert_eq!(rfc3339(text), expected, "{text}");
        }
    }

    #[test]
    fn the_limit_that_ran_out_decides() {
        let now = UNIX_EPOCH + Duration::from_secs(1_717_243_200);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Pairs, Option<u64>); 5] = [
            (&[], None),
            (
                &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "2s"),
                    ("x-ratelimit-remaining-tokens", "5000"),
                    ("x-ratelimit-reset-tokens", "6m0s"),
                ],
                Some(2),
            ),
            (
                &[("x-ratelimit-reset-requests", "2s"), ("x-ratelimit-reset-tokens", "1m0s")],
                Some(60),
            ),
            (
                &[
                    ("anthropic-ratelimit-tokens-remaining", "0"),
                    ("anthropic-ratelimit-tokens-reset", "2024-06-01T12:00:30Z"),
                ],
                Some(30),
            ),
            (&[("anthropic-ratelimit-requests-reset", "2024-06-01T11:00:00Z")], Some(0)),
        ];
        for (pairs, expected) in cases {
            let wait = provider_reset(&headers(pairs), now);
            assert_eq!(wait.map(|d| d.as_secs()), expected, "{pairs:?}");
        }
    }
}
