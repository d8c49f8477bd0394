//! Property tests of the plan parser and the advisor's SQL analysis on generated and mangled
//! input:
//!
//! (a) `db.explain(s)` for any string (random bytes, SQL-ish token soups, valid statements cut
//!     short or mangled) never panics; an error is `Error::InvalidSql` naming `s` (or another
//!     error whose text names it); a plan it does return is a consistent tree;
//! (b) `db.advise(AdviseOptions::new().queries([s]))` likewise never panics, accounts for `s`
//!     (skipped with a reason, or served by an advised index) and names `s` in an error;
//! (c) the plan of a valid generated SELECT (random joins, subqueries, compounds, WHERE, GROUP
//!     BY and ORDER BY over a known schema) holds every `EXPLAIN QUERY PLAN` row exactly once,
//!     each under the row SQLite names as its parent.
//!
//! 10 000, 5 000, 5 000 and 2 500 cases by default (about 7 s in a debug build, most of it
//! advising); `PROPTEST_CASES` sets the count of each of the four properties.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use strata::advisor::{AdviseOptions, PlanNode, QueryPlan};
use strata::{Db, Error};

const SCHEMA: &str = "
    CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL, d INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t (id), x INTEGER, y TEXT);
    CREATE TABLE \"w x\" (\"k y\" INTEGER, v TEXT);
    CREATE INDEX t_a ON t (a);
    CREATE INDEX t_b_c ON t (b, c);
    CREATE INDEX u_t ON u (t_id, x);
    CREATE VIEW tv AS SELECT a, b FROM t WHERE d > 0;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
    INSERT INTO t (a, b, c, d) SELECT i % 50, 'b' || (i % 7), i * 0.5, i % 3 FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
    INSERT INTO u (t_id, x, y) SELECT i % 500 + 1, i % 13, 'y' || i FROM n;
    INSERT INTO \"w x\" VALUES (1, 'one'), (2, 'two');
    ANALYZE;";

fn db() -> &'static Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        let db = Db::builder().build().expect("open an in-memory Db");
        db.write(|c| Ok(c.execute_batch(SCHEMA)?))
            .expect("create the schema");
        db
    })
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        // The minimal failing input is in the panic message; no regression files are written
        // into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Generated SELECTs over the schema.

fn columns(table: &str) -> &'static [&'static str] {
    match table {
        "t" => &["id", "a", "b", "c", "d"],
        "u" => &["id", "t_id", "x", "y"],
        _ => &["a", "b"],
    }
}

fn value() -> BoxedStrategy<String> {
    prop_oneof![
        (1..4u8).prop_map(|i| format!("?{i}")),
        (-5..100i64).prop_map(|i| i.to_string()),
        "[a-z]{0,3}".prop_map(|s| format!("'{s}'")),
        Just("NULL".to_owned()),
    ]
    .boxed()
}

/// One predicate on a column of `table`, qualified by `q` (empty for none).
fn predicate(table: &'static str, q: &'static str) -> impl Strategy<Value = String> {
    let col = proptest::sample::select(columns(table))
        .prop_map(move |c| format!("{q}{c}"))
        .boxed();
    let op = proptest::sample::select(&["=", "<", ">", "<=", ">=", "!=", "IS"][..]);
    let simple = (col.clone(), op, value())
        .prop_map(|(c, o, v)| format!("{c} {o} {v}"))
        .boxed();
    prop_oneof![
        4 => simple.clone(),
        1 => (col.clone(), value(), value()).prop_map(|(c, a, b)| format!("{c} IN ({a}, {b})")),
        1 => (col.clone(), value(), value())
            .prop_map(|(c, a, b)| format!("{c} BETWEEN {a} AND {b}")),
        1 => col.clone().prop_map(|c| format!("{c} IS NULL")),
        1 => col.clone().prop_map(|c| format!("{c} LIKE 'b%'")),
        1 => col.clone().prop_map(|c| format!("{c} + 1 = ?1")),
        1 => col.clone().prop_map(|c| format!("{c} COLLATE NOCASE = ?2")),
        1 => (simple.clone(), simple.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
        1 => simple.prop_map(|p| format!("NOT ({p})")),
    ]
}

fn where_clause(table: &'static str, q: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(predicate(table, q), 0..4).prop_map(|ps| {
        if ps.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", ps.join(" AND "))
        }
    })
}

fn order_by(table: &'static str, q: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            proptest::sample::select(columns(table)),
            proptest::sample::select(&["", " ASC", " DESC"][..]),
        ),
        0..3,
    )
    .prop_map(move |keys| {
        if keys.is_empty() {
            String::new()
        } else {
            let keys: Vec<String> = keys.iter().map(|(c, d)| format!("{q}{c}{d}")).collect();
            format!(" ORDER BY {}", keys.join(", "))
        }
    })
}

fn limit() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (1..50u32).prop_map(|n| format!(" LIMIT {n}"))
    ]
}

/// A single-table SELECT with WHERE, ORDER BY and LIMIT.
fn simple_select() -> impl Strategy<Value = String> {
    let table = proptest::sample::select(&["t", "u"][..]);
    table.prop_flat_map(|table| {
        (
            proptest::sample::select(&["*", "id", "count(*)"][..]),
            where_clause(table, ""),
            order_by(table, ""),
            limit(),
            any::<bool>(),
        )
            .prop_map(move |(what, w, o, l, distinct)| {
                let distinct = if distinct && what != "count(*)" {
                    "DISTINCT "
                } else {
                    ""
                };
                format!("SELECT {distinct}{what} FROM {table}{w}{o}{l}")
            })
    })
}

/// A valid SELECT of one of many shapes.
fn select() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => simple_select(),
        2 => (
            proptest::sample::select(&["JOIN", "LEFT JOIN", "CROSS JOIN"][..]),
            where_clause("t", "t."),
            where_clause("u", "u."),
            order_by("u", "u."),
            limit(),
        )
            .prop_map(|(j, wt, wu, o, l)| {
                let wu = if wt.is_empty() {
                    wu
                } else {
                    wu.replacen(" WHERE ", " AND ", 1)
                };
                format!("SELECT t.id, u.x FROM t {j} u ON u.t_id = t.id{wt}{wu}{o}{l}")
            }),
        1 => (where_clause("t", ""), order_by("t", "s."))
            .prop_map(|(w, o)| format!("SELECT * FROM (SELECT id, a, b FROM t{w} LIMIT 40) AS s WHERE s.a > ?1{}", o.replace("s.c", "s.a").replace("s.d", "s.b"))),
        1 => where_clause("u", "u.").prop_map(|w| {
            let w = w.replacen(" WHERE ", " AND ", 1);
            format!("SELECT id FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.t_id = t.id{w})")
        }),
        1 => where_clause("t", "").prop_map(|w| format!(
            "SELECT id, (SELECT count(*) FROM u WHERE u.t_id = t.id) AS n FROM t{w} ORDER BY n DESC"
        )),
        1 => (
            simple_select(),
            simple_select(),
            proptest::sample::select(&["UNION ALL", "UNION", "EXCEPT", "INTERSECT"][..]),
        )
            .prop_map(|(a, b, op)| {
                // Compound members take no ORDER BY or LIMIT of their own, and one column each.
                let strip = |s: &str| {
                    let s = s.split(" ORDER BY ").next().unwrap_or(s);
                    let s = s.split(" LIMIT ").next().unwrap_or(s);
                    s.replacen("SELECT DISTINCT ", "SELECT ", 1)
                        .replacen("SELECT * ", "SELECT id ", 1)
                        .replacen("SELECT count(*) ", "SELECT id ", 1)
                };
                format!("{} {op} {} ORDER BY 1", strip(&a), strip(&b))
            }),
        1 => (where_clause("t", ""), order_by("t", ""))
            .prop_map(|(w, o)| format!("WITH c AS (SELECT * FROM t{w}) SELECT * FROM c JOIN u ON u.t_id = c.id{}", o.replace(" ORDER BY ", " ORDER BY c.").replace(", ", ", c."))),
        1 => (where_clause("t", ""), any::<bool>()).prop_map(|(w, having)| format!(
            "SELECT a, count(*) FROM t{w} GROUP BY a{} ORDER BY 2 DESC",
            if having { " HAVING count(*) > 1" } else { "" }
        )),
        1 => where_clause("t", "").prop_map(|w| format!(
            "SELECT * FROM u WHERE t_id IN (SELECT id FROM t{w}) ORDER BY x"
        )),
        1 => value().prop_map(|v| format!("SELECT * FROM tv WHERE a = {v} ORDER BY b")),
        1 => value().prop_map(|v| format!("SELECT v FROM \"w x\" WHERE \"k y\" = {v}")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Arbitrary and mangled input.

const TOKENS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "ORDER",
    "BY",
    "GROUP",
    "HAVING",
    "LIMIT",
    "JOIN",
    "LEFT",
    "ON",
    "IN",
    "IS",
    "NULL",
    "EXISTS",
    "UNION",
    "WITH",
    "AS",
    "DISTINCT",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "INDEX",
    "DROP",
    "TABLE",
    "PRAGMA",
    "EXPLAIN",
    "QUERY",
    "PLAN",
    "ATTACH",
    "VACUUM",
    "BEGIN",
    "COMMIT",
    "INDEXED",
    "USING",
    "t",
    "u",
    "tv",
    "a",
    "b",
    "x",
    "t_id",
    "id",
    "t.a",
    "u.x",
    "\"w x\"",
    "\"k y\"",
    "sqlite_schema",
    "json_each",
    "count(*)",
    "max",
    "*",
    "=",
    "<",
    ">=",
    "!=",
    "||",
    "->>",
    "+",
    "-",
    "/",
    "%",
    "(",
    ")",
    ",",
    ";",
    ".",
    "?",
    "?1",
    "?0",
    "?99999999999",
    ":x",
    "@y",
    "$z",
    "1",
    "0",
    "-1",
    "1e999",
    "0x",
    "X'0A'",
    "x'zz'",
    "'a'",
    "'",
    "\"",
    "`",
    "[",
    "]",
    "--",
    "/*",
    "*/",
    "\n",
    "\0",
    "ñ",
    "\u{202e}",
    "🙂",
    "é'",
    "\"\"\"",
];

fn token_soup() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(proptest::sample::select(TOKENS), 0..25),
        any::<bool>(),
    )
        .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
}

fn random_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ".{0,80}",
    ]
}

/// Cuts `s` at the character boundary at or before `at % len`.
fn truncate(s: &str, at: usize) -> String {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s[..at].to_owned()
}

/// A valid SELECT cut short, a token of it dropped, swapped or doubled, or a hostile token put
/// in.
fn mangled() -> impl Strategy<Value = String> {
    (
        select(),
        0..5u8,
        any::<usize>(),
        any::<usize>(),
        proptest::sample::select(TOKENS),
    )
        .prop_map(|(s, how, i, j, token)| {
            let mut words: Vec<String> = s.split(' ').map(str::to_owned).collect();
            let (i, j) = (i % words.len(), j % words.len());
            match how {
                0 => return truncate(&s, i.wrapping_mul(7919).wrapping_add(j)),
                1 => {
                    words.remove(i);
                }
                2 => words.swap(i, j),
                3 => {
                    let w = words[i].clone();
                    words.insert(j, w);
                }
                _ => words.insert(i, token.to_owned()),
            }
            words.join(" ")
        })
}

/// Input of every kind, weighted towards what reaches deep into the parsers.
fn any_input() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => random_text(),
        2 => token_soup(),
        3 => mangled(),
        1 => select(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Every node sits under the node SQLite names as its parent (top nodes under 0), and no id
/// appears twice. Returns the nodes as (id, parent, detail).
fn tree_rows(plan: &QueryPlan) -> Result<Vec<(i64, i64, String)>, TestCaseError> {
    fn walk(
        nodes: &[PlanNode],
        parent: i64,
        depth: usize,
        out: &mut Vec<(i64, i64, String)>,
    ) -> Result<(), TestCaseError> {
        prop_assert!(depth < 64, "plan nested {depth} deep");
        for node in nodes {
            prop_assert_eq!(
                node.parent,
                parent,
                "node {} ({}) sits under {} but names {} as its parent",
                node.id,
                &node.detail,
                parent,
                node.parent
            );
            out.push((node.id, node.parent, node.detail.clone()));
            walk(&node.children, node.id, depth + 1, out)?;
        }
        Ok(())
    }
    let mut rows = Vec::new();
    walk(&plan.nodes, 0, 0, &mut rows)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), rows.len(), "an id appears twice: {:#?}", plan);
    prop_assert_eq!(plan.iter().count(), rows.len());
    Ok(rows)
}

/// The questions asked of a plan answer without panicking, and consistently.
fn ask(plan: &QueryPlan) -> Result<(), TestCaseError> {
    let drawn = plan.to_string();
    prop_assert!(drawn.starts_with("QUERY PLAN"));
    for index in plan.indexes_used() {
        prop_assert!(plan.uses_index(index));
    }
    for index in plan.covering() {
        prop_assert!(plan.uses_index(index));
    }
    let _ = (plan.full_scans(), plan.temp_btrees(), plan.skip_scans());
    let _ = (plan.automatic_indexes(), plan.needs_index());
    let _ = serde_json::to_string(plan).expect("a plan serializes");
    Ok(())
}

/// An error names the input: `InvalidSql` with it as `sql`, or any error whose text holds it.
fn names_input(err: &Error, input: &str) -> Result<(), TestCaseError> {
    match err {
        Error::InvalidSql { sql, .. } => {
            prop_assert_eq!(sql, input);
            prop_assert!(err.to_string().contains(input), "{}", err);
        }
        other => prop_assert!(
            other.to_string().contains(input),
            "an error that does not name the input {:?}: {:?}",
            input,
            other
        ),
    }
    Ok(())
}

/// Outcome counts, printed at the end of each property.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, u64>>);

impl Tally {
    fn add(&self, what: &'static str) {
        *self.0.lock().unwrap().entry(what).or_default() += 1;
    }

    fn summary(&self) -> String {
        let counts = self.0.lock().unwrap();
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        parts.join(", ")
    }
}

fn explain_any(input: &str, tally: &Tally) -> Result<(), TestCaseError> {
    match db().explain(input) {
        Ok(plan) => {
            tally.add("plans");
            prop_assert_eq!(&plan.sql, input);
            tree_rows(&plan)?;
            ask(&plan)?;
        }
        Err(err) => {
            tally.add(if matches!(err, Error::InvalidSql { .. }) {
                "InvalidSql"
            } else {
                "other errors"
            });
            names_input(&err, input)?;
        }
    }
    Ok(())
}

fn schema_version() -> i64 {
    db().read(|c| Ok(c.query_row("PRAGMA schema_version", [], |r| r.get(0))?))
        .expect("schema_version")
}

// ---------------------------------------------------------------------------------------------
// The properties.

#[test]
fn explain_never_panics_and_names_bad_input() {
    let n = cases(10_000);
    let tally = Tally::default();
    let outcome = runner(n).run(&any_input(), |s| explain_any(&s, &tally));
    if let Err(e) = outcome {
        panic!("explain: {e}");
    }
    println!(
        "advisor props (a): explain of {n} arbitrary/mangled inputs: {}; no panic",
        tally.summary()
    );
}

#[test]
fn explain_of_generated_selects_is_one_consistent_tree() {
    let n = cases(5_000);
    let rows_seen = AtomicU64::new(0);
    let nested = AtomicU64::new(0);
    let outcome = runner(n).run(&select(), |s| {
        let plan = db()
            .explain(&s)
            .map_err(|e| TestCaseError::fail(format!("a valid SELECT failed: {e}")))?;
        let mut tree = tree_rows(&plan)?;
        ask(&plan)?;
        // Exactly the rows SQLite gave, each once.
        let mut raw: Vec<(i64, i64, String)> = db()
            .read(|c| {
                // Parameters left unbound, as `explain` leaves them.
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {s}"))?;
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push((r.get(0)?, r.get(1)?, r.get(3)?));
                }
                Ok(out)
            })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        tree.sort();
        raw.sort();
        prop_assert_eq!(&tree, &raw, "the tree is not SQLite's rows for {}", s);
        rows_seen.fetch_add(raw.len() as u64, Ordering::Relaxed);
        if plan.nodes.iter().any(|n| !n.children.is_empty()) {
            nested.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("plan tree: {e}");
    }
    println!(
        "advisor props (c): {n} generated SELECTs, {} plan rows, {} nested plans: every row \
         once, under its parent",
        rows_seen.load(Ordering::Relaxed),
        nested.load(Ordering::Relaxed)
    );
}

#[test]
fn explain_of_mangled_selects_never_panics() {
    let n = cases(5_000);
    let tally = Tally::default();
    let outcome = runner(n).run(&mangled(), |s| explain_any(&s, &tally));
    if let Err(e) = outcome {
        panic!("explain (mangled): {e}");
    }
    println!(
        "advisor props (a): explain of {n} mangled SELECTs: {}; no panic",
        tally.summary()
    );
}

#[test]
fn advise_never_panics_and_accounts_for_every_statement() {
    let n = cases(2_500);
    let before = schema_version();
    let tally = Tally::default();
    // Valid statements weigh more here: they are the ones that reach the analysis.
    let input = prop_oneof![3 => any_input(), 2 => select()];
    let outcome = runner(n).run(&input, |s| {
        match db().advise(AdviseOptions::new().queries([s.as_str()])) {
            Ok(advice) => {
                let skipped: Vec<&str> = advice
                    .skipped
                    .iter()
                    .filter(|k| k.sql == s)
                    .map(|k| k.reason.as_str())
                    .collect();
                let served = advice
                    .indexes
                    .iter()
                    .any(|i| i.statements.iter().any(|st| st.sql == s));
                prop_assert!(
                    served || skipped.len() == 1,
                    "the statement is neither served nor skipped once: {:#?}",
                    advice
                );
                if let Some(reason) = skipped.first() {
                    prop_assert!(!reason.is_empty());
                    tally.add(if reason.starts_with("invalid SQL") {
                        "skipped as invalid SQL"
                    } else if reason.starts_with("no full scan") {
                        "skipped as well served"
                    } else if reason.starts_with("no candidate") {
                        "skipped for want of a chosen candidate"
                    } else {
                        "skipped by the analysis"
                    });
                } else {
                    tally.add("served by advice");
                }
                for index in &advice.indexes {
                    prop_assert!(index.create_sql.starts_with("CREATE INDEX \""));
                    for st in &index.statements {
                        tree_rows(&st.before)?;
                        tree_rows(&st.after)?;
                        prop_assert!(st.after.uses_index(&index.name));
                    }
                }
            }
            Err(err) => {
                tally.add("errors");
                names_input(&err, &s)?;
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("advise: {e}");
    }
    assert_eq!(schema_version(), before, "advising changed the live schema");
    println!(
        "advisor props (b): advise of {n} arbitrary/mangled/valid inputs: {}; no panic, \
         live schema unchanged",
        tally.summary()
    );
}
