//! A rewrite of a header section as a list of edits, applied in order: the one form of the
//! forwarding headers and header rules that both the general path (on a [`HeaderMap`]) and
//! the HTTP/1 fast path (while copying field lines from one buffer to another, see
//! `h1::write`) apply, so the two cannot disagree.
//!
//! Applied to a map, each edit is the `HeaderMap` call it names. Applied while copying, an
//! incoming line is dropped when any edit removes or sets its name, and each line an edit adds
//! is written after the copied ones unless a later edit removes or sets its name again. Both
//! give the same lines for each name in the same order; only the order *between* names may
//! differ, which carries no meaning (RFC 9110 §5.3).

use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// The edits of one head, on the stack: a request's rewrite is a dozen edits or fewer, so
/// making it costs no allocation.
pub type Edits<'a> = SmallVec<[Edit<'a>; 16]>;

/// One step of a header rewrite.
#[derive(Debug, Clone, Copy)]
pub enum Edit<'a> {
    /// Delete every line of the name (`HeaderMap::remove`).
    Remove(&'a HeaderName),
    /// Replace every line of the name with this one (`HeaderMap::insert`).
    Set(&'a HeaderName, &'a HeaderValue),
    /// Add a line (`HeaderMap::append`).
    Append(&'a HeaderName, &'a HeaderValue),
}

impl<'a> Edit<'a> {
    /// The field name the edit is about.
    pub fn name(&self) -> &'a HeaderName {
        match *self {
            Edit::Remove(name) | Edit::Set(name, _) | Edit::Append(name, _) => name,
        }
    }

    /// Whether the edit deletes the lines already there under its name.
    fn clears(&self) -> bool {
        matches!(self, Edit::Remove(_) | Edit::Set(..))
    }
}

/// Applies `edits`, in order, to `headers`.
pub fn apply<'a>(edits: impl IntoIterator<Item = Edit<'a>>, headers: &mut HeaderMap) {
    for edit in edits {
        match edit {
            Edit::Remove(name) => {
                headers.remove(name);
            }
            Edit::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            Edit::Append(name, value) => {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// Whether an incoming line named `name` (as received, any case) is dropped by `edits`.
pub fn drops(edits: &[Edit<'_>], name: &[u8]) -> bool {
    edits
        .iter()
        .any(|edit| edit.clears() && name.eq_ignore_ascii_case(edit.name().as_str().as_bytes()))
}

/// The lines `edits` add that no later edit deletes again, in order.
pub fn additions<'e, 'a>(
    edits: &'e [Edit<'a>],
) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + use<'e, 'a> {
    edits.iter().enumerate().filter_map(move |(at, edit)| {
        let (name, value) = match *edit {
            Edit::Set(name, value) | Edit::Append(name, value) => (name, value),
            Edit::Remove(_) => return None,
        };
        let later = edits.get(at + 1..).unwrap_or_default();
        let cleared = later.iter().any(|edit| edit.clears() && edit.name() == name);
        (!cleared).then_some((name, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Each name with its values in order: the view in which the two forms must agree.
    fn grouped<'a>(
        lines: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut grouped: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (name, value) in lines {
            grouped.entry(name.to_ascii_lowercase()).or_default().push(value.to_vec());
        }
        grouped
    }

    /// `edits` applied while copying `incoming`.
    fn streamed(incoming: &[(&str, &str)], edits: &[Edit<'_>]) -> BTreeMap<String, Vec<Vec<u8>>> {
        let kept = incoming
            .iter()
            .filter(|(name, _)| !drops(edits, name.as_bytes()))
            .map(|(name, value)| (*name, value.as_bytes()));
        let added = additions(edits).map(|(name, value)| (name.as_str(), value.as_bytes()));
        grouped(kept.chain(added))
    }

    /// `edits` applied to a map of `incoming`.
    fn mapped(incoming: &[(&str, &str)], edits: &[Edit<'_>]) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut headers = HeaderMap::new();
        for (name, value) in incoming {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        apply(edits.iter().copied(), &mut headers);
        grouped(headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())))
    }

    #[test]
    fn streaming_and_map_forms_agree() {
        let a = HeaderName::from_static("x-a");
        let b = HeaderName::from_static("x-b");
        let host = http::header::HOST;
        let one = HeaderValue::from_static("1");
        let two = HeaderValue::from_static("2");
        let incoming: &[(&str, &str)] =
            &[("Host", "client"), ("X-A", "in1"), ("x-a", "in2"), ("X-Keep", "k")];
        let cases: Vec<Vec<Edit<'_>>> = vec![
            vec![],
            vec![Edit::Set(&host, &one)],
            vec![Edit::Append(&a, &one), Edit::Append(&a, &two)],
            vec![Edit::Set(&a, &one), Edit::Append(&a, &two)],
            vec![Edit::Append(&a, &one), Edit::Set(&a, &two)],
            vec![Edit::Append(&b, &one), Edit::Remove(&b)],
            vec![Edit::Set(&host, &one), Edit::Remove(&host), Edit::Append(&host, &two)],
            vec![
                Edit::Remove(&a),
                Edit::Append(&b, &one),
                Edit::Set(&b, &two),
                Edit::Append(&a, &one),
            ],
        ];
        for edits in &cases {
            assert_eq!(streamed(incoming, edits), mapped(incoming, edits), "{edits:?}");
        }
    }
}
