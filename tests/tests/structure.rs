//! The workspace's modules import each other in one direction: no two
//! rooms (files of a crate's source) that need each other, directly or
//! round a loop. A loop makes neither side understandable or movable
//! without the other. A module and its own submodules are one room here:
//! children add to the type their parent owns (`use super::Store`) and the
//! parent calls them, as Rust's module tree intends.
//!
//! Read from the source as text: `crate::…` and `super::…` paths (grouped
//! `use` lists included) and paths through a child module the file
//! declares, each resolved to the longest module path that is a file.
//! Inline test modules are left out (their `super` is the file itself), and
//! so is the crate root, which every binary's `main.rs` ties to everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 6] = ["common", "producer", "importer", "bench", "testkit", "tests"];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// A crate's source files by module path (`[]` for the root).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut found = BTreeMap::new();
    for path in rust_files(src) {
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut module: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            module.pop();
        }
        if module.first().is_some_and(|m| m == "bin") {
            continue; // each binary is a crate of its own
        }
        found.insert(module, path);
    }
    found
}

/// The code of a source file: what comes before its inline test module.
fn code_of(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap()
}

/// The module paths `text` names, as written: `crate::a::b`, `super::x`,
/// and `child::y` for a `mod child;` it declares, grouped lists opened.
fn paths_named(text: &str) -> Vec<(String, Vec<String>)> {
    let code: String = code_of(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub ")
                .or_else(|| l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)
        })
        .collect();
    let mut named = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let ident = |i: &mut usize| -> String {
        let start = *i;
        while *i < bytes.len() && (bytes[*i].is_alphanumeric() || bytes[*i] == '_') {
            *i += 1;
        }
        bytes[start..*i].iter().collect()
    };
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let mut j = i;
        let first = ident(&mut j);
        let anchored = first == "crate" || first == "super" || children.contains(&first);
        if !boundary || first.is_empty() || !anchored || !code[..].chars().skip(j).take(2).eq("::".chars()) {
            i = if j > i { j } else { i + 1 };
            continue;
        }
        // Segments after the anchor; a `{` opens a list of paths.
        let mut segments = Vec::new();
        let mut k = j;
        while k + 1 < bytes.len() && bytes[k] == ':' && bytes[k + 1] == ':' {
            k += 2;
            if bytes.get(k) == Some(&'{') {
                let close = (k..bytes.len()).find(|&c| bytes[c] == '}').unwrap_or(bytes.len());
                let inside: String = bytes[k + 1..close].iter().collect();
                for item in inside.split(',') {
                    let item: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    let mut full = segments.clone();
                    full.extend(item);
                    named.push((first.clone(), full));
                }
                k = close;
                segments.clear();
                break;
            }
            let segment = ident(&mut k);
            if segment.is_empty() {
                break;
            }
            segments.push(segment);
        }
        if !segments.is_empty() {
            named.push((first.clone(), segments));
        }
        i = k.max(i + 1);
    }
    named
}

/// The module a path leads to: the longest prefix that is a file's.
fn resolve(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

/// Every loop among a crate's rooms, each as the files round it.
fn loops(src: &Path) -> Vec<Vec<String>> {
    let modules = modules(src);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        // A `mod.rs`, `lib.rs` or `main.rs` is its module's own file, so its
        // `super` is its module's parent; so is any other file's.
        for (anchor, rest) in paths_named(&text) {
            let base: Vec<String> = match anchor.as_str() {
                "crate" => Vec::new(),
                "super" => module[..module.len().saturating_sub(1)].to_vec(),
                child => {
                    let mut base = module.clone();
                    base.push(child.to_string());
                    base
                }
            };
            let mut full = base;
            full.extend(rest);
            let Some(target) = resolve(&modules, &full) else {
                continue;
            };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !target.is_empty() && !related {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // A loop: a room that reaches itself.
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut round: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    round.sort();
                    found.insert(round);
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_two_rooms_of_a_crate_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    for krate in CRATES {
        for round in loops(&root.join(krate).join("src")) {
            all.push(format!("{krate}: {}", round.join(" <-> ")));
        }
    }
    assert!(all.is_empty(), "import loops:\n{}", all.join("\n"));
}

#[test]
fn a_loop_is_found_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{c::Other, x};\npub struct Thing;\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests {\n    use crate::b::Thing;\n}\n",
    )
    .unwrap();
    assert_eq!(loops(src), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    // A parent and its children are one room.
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("c.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(src.join("a.rs"), "mod inner;\nfn g() { inner::h() }\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::g;\n").unwrap();
    assert!(loops(src).is_empty(), "{:?}", loops(src));
}

/// Lines of code a source file may hold, its inline tests aside: past about
/// this many a file does more than one job (issue 38).
const MOST_LINES: usize = 600;

#[test]
fn no_source_file_holds_more_than_one_jobs_worth_of_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut long = Vec::new();
    for krate in CRATES {
        for path in rust_files(&root.join(krate).join("src")) {
            let lines = code_of(&std::fs::read_to_string(&path).unwrap()).lines().count();
            if lines > MOST_LINES {
                long.push(format!(
                    "{}: {lines} lines",
                    path.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        !rust_files(&root.join("importer/src")).is_empty(),
        "the sources are found"
    );
    assert!(long.is_empty(), "over {MOST_LINES} lines of code:\n{}", long.join("\n"));
}
