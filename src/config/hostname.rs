//! Host names as the config writes them: server names that select a listener's certificate,
//! static `[dns]` entries and denied destination patterns. A name that breaks these rules
//! could never match what a client sends, so it is refused rather than silently ignored.

use std::net::IpAddr;

/// Longest DNS name, in characters, without a trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Why `name` is not a DNS host name, if it is not: dot-separated labels of 1 to 63 letters,
/// digits, `-` (not first or last) and `_` (which real names carry, RFC 2782), 253 characters
/// at most.
pub fn dns_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    name.split('.').find_map(|label| {
        if label.is_empty() {
            Some("has an empty label (`..`, or a leading `.`)".to_owned())
        } else if label.len() > MAX_LABEL_LEN {
            Some(format!("has a label longer than {MAX_LABEL_LEN} characters"))
        } else if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Some(format!("has `{label}`; a label holds only letters, digits, `-` and `_`"))
        } else if label.starts_with('-') || label.ends_with('-') {
            Some(format!("has `{label}`; a label may not start or end with `-`"))
        } else {
            None
        }
    })
}

/// Why `name` cannot select a certificate by SNI, if it cannot: a DNS name, or `*.` and a DNS
/// name for any one label before it. Never an IP address: SNI carries host names only
/// (RFC 6066 §3).
pub fn server_name_problem(name: &str) -> Option<String> {
    if name.parse::<IpAddr>().is_ok() {
        return Some(
            "is an IP address; clients send only host names in SNI (RFC 6066 section 3)".to_owned(),
        );
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Some(
            "may have `*` only as its whole first label, as in `*.example.com`".to_owned(),
        );
    }
    dns_name_problem(base)
}

/// Why `pattern` cannot match a forward-proxy target, if it cannot: a DNS name, `*.` and a
/// DNS name for any name below it, or an IP address.
pub fn host_pattern_problem(pattern: &str) -> Option<String> {
    if pattern.parse::<IpAddr>().is_ok() {
        return None;
    }
    let base = pattern.strip_prefix("*.").unwrap_or(pattern);
    if base.contains('*') {
        return Some(
            "may have `*` only as its whole first label, as in `*.example.com`".to_owned(),
        );
    }
    dns_name_problem(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for good in ["a", "a.example", "xn--bcher-kva.example", "_sip._tcp.example", "a-b.c0"] {
            assert_eq!(dns_name_problem(good), None, "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join(".");
        for bad in ["", "a b", "a..b", ".a", "a.", "-a.example", "a-.example", "a/b", "é.example"]
        {
            assert!(dns_name_problem(bad).is_some(), "{bad}");
        }
        assert!(dns_name_problem(&long_label).is_some());
        assert!(dns_name_problem(&long_name).is_some());
        assert_eq!(dns_name_problem(&["a"; 127].join(".")), None);
    }

    #[test]
    fn server_names() {
        for good in ["a.example", "*.example", "*.a.example"] {
            assert_eq!(server_name_problem(good), None, "{good}");
        }
        for bad in ["", "*.*.x", "a b", "*", "*.", "a.*.example", "x*.example", "10.0.0.1", "::1"] {
            assert!(server_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        for good in ["metadata.google.internal", "*.corp.example", "10.0.0.1", "fd00::1"] {
            assert_eq!(host_pattern_problem(good), None, "{good}");
        }
        for bad in ["", "*", "*.*.x", "a b", "*."] {
            assert!(host_pattern_problem(bad).is_some(), "{bad}");
        }
    }
}
