//! Forwarding headers (`X-Forwarded-*`, RFC 7239 `Forwarded`): `headers::forwarded::apply_forwarding`
//! with fuzzed modes, client address (IPv4 and IPv6), protocol, `Host` value and incoming
//! headers. Each header must follow its mode exactly, the `Forwarded` element must parse back
//! (RFC 7239 §4) to the client, host and protocol, and no other field may change.
//!
//! Input: a byte of four 2-bit modes (XFF, XFP, XFH, Forwarded: append, replace, off, off), a
//! flags byte (bit 0 IPv6, bit 1 https, bit 2 a Host is present), 4 or 16 address bytes, the
//! Host value up to the first `\n`, then `name: value` lines the request arrived with.

#![no_main]

#[path = "header_lines.rs"]
mod header_lines;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::config::{ForwardMode, HeaderSettings};
use sluice::headers::forwarded::{ClientIp, Hop, apply_forwarding};

fuzz_target!(|data: &[u8]| {
    let [modes, flags, data @ ..] = data else {
        return;
    };
    let mode = |shift: u8| match (modes >> shift) & 3 {
        0 => ForwardMode::Append,
        1 => ForwardMode::Replace,
        _ => ForwardMode::Off,
    };
    let settings = HeaderSettings {
        x_forwarded_for: mode(0),
        x_forwarded_proto: mode(2),
        x_forwarded_host: mode(4),
        forwarded: mode(6),
        ..HeaderSettings::default()
    };
    let (client, data) = if flags & 1 == 0 {
        let Some((ip, data)) = data.split_first_chunk::<4>() else { return };
        (IpAddr::V4(Ipv4Addr::from(*ip)), data)
    } else {
        let Some((ip, data)) = data.split_first_chunk::<16>() else { return };
        (IpAddr::V6(Ipv6Addr::from(*ip)), data)
    };
    let proto = if flags & 2 == 0 { "http" } else { "https" };
    let (host, incoming) = match data.iter().position(|&b| b == b'\n') {
        Some(end) => data.split_at(end),
        None => (data, &[][..]),
    };
    let host = HeaderValue::from_bytes(host).ok().filter(|_| flags & 4 != 0);
    let mut headers = header_lines::map(incoming);
    let before = header_lines::grouped(&headers);

    let downstream = ClientIp::new(client);
    let hop = Hop { client: &downstream, proto, host: host.as_ref() };
    apply_forwarding(&mut headers, hop, &settings);

    let mut after = header_lines::grouped(&headers);
    let mut expected = before.clone();
    let mut expect = |name: &str, mode: ForwardMode, value: Option<HeaderValue>| {
        let Some(value) = value else {
            if mode == ForwardMode::Replace {
                expected.remove(name);
            }
            return;
        };
        match mode {
            ForwardMode::Off => {}
            ForwardMode::Replace => {
                expected.insert(name.to_owned(), vec![value]);
            }
            ForwardMode::Append => expected.entry(name.to_owned()).or_default().push(value),
        }
    };
    let ip_text = HeaderValue::from_str(&client.to_string()).expect("an IP is a header value");
    expect("x-forwarded-for", settings.x_forwarded_for, Some(ip_text));
    expect("x-forwarded-proto", settings.x_forwarded_proto, Some(HeaderValue::from_static(proto)));
    expect("x-forwarded-host", settings.x_forwarded_host, host.clone());

    // The element sluice wrote is the last `Forwarded` line; check it by parsing it back.
    if settings.forwarded != ForwardMode::Off {
        let written = after.get_mut("forwarded").and_then(Vec::pop).expect("Forwarded written");
        let pairs = parse_element(written.as_bytes())
            .unwrap_or_else(|| panic!("Forwarded does not parse: {written:?}"));
        let node = match client {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        assert_eq!(pairs.get("for"), Some(&node));
        assert_eq!(pairs.get("proto").map(String::as_str), Some(proto));
        let host_text = host.as_ref().and_then(|h| h.to_str().ok());
        assert_eq!(pairs.get("host").map(String::as_str), host_text, "{written:?}");
        if settings.forwarded == ForwardMode::Replace {
            expected.remove("forwarded");
        }
        if after.get("forwarded").is_some_and(Vec::is_empty) {
            after.remove("forwarded");
        }
    }
    assert_eq!(after, expected);
    assert!(valid_values(&headers));
});

/// Every value is still one a `HeaderValue` may hold (no CR, LF or NUL).
fn valid_values(headers: &HeaderMap) -> bool {
    headers.values().all(|v| HeaderValue::from_bytes(v.as_bytes()).is_ok())
}

/// Parses one RFC 7239 §4 forwarded-element, `pair *( ";" pair )` with
/// `pair = token "=" ( token / quoted-string )`, into lower-cased names and unquoted values.
/// `None` when it is not well formed or names a parameter twice.
fn parse_element(text: &[u8]) -> Option<BTreeMap<String, String>> {
    fn tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }
    let mut pairs = BTreeMap::new();
    let mut rest = text;
    loop {
        let name_len = rest.iter().take_while(|&&b| tchar(b)).count();
        let (name, after_name) = rest.split_at(name_len);
        let [b'=', after_eq @ ..] = after_name else { return None };
        let mut value = Vec::new();
        rest = if let Some(mut quoted) = after_eq.strip_prefix(b"\"") {
            loop {
                match quoted {
                    [b'"', tail @ ..] => break tail,
                    [b'\\', c, tail @ ..] if *c == b'\t' || *c >= b' ' && *c != 0x7f => {
                        value.push(*c);
                        quoted = tail;
                    }
                    [c, tail @ ..] if *c == b'\t' || *c >= b' ' && *c != 0x7f && *c != b'\\' => {
                        value.push(*c);
                        quoted = tail;
                    }
                    _ => return None,
                }
            }
        } else {
            let len = after_eq.iter().take_while(|&&b| tchar(b)).count();
            let (token, tail) = after_eq.split_at(len);
            if token.is_empty() {
                return None;
            }
            value.extend_from_slice(token);
            tail
        };
        if name.is_empty() {
            return None;
        }
        let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
        if pairs.insert(name, String::from_utf8(value).ok()?).is_some() {
            return None;
        }
        match rest {
            [] => return Some(pairs),
            [b';', tail @ ..] => rest = tail,
            _ => return None,
        }
    }
}
