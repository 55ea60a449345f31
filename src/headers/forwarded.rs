//! Headers a proxy adds about itself: `Via` (RFC 9110 §7.6.3).

use http::header::VIA;
use http::{HeaderMap, HeaderValue, Version};

/// The name sluice gives itself in `Via` (the `received-by` pseudonym).
pub const VIA_PSEUDONYM: &str = "sluice";

/// Appends this proxy's `Via` entry for a message received with `version`; earlier entries
/// from other intermediaries are kept in order (a new field line is equivalent to a new
/// comma-separated member, RFC 9110 §5.3).
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    let value = match version {
        Version::HTTP_09 => "0.9 sluice",
        Version::HTTP_10 => "1.0 sluice",
        Version::HTTP_2 => "2 sluice",
        Version::HTTP_3 => "3 sluice",
        _ => "1.1 sluice",
    };
    headers.append(VIA, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_names_the_received_protocol_and_keeps_earlier_hops() {
        let mut headers = HeaderMap::new();
        headers.insert(VIA, HeaderValue::from_static("1.0 fred"));
        append_via(&mut headers, Version::HTTP_10);
        append_via(&mut headers, Version::HTTP_2);
        let via: Vec<_> = headers
            .get_all(VIA)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(via, ["1.0 fred", "1.0 sluice", "2 sluice"]);
    }
}
