//! The module layout: imports point one way. Every production file under `src/` is read, the
//! modules it names (`crate::…`, `super::…`, `icemaint::…` in the binary) are collected, and
//! two rules are checked:
//!
//! - each module imports only modules of a lower layer in [`LAYERS`] (or its own family, e.g.
//!   `server::maintenance` → `server::api`), so the structure reads top-down;
//! - no module imports one that imports it, directly or through others (no cycle), at the
//!   granularity of files.
//!
//! Unit-test sections (`#[cfg(test)]` to the end of a file, and `tests.rs` files) may reach
//! anywhere and are left out; so are comments, where doc links name modules freely.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module belongs to the layer of the longest entry that is a prefix of its
/// path; an entry names a family (`server` covers `server::api`, `server::status`, ...).
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["bench"],
    &["demo"],
    &["runtime"],
    &["server", "scheduler"],
    &["dispatch"],
    &["daemon"],
    &["ops", "inspect"],
    // Spark as a compaction engine: submits and supervises a rewrite icemaint planned.
    &["spark"],
    &["compaction", "maintenance"],
    &["commit"],
    &["catalog", "jobs"],
    &["policy"],
    // The Spark option vocabulary and the `where` filter are pure: the policy validates its
    // `[compaction]` section with them.
    &["compaction::options"],
    &["compaction::filter"],
    // A policy's health triggers (parsed with the policy) and the budget across tables: pure,
    // evaluated by the scheduler.
    &["trigger", "budget"],
    &["config"],
    // The lease's fencing token: checked by the engines, kept by the job lock, read from the store.
    &["fence"],
    &["store", "telemetry", "crashpoint"],
    &["tomlcheck", "util"],
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for (i, layer) in LAYERS.iter().enumerate() {
        for entry in *layer {
            let matches = module == *entry || module.starts_with(&format!("{entry}::"));
            if matches && best.is_none_or(|(_, b)| entry.len() > b.len()) {
                best = Some((i, entry));
            }
        }
    }
    best
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/main.rs` → `main`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src_dir()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The production part of a file: up to its `#[cfg(test)]` section, comments removed.
fn production_code(text: &str) -> String {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths named after `prefix` (`crate::`, `super::`, `icemaint::`), as segment lists; a
/// brace group (`super::{api, status}`) gives one path per item.
fn named_paths(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(ident) {
            continue; // e.g. `my_crate::`
        }
        let rest = &code[at + prefix.len()..];
        let mut segs = Vec::new();
        let mut r = rest;
        loop {
            let end = r.find(|c: char| !ident(c)).unwrap_or(r.len());
            if end == 0 {
                break;
            }
            segs.push(r[..end].to_string());
            r = &r[end..];
            match r.strip_prefix("::") {
                Some(next) => r = next,
                None => break,
            }
        }
        if let Some(group) = r.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let first: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                if !first.is_empty() {
                    out.push(segs.iter().cloned().chain([first]).collect());
                }
            }
        } else if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// The longest known module that `segments` starts with.
fn resolve(segments: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Every production module and the modules it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.retain(|p| {
        p.file_name()
            .is_some_and(|n| n != "tests.rs" && n != "lib.rs")
    });
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).collect();
    let mut graph = BTreeMap::new();
    for path in &files {
        let module = module_of(path);
        let code = production_code(&std::fs::read_to_string(path).unwrap());
        // `super` of `a::b` (a/b.rs) is `a`; of `a` (a/mod.rs) it is the crate.
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
        let parent: Vec<String> = module
            .split("::")
            .map(String::from)
            .take(module.split("::").count() - usize::from(!is_mod_rs))
            .collect();
        let mut named: Vec<Vec<String>> = Vec::new();
        named.extend(named_paths(&code, "crate::"));
        named.extend(named_paths(&code, "icemaint::"));
        for p in named_paths(&code, "super::") {
            named.push(parent.iter().cloned().chain(p).collect());
        }
        // A module's own children (`mod x;`) are its business, not imports.
        let mut deps = BTreeSet::new();
        for segs in named {
            if let Some(dep) = resolve(&segs, &modules)
                && dep != module
                && !dep.starts_with(&format!("{module}::"))
            {
                deps.insert(dep);
            }
        }
        graph.insert(module, deps);
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<String> = import_graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in tests/it/layout.rs: {missing:?}"
    );
}

#[test]
fn imports_point_down() {
    let mut upward = Vec::new();
    for (module, deps) in import_graph() {
        let Some((layer, family)) = layer_of(&module) else {
            continue;
        };
        for dep in deps {
            let Some((dep_layer, dep_family)) = layer_of(&dep) else {
                continue;
            };
            let down = dep_layer > layer || (dep_layer == layer && dep_family == family);
            if !down {
                upward.push(format!(
                    "{module} (layer {layer}) imports {dep} (layer {dep_layer})"
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let graph = import_graph();
    // Depth-first search; a back edge closes a cycle, reported as its path.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = stack.iter().position(|s| s == m) {
            cycles.push(format!("{} -> {m}", stack[i..].join(" -> ")));
            return;
        }
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let (mut stack, mut done, mut cycles) = (Vec::new(), BTreeSet::new(), Vec::new());
    for m in graph.keys() {
        visit(m, &graph, &mut stack, &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checks above see what they should: the parser finds each kind of reference.
#[test]
fn references_are_found() {
    let code = production_code(
        "use crate::daemon::Context;\nuse super::{api, ApiError};\n// crate::cli in a comment\n\
         let x = icemaint::cli::check(p);\n#[cfg(test)]\nuse crate::runtime;\n",
    );
    assert_eq!(
        named_paths(&code, "crate::"),
        vec![vec!["daemon".to_string(), "Context".to_string()]]
    );
    assert_eq!(
        named_paths(&code, "super::"),
        vec![vec!["api".to_string()], vec!["ApiError".to_string()]]
    );
    assert_eq!(
        named_paths(&code, "icemaint::"),
        vec![vec!["cli".to_string(), "check".to_string()]]
    );
    let graph = import_graph();
    assert!(graph["server::maintenance"].contains("server::api"));
    assert!(graph["main"].contains("cli"));
    assert!(graph["scheduler"].contains("dispatch"));
}
