//! The README's error table against `strata::Error`: every variant of src/error.rs has its row,
//! so a new variant cannot land undocumented.

/// The variant names of `pub enum Error` in src/error.rs: the lines indented once inside it
/// that start with a capitalized name.
fn error_variants(source: &str) -> Vec<&str> {
    let body = source
        .split_once("pub enum Error {")
        .expect("src/error.rs has `pub enum Error {`")
        .1;
    let body = &body[..body.find("\n}").expect("the enum ends")];
    body.lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or(l)
        })
        .collect()
}

#[test]
fn readme_error_table_names_every_variant() {
    let source = include_str!("../src/error.rs");
    let readme = include_str!("../README.md");
    let section = readme
        .split_once("### Errors")
        .expect("README has an Errors section")
        .1;
    let section = section.split("\n#").next().unwrap_or(section);
    let variants = error_variants(source);
    for kind in ["IsDirectory", "NestedWrite", "Closure", "InvalidFile"] {
        assert!(variants.contains(&kind), "{kind} not parsed: {variants:?}");
    }
    let missing: Vec<&&str> = variants
        .iter()
        .filter(|v| !section.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's error table lacks a row for {missing:?}"
    );
}
