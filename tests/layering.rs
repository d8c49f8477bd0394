//! The direction of the core's layers: the modules the core (`src/db.rs`) is built from never
//! name `Db` or its `Inner`, so that none of them can reach back into the whole database. Each
//! gets at open the narrow handles it needs (the monitor the caches and the WAL path, the
//! writer the change capture and the checkpointer, ...). Likewise the parts whose settings
//! `Config` holds never name `Config`.
//!
//! Checked on the source text: comments, string literals and `#[cfg(test)]` modules (whose tests
//! open a `Db` to exercise the module) are left out.

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
    "checkpoint.rs",
    "migrate.rs",
    "events",
    "cache",
    "monitor",
    "writer",
    "advisor/nplusone.rs",
];

/// What a module below the core must not contain.
const NAMES_OF_THE_CORE: &[&str] = &["Db", "Inner", "crate::db", "Weak<"];

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
    assert!(occurrences(&code, "Inner").is_empty(), "{code}");
    // The core itself does name them: the check would see a module that did.
    let core = code_of("db.rs");
    assert!(!occurrences(&core, "Inner").is_empty());
    assert!(!occurrences(&core, "Weak<").is_empty() || !occurrences(&core, "Db").is_empty());
}

fn code_of(module: &str) -> String {
    code(&fs::read_to_string(src().join(module)).expect("readable source file"))
}
