//! The arrows ARCHITECTURE.md draws, held by a test: no two top-level modules of the core
//! library import each other, even through a third (`config` → `data` → `config`), and no two
//! files of one folder do (`run.rs` → `summary.rs` → `run.rs`). Read from the source: every
//! `crate::a::…` and `super::b` outside `#[cfg(test)]` code is an arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` part (tests come last).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The names a path prefix reaches: `prefix::name` and each name of `prefix::{a, b::c}`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Groups of nodes that reach each other (strongly connected, more than one node).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = edges.keys().map(|n| (n, reach(n))).collect();
    let mut groups: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for (node, from_node) in &reached {
        let group: BTreeSet<String> = from_node
            .iter()
            .filter(|other| reached.get(other).is_some_and(|back| back.contains(*node)))
            .cloned()
            .chain([(*node).clone()])
            .collect();
        if group.len() > 1 {
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

#[test]
fn no_two_modules_or_sibling_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let top_modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.file_stem().is_some_and(|s| s != "lib"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> =
            relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        if parts == ["lib"] {
            continue;
        }
        let code = code(file);
        let top = parts[0].clone();
        let used = names_after(&code, "crate::");
        for other in used.iter().filter(|m| top_modules.contains(*m) && **m != top) {
            modules.entry(top.clone()).or_default().insert(other.clone());
        }
        // Files of one folder: `super::x` (or `crate::folder::x`) naming a sibling file.
        if parts.len() >= 2 && parts.last().unwrap() != "mod" {
            let folder = file.parent().unwrap();
            let me = format!("{}/{}", parts[..parts.len() - 1].join("/"), parts.last().unwrap());
            let mut named = names_after(&code, "super::");
            if parts.len() == 2 {
                named.extend(names_after(&code, &format!("crate::{}::", parts[0])));
            }
            for sibling in named {
                let is_file = folder.join(format!("{sibling}.rs")).is_file() || folder.join(&sibling).is_dir();
                if is_file && sibling != *parts.last().unwrap() {
                    let other = format!("{}/{}", parts[..parts.len() - 1].join("/"), sibling);
                    siblings.entry(me.clone()).or_default().insert(other);
                }
            }
        }
    }
    let module_circles = circles(&modules);
    let file_circles = circles(&siblings);
    assert!(modules.values().map(BTreeSet::len).sum::<usize>() > 20, "the arrows were read: {modules:?}");
    assert!(siblings.values().map(BTreeSet::len).sum::<usize>() > 20, "the arrows were read: {siblings:?}");
    assert!(
        module_circles.is_empty() && file_circles.is_empty(),
        "import circles between top-level modules: {module_circles:?}; between files of one folder: {file_circles:?}"
    );
}

#[test]
fn circles_are_found_through_a_third_module() {
    let edges: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")].iter().fold(BTreeMap::new(), |mut edges, (from, to)| {
            edges.entry(from.to_string()).or_insert_with(BTreeSet::new).insert(to.to_string());
            edges
        });
    let found = circles(&edges);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(names_after("use super::{run::x, summary};\nlet y = crate::data::z();", "super::").contains("run"));
    assert!(names_after("use super::{run::x, summary};", "super::").contains("summary"));
}
