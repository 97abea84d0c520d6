//! The house's shape, checked: no two source files of a crate import each other, directly or
//! around a loop, and no library file holds much more than 1,000 lines of code.
//!
//! Why a test: cycles between files are how a crate's modules stop being separable (the
//! compute's committer, primary and view once formed one), and a file that does every job of a
//! concept (the pageserver's timeline once held 2,000 lines) is where readers get lost. Both
//! creep back one convenient `use` at a time, so they are checked on every run.
//!
//! The check is textual, not a compiler pass: it reads each file's `crate::`, `super::` and
//! `self::` paths (outside `#[cfg(test)]` blocks) and resolves them to the file that defines
//! the named module. The crate root (`lib.rs`, `main.rs`) is left out: it declares every module
//! and re-exports their items, so every file "imports" it by design.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines of code (blank lines, comments and test blocks aside) a library file holds.
const MAX_CODE_LINES: usize = 1_000;

/// Files allowed over the limit, each with the reason.
const LARGE_FILES: &[(&str, &str)] = &[(
    "client/src/tuple.rs",
    "FoundationDB's tuple encoding with its type table; its test vectors sit in the same file",
)];

/// Every crate's source folder, relative to the workspace root.
const CRATES: &[&str] = &[
    "src",
    "common/src",
    "common/server/src",
    "wal-service/src",
    "pageserver/src",
    "compute/src",
    "client/src",
    "loadtest/src",
];

#[path = "support/root.rs"]
mod root;

/// A module of one crate: its path from the crate root and the file that holds it.
#[derive(Debug)]
struct Module {
    file: PathBuf,
    /// The module's code with `#[cfg(test)]` blocks and comments removed.
    code: String,
}

/// Strips `//` comments (outside string literals, roughly) and `#[cfg(test)]` items.
fn strip(source: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i64> = None;
    let mut depth: i64 = 0;
    let mut pending_test_attr = false;
    for line in source.lines() {
        let code = strip_comment(line);
        let trimmed = code.trim();
        if skip_depth.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending_test_attr = true;
            let rest = trimmed.trim_start_matches("#[cfg(test)]").trim();
            if rest.is_empty() {
                continue;
            }
        }
        let opens = code.matches('{').count() as i64;
        let closes = code.matches('}').count() as i64;
        if pending_test_attr && skip_depth.is_none() {
            if trimmed.starts_with("#[") && !trimmed.starts_with("#[cfg(test)]") {
                continue;
            }
            pending_test_attr = false;
            if opens > closes {
                skip_depth = Some(depth);
                depth += opens - closes;
                continue;
            }
            // A one-line test item (`mod tests;`, `use …;`): dropped.
            depth += opens - closes;
            continue;
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The module trees of a crate's folder: its library and its binary, when it has them.
fn crate_roots(src: &Path) -> Vec<PathBuf> {
    ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Reads a module tree from its root file, following `mod x;` declarations.
fn modules(root: &Path) -> BTreeMap<Vec<String>, Module> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::<String>::new(), root.to_path_buf())];
    while let Some((path, file)) = stack.pop() {
        let source = std::fs::read_to_string(&file).expect("read source");
        let code = strip(&source);
        // Where this module's children live: next to mod.rs/lib.rs/main.rs, or in a folder
        // named after the file.
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().expect("parent").to_path_buf(),
            _ => file.with_extension(""),
        };
        for child in declared_modules(&code) {
            let mut child_path = path.clone();
            child_path.push(child.clone());
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let child_file = if flat.exists() { flat } else { nested };
            if child_file.exists() {
                stack.push((child_path, child_file));
            }
        }
        out.insert(path, Module { file, code });
    }
    out
}

/// `mod x;` declarations (inline `mod x { … }` blocks stay part of their file).
fn declared_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        let t = t.strip_prefix("pub(super) ").unwrap_or(t);
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ")
            && let Some(name) = rest.strip_suffix(';')
        {
            out.push(name.trim().to_string());
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module path a file's code names, as absolute paths from the crate root (maybe
/// followed by item names, trimmed later to the longest module prefix).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(anchor) {
            let start = from + pos;
            from = start + anchor.len();
            if start > 0 && code[..start].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let base: Vec<String> = match anchor {
                "crate::" => Vec::new(),
                "super::" => {
                    // `super::super::…` climbs further.
                    let mut base = module.to_vec();
                    base.pop();
                    let mut rest = &code[from..];
                    while let Some(r) = rest.strip_prefix("super::") {
                        base.pop();
                        rest = r;
                        from += "super::".len();
                    }
                    base
                }
                _ => module.to_vec(),
            };
            for tail in paths_after(&code[from..]) {
                let mut full = base.clone();
                full.extend(tail);
                out.push(full);
            }
        }
    }
    // Children named without a prefix (`child::item`, `use child::…`).
    for child in declared_modules(code) {
        let needle = format!("{child}::");
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let start = from + pos;
            from = start + needle.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let mut full = module.to_vec();
            full.push(child.clone());
            out.push(full);
        }
    }
    out
}

/// The paths that follow an anchor: `a::b::C` or a group `{a::b, c, d::{e, f}}`.
fn paths_after(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut segs = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                // Split the group at top-level commas.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            for tail in paths_after(item.trim()) {
                                let mut full = segs.clone();
                                full.extend(tail);
                                out.push(full);
                            }
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                for tail in paths_after(item.trim()) {
                    let mut full = segs.clone();
                    full.extend(tail);
                    out.push(full);
                }
                return out;
            }
            break;
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    if !segs.is_empty() {
        out.push(segs);
    }
    out
}

/// The file-level import graph of one crate: module path → modules it names.
fn graph(mods: &BTreeMap<Vec<String>, Module>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut edges = BTreeMap::new();
    for (path, module) in mods {
        if path.is_empty() {
            continue;
        }
        let mut targets = BTreeSet::new();
        for reference in references(path, &module.code) {
            // The longest prefix that is a module of this crate.
            let mut target = reference.clone();
            while !target.is_empty() && !mods.contains_key(&target) {
                target.pop();
            }
            if target.is_empty() || &target == path {
                continue;
            }
            // A file naming its own descendant or ancestor through `super::`/`self::` is
            // still an import of another file.
            targets.insert(target);
        }
        edges.insert(path.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        on_stack: BTreeSet<&'a Vec<String>>,
        stack: Vec<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                let Some((w, _)) = s.edges.get_key_value(w) else {
                    continue;
                };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn code_lines(code: &str) -> usize {
    code.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn no_two_files_import_each_other() {
    let root = root::root();
    let mut found = Vec::new();
    for krate in CRATES {
        let src = root.join(krate);
        if !src.exists() {
            continue;
        }
        for root_file in crate_roots(&src) {
            let mods = modules(&root_file);
            for component in cycles(&graph(&mods)) {
                let files: Vec<String> = component
                    .iter()
                    .map(|m| {
                        mods[m]
                            .file
                            .strip_prefix(&root)
                            .unwrap_or(&mods[m].file)
                            .display()
                            .to_string()
                    })
                    .collect();
                found.push(files.join(" <-> "));
            }
        }
    }
    assert!(
        found.is_empty(),
        "files that import each other (directly or around a loop):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn no_library_file_over_the_limit() {
    let root = root::root();
    let mut over = Vec::new();
    for krate in CRATES {
        let src = root.join(krate);
        if !src.exists() {
            continue;
        }
        for module in crate_roots(&src)
            .iter()
            .flat_map(|r| modules(r).into_values())
        {
            let rel = module
                .file
                .strip_prefix(&root)
                .unwrap_or(&module.file)
                .display()
                .to_string();
            let lines = code_lines(&module.code);
            if lines > MAX_CODE_LINES && !LARGE_FILES.iter().any(|(f, _)| *f == rel) {
                over.push(format!("{rel}: {lines} lines of code"));
            }
        }
    }
    assert!(
        over.is_empty(),
        "files over {MAX_CODE_LINES} lines of code (split by job, as docs/ARCHITECTURE says):\n  {}",
        over.join("\n  ")
    );
}

/// The checker itself: a planted two-file loop and a clean pair.
#[test]
fn the_cycle_finder_finds_a_planted_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "use crate::{c, a::A};\npub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::c::C;\n}\n",
    )
    .expect("write");
    std::fs::write(
        src.join("c.rs"),
        "// crate::a::A is only named in a comment\npub struct C;\n",
    )
    .expect("write");
    let mods = modules(&src.join("lib.rs"));
    let found = cycles(&graph(&mods));
    assert_eq!(
        found,
        vec![vec![vec!["a".to_string()], vec!["b".to_string()]]]
    );
    // c is imported by b but imports nothing: no loop through it.
    let g = graph(&mods);
    assert!(g[&vec!["c".to_string()]].is_empty());
}

/// The SDK depends on the wire crate alone: an application that links it compiles none of
/// the servers' libraries (docs/ARCHITECTURE.md, "Crates").
#[test]
fn the_sdk_compiles_no_server_library() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "ferrisdb-client",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(root::root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let packages: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(packages.contains("ferrisdb-common"), "{tree}");
    for server_only in [
        "foyer",
        "object_store",
        "axum",
        "prometheus",
        "parquet",
        "ferrisdb-server-common",
    ] {
        assert!(
            !packages.contains(server_only),
            "the SDK pulls in {server_only}:\n{tree}"
        );
    }
}
