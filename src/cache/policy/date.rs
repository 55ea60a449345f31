//! HTTP-date (RFC 9110 §5.6.7): strict parsing of the three formats a recipient must accept,
//! and IMF-fixdate output.
//!
//! Parsing is strict about the grammar (single spaces, two-digit hours, `GMT`, a comma after
//! the day name) because a cache that guesses at a malformed `Expires` risks serving something
//! for far longer than the origin meant; RFC 9111 §5.3 has such values treated as already
//! expired. Names (day, month, `GMT`) are matched case-insensitively, as RFC 9110 §5.6.7 asks
//! of recipients ("recipients ... SHOULD be case-insensitive" for these tokens is implied by
//! the ABNF's case-insensitive string literals, RFC 5234 §2.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::calendar::days_from_civil;

/// Day names as IMF-fixdate and asctime write them.
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/// Full day names as RFC 850 dates write them.
const LONG_DAYS: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
/// Month names, January first.
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Parses an HTTP-date in any of its three formats (IMF-fixdate, RFC 850, asctime).
///
/// `now` is needed only for RFC 850's two-digit years: RFC 9110 §5.6.7 reads a year that
/// "appears to be more than 50 years in the future" as the most recent past year with the same
/// last two digits.
pub fn parse(value: &str, now: SystemTime) -> Option<SystemTime> {
    let seconds = imf_fixdate(value).or_else(|| rfc850(value, now)).or_else(|| asctime(value))?;
    from_unix(seconds)
}

/// Formats `time` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format(time: SystemTime) -> String {
    let seconds = to_unix(time);
    let days = seconds.div_euclid(DAY);
    let in_day = seconds.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday: index 3 in `DAYS`.
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month_name = MONTHS.get(month.saturating_sub(1) as usize).copied().unwrap_or("Jan");
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS.get(weekday).copied().unwrap_or("Mon"),
        day,
        month_name,
        year,
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Whole seconds since the Unix epoch (negative before it).
pub fn to_unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map(|s| -s).unwrap_or(i64::MIN),
    }
}

/// The time `seconds` after (or before, when negative) the Unix epoch.
pub fn from_unix(seconds: i64) -> Option<SystemTime> {
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(value: &str) -> Option<i64> {
    let bytes = value.as_bytes();
    if bytes.len() != 29 {
        return None;
    }
    let (day_name, rest) = value.split_at_checked(3)?;
    name_index(&DAYS, day_name)?;
    let rest = rest.strip_prefix(", ")?;
    let (day, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix(' ')?;
    let (month, rest) = month(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (year, rest) = digits(rest, 4)?;
    let rest = rest.strip_prefix(' ')?;
    let (clock, rest) = time_of_day(rest)?;
    let rest = rest.strip_prefix(' ')?;
    if !rest.eq_ignore_ascii_case("GMT") {
        return None;
    }
    assemble(year, month, day, clock)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(value: &str, now: SystemTime) -> Option<i64> {
    let (day_name, rest) = value.split_once(", ")?;
    name_index(&LONG_DAYS, day_name)?;
    let (day, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (month, rest) = month(rest)?;
    let rest = rest.strip_prefix('-')?;
    let (short_year, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix(' ')?;
    let (clock, rest) = time_of_day(rest)?;
    let rest = rest.strip_prefix(' ')?;
    if !rest.eq_ignore_ascii_case("GMT") {
        return None;
    }
    let (this_year, _, _) = civil_from_days(to_unix(now).div_euclid(DAY));
    let century = this_year - this_year.rem_euclid(100);
    let mut year = century + short_year;
    if year > this_year + 50 {
        year -= 100;
    }
    assemble(year, month, day, clock)
}

/// `Sun Nov  6 08:49:37 1994`
fn asctime(value: &str) -> Option<i64> {
    if value.len() != 24 {
        return None;
    }
    let (day_name, rest) = value.split_at_checked(3)?;
    name_index(&DAYS, day_name)?;
    let rest = rest.strip_prefix(' ')?;
    let (month, rest) = month(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (day, rest) = match rest.strip_prefix(' ') {
        Some(single) => digits(single, 1)?,
        None => digits(rest, 2)?,
    };
    let rest = rest.strip_prefix(' ')?;
    let (clock, rest) = time_of_day(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (year, rest) = digits(rest, 4)?;
    if !rest.is_empty() {
        return None;
    }
    assemble(year, month, day, clock)
}

/// Index of `name` in `names`, compared case-insensitively.
fn name_index(names: &[&str], name: &str) -> Option<usize> {
    names.iter().position(|candidate| candidate.eq_ignore_ascii_case(name))
}

/// A three-letter month name: its number (1-12) and the rest of the input.
fn month(input: &str) -> Option<(i64, &str)> {
    let (name, rest) = input.split_at_checked(3)?;
    let index = name_index(&MONTHS, name)?;
    Some((i64::try_from(index).ok()? + 1, rest))
}

/// Exactly `count` ASCII digits: their value and the rest of the input.
fn digits(input: &str, count: usize) -> Option<(i64, &str)> {
    let (number, rest) = input.split_at_checked(count)?;
    if !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((number.parse().ok()?, rest))
}

/// `HH:MM:SS` with two digits each: seconds into the day and the rest of the input.
fn time_of_day(input: &str) -> Option<(i64, &str)> {
    let (hour, rest) = digits(input, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (minute, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix(':')?;
    // RFC 9110 §5.6.7 allows 60 for a leap second.
    let (second, rest) = digits(rest, 2)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some((hour * 3600 + minute * 60 + second, rest))
}

/// Seconds since the epoch for a calendar date and time of day, if the date exists.
fn assemble(year: i64, month: i64, day: i64, clock: i64) -> Option<i64> {
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * DAY + clock)
}

/// How many days `month` of `year` has (proleptic Gregorian calendar).
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The calendar date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> SystemTime {
        from_unix(seconds).unwrap()
    }

    /// 2026-12-07T00:00:00Z, a fixed "now" for two-digit years.
    const NOW: i64 = 1_796_601_600;

    #[test]
    fn table() {
        let cases: &[(&str, Option<i64>)] = &[
            // The three formats of RFC 9110 §5.6.7, all the same instant.
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(784_111_777)),
            ("Sun Nov  6 08:49:37 1994", Some(784_111_777)),
            // Names are case-insensitive.
            ("THU, 18 Aug 2050 02:01:18 GMT", Some(2_544_400_878)),
            ("Thu, 18 AUG 2050 02:01:18 gMT", Some(2_544_400_878)),
            ("Thursday, 18-Aug-50 02:01:18 GMT", Some(2_544_400_878)),
            ("Thu Aug  8 02:01:18 2050", Some(2_543_536_878)),
            ("Thu Aug 18 02:01:18 2050", Some(2_544_400_878)),
            // Past 2038 and far future.
            ("Tue, 19 Jan 2038 14:14:08 GMT", Some(2_147_523_248)),
            ("Sun, 21 Nov 2286 04:46:39 GMT", Some(10_000_039_599)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
            ("Wed, 31 Dec 1969 23:59:59 GMT", Some(-1)),
            // Malformed: each of these is a different way of breaking the grammar.
            ("0", None),
            ("", None),
            ("Thu, 18 Aug 2050 02:01:18 UTC", None),
            ("Thu, 18 Aug 2050 02:01:18 AEST", None),
            ("Thu, 18 Aug 50 02:01:18 GMT", None),
            ("Thu 18 Aug 2050 02:01:18 GMT", None),
            ("Thu, 18  Aug  2050 02:01:18 GMT", None),
            ("Thu, 18-Aug-2050 02:01:18 GMT", None),
            ("Thu, 18 Aug 2050 02.01.18 GMT", None),
            ("Thu, 18 Aug 2050 2:01:18 GMT", None),
            ("Thu, 18 Aug 2050 02:01:18 GMT ", None),
            ("Xyz, 18 Aug 2050 02:01:18 GMT", None),
            ("Thu, 31 Feb 2050 02:01:18 GMT", None),
            ("Thu, 18 Aug 2050 24:01:18 GMT", None),
            ("Thu, 18 Aug 2050 02:01:18 GMT\u{e9}", None),
            ("Thursday, 18-Aug-2050 02:01:18 GMT", None),
        ];
        for (input, expected) in cases {
            let parsed = parse(input, at(NOW)).map(to_unix);
            assert_eq!(parsed, *expected, "input: {input:?}");
        }
    }

    #[test]
    fn two_digit_years_more_than_fifty_years_ahead_are_in_the_past() {
        // From 2026, "76" is 2076 (50 years ahead), "77" is 1977.
        assert_eq!(
            parse("Wednesday, 01-Jan-76 00:00:00 GMT", at(NOW)).map(to_unix),
            Some(3_345_062_400)
        );
        assert_eq!(
            parse("Saturday, 01-Jan-77 00:00:00 GMT", at(NOW)).map(to_unix),
            Some(220_924_800)
        );
    }

    #[test]
    fn format_round_trips() {
        for seconds in [0, 784_111_777, 2_147_523_248, 9_999_999_999, NOW, NOW + 86_399] {
            let text = format(at(seconds));
            assert_eq!(text.len(), 29, "{text}");
            assert_eq!(parse(&text, at(NOW)).map(to_unix), Some(seconds), "{text}");
        }
        assert_eq!(format(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_is_identity(seconds in 0i64..253_402_300_799) {
            let text = format(at(seconds));
            proptest::prop_assert_eq!(parse(&text, at(NOW)).map(to_unix), Some(seconds));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text, at(NOW));
        }
    }
}
