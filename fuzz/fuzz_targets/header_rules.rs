//! Configured header rules: bytes -> `config::HeaderRules` + a request's headers ->
//! `headers::lookalike::drop_lookalikes` (owning the rules' names), then
//! `headers::rules::apply`. The result must equal a model: look-alikes of the rules' names
//! (equal once `_` is read as `-`, but not spelt the same) out, then remove, set, append.
//!
//! Input: one line each; `-name` is a remove rule, `=name: value` a set rule, `+name: value` an
//! append rule, and any other `name: value` line is a header the request arrived with.

#![no_main]

#[path = "header_lines.rs"]
mod header_lines;

use http::{HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use sluice::config::{HeaderRule, HeaderRules};
use sluice::headers::lookalike::{OwnedNames, drop_lookalikes};
use sluice::headers::rules;

fuzz_target!(|data: &[u8]| {
    let mut config = HeaderRules::default();
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let rule_line = line.get(1..).unwrap_or_default();
        let rule = || {
            header_lines::field(rule_line).map(|(name, value)| HeaderRule {
                template: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                name,
                value,
            })
        };
        match line.first() {
            Some(b'-') => config.remove.extend(HeaderName::from_bytes(rule_line).ok()),
            Some(b'=') => config.set.extend(rule()),
            Some(b'+') => config.append.extend(rule()),
            _ => {
                if let Some((name, value)) = header_lines::field(line) {
                    headers.append(name, value);
                }
            }
        }
    }

    let mut model = header_lines::grouped(&headers);
    let ruled: Vec<HeaderName> = rules::names(&config).cloned().collect();
    let folded = |name: &str| name.replace('_', "-");
    model.retain(|name, _| {
        let exact = ruled.iter().any(|r| r.as_str() == name);
        exact || ruled.iter().all(|r| folded(r.as_str()) != folded(name))
    });
    for name in &config.remove {
        model.remove(name.as_str());
    }
    for rule in &config.set {
        model.insert(rule.name.as_str().to_owned(), vec![rule.value.clone()]);
    }
    for rule in &config.append {
        model.entry(rule.name.as_str().to_owned()).or_default().push(rule.value.clone());
    }

    drop_lookalikes(&mut headers, &OwnedNames::new(&ruled));
    rules::apply(&config, &mut headers);

    for rule in &config.set {
        if !config.append.iter().any(|a| a.name == rule.name) {
            assert_eq!(headers.get_all(&rule.name).iter().count(), 1, "set {}", rule.name);
        }
    }
    for name in &config.remove {
        let re_added = config.set.iter().chain(&config.append).any(|r| r.name == *name);
        assert!(re_added || !headers.contains_key(name), "removed {name} survived");
    }
    assert_eq!(header_lines::grouped(&headers), model);
});
