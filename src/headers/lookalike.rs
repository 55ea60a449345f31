//! Header fields that differ from a name sluice writes only by `_` for `-`.
//!
//! CGI (RFC 3875 §4.1.18) and the servers modelled on it (WSGI, PHP-FPM, Rack) expose
//! request headers as variables whose names fold `-` to `_`: `X-Api-Key` and `X_Api_Key` are
//! both `HTTP_X_API_KEY`, and which one wins is up to the server. When a route's rules inject
//! `x-api-key`, or sluice writes `X-Forwarded-For`, a client could send `X_Api_Key` or
//! `X_Forwarded_For` beside it and have the origin read the client's value instead of
//! sluice's. [`drop_lookalikes`] removes such fields before sluice writes its own.

use http::{HeaderMap, HeaderName};

/// The names sluice writes on a route's requests (its header rules, the forwarding headers,
/// the request id), folded for comparison: a client field that folds to one of them without
/// being it is dropped. Built once per route, when the configuration is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedNames {
    /// The names with `_` folded to `-`, without duplicates; only names that have a `-` or a
    /// `_` at all, since a name with neither has no look-alike.
    folded: Vec<Box<[u8]>>,
    /// The owned names as written, which are never look-alikes of each other.
    exact: Vec<HeaderName>,
    /// Whether some owned name has a `_`: then a client name with only `-` can be a
    /// look-alike too, and every name must be compared.
    underscored: bool,
}

impl OwnedNames {
    /// The folded set of `names`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a HeaderName>) -> OwnedNames {
        let mut owned = OwnedNames::default();
        for name in names {
            let bytes = name.as_str().as_bytes();
            if !bytes.iter().any(|b| *b == b'-' || *b == b'_') {
                continue;
            }
            owned.underscored |= bytes.contains(&b'_');
            if !owned.exact.contains(name) {
                owned.exact.push(name.clone());
            }
            let folded: Box<[u8]> = bytes.iter().map(|b| fold(*b)).collect();
            if !owned.folded.contains(&folded) {
                owned.folded.push(folded);
            }
        }
        owned
    }

    /// Whether `name` folds to an owned name without being spelt exactly like it: the owned
    /// name itself is the rules' business, never a look-alike.
    fn is_lookalike(&self, name: &HeaderName) -> bool {
        let bytes = name.as_str().as_bytes();
        if !self.underscored && !bytes.contains(&b'_') {
            return false;
        }
        let folds_to = |owned: &[u8]| {
            owned.len() == bytes.len() && owned.iter().zip(bytes).all(|(o, b)| *o == fold(*b))
        };
        self.folded.iter().any(|owned| folds_to(owned)) && !self.exact.contains(name)
    }
}

impl OwnedNames {
    /// [`drop_lookalikes`]'s test for one field name as received (any case): whether a line
    /// named `name` is a look-alike to drop.
    pub fn drops(&self, name: &[u8]) -> bool {
        if self.folded.is_empty() || (!self.underscored && !name.contains(&b'_')) {
            return false;
        }
        let folds_to = |owned: &[u8]| {
            owned.len() == name.len()
                && owned.iter().zip(name).all(|(o, b)| *o == fold(b.to_ascii_lowercase()))
        };
        let exact = |owned: &HeaderName| name.eq_ignore_ascii_case(owned.as_str().as_bytes());
        self.folded.iter().any(|owned| folds_to(owned)) && !self.exact.iter().any(exact)
    }
}

/// `_` as CGI sees it: the same as `-`.
fn fold(byte: u8) -> u8 {
    if byte == b'_' { b'-' } else { byte }
}

/// Removes every field of `headers` whose name folds to one of `owned` (`_` and `-` being
/// the same) but is not spelt exactly like one of them. A request without `_` in any field
/// name is only scanned, never changed or copied.
pub fn drop_lookalikes(headers: &mut HeaderMap, owned: &OwnedNames) {
    if owned.folded.is_empty() {
        return;
    }
    while let Some(name) = headers.keys().find(|name| owned.is_lookalike(name)).cloned() {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn names(list: &[&str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()).collect()
    }

    fn after(owned: &[&str], sent: &[&str]) -> Vec<String> {
        let exact = names(owned);
        let set = OwnedNames::new(&exact);
        let mut headers = HeaderMap::new();
        for name in sent {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.append(name, HeaderValue::from_static("v"));
        }
        drop_lookalikes(&mut headers, &set);
        headers.keys().map(|n| n.as_str().to_owned()).collect()
    }

    #[test]
    fn lookalikes_table() {
        let forwarding = ["x-forwarded-for", "x-forwarded-proto", "x-request-id"];
        for (owned, sent, kept) in [
            // Underscores for dashes, in any mix and case, are dropped...
            (&["x-api-key"][..], &["X_Api_Key"][..], &[][..]),
            (&["x-api-key"], &["x_api-key", "x-api_key"], &[]),
            (&forwarding, &["X_Forwarded_For", "x_forwarded_proto", "X_Request_Id"], &[]),
            // ...the owned name itself, and other names, are not.
            (
                &["x-api-key"],
                &["x-api-key", "x-api-keys", "x_api_key_2"],
                &["x-api-key", "x-api-keys", "x_api_key_2"],
            ),
            (
                &["x-api-key"],
                &["xapikey", "x.api.key", "x-api-kex"],
                &["xapikey", "x.api.key", "x-api-kex"],
            ),
            // An owned name spelt with `_` claims its `-` spelling too.
            (&["x_tenant"], &["x-tenant", "x_tenant"], &["x_tenant"]),
            // Names without `-` or `_` have no look-alikes; no owned names, nothing dropped.
            (
                &["authorization"],
                &["authorization", "authorisation"],
                &["authorization", "authorisation"],
            ),
            (&[], &["x_api_key"], &["x_api_key"]),
        ] {
            assert_eq!(after(owned, sent), kept, "owned {owned:?}, sent {sent:?}");
            // The test on names as received (the fast path's) agrees, in any case.
            let set = OwnedNames::new(&names(owned));
            let by_bytes: Vec<String> = sent
                .iter()
                .flat_map(|name| [name.to_string(), name.to_ascii_uppercase()])
                .filter(|name| !set.drops(name.as_bytes()))
                .map(|name| name.to_ascii_lowercase())
                .collect();
            let doubled: Vec<String> =
                kept.iter().flat_map(|name| [name.to_string(), name.to_string()]).collect();
            assert_eq!(by_bytes, doubled, "owned {owned:?}, sent {sent:?}");
        }
    }

    #[test]
    fn every_line_of_a_lookalike_goes() {
        let exact = names(&["x-api-key"]);
        let set = OwnedNames::new(&exact);
        let mut headers = HeaderMap::new();
        headers.append("x_api_key", HeaderValue::from_static("1"));
        headers.append("x_api_key", HeaderValue::from_static("2"));
        headers.append("x-api_key", HeaderValue::from_static("3"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        drop_lookalikes(&mut headers, &set);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["accept"], "*/*");
    }

    #[test]
    fn duplicates_fold_once() {
        let exact = names(&["x-a-b", "x_a_b", "x-a-b"]);
        let set = OwnedNames::new(&exact);
        assert_eq!(set.folded.len(), 1);
        assert!(set.underscored);
    }
}
