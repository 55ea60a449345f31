//! Header fields written as name/value pairs, for the cache's table tests.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header fields of a test case, as name/value pairs.
pub type Fields<'a> = &'a [(&'a str, &'a str)];

/// The pairs as a header map, in order, repeated names appended.
pub fn map(pairs: Fields<'_>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}
