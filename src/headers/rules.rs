//! Applying configured header rules ([`HeaderRules`]): remove, then set, then append.

use http::{HeaderMap, HeaderName};

use crate::config::HeaderRules;
use crate::headers::edit::{self, Edit, Edits};

/// Applies `rules` to `headers`. Removal runs first so a rule can replace a field the client
/// sent; `set` replaces every line of a name with one; `append` adds a line.
pub fn apply(rules: &HeaderRules, headers: &mut HeaderMap) {
    edit::apply(edits(rules), headers);
}

/// `rules` as the edits [`apply`] makes, in order (for rewriting a head while copying it).
pub fn edits(rules: &HeaderRules) -> impl Iterator<Item = Edit<'_>> {
    let removed = rules.remove.iter().map(Edit::Remove);
    let set = rules.set.iter().map(|rule| Edit::Set(&rule.name, &rule.value));
    let appended = rules.append.iter().map(|rule| Edit::Append(&rule.name, &rule.value));
    removed.chain(set).chain(appended)
}

/// Appends [`edits`] of `rules` to `out`, one list at a time: for every request, and most
/// lists are empty.
pub fn push_edits<'a>(rules: &'a HeaderRules, out: &mut Edits<'a>) {
    for name in &rules.remove {
        out.push(Edit::Remove(name));
    }
    for rule in &rules.set {
        out.push(Edit::Set(&rule.name, &rule.value));
    }
    for rule in &rules.append {
        out.push(Edit::Append(&rule.name, &rule.value));
    }
}

/// Every name `rules` removes, sets or appends.
pub fn names(rules: &HeaderRules) -> impl Iterator<Item = &HeaderName> {
    let written = rules.set.iter().chain(&rules.append).map(|rule| &rule.name);
    rules.remove.iter().chain(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderRule;
    use http::{HeaderName, HeaderValue};

    fn rule(name: &str, value: &str) -> HeaderRule {
        HeaderRule {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value: HeaderValue::from_str(value).unwrap(),
            template: value.to_owned(),
        }
    }

    #[test]
    fn remove_then_set_then_append() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", HeaderValue::from_static("client key"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        headers.append("x-debug", HeaderValue::from_static("on"));
        let rules = HeaderRules {
            remove: vec![HeaderName::from_static("x-debug")],
            set: vec![rule("authorization", "Bearer server key"), rule("x-multi", "only")],
            append: vec![rule("x-multi", "extra"), rule("x-new", "n")],
        };
        apply(&rules, &mut headers);
        assert_eq!(headers["authorization"], "Bearer server key");
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["only", "extra"]);
        assert_eq!(headers["x-new"], "n");
        assert!(headers.get("x-debug").is_none());
    }
}
