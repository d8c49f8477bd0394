//! The query optimizer: plans on joins, subqueries, ORDER BY and covering indexes; the index
//! advisor on the expense tracker's schema without its performance indexes (what it finds, the
//! plans after, nothing left behind on the live database, the migration it writes, the
//! measured speedups); redundant and unused indexes; N+1; optimize; health.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use refinery::{Migration, Runner};
use strata::advisor::{Advice, AdviseOptions};
use strata::domain::LIST_QUERIES;
use strata::{Db, Error, Result};

const V1_SQL: &str = include_str!("../migrations/V1__schema.sql");

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The workload: the tracker's list queries and a few more shapes (join, GROUP BY, a range
/// across users, newest users, a delete by foreign key).
fn workload() -> Vec<String> {
    let mut w: Vec<String> = LIST_QUERIES
        .iter()
        .map(|(_, sql)| sql.to_string())
        .collect();
    w.extend(
        [
            "SELECT e.id, e.amount_cents, c.name FROM expenses e \
             JOIN categories c ON c.id = e.category_id \
             WHERE e.user_id = ?1 AND e.expense_date = ?2",
            "SELECT category_id, SUM(amount_cents) FROM expenses WHERE user_id = ?1 \
             GROUP BY category_id",
            "SELECT id, amount_cents FROM expenses WHERE expense_date BETWEEN ?1 AND ?2 \
             ORDER BY expense_date",
            "SELECT id, name FROM users ORDER BY created_at DESC LIMIT 20",
            "DELETE FROM expenses WHERE category_id = ?1",
        ]
        .map(String::from),
    );
    w
}

/// The indexes V2 ships for this workload, as (table, leading columns): the advisor must find
/// each of them (or an index that starts with the same columns).
const NEEDED: &[(&str, &[&str])] = &[
    ("expenses", &["user_id", "created_at"]),
    ("expenses", &["user_id", "expense_date"]),
    ("expenses", &["expense_date"]),
    ("expenses", &["category_id"]),
    ("categories", &["user_id", "name"]),
    ("users", &["created_at"]),
];

/// A file database with the tracker's schema without the performance indexes (V1 only),
/// seeded with 300 users, 3 000 categories and 60 000 expenses, and analyzed.
fn seeded_v1(path: &Path) -> Result<Db> {
    let v1 = Migration::unapplied("V1__schema", V1_SQL)?;
    let db = Db::builder()
        .path(path)
        .migrations(Runner::new(&[v1]))
        .build()?;
    db.write(|c| {
        c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO users (id, email, name, created_at)
                 SELECT i, 'u' || i || '@example.com', 'user ' || i, 1700000000000 + i * 1000 FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO categories (id, user_id, name, created_at)
                 SELECT i, (i - 1) / 10 + 1, 'cat ' || (i % 10), 1700000000000 + i FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO expenses (user_id, category_id, amount_cents, description, expense_date, created_at)
                 SELECT (i * 7919) % 300 + 1, ((i * 7919) % 300) * 10 + (i / 300) % 10 + 1, i % 5000,
                        'expense ' || i,
                        date('2024-01-01', '+' || (i % 366) || ' days'),
                        1700000000000 + i * 60000
                 FROM n;
             INSERT INTO keywords (keyword, category_name, weight, created_at)
                 VALUES ('coffee', 'food', 3, 0), ('train', 'travel', 2, 0);
             ANALYZE;",
        )?;
        Ok(())
    })?;
    Ok(db)
}

fn schema_version(db: &Db) -> Result<(i64, i64)> {
    db.read(|c| {
        let v: i64 = c.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        let n: i64 = c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((v, n))
    })
}

fn served_by<'a>(advice: &'a Advice, sql: &str) -> Option<&'a strata::advisor::ServedStatement> {
    advice
        .indexes
        .iter()
        .flat_map(|i| &i.statements)
        .find(|s| s.sql == sql)
}

#[test]
fn plans_of_joins_subqueries_order_by_and_covering_indexes() -> Result<()> {
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .build()?;
    let join = db.explain(
        "SELECT e.id, c.name FROM expenses e JOIN categories c ON c.id = e.category_id \
         WHERE e.user_id = ?1 AND e.expense_date = ?2",
    )?;
    assert!(join.full_scans().is_empty(), "{join}");
    assert!(join.uses_index("idx_expenses_user_date_range"), "{join}");
    let inner = join
        .accesses()
        .find(|a| a.name == "c")
        .expect("categories in the plan");
    assert!(inner.search && inner.index.as_ref().is_some_and(|i| i.primary_key));

    let sub = db.explain(
        "SELECT name FROM users WHERE id IN \
         (SELECT user_id FROM expenses WHERE amount_cents > ?1)",
    )?;
    let list = sub
        .nodes
        .iter()
        .find(|n| n.detail.starts_with("LIST SUBQUERY"))
        .expect("a subquery node");
    assert!(!list.children.is_empty(), "{sub}");
    assert_eq!(
        sub.full_scans()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        vec!["expenses"],
        "{sub}"
    );

    let ordered = db.explain("SELECT * FROM categories WHERE user_id = ?1 ORDER BY name")?;
    assert!(ordered.temp_btrees().is_empty(), "{ordered}");
    assert!(ordered.uses_index("idx_categories_of_user"));
    let unordered =
        db.explain("SELECT * FROM expenses WHERE user_id = ?1 ORDER BY amount_cents")?;
    assert_eq!(unordered.temp_btrees(), vec!["ORDER BY"], "{unordered}");

    let covering = db.explain("SELECT created_at FROM expenses WHERE user_id = ?1")?;
    assert_eq!(
        covering.covering(),
        vec!["idx_expenses_user_recent"],
        "{covering}"
    );
    let not_covering = db.explain("SELECT description FROM expenses WHERE user_id = ?1")?;
    assert!(not_covering.covering().is_empty(), "{not_covering}");

    let err = db.explain("SELECT * FROM no_such_table").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSql { sql, .. } if sql == "SELECT * FROM no_such_table"),
        "{err}"
    );
    assert!(err.to_string().contains("no_such_table"));
    Ok(())
}

#[test]
fn advisor_finds_the_missing_indexes_and_leaves_the_database_alone() -> Result<()> {
    let dir = tempdir();
    let db = seeded_v1(&dir.path().join("app.db"))?;
    let before = schema_version(&db)?;
    let workload = workload();
    let advice = db.advise(AdviseOptions::new().queries(&workload).measure(true))?;

    for (table, columns) in NEEDED {
        let found = advice.indexes.iter().any(|i| {
            i.table == *table
                && i.columns.len() >= columns.len()
                && i.columns.iter().zip(columns.iter()).all(|(a, b)| a == b)
        });
        assert!(
            found,
            "no index on {table} {columns:?} in {:#?}",
            advice.indexes
        );
    }
    for index in &advice.indexes {
        assert!(!index.statements.is_empty());
        for s in &index.statements {
            assert!(s.after.uses_index(&index.name), "{}", s.after);
            assert!(s.before.needs_index(), "{}", s.before);
            assert!(s.speedup.is_some(), "measured: {}", s.sql);
        }
        assert!(index.create_sql.starts_with("CREATE INDEX \""));
    }
    // Every statement that scanned is served, and scans no longer.
    let scanning = [0usize, 1, 2, 4, 5, 6, 7, 8, 9];
    for &i in &scanning {
        let s = served_by(&advice, &workload[i])
            .unwrap_or_else(|| panic!("not served: {}\n{advice:#?}", workload[i]));
        // What is still scanned is scanned through an index, in its order (ORDER BY ...
        // LIMIT reads the first rows of the index and stops).
        assert!(
            s.after.full_scans().iter().all(|a| a.index.is_some()),
            "{}",
            s.after
        );
    }
    // The keyword lookup uses the UNIQUE index already: nothing to advise.
    assert!(advice.skipped.iter().any(|s| s.sql == workload[3]));

    // Nothing was created, analyzed or left behind on the live database.
    assert_eq!(schema_version(&db)?, before);
    let indexes: i64 = db.read(|c| {
        Ok(c.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )?)
    })?;
    assert_eq!(indexes, 0);

    eprintln!("measured on the sample copy (20 000 rows per table), median per run:");
    for index in &advice.indexes {
        eprintln!("{}", index.create_sql);
        for s in &index.statements {
            if let Some(sp) = s.speedup {
                eprintln!(
                    "  {:>8.1}x  {:>10.1?} -> {:>9.1?}  {}",
                    sp.factor(),
                    sp.before,
                    sp.after,
                    s.sql.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        }
    }
    Ok(())
}

/// Median time of `sql` over 30 runs with the given parameters, on a reader (after one
/// untimed run that brings the pages in). Writing statements are not timed (readers refuse
/// them).
fn median_time(db: &Db, sql: &str, params: &[strata::rusqlite::types::Value]) -> Result<Duration> {
    db.read(|c| {
        let mut stmt = c.prepare(sql)?;
        if !stmt.readonly() {
            return Ok(Duration::ZERO);
        }
        let mut times = Vec::new();
        for run in 0..31 {
            let started = Instant::now();
            let mut rows = stmt.query(strata::rusqlite::params_from_iter(params.iter()))?;
            while rows.next()?.is_some() {}
            if run > 0 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        Ok(times[times.len() / 2])
    })
}

#[test]
fn advice_migration_applies_with_refinery_and_queries_use_it() -> Result<()> {
    use strata::rusqlite::types::Value;
    let dir = tempdir();
    let path = dir.path().join("app.db");
    let db = seeded_v1(&path)?;
    let workload = workload();
    let advice = db.advise(AdviseOptions::new().queries(&workload))?;
    // The observed workload (here: the statements just advised on) gives the same advice.
    let observed: Vec<String> = db
        .advise(AdviseOptions::new())?
        .indexes
        .into_iter()
        .map(|i| i.name)
        .collect();
    let names: Vec<String> = advice.indexes.iter().map(|i| i.name.clone()).collect();
    assert_eq!(observed, names);

    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).map_err(io(&migrations))?;
    let v1 = migrations.join("V1__schema.sql");
    std::fs::write(&v1, V1_SQL).map_err(io(&v1))?;
    let written = advice
        .advice_to_migration(&migrations)?
        .expect("a migration is written");
    assert_eq!(
        written.file_name().and_then(|n| n.to_str()),
        Some("V2__advised_indexes.sql")
    );
    let text = std::fs::read_to_string(&written).map_err(io(&written))?;
    for index in &advice.indexes {
        assert!(text.contains(&index.create_sql), "{text}");
    }

    // The live timings before, on the full data.
    let params: Vec<Vec<Value>> = vec![
        vec![
            Value::Integer(7),
            Value::Integer(i64::MAX),
            Value::Integer(i64::MAX),
            Value::Integer(50),
        ],
        vec![
            Value::Integer(7),
            Value::Text("2024-03-01".into()),
            Value::Text("2024-03-31".into()),
        ],
        vec![Value::Integer(7)],
        vec![Value::Text("[\"coffee\"]".into())],
        vec![Value::Integer(7), Value::Text("2024-03-05".into())],
        vec![Value::Integer(7), Value::Text("2024-03-05".into())],
        vec![Value::Integer(7)],
        vec![
            Value::Text("2024-03-01".into()),
            Value::Text("2024-03-02".into()),
        ],
        vec![],
        vec![Value::Integer(5)],
    ];
    let mut before = Vec::new();
    for (sql, p) in workload.iter().zip(&params) {
        before.push(median_time(&db, sql, p)?);
    }
    drop(db);

    // Reopen with refinery runner loaded from the directory: V1 is known, V2 applies.
    let runner = Runner::new(&refinery::load_sql_migrations(&migrations)?);
    let db = Db::builder().path(&path).migrations(runner).build()?;
    assert_eq!(db.schema_version()?, Some(2));
    // As the migration's header says: statistics for the new indexes.
    db.optimize()?;
    for index in &advice.indexes {
        for s in &index.statements {
            let plan = db.explain(&s.sql)?;
            assert!(plan.uses_index(&index.name), "{plan}");
        }
    }
    eprintln!("live database, 60 000 expenses, median of 30 runs, before -> after the migration:");
    for ((sql, p), was) in workload.iter().zip(&params).zip(&before) {
        if sql.starts_with("DELETE") {
            continue;
        }
        let now = median_time(&db, sql, p)?;
        eprintln!(
            "  {:>8.1}x  {:>10.1?} -> {:>9.1?}  {}",
            was.as_secs_f64() / now.as_secs_f64().max(1e-9),
            was,
            now,
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    // The next advice goes after it.
    let again = Advice {
        indexes: advice.indexes.clone(),
        skipped: Vec::new(),
        schema_skipped: Vec::new(),
    };
    let next = again.advice_to_migration(&migrations)?.expect("written");
    assert!(next.ends_with("V3__advised_indexes.sql"));
    Ok(())
}

/// The seeks of a plan, as (table name in the plan, number of constraint terms), and its temp
/// b-trees, from `EXPLAIN QUERY PLAN` lines.
fn seeks_and_sorts<'a>(lines: impl Iterator<Item = &'a str>) -> (Vec<(String, usize)>, usize) {
    let mut seeks = Vec::new();
    let mut sorts = 0;
    for line in lines {
        let line = line.trim_start_matches(['|', '`', '-', ' ']);
        if line.starts_with("USE TEMP B-TREE") {
            sorts += 1;
        }
        if let Some(rest) = line.strip_prefix("SEARCH ") {
            let name = rest.split_whitespace().next().unwrap_or("").to_owned();
            let terms = rest
                .rsplit_once(" (")
                .map_or(0, |(_, c)| c.split(" AND ").count());
            seeks.push((name, terms));
        }
    }
    (seeks, sorts)
}

/// The columns of a `CREATE INDEX name ON table(col, col DESC);` line of `.expert`, as
/// (table, columns in order), without a trailing `id`: every table here has
/// `id INTEGER PRIMARY KEY`, and the rowid ends every index key already.
fn expert_index(line: &str) -> (String, Vec<String>) {
    let (_, rest) = line.split_once(" ON ").expect("ON");
    let (table, cols) = rest.split_once('(').expect("(");
    let mut columns: Vec<String> = cols
        .trim_end_matches(';')
        .trim_end_matches(')')
        .split(',')
        .map(|c| {
            c.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('\'')
                .to_owned()
        })
        .collect();
    if columns.len() > 1 && columns.last().is_some_and(|c| c == "id") {
        columns.pop();
    }
    (table.trim().to_owned(), columns)
}

/// Whether one index's columns are a leading part of the other's (same columns, same order,
/// from the first): they seek on the same leading column(s).
fn share_leading_columns(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    n > 0 && a[..n] == b[..n]
}

/// Runs `sqlite3 DB .expert SQL`; panics when there is no shell or it has no `.expert`, so
/// that a machine without them fails this test rather than skipping the comparison.
fn sqlite_expert(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(".expert")
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!("no sqlite3 shell ({e}): install one with .expert (Debian: sqlite3)")
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("unknown command") && !err.contains("unknown"),
        "the sqlite3 shell has no usable .expert:\n{text}{err}"
    );
    text
}

/// Parity with SQLite's own `.expert` (the sqlite3_expert extension of the sqlite3 shell,
/// which must be installed: `.ci/run` installs Debian's `sqlite3`). For each statement of the
/// workload but `keywords_by_word` (served by the UNIQUE constraint on `keywords.keyword`),
/// `.expert` recommends indexes, and:
/// - each index it recommends is matched by a strata advice on the same table that shares its
///   leading columns: one index's columns are a leading part of the other's, in order, and
/// - every seek in `.expert`'s plan is in strata's plan too, on at least as many terms, with
///   no more temp b-trees.
#[test]
fn finds_at_least_what_sqlite_expert_finds() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("app.db");
    let db = seeded_v1(&path)?;
    let workload = workload();
    let advice = db.advise(AdviseOptions::new().queries(&workload))?;
    let (_, served_by_unique) = LIST_QUERIES
        .iter()
        .find(|(name, _)| *name == "keywords_by_word")
        .expect("keywords_by_word");
    let mut compared = 0;
    for sql in &workload {
        let text = sqlite_expert(&path, sql);
        let recommended: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("CREATE INDEX"))
            .collect();
        if sql == served_by_unique {
            assert!(recommended.is_empty(), "{sql}\n.expert:\n{text}");
            continue;
        }
        assert!(
            !recommended.is_empty(),
            "no index from .expert for {sql}:\n{text}"
        );
        let strata_plan = match served_by(&advice, sql) {
            Some(s) => s.after.clone(),
            None => db.explain(sql)?,
        };
        for line in &recommended {
            let (table, wanted) = expert_index(line);
            let matched = advice
                .indexes
                .iter()
                .any(|i| i.table == table && share_leading_columns(&i.columns, &wanted));
            assert!(
                matched,
                ".expert: {line}\nfor {sql}\nstrata: {:#?}",
                advice.indexes
            );
        }
        let (expert_seeks, expert_sorts) = seeks_and_sorts(text.lines());
        let drawn = strata_plan.to_string();
        let (strata_seeks, strata_sorts) = seeks_and_sorts(drawn.lines());
        for (name, terms) in &expert_seeks {
            assert!(
                strata_seeks.iter().any(|(n, t)| n == name && t >= terms),
                "{sql}\n.expert:\n{text}\nstrata:\n{drawn}"
            );
        }
        assert!(
            strata_sorts <= expert_sorts,
            "{sql}\n.expert:\n{text}\nstrata:\n{drawn}"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        workload.len() - 1,
        "statements compared with .expert"
    );
    Ok(())
}

/// The leading-columns check is a prefix check, not a subset check.
#[test]
fn leading_columns_are_a_prefix() {
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let expert = cols(&["user_id", "expense_date", "category_id"]);
    assert!(share_leading_columns(
        &cols(&["user_id", "expense_date"]),
        &expert
    ));
    assert!(share_leading_columns(&cols(&["user_id"]), &expert));
    assert!(share_leading_columns(&expert, &cols(&["user_id"])));
    assert!(!share_leading_columns(&cols(&["category_id"]), &expert));
    assert!(!share_leading_columns(
        &cols(&["expense_date", "user_id"]),
        &expert
    ));
    assert!(!share_leading_columns(&[], &expert));
    assert_eq!(
        expert_index("CREATE INDEX x ON expenses(user_id, created_at DESC, id DESC);"),
        ("expenses".to_owned(), cols(&["user_id", "created_at"]))
    );
}

#[test]
fn redundant_and_unused_indexes() -> Result<()> {
    let db = Db::builder().build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a INT, b INT, c INT);
             CREATE INDEX t_a ON t(a);
             CREATE INDEX t_a_b ON t(a, b);
             CREATE INDEX t_c ON t(c);
             CREATE UNIQUE INDEX t_b_unique ON t(b);
             CREATE INDEX t_b ON t(b);",
        )?)
    })?;
    let redundant = db.redundant_indexes()?;
    let found: Vec<(&str, &str)> = redundant
        .iter()
        .map(|r| (r.index.as_str(), r.covered_by.as_str()))
        .collect();
    assert_eq!(found, vec![("t_a", "t_a_b"), ("t_b", "t_b_unique")]);
    assert_eq!(redundant[0].drop_sql, "DROP INDEX \"t_a\"");
    assert_eq!(redundant[0].columns, vec!["a"]);

    db.explain("SELECT * FROM t WHERE a = ?1 ORDER BY b")?;
    let unused = db.unused_indexes()?;
    let names: Vec<&str> = unused.iter().map(|u| u.index.as_str()).collect();
    assert_eq!(names, vec!["t_a", "t_b", "t_c"]);
    assert_eq!(unused[2].drop_sql, "DROP INDEX \"t_c\"");
    Ok(())
}

/// The monitor's per-statement event feeds the advisor's N+1 counter; the warning is kept and
/// raised as an alert, once.
#[test]
fn n_plus_one_warns_for_a_loop_of_point_queries_not_for_one_in_query() -> Result<()> {
    let alerts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&alerts);
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .on_alert(move |alert| {
            if let strata::monitor::Alert::NPlusOne { sql, calls } = alert {
                seen.lock().unwrap().push((sql.clone(), *calls));
            }
        })
        .build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
             INSERT INTO users (id, email, name, created_at) SELECT i, 'u' || i, 'u', 0 FROM n;",
        )?)
    })?;
    db.read(|c| {
        let mut stmt = c.prepare_cached("SELECT name FROM users WHERE id = ?1")?;
        for id in 1..=30 {
            stmt.query_row([id], |r| r.get::<_, String>(0))?;
        }
        Ok(())
    })?;
    let warnings = db.n_plus_one_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].sql, "SELECT name FROM users WHERE id = ?1");
    assert_eq!(warnings[0].calls, 30);
    db.read(|c| {
        let mut stmt =
            c.prepare("SELECT name FROM users WHERE id IN (SELECT value FROM json_each(?1))")?;
        let ids = format!(
            "[{}]",
            (1..=30)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut rows = stmt.query([ids])?;
        while rows.next()?.is_some() {}
        Ok(())
    })?;
    assert_eq!(db.n_plus_one_warnings().len(), 1);
    assert_eq!(
        *alerts.lock().unwrap(),
        vec![("SELECT name FROM users WHERE id = ?1".to_owned(), 30)]
    );
    Ok(())
}

#[test]
fn optimize_shrinks_a_wal_grown_by_writes() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("wal.db");
    let db = Db::builder().path(&path).build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t(v);",
        )?)
    })?;
    for chunk in 0..20 {
        db.write(|c| {
            let mut stmt = c.prepare_cached("INSERT INTO t (v) VALUES (?1)")?;
            for i in 0..500 {
                stmt.execute([format!("{chunk}-{i}-{}", "x".repeat(100))])?;
            }
            Ok(())
        })?;
    }
    let grown = std::fs::metadata(dir.path().join("wal.db-wal"))
        .map_err(io(&path))?
        .len();
    assert!(grown > 1_000_000, "the WAL grew to {grown} bytes");
    let report = db.optimize()?;
    assert_eq!(report.wal_bytes_before, Some(grown));
    assert_eq!(report.wal_bytes_after, Some(0), "{report:?}");
    assert!(!report.checkpoint.busy);
    assert!(report.checkpoint.checkpointed_frames >= 0);
    assert!(
        report.analyzed.iter().any(|a| a.contains("\"t\"")),
        "{report:?}"
    );
    assert!(db.health().last_checkpoint.is_some());
    Ok(())
}

#[test]
fn health_reports_a_corrupt_file_as_not_ok() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("app.db");
    let db = seeded_v1(&path)?;
    let healthy = db.health();
    assert!(healthy.ok, "{healthy:?}");
    assert_eq!(healthy.schema_version, Some(1));
    db.optimize()?;
    drop(db);
    assert!(strata::advisor::health_check(&path).ok);

    // Damage the middle of the file: b-tree pages with garbage.
    let mut bytes = std::fs::read(&path).map_err(io(&path))?;
    let len = bytes.len();
    assert!(len > 64 * 4096, "file is {len} bytes");
    for b in &mut bytes[len / 2..len / 2 + 16 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).map_err(io(&path))?;
    let h = strata::advisor::health_check(&path);
    assert!(!h.ok, "{h:?}");
    assert!(!h.problems.is_empty());

    // A truncated copy fails before SQLite reads a page.
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..len / 3]).map_err(io(&cut))?;
    let h = strata::advisor::Health::of_file(&cut);
    assert!(!h.ok);
    assert!(h.problems[0].contains("corrupt"), "{h:?}");
    Ok(())
}
