//! The crate's shape, checked: imports between top-level modules follow the data (no cycle), and
//! the jail and the actions import nothing upstream of them. Run it alone with
//! `cargo test --test tests layout`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names through `crate::`, its unit tests left out (a test may
/// reach anywhere to build its inputs).
fn references(text: &str) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b}`: the first path segment of every item at the top level.
            let mut depth = 0;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                if !c.is_alphanumeric() && c != '_' && !word.is_empty() {
                    found.insert(std::mem::take(&mut word));
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_alphanumeric() || c == '_' => {
                        if item_start {
                            word.push(c);
                        }
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Module name → the modules it imports, for every top-level module of src/.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(references(&text).into_iter().filter(|m| *m != top));
    }
    graph
}

#[test]
fn the_references_parser_sees_single_and_grouped_imports() {
    let text = "use crate::jail::Failure;\nuse crate::{address::show_target, metrics};\nfn f() { crate::state::x(); }\n#[cfg(test)]\nmod tests { use crate::control::proto; }";
    let found: Vec<String> = references(text).into_iter().collect();
    assert_eq!(found, ["address", "jail", "metrics", "state"]);
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let graph = graph();
    assert!(graph.len() > 10, "src/ not found: {graph:?}");
    // Depth-first search; a module met again while on the path closes a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(module.to_string());
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_jail_and_the_actions_import_nothing_upstream() {
    let graph = graph();
    // Downstream of the jail: the state and the actions; leaves anyone may use: metrics,
    // address, evidence (the lines a ban keeps, the tail stream) and duration (the longest
    // duration). Fleet sits beside action (the jail and the state know it as a sink of
    // committed bans and a source of remote ones).
    for (module, allowed) in [
        (
            "jail",
            &[
                "action", "state", "fleet", "metrics", "address", "evidence", "duration",
            ][..],
        ),
        ("action", &["metrics", "address", "evidence"][..]),
        (
            "state",
            &["action", "fleet", "metrics", "address", "evidence"][..],
        ),
        ("evidence", &[][..]),
        ("duration", &[][..]),
    ] {
        let imports = graph.get(module).cloned().unwrap_or_default();
        let upstream: Vec<&String> = imports
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            upstream.is_empty(),
            "src/{module} imports {upstream:?}, which are not downstream of it or leaves"
        );
    }
}
