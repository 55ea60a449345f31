//! Reading `Via` (RFC 9110 §7.6.3) to find this proxy's own entry: a request that already
//! passed through this instance is going round in a loop, and forwarding it again would only
//! feed the loop until some limit breaks it.
//!
//! `Via = #( received-protocol RWS received-by [ RWS comment ] )`; a comment is parenthesised,
//! may nest and may hold commas and quoted pairs, so members are split on commas outside
//! comments only.

use http::header::VIA;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use crate::headers::edit::{self, Edit};

/// This instance's `Via` entry (RFC 9110 §7.6.3): its pseudonym, and the field value for each
/// protocol version a message can be received with, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pseudonym: String,
    /// `0.9`, `1.0`, `1.1`, `2` and `3`, each followed by the pseudonym.
    values: [HeaderValue; 5],
}

impl Via {
    /// The entry for `pseudonym`; `None` when it cannot be a field value (the configuration
    /// only accepts tokens).
    pub fn new(pseudonym: &str) -> Option<Via> {
        let value = |version: &str| HeaderValue::from_str(&format!("{version} {pseudonym}")).ok();
        let values = [value("0.9")?, value("1.0")?, value("1.1")?, value("2")?, value("3")?];
        Some(Via { pseudonym: pseudonym.to_owned(), values })
    }

    /// The `received-by` name.
    pub fn pseudonym(&self) -> &str {
        &self.pseudonym
    }

    /// Appends this proxy's entry for a message received with `version`; earlier entries from
    /// other intermediaries are kept in order (a new field line is equivalent to a new
    /// comma-separated member, RFC 9110 §5.3).
    pub fn append(&self, headers: &mut HeaderMap, version: Version) {
        edit::apply(self.edit(version), headers);
    }

    /// Whether a message with `headers` already passed through this instance.
    pub fn seen_in(&self, headers: &HeaderMap) -> bool {
        loops_through(headers, &self.pseudonym)
    }

    /// [`Via::seen_in`] on the values of a message's `Via` lines.
    pub fn seen_in_values<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) -> bool {
        loops_through_values(lines, &self.pseudonym)
    }

    /// The edit that appends this proxy's entry for a message received with `version` (what
    /// [`Via::append`] does, for a head rewritten while it is copied).
    pub fn edit(&self, version: Version) -> Option<Edit<'_>> {
        self.values.get(index(version)).map(|value| Edit::Append(&VIA_NAME, value))
    }
}

static VIA_NAME: HeaderName = VIA;

/// Where the value for `version` is in [`Via`]'s values.
fn index(version: Version) -> usize {
    match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 2,
    }
}

/// Whether any `Via` entry in `headers` was added by a proxy calling itself `pseudonym`
/// (its `received-by`, compared case-insensitively). An instance's pseudonym must be its own
/// for this to mean a loop: two instances with one name look like one to each other.
pub fn loops_through(headers: &HeaderMap, pseudonym: &str) -> bool {
    loops_through_values(headers.get_all(VIA).iter().map(HeaderValue::as_bytes), pseudonym)
}

/// [`loops_through`] on the values of the `Via` lines.
pub fn loops_through_values<'a>(lines: impl Iterator<Item = &'a [u8]>, pseudonym: &str) -> bool {
    lines
        .flat_map(members)
        .filter_map(received_by)
        .any(|by| by.eq_ignore_ascii_case(pseudonym.as_bytes()))
}

/// The comma-separated members of one `Via` line, commas inside comments excepted.
fn members(line: &[u8]) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let mut depth = 0usize;
    let mut escaped = false;
    let mut start = 0;
    for (at, byte) in line.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if depth > 0 => escaped = true,
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                members.extend(line.get(start..at));
                start = at + 1;
            }
            _ => {}
        }
    }
    members.extend(line.get(start..));
    members
}

/// The `received-by` of a member: its second whitespace-separated word.
fn received_by(member: &[u8]) -> Option<&[u8]> {
    member.split(|b| *b == b' ' || *b == b'\t').filter(|word| !word.is_empty()).nth(1)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn via(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(VIA, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn finds_its_own_entry_anywhere_in_the_chain() {
        let cases: [(&[&str], bool); 12] = [
            (&[], false),
            (&["1.1 sluice-a"], true),
            (&["1.1 SLUICE-A"], true),
            (&["HTTP/1.1 sluice-a (sluice)"], true),
            (&["1.0 fred, 1.1 sluice-a"], true),
            (&["1.0 fred", "2 sluice-a"], true),
            (&["1.0 fred (a, 1.1 sluice-a)"], false),
            (&["1.0 fred (nested (x, 1.1 sluice-a) \\) , 1.1 sluice-a)"], false),
            (&["1.0 fred (note), 1.1 sluice-a"], true),
            (&["1.1 sluice-b, 1.1 sluice-a:8080"], false),
            (&["1.1 sluice-ab"], false),
            (&["sluice-a"], false),
        ];
        for (lines, expected) in cases {
            assert_eq!(loops_through(&via(lines), "sluice-a"), expected, "{lines:?}");
        }
    }

    #[test]
    fn the_entry_names_the_received_protocol_and_keeps_earlier_hops() {
        let via_a = Via::new("sluice-a").unwrap();
        let mut headers = via(&["1.0 fred"]);
        via_a.append(&mut headers, Version::HTTP_10);
        via_a.append(&mut headers, Version::HTTP_2);
        via_a.append(&mut headers, Version::HTTP_11);
        let values: Vec<_> = headers.get_all(VIA).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(values, ["1.0 fred", "1.0 sluice-a", "2 sluice-a", "1.1 sluice-a"]);
        assert!(via_a.seen_in(&headers));
        assert!(!Via::new("sluice-b").unwrap().seen_in(&headers));
        assert!(Via::new("bad\nname").is_none());
    }

    #[test]
    fn members_split_outside_comments_only() {
        let line = b"1.0 a (x, (y, z)), 1.1 b,,1.1 c (\\))";
        let got: Vec<_> = members(line)
            .into_iter()
            .map(|m| String::from_utf8_lossy(m).trim().to_owned())
            .collect();
        assert_eq!(got, ["1.0 a (x, (y, z))", "1.1 b", "", "1.1 c (\\))"]);
    }
}
