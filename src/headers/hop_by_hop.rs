//! Removal of hop-by-hop header fields (RFC 9110 §7.6.1).
//!
//! "Intermediaries MUST parse a received Connection header field before a message is forwarded
//! and, for each connection-option in this field, remove any header or trailer field(s) from the
//! message with the same name as the connection-option, and then remove the Connection header
//! field itself (or replace it with the intermediary's own control options for the forwarded
//! message)." Every `Connection` line is read, not just the first.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Fields that only ever describe one connection, removed whether or not `Connection` names
/// them. RFC 9110 §7.6.1 lists Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade;
/// the proxy credentials and challenges are for this proxy alone (RFC 9110 §11.7.1, §11.7.2).
/// `Trailer` is deliberately absent: RFC 9110 §6.6.2 makes it end-to-end (it is in RFC 2616's
/// old list only by confusion with TE's `trailers` value), and dropping it would lose trailers.
/// `Connection` comes first: `strip` reads its presence from that position.
const ALWAYS: [HeaderName; ALWAYS_COUNT] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// How many fields [`ALWAYS`] holds.
const ALWAYS_COUNT: usize = 8;

/// Removes every hop-by-hop field from `headers`: the fixed set and every field any
/// `Connection` line names.
pub fn strip(headers: &mut HeaderMap) {
    // One pass over the names present first: most messages carry few or none of the fixed
    // set, and comparing names is cheaper than a hashed removal of each of the eight. Fields a
    // `Connection` line names can only be there when `Connection` itself is.
    let mut present = [false; ALWAYS_COUNT];
    for name in headers.keys() {
        if let Some(at) = ALWAYS.iter().position(|always| always == name)
            && let Some(flag) = present.get_mut(at)
        {
            *flag = true;
        }
    }
    if present.first() == Some(&true) {
        for name in connection_options(headers) {
            headers.remove(name);
        }
    }
    for (name, _) in ALWAYS.iter().zip(present).filter(|(_, present)| *present) {
        headers.remove(name);
    }
}

/// The field names listed across all `Connection` lines; options that are not valid field
/// names (or are not text) cannot name a field and are skipped.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|option| !option.is_empty())
        .filter_map(|option| HeaderName::from_bytes(option.as_bytes()).ok())
        .collect()
}

/// The streaming form of [`strip`], for a head copied line by line: whether a line named
/// `name` (as received, any case) is hop-by-hop, given the values of every `Connection` line
/// of the head. Options are compared as `strip` compares them: a `Connection` value that is
/// not visible ASCII names nothing, and names are case-insensitive.
pub fn is_hop_by_hop<'v>(name: &[u8], connection: impl IntoIterator<Item = &'v [u8]>) -> bool {
    is_fixed(name) || connection.into_iter().any(|value| names(value, name))
}

/// Whether `name` (any case) is one of the fields removed whatever `Connection` says.
pub fn is_fixed(name: &[u8]) -> bool {
    // By length first (most names are none of them), then the bytes: this runs for every
    // line a head copies. The names are those of `ALWAYS` (a test keeps the two the same).
    let is = |fixed: &[u8]| name.eq_ignore_ascii_case(fixed);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Whether the `Connection` value `value` lists `name` among its options.
pub fn names(value: &[u8], name: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|option| !option.is_empty() && option.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_names_are_those_always_removed() {
        for name in &ALWAYS {
            assert!(is_fixed(name.as_str().as_bytes()), "{name}");
            assert!(is_fixed(name.as_str().to_ascii_uppercase().as_bytes()), "{name}");
        }
        for other in ["host", "trailer", "te2", "x-upgrade", "proxy-connectio", "connection2"] {
            assert!(!is_fixed(other.as_bytes()), "{other}");
        }
    }
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("host", "a"), ("accept", "*/*")], &["accept", "host"]),
            (
                &[
                    ("connection", "keep-alive, X-Secret"),
                    ("keep-alive", "timeout=5"),
                    ("x-secret", "1"),
                    ("x-kept", "1"),
                ],
                &["x-kept"],
            ),
            // Every Connection line counts, and tokens are case-insensitive with odd spacing.
            (
                &[
                    ("connection", "close"),
                    ("connection", " X-A ,,x-b "),
                    ("x-a", "1"),
                    ("X-B", "2"),
                ],
                &[],
            ),
            (
                &[
                    ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                    ("proxy-authenticate", "Basic"),
                    ("proxy-connection", "keep-alive"),
                    ("te", "trailers"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("trailer", "x-checksum"),
                ],
                &["trailer"],
            ),
            // A token that is not a field name names nothing.
            (&[("connection", "bad token, x-c"), ("x-c", "1"), ("x-d", "1")], &["x-d"]),
        ];
        for (input, expected) in cases {
            let mut headers = map(input);
            strip(&mut headers);
            assert_eq!(names(&headers), *expected, "input: {input:?}");
        }
    }

    /// The streaming form keeps exactly the lines `strip` keeps.
    #[test]
    fn streaming_form_agrees_with_strip() {
        let cases: &[&[(&str, &str)]] = &[
            &[("host", "a"), ("accept", "*/*")],
            &[
                ("Connection", "keep-alive, X-Secret"),
                ("Keep-Alive", "5"),
                ("X-SECRET", "1"),
                ("x-kept", "1"),
            ],
            &[("connection", "close"), ("connection", " X-A ,,x-b "), ("x-a", "1"), ("X-B", "2")],
            &[("connection", "bad token, x-c"), ("x-c", "1"), ("x-d", "1"), ("TE", "trailers")],
            &[
                ("Proxy-Authorization", "x"),
                ("Trailer", "x-sum"),
                ("Upgrade", "h2c"),
                ("Transfer-Encoding", "chunked"),
            ],
        ];
        for lines in cases {
            let mut headers = map(lines);
            strip(&mut headers);
            let connection: Vec<&[u8]> = lines
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                .map(|(_, value)| value.as_bytes())
                .collect();
            let mut kept: Vec<String> = lines
                .iter()
                .filter(|(name, _)| !is_hop_by_hop(name.as_bytes(), connection.iter().copied()))
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            kept.sort_unstable();
            let mut expected: Vec<String> = headers.iter().map(|(n, _)| n.to_string()).collect();
            expected.sort_unstable();
            assert_eq!(kept, expected, "{lines:?}");
        }
    }

    #[test]
    fn duplicate_end_to_end_fields_survive() {
        let mut headers =
            map(&[("set-cookie", "a=1"), ("set-cookie", "b=2"), ("connection", "close")]);
        strip(&mut headers);
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
    }
}
