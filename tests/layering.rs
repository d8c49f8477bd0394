//! The direction of the core's layers: the modules the core (`src/db.rs`) is built from never
//! name `Db` or its `Inner`, so that none of them can reach back into the whole database. Each
//! gets at open the narrow handles it needs (the monitor the caches and the WAL path, the
//! writer the change capture and the checkpointer, ...). Likewise the parts whose settings
//! `Config` holds never name `Config`.
//!
//! Checked on the source text: comments, string literals and `#[cfg(test)]` modules (whose tests
//! open a `Db` to exercise the module) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules below the core, as paths under `src/`: a directory stands for every file in it.
const BELOW_THE_CORE: &[&str] = &[
    "error.rs",
    "location.rs",
    "sql.rs",
    "schema.rs",
    "config.rs",
    "config",
    "pool.rs",
    "pool",
    "checkpoint.rs",
    "migrate.rs",
    "events",
    "cache",
    "monitor",
    "writer",
    "instances.rs",
    "instances",
    "follower.rs",
    "advisor/nplusone.rs",
];

/// What a module below the core must not contain. A `Weak` of its own parts is fine (a
/// subscription holds its capture weakly); a `Weak<Inner>` is caught by `Inner`.
const NAMES_OF_THE_CORE: &[&str] = &["Db", "Inner", "crate::db"];

/// The modules below `Config`: it holds their settings (`Location`, `CacheSettings`,
/// `MonitorSettings`) or they take their own arguments at open. Only the pool and the core read
/// a whole `Config`.
const BELOW_THE_CONFIG: &[&str] = &[
    "error.rs",
    "location.rs",
    "sql.rs",
    "schema.rs",
    "checkpoint.rs",
    "migrate.rs",
    "events",
    "cache",
    "monitor",
    "writer",
    "instances.rs",
    "instances",
    "follower.rs",
    "advisor/nplusone.rs",
];

/// What a module below `Config` must not contain.
const NAMES_OF_THE_CONFIG: &[&str] = &["Config", "crate::config"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)
            .expect("readable source directory")
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The code of a source file: up to its `#[cfg(test)]` module, with comments and the contents
/// of string and character literals blanked out (newlines kept, for line numbers).
fn code(source: &str) -> String {
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            i += 2 + hashes;
            while i < chars.len() && !chars[i..].iter().collect::<String>().starts_with(&close) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                out.push(blank(chars.get(i).copied().unwrap_or(' ')));
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where `needle` occurs in `code` as a whole name (not inside a longer identifier such as
/// `DbConfig`), as 1-based line numbers.
fn occurrences(code: &str, needle: &str) -> Vec<usize> {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut lines = Vec::new();
    for (at, _) in code.match_indices(needle) {
        let before = code[..at].chars().next_back();
        let after = code[at + needle.len()..].chars().next();
        let starts = !needle.starts_with(char::is_alphanumeric) || !ident(before);
        let ends = !needle.ends_with(char::is_alphanumeric) || !ident(after);
        if starts && ends {
            lines.push(code[..at].matches('\n').count() + 1);
        }
    }
    lines
}

fn violations(file: &Path, forbidden: &[&str]) -> Vec<String> {
    let source = fs::read_to_string(file).expect("readable source file");
    let code = code(&source);
    let mut found = Vec::new();
    for needle in forbidden {
        for line in occurrences(&code, needle) {
            found.push(format!("{}:{line}: names `{needle}`", file.display()));
        }
    }
    found
}

/// Every place where one of `modules` names one of `forbidden`.
fn check(modules: &[&str], forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for module in modules {
        let path = src().join(module);
        assert!(
            path.exists(),
            "{} is gone: update the lists",
            path.display()
        );
        rust_files(&path, &mut files);
    }
    assert!(files.len() > modules.len(), "the directories hold files");
    files
        .iter()
        .flat_map(|f| violations(f, forbidden))
        .collect()
}

#[test]
fn no_module_below_the_core_names_db_or_inner() {
    let found = check(BELOW_THE_CORE, NAMES_OF_THE_CORE);
    assert!(
        found.is_empty(),
        "modules below the core must not reach back into it:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_module_below_the_config_names_it() {
    let found = check(BELOW_THE_CONFIG, NAMES_OF_THE_CONFIG);
    assert!(
        found.is_empty(),
        "the parts whose settings Config holds must not depend on Config:\n{}",
        found.join("\n")
    );
}

/// The module a file under `src/` belongs to, as the layering counts modules: the top-level
/// module, but `advisor::nplusone` on its own (the rest of the advisor is a feature above the
/// core).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("a file under src/");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.len() > 1 && parts[0] == "advisor" && parts[1] == "nplusone" {
        return "advisor::nplusone".to_owned();
    }
    parts[0].clone()
}

/// The crate modules `code` refers to through `crate::` paths (`crate::a::b`, `crate::{a, b}`).
fn modules_used(code: &str) -> BTreeSet<String> {
    let node = |path: &str| -> Option<String> {
        let path: String = path.chars().filter(|c| !c.is_whitespace()).collect();
        let first = path.split("::").next()?;
        if !first.starts_with(|c: char| c.is_ascii_lowercase()) {
            return None; // An item the crate root re-exports (crate::Result, ...).
        }
        if path.starts_with("advisor::nplusone") {
            return Some("advisor::nplusone".to_owned());
        }
        Some(first.to_owned())
    };
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            used.extend(list[..end].split(',').filter_map(node));
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            used.extend(node(&rest[..end]));
        }
    }
    used
}

/// Upward names allowed below the core, each with its reason.
const ALLOWED_UPWARD: &[(&str, &str)] = &[
    // `Error::Batch` carries the `BatchReport` of a batch that stopped part-way (an error that
    // stops part-way carries the progress made); the report is plain data, no code of batch runs.
    ("error", "batch"),
];

#[test]
fn below_the_core_every_dependency_points_down_and_none_is_circular() {
    let mut files = Vec::new();
    for module in BELOW_THE_CORE {
        rust_files(&src().join(module), &mut files);
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let code = code(&fs::read_to_string(file).expect("readable source file"));
        let mut used = modules_used(&code);
        used.remove(&module);
        graph.entry(module).or_default().extend(used);
    }
    let below: BTreeSet<&String> = graph.keys().collect();
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(m, used)| {
            used.iter()
                .filter(|u| !below.contains(u))
                .filter(|u| !ALLOWED_UPWARD.contains(&(m.as_str(), u.as_str())))
                .map(move |u| format!("{m} -> {u}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "modules below the core use modules above it:\n{}",
        upward.join("\n")
    );
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit<'g>(
        m: &'g String,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g String>,
        done: &mut BTreeSet<&'g String>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            let circle: Vec<&str> = path[at..].iter().map(|s| s.as_str()).collect();
            return Some(format!("{} -> {m}", circle.join(" -> ")));
        }
        if !done.insert(m) {
            return None;
        }
        // A module outside the graph is an allowed upward name: nothing beyond it is followed.
        let used = graph.get(m)?;
        path.push(m);
        let found = used.iter().find_map(|u| visit(u, graph, path, done));
        path.pop();
        found
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("modules below the core depend on each other in a circle: {circle}");
        }
    }
}

#[test]
fn the_check_sees_code_and_skips_comments_strings_and_tests() {
    let source = r#"
        /// A [`Db`] in a doc comment.
        // Inner in a comment.
        use crate::config::DbConfig;
        const S: &str = "Db in a string";
        const Q: char = '"';
        fn f(db: &Db) {}
        #[cfg(test)]
        mod tests { fn t(_: Inner) {} }
    "#;
    let code = code(source);
    assert_eq!(occurrences(&code, "Db"), [7], "{code}");
    assert_eq!(
        modules_used(&code),
        BTreeSet::from(["config".to_owned()]),
        "{code}"
    );
    let used = modules_used("use crate::{a::X, b, Result}; crate::advisor::nplusone::f();");
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["a", "advisor::nplusone", "b"]
    );
    assert!(occurrences(&code, "Inner").is_empty(), "{code}");
    // The core itself does name them: the check would see a module that did.
    let core = code_of("db.rs");
    assert!(!occurrences(&core, "Inner").is_empty());
    assert!(!occurrences(&core, "Weak<").is_empty() || !occurrences(&core, "Db").is_empty());
}

fn code_of(module: &str) -> String {
    code(&fs::read_to_string(src().join(module)).expect("readable source file"))
}
