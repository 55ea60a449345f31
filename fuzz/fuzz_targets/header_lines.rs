//! Turning fuzz bytes into header fields: one `name: value` per line, invalid lines skipped.
//! Shared by the header targets with `#[path]`, so each target stays one file of checks.

// Each target compiles this file on its own and uses only some of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Splits `line` at its first `:` into a field name and a value with optional whitespace
/// trimmed (RFC 9110 §5.5); `None` when either part is not valid.
pub fn field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = line.split_at(colon);
    let value = value.get(1..)?.trim_ascii();
    Some((HeaderName::from_bytes(name).ok()?, HeaderValue::from_bytes(value).ok()?))
}

/// Every valid `name: value` line of `data`, in order, duplicates kept.
pub fn map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in data.split(|&b| b == b'\n').filter_map(field) {
        headers.append(name, value);
    }
    headers
}

/// Each field name with its values in order. (A `HeaderMap` may reorder *names* when one is
/// removed, never the values of one name, so this is the order-insensitive view to compare.)
pub fn grouped(headers: &HeaderMap) -> BTreeMap<String, Vec<HeaderValue>> {
    headers
        .keys()
        .map(|name| (name.as_str().to_owned(), headers.get_all(name).iter().cloned().collect()))
        .collect()
}
