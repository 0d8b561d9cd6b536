//! The rules ARCHITECTURE.md states, held by tests. Between crates cargo holds the arrows;
//! inside each crate no two top-level modules import each other, even through a third
//! (`config` → `data` → `config`), and no two files of one folder do (`run.rs` →
//! `summary.rs` → `run.rs`). Read from the source: every `crate::a::…` and `super::b` outside
//! `#[cfg(test)]` code is an arrow. The sizes a reader can hold: no library crate over 8,000
//! lines of non-test code, no source file over 400 lines, no function over 80. And `divide`,
//! which never touches a tensor, links no libtorch.

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

/// Every crate's `src` folder in the workspace, and the root package's.
fn source_folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    folders.push(root.join("src"));
    folders.sort();
    folders
}

/// A crate's arrows between its top-level modules, and between files of one folder.
type Arrows = BTreeMap<String, BTreeSet<String>>;

fn arrows_of_crate(src: &Path) -> (Arrows, Arrows) {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let top_modules: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.file_stem().is_some_and(|s| s != "lib"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    let mut modules = Arrows::new();
    let mut siblings = Arrows::new();
    for file in &files {
        let relative = file.strip_prefix(src).unwrap();
        let parts: Vec<String> =
            relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let code = code(file);
        let top = parts[0].clone();
        let mut used = names_after(&code, "crate::");
        // In a file at the crate's top, `super::x` is `crate::x`.
        if parts.len() == 1 {
            used.extend(names_after(&code, "super::"));
        }
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
    (modules, siblings)
}

#[test]
fn no_two_modules_or_sibling_files_import_each_other() {
    let (mut module_arrows, mut file_arrows, mut problems) = (0, 0, Vec::new());
    for src in source_folders() {
        let (modules, siblings) = arrows_of_crate(&src);
        module_arrows += modules.values().map(BTreeSet::len).sum::<usize>();
        file_arrows += siblings.values().map(BTreeSet::len).sum::<usize>();
        let (module_circles, file_circles) = (circles(&modules), circles(&siblings));
        if !module_circles.is_empty() || !file_circles.is_empty() {
            problems.push(format!(
                "{}: between top-level modules {module_circles:?}; between files of one folder {file_circles:?}",
                src.display()
            ));
        }
    }
    assert!(module_arrows > 40 && file_arrows > 20, "the arrows were read: {module_arrows} and {file_arrows}");
    assert!(problems.is_empty(), "import circles:\n{}", problems.join("\n"));
}

/// Lines before a file's `#[cfg(test)]` part.
fn non_test_lines(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n#[cfg(test)]").next().unwrap_or_default().lines().count()
}

/// Functions longer than `limit` lines, as `name (lines)`: from a `fn` line to the closing
/// brace at the same indentation, as rustfmt lays them out.
fn long_functions(text: &str, limit: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "unsafe fn ",
            "pub unsafe fn ",
            "const fn ",
            "pub const fn ",
        ]
        .iter()
        .find_map(|prefix| trimmed.strip_prefix(prefix));
        let Some(signature) = signature else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(length) = lines[start..].iter().position(|l| *l == closing) {
            if length + 1 > limit {
                let name: String = signature.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                found.push(format!("{name} ({} lines)", length + 1));
            }
        }
    }
    found
}

#[test]
fn crates_files_and_functions_stay_readable() {
    let mut problems = Vec::new();
    for src in source_folders() {
        let mut files = Vec::new();
        source_files(&src, &mut files);
        let crate_lines: usize = files.iter().map(|f| non_test_lines(f)).sum();
        if crate_lines > 8_000 {
            problems.push(format!("{}: {crate_lines} lines of non-test code (at most 8,000)", src.display()));
        }
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let lines = text.lines().count();
            if lines > 400 {
                problems.push(format!("{}: {lines} lines (at most 400)", file.display()));
            }
            for function in long_functions(&text, 80) {
                problems.push(format!("{}: fn {function} (at most 80)", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "too big to read at once:\n{}", problems.join("\n"));
}

#[test]
fn long_functions_are_measured_to_their_closing_brace() {
    let body = "    let x = 1;\n".repeat(80);
    let text = format!("impl A {{\n    pub fn long(&self) {{\n{body}    }}\n\n    fn short() {{}}\n}}\n");
    assert_eq!(long_functions(&text, 80), ["long (82 lines)"]);
    assert!(long_functions(&text, 82).is_empty());
    assert!(long_functions("fn declared();\n", 0).is_empty());
}

/// `divide` splits a CSV and hashes images: linking libtorch would cost every run its load
/// time and tie the tool to a libtorch install it does not use.
#[test]
fn divide_links_no_libtorch() {
    let divide = imgtype_testkit::binary(env!("CARGO_BIN_EXE_divide"));
    let output = std::process::Command::new("readelf").arg("-d").arg(&divide).output().expect("readelf runs");
    assert!(output.status.success(), "readelf -d {}", divide.display());
    let dynamic = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "readelf listed what divide needs: {dynamic}");
    let torch: Vec<&&str> = needed.iter().filter(|l| l.contains("torch") || l.contains("libc10")).collect();
    assert!(torch.is_empty(), "divide links libtorch: {torch:?}");
    let train = imgtype_testkit::binary(env!("CARGO_BIN_EXE_train"));
    let output = std::process::Command::new("readelf").arg("-d").arg(&train).output().expect("readelf runs");
    assert!(String::from_utf8_lossy(&output.stdout).contains("libtorch_cpu"), "the check sees libtorch where it is");
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
