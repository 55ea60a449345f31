//! The HTTP/1 head serialiser (`h1::write::fields`) against the map functions it stands in
//! for: a head's fields copied with hop-by-hop removal and fuzzed edits applied while copying
//! must come out as the same fields as `hop_by_hop::strip` and `headers::edit::apply` on a
//! `HeaderMap` give (per name, values in order), and the written head must parse again.
//!
//! Input: up to the first `\0`, edit lines (`-name` remove, `=name: value` set, `+name: value`
//! append; invalid lines skipped); the rest is the request head's field lines, one
//! `name: value` per line (invalid lines skipped), after `GET / HTTP/1.1`.

#![no_main]

#[path = "header_lines.rs"]
mod header_lines;

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::h1::{HeadLimits, Parsed, request, write};
use sluice::headers::edit::{self, Edit};
use sluice::headers::hop_by_hop;

const LIMITS: HeadLimits = HeadLimits { max_bytes: 1 << 20, max_fields: 10_000 };

fuzz_target!(|data: &[u8]| {
    let (edit_lines, field_lines) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let mut owned: Vec<(u8, HeaderName, HeaderValue)> = Vec::new();
    for line in edit_lines.split(|&b| b == b'\n') {
        let Some((&op, rest)) = line.split_first() else { continue };
        match op {
            b'-' => {
                if let Ok(name) = HeaderName::from_bytes(rest) {
                    owned.push((op, name, HeaderValue::from_static("")));
                }
            }
            b'=' | b'+' => {
                if let Some((name, value)) = header_lines::field(rest) {
                    owned.push((op, name, value));
                }
            }
            _ => {}
        }
    }
    let edits: Vec<Edit<'_>> = owned
        .iter()
        .map(|(op, name, value)| match op {
            b'-' => Edit::Remove(name),
            b'=' => Edit::Set(name, value),
            _ => Edit::Append(name, value),
        })
        .collect();

    let map = header_lines::map(field_lines);
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for (name, value) in &map {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut fields = Vec::new();
    let Ok(Parsed::Complete(parsed)) = request::parse(&head, LIMITS, &mut fields) else {
        // Fields the map holds that the wire refuses (repeated lengths and the like).
        return;
    };

    let mut out = Vec::new();
    write::request_line(&mut out, b"GET", b"/");
    let written = write::fields(&mut out, &parsed.fields, &edits, true);
    write::end(&mut out);
    let mut again = Vec::new();
    let back = match request::parse(&out, LIMITS, &mut again) {
        Ok(Parsed::Complete(back)) => back,
        // An edit may add a second length or a bare framing field the parser refuses; the
        // config never allows rules on those fields.
        Err(_) => return,
        Ok(Parsed::Partial) => panic!("a written head is complete"),
    };
    let mut streamed: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in back.fields.iter() {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        streamed.entry(name).or_default().push(value.to_vec());
    }
    assert_eq!(written.host, streamed.contains_key("host"));

    let mut mapped = HeaderMap::new();
    for (name, value) in parsed.fields.iter() {
        mapped
            .append(HeaderName::from_bytes(name).unwrap(), HeaderValue::from_bytes(value).unwrap());
    }
    hop_by_hop::strip(&mut mapped);
    edit::apply(edits.iter().copied(), &mut mapped);
    let expected: BTreeMap<String, Vec<Vec<u8>>> = header_lines::grouped(&mapped)
        .into_iter()
        .map(|(name, values)| (name, values.iter().map(|v| v.as_bytes().to_vec()).collect()))
        .collect();
    assert_eq!(streamed, expected);
});
