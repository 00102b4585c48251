//! The library's floor plan (`docs/design.md`, "Module map"), checked on the source: every
//! `crate::` path a module names points to its own floor or below, and no set of modules
//! imports each other in a loop. Reads `src/` as text; no database.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The floor of each top-level module; `lib` (the front door) may name everything.
fn floor(top: &str) -> Option<u8> {
    Some(match top {
        "values" | "limits" => 0,
        "error" => 1,
        "model" => 2,
        "combiner" | "protocol" | "plan" | "observe" | "stats" | "schema" | "citus" | "tls" => 3,
        "driver" | "aio" => 4,
        "ops" => 5,
        "testkit" => 6,
        "lib" => 7,
        _ => return None,
    })
}

/// Every `.rs` file under `dir` as (module path, source without comments).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a file name").to_string();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}::"), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module =
                if name == "mod" { prefix.trim_end_matches("::").to_string() } else { format!("{prefix}{name}") };
            let text = fs::read_to_string(&path).expect("a source file");
            let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            out.insert(module, code);
        }
    }
}

/// The `crate::` paths named in `code`, with `use crate::{a, b::{c, d}}` groups expanded.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            expand("", &group[..end], &mut out);
        } else {
            let path: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            out.push(path.trim_end_matches(':').to_string());
        }
        rest = after;
    }
    out
}

fn expand(prefix: &str, group: &str, out: &mut Vec<String>) {
    let (mut depth, mut start) = (0, 0);
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once("::{") {
            Some((head, inner)) => expand(&format!("{prefix}{head}::"), inner.trim_end_matches('}'), out),
            None => out.push(format!("{prefix}{}", item.split(" as ").next().unwrap_or(item))),
        }
    }
}

/// The longest known module that `path` names.
fn resolve<'a>(path: &str, known: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|n| known.get_key_value(&parts[..n].join("::")).map(|(k, _)| k.as_str()))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut known = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut known);
    known
        .iter()
        .map(|(module, code)| {
            let deps = paths(code)
                .iter()
                .filter_map(|p| resolve(p, &known))
                .filter(|d| *d != module && !d.starts_with(&format!("{module}::")))
                .map(str::to_string)
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn every_module_imports_only_from_its_floor_or_below() {
    let graph = graph();
    assert!(graph.contains_key("driver::ledger") && graph.contains_key("protocol::transfer"), "{:?}", graph.keys());
    let mut upward = Vec::new();
    for (module, deps) in &graph {
        let own = floor(top(module)).unwrap_or_else(|| panic!("module {module} has no floor in this test"));
        for dep in deps {
            let theirs = floor(top(dep)).unwrap_or_else(|| panic!("module {dep} has no floor in this test"));
            if theirs > own {
                upward.push(format!("{module} (floor {own}) -> {dep} (floor {theirs})"));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a higher floor:\n{}", upward.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_loop() {
    let graph = graph();
    // A loop exists iff some module reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(m) = stack.pop() {
            assert!(m != start, "{start} reaches itself through its imports");
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
}

#[test]
fn the_parser_sees_grouped_and_nested_imports() {
    let code = "use crate::{a::b, c::{d, e::f}, g as h};\nlet x = crate::i::j(); // crate::k";
    let code: String = code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    assert_eq!(paths(&code), ["a::b", "c::d", "c::e::f", "g", "i::j"]);
}
