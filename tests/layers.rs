//! The module graph stays a DAG, and the layers import only downwards.
//!
//! Reads every file under `src/`, takes the `crate::`, `super::` and `self::` paths it names
//! outside its unit tests, resolves each to the deepest module that exists, and checks:
//!
//! - no cycle between files, and none between top-level modules;
//! - the leaves, and `upstream`, never import the request path (`proxy`), the server, the
//!   client-connection layer (`downstream`), the admin listener or the reloader;
//! - `proxy` reaches the connection only through `downstream`, never `server`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules below the request path: they may import each other (without cycles), never these.
const LEAVES: &[&str] = &[
    "body", "cache", "calendar", "config", "error", "gateway", "h1", "headers", "observe",
    "policy", "relay", "shutdown", "state", "tls", "uri",
];
/// What no leaf, and not `upstream` either, may import: the request path and everything above.
const ABOVE_LEAVES: &[&str] = &["proxy", "server", "downstream", "admin", "reload"];

/// Every `.rs` file under `dir`, with its module path (`proxy::log`, `` for lib.rs).
fn modules(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(dir).expect("below src").with_extension("");
                let mut parts: Vec<String> =
                    relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                if parts == ["lib"] || parts == ["main"] {
                    parts.clear();
                }
                found.insert(parts.join("::"), path);
            }
        }
    }
    found
}

/// The code of a file without its unit tests (everything from the first `#[cfg(test)]`).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    // Comments may name paths they do not import.
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths named in `code`, absolute from the crate root (`crate::a::b` becomes `a::b`),
/// with `use` groups (`crate::a::{b, c::d}`) expanded.
fn named_paths(code: &str, module: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut skip_to = 0;
    // Stepping by character: a byte offset inside a multi-byte character is not a place to
    // slice at (the prefixes and path characters themselves are all ASCII).
    for (i, _) in code.char_indices() {
        if i < skip_to {
            continue;
        }
        let rest = &code[i..];
        let starts_word =
            code[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let prefix = ["crate::", "super::", "self::"].into_iter().find(|p| rest.starts_with(p));
        if let (Some(prefix), true) = (prefix, starts_word) {
            let (base, consumed) = relative_base(rest, prefix, module);
            let (mut found, used) = expand(&code[i + consumed..]);
            for path in &mut found {
                *path = join(&base, path);
            }
            if found.is_empty() {
                found.push(base);
            }
            paths.extend(found);
            skip_to = i + consumed + used.max(1);
        }
    }
    paths
}

/// The module a `crate::`/`super::`/`self::` prefix starts from, and the bytes it took.
fn relative_base(text: &str, prefix: &str, module: &str) -> (String, usize) {
    let mut base: Vec<&str> =
        if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let mut consumed = 0;
    match prefix {
        "crate::" => {
            base.clear();
            consumed = prefix.len();
        }
        "self::" => consumed = prefix.len(),
        _ => {
            while text[consumed..].starts_with("super::") {
                base.pop();
                consumed += "super::".len();
            }
        }
    }
    (base.join("::"), consumed)
}

/// The paths written at the start of `text`: one `a::b::c`, or a `{...}` group of them.
fn expand(text: &str) -> (Vec<String>, usize) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (is_ident(bytes[i]) || bytes[i] == b':') {
        i += 1;
    }
    let head = text[..i].trim_end_matches(':').to_owned();
    if i < bytes.len() && bytes[i] == b'{' && text[..i].ends_with("::") {
        let mut depth = 0;
        let mut end = i;
        for (at, byte) in bytes.iter().enumerate().skip(i) {
            match byte {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &text[i + 1..end];
        let mut found = Vec::new();
        for item in split_top_level(inner) {
            let item = item.trim();
            let item = match item.contains('{') {
                true => item,
                false => item.split(" as ").next().unwrap_or(item).trim(),
            };
            if item.is_empty() || item == "self" {
                found.push(head.clone());
                continue;
            }
            let (inner_paths, _) = expand(item);
            found.extend(inner_paths.into_iter().map(|p| join(&head, &p)));
        }
        return (found, end + 1);
    }
    (vec![head], i)
}

/// Splits a `use` group's items at its top-level commas.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}::{rest}"),
    }
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The deepest existing module a path names.
fn resolve<'a>(path: &str, modules: &'a BTreeMap<String, PathBuf>) -> Option<&'a str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|k| segments[..k].join("::"))
        .find_map(|candidate| modules.get_key_value(&candidate).map(|(key, _)| key.as_str()))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Strongly connected sets of more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let targets: Vec<&'a str> = state
            .edges
            .get(node)
            .map(|set| set.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for target in targets {
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// File-level and top-level import edges of the crate in `src`.
fn graph(src: &Path) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, BTreeSet<String>>) {
    let modules = modules(src);
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &modules {
        if module.is_empty() {
            continue; // lib.rs and main.rs sit above everything.
        }
        let entry = files.entry(module.clone()).or_default();
        for named in named_paths(&code_of(path), module) {
            let Some(target) = resolve(&named, &modules) else { continue };
            if target.is_empty() || target == module {
                continue;
            }
            entry.insert(target.to_owned());
            if top(target) != top(module) {
                tops.entry(top(module).to_owned()).or_default().insert(top(target).to_owned());
            }
        }
    }
    (files, tops)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (files, tops) = graph(&src());
    assert!(files.len() > 40, "found only {} modules: is src/ being read?", files.len());
    assert_eq!(cycles(&tops), Vec::<Vec<String>>::new(), "top-level modules import each other");
    assert_eq!(cycles(&files), Vec::<Vec<String>>::new(), "files import each other");
}

#[test]
fn layers_import_only_downwards() {
    let (_, tops) = graph(&src());
    let mut wrong = Vec::new();
    for (from, targets) in &tops {
        for to in targets {
            let leaf_upwards =
                LEAVES.contains(&from.as_str()) && ABOVE_LEAVES.contains(&to.as_str());
            let upstream_upwards = from == "upstream" && ABOVE_LEAVES.contains(&to.as_str());
            let proxy_to_server =
                from == "proxy" && ["server", "admin", "reload"].contains(&to.as_str());
            if leaf_upwards || upstream_upwards || proxy_to_server {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that run back up the layers: {wrong:?}");
}

#[test]
fn the_checker_sees_paths_groups_and_cycles() {
    let paths = named_paths(
        "use crate::a::{b, c::{d, e as f}, self};\nlet x = super::g::h(); crate::i::j;",
        "k::l",
    );
    assert_eq!(paths, ["a::b", "a::c::d", "a::c::e", "a", "k::g::h", "i::j"]);
    let paths = named_paths("let s = \"§ é\"; crate::m::n();", "");
    assert_eq!(paths, ["m::n"]);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("a".into());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycles(&edges), [["a".to_owned(), "b".to_owned()]]);
}
