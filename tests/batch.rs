//! `Batch` against file databases: chunking, failures, retries, aborts, atomicity, dry runs,
//! upserts and names that try to inject SQL.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use strata::batch::OpKind;
use strata::rusqlite::{self, types::Value};
use strata::{Batch, Db, Error, Result};

const USER: &[&str] = &["email", "name", "created_at"];

/// A database with the expense tracker's migrations (the `users` table) in a fresh directory.
fn open(dir: &tempfile::TempDir) -> Result<Db> {
    Db::builder()
        .migrations(strata::domain::migrations())
        .path(dir.path().join("app.db"))
        .build()
}

fn count(db: &Db, table: &str) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {table}");
    db.read(|c| Ok(c.query_row(&sql, [], |r| r.get(0))?))
}

/// Everything in `users`, in id order, as one string.
fn checksum(db: &Db) -> Result<String> {
    db.read(|c| {
        Ok(c.query_row(
            "SELECT count(*) || '/' || coalesce(group_concat(
                 id || ':' || email || ':' || name || ':' || created_at, '|'), '')
             FROM (SELECT * FROM users ORDER BY id)",
            [],
            |r| r.get(0),
        )?)
    })
}

fn users(batch: &mut Batch, range: std::ops::Range<usize>) {
    for i in range {
        batch.insert(
            "users",
            USER,
            (format!("u{i}@x"), format!("User {i}"), i as i64),
        );
    }
}

#[test]
fn applies_in_chunks_of_max_batch() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new().max_batch(1000);
    users(&mut batch, 0..2500);
    let report = db.apply(&batch)?;
    assert_eq!(report.applied, 2500);
    assert_eq!(report.chunks, 3, "ceil(2500 / 1000)");
    assert!(report.failed.is_empty() && report.aborted.is_none() && !report.rolled_back);
    assert_eq!(count(&db, "users")?, 2500);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["elapsed_us"].as_u64().is_some(), "{json}");
    Ok(())
}

#[test]
fn a_constraint_violation_fails_only_its_operation() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new().max_batch(100);
    users(&mut batch, 0..57);
    batch.insert("users", USER, ("u3@x", "dup", 0)); // index 57: UNIQUE(email)
    users(&mut batch, 57..150);
    batch.insert("users", USER, ("nameless@x", Value::Null, 0)); // index 151: NOT NULL
    let report = batch.run(&db)?;
    let indexes: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
    assert_eq!(indexes, [57, 151]);
    assert!(report.failed[0].reason.contains("UNIQUE"), "{report:?}");
    assert_eq!(report.failed[0].kind, OpKind::Insert);
    assert_eq!(report.failed[0].table, "users");
    assert_eq!(report.applied, 150);
    assert_eq!(count(&db, "users")?, 150);
    Ok(())
}

#[test]
fn changes_are_published_once_per_applied_row() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let changes = db.subscribe();
    let mut batch = Batch::new();
    users(&mut batch, 0..100);
    batch.insert("users", USER, ("u1@x", "dup", 0)); // fails inside a multi-row statement
    users(&mut batch, 100..200);
    let report = db.apply(&batch)?;
    assert_eq!(report.applied, 200);
    let published: usize = changes.try_iter().map(|set| set.changes.len()).sum();
    assert_eq!(
        published, 200,
        "rows of an undone multi-row statement are not reported"
    );
    Ok(())
}

/// Holds the write lock of the database at `path` on a raw connection for `hold`.
fn hold_lock(path: std::path::PathBuf, hold: Duration) -> thread::JoinHandle<()> {
    let (locked, wait) = mpsc::channel();
    let holder = thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    wait.recv().unwrap();
    holder
}

fn impatient(dir: &tempfile::TempDir) -> Result<Db> {
    Db::builder()
        .migrations(strata::domain::migrations())
        .path(dir.path().join("app.db"))
        .busy_timeout(Duration::from_millis(50))
        .connection_timeout(Duration::from_secs(1))
        .build()
}

#[test]
fn a_locked_database_is_retried() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = impatient(&dir)?;
    let holder = hold_lock(db.path().to_path_buf(), Duration::from_millis(300));
    let mut batch = Batch::new().retry_attempts(10);
    users(&mut batch, 0..10);
    let report = db.apply(&batch)?;
    holder.join().unwrap();
    assert!(report.retries >= 1, "{report:?}");
    assert_eq!(report.applied, 10);
    assert_eq!(count(&db, "users")?, 10);
    Ok(())
}

#[test]
fn a_locked_database_without_retries_fails_with_the_report() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = impatient(&dir)?;
    let holder = hold_lock(db.path().to_path_buf(), Duration::from_millis(300));
    let mut batch = Batch::new().retry_attempts(0).max_batch(4);
    users(&mut batch, 0..10);
    let err = db.apply(&batch).unwrap_err();
    holder.join().unwrap();
    assert!(err.is_busy(), "{err}");
    let Error::Batch { report, .. } = err else {
        panic!("expected Error::Batch, got {err:?}");
    };
    assert_eq!((report.applied, report.chunks, report.retries), (0, 0, 0));
    assert_eq!(report.skipped, 10);
    assert!(report.aborted.is_some());
    assert_eq!(count(&db, "users")?, 0);
    Ok(())
}

#[test]
fn too_many_failures_abort_the_rest() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new().max_batch(100).max_failure_rate(0.3);
    for i in 0..1000 {
        // Every other row repeats the email of the row before it.
        let email = format!("u{}@x", i / 2);
        batch.insert("users", USER, (email, "U", i));
    }
    let report = db.apply(&batch)?;
    assert_eq!(
        report.chunks, 1,
        "the rate is checked after the first chunk"
    );
    assert_eq!((report.applied, report.failed.len()), (50, 50));
    assert_eq!(report.skipped, 900);
    assert!(report
        .aborted
        .as_deref()
        .unwrap()
        .contains("max_failure_rate"));
    assert_eq!(count(&db, "users")?, 50, "later chunks were not applied");
    Ok(())
}

#[test]
fn all_or_nothing_rolls_everything_back() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new().all_or_nothing(true).max_batch(10);
    users(&mut batch, 0..300);
    batch.insert("users", USER, ("u7@x", "dup", 0));
    batch.delete("users", "email", "u8@x");
    let report = db.apply(&batch)?;
    assert_eq!(report.applied, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].index, 300);
    assert!(report.rolled_back);
    assert!(report.aborted.is_some());
    assert_eq!(report.chunks, 1, "one transaction whatever max_batch is");
    assert_eq!(count(&db, "users")?, 0);

    let mut batch = Batch::new().all_or_nothing(true).max_batch(10);
    users(&mut batch, 0..300);
    let report = db.apply(&batch)?;
    assert_eq!((report.applied, report.chunks), (300, 1));
    assert!(!report.rolled_back);
    assert_eq!(count(&db, "users")?, 300);
    Ok(())
}

#[test]
fn a_dry_run_leaves_the_database_unchanged() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut setup = Batch::new();
    users(&mut setup, 0..100);
    db.apply(&setup)?;
    let before = checksum(&db)?;

    let mut batch = Batch::new().dry_run(true).max_batch(50);
    users(&mut batch, 100..200);
    batch.update("users", &["name"], ("Renamed",), "email", "u1@x");
    batch.delete("users", "id", 2);
    batch.upsert("users", USER, ("u3@x", "Upserted", 9), &["email"]);
    batch.insert("users", USER, ("u4@x", "dup", 0));
    let report = db.apply(&batch)?;
    assert!(report.dry_run && report.rolled_back);
    assert_eq!(report.applied, 103);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.chunks, 3, "the chunks a real run would use");
    assert_eq!(checksum(&db)?, before);
    assert_eq!(count(&db, "users")?, 100);
    Ok(())
}

#[test]
fn upsert_updates_existing_rows_in_place() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut setup = Batch::new();
    users(&mut setup, 0..100);
    db.apply(&setup)?;
    let id_of = |email: &str| -> Result<i64> {
        db.read(|c| {
            Ok(
                c.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
                    r.get(0)
                })?,
            )
        })
    };
    let id_50 = id_of("u50@x")?;

    // 200 upserts: half hit existing rows, in runs long enough for multi-row statements.
    let mut batch = Batch::new();
    for i in 50..250 {
        batch.upsert(
            "users",
            USER,
            (format!("u{i}@x"), "Upserted", 1),
            &["email"],
        );
    }
    let report = db.apply(&batch)?;
    assert_eq!((report.applied, report.failed.len()), (200, 0));
    assert_eq!(count(&db, "users")?, 250);
    assert_eq!(
        id_of("u50@x")?,
        id_50,
        "updated in place, not deleted and re-inserted"
    );
    let upserted: i64 = db.read(|c| {
        Ok(c.query_row(
            "SELECT count(*) FROM users WHERE name = 'Upserted'",
            [],
            |r| r.get(0),
        )?)
    })?;
    assert_eq!(upserted, 200);
    Ok(())
}

#[test]
fn updates_and_deletes_by_key() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new();
    users(&mut batch, 0..10);
    batch.update(
        "users",
        &["name", "created_at"],
        ("Ada", 42),
        "email",
        "u1@x",
    );
    batch.update("users", &["name"], ["Nobody"], "email", "missing@x");
    batch.delete("users", "rowid", 3);
    batch.delete("users", "EMAIL", "u4@x"); // identifiers are case-insensitive
    batch.insert("users", USER, ("short@x", "arity"));
    let report = db.apply(&batch)?;
    assert_eq!((report.applied, report.unmatched), (14, 1));
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].reason.contains("2 values for 3 columns"));
    assert_eq!(count(&db, "users")?, 8);
    let ada: (String, i64) = db.read(|c| {
        Ok(c.query_row(
            "SELECT name, created_at FROM users WHERE email = 'u1@x'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    })?;
    assert_eq!(ada, ("Ada".to_owned(), 42));
    Ok(())
}

#[test]
fn names_cannot_inject_sql() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let mut batch = Batch::new().max_failure_rate(1.0);
    users(&mut batch, 0..3);
    batch.insert("users; DROP TABLE users", USER, ("a@x", "A", 0));
    batch.insert(
        "users",
        &["email", "name\"; DROP TABLE users; --", "created_at"],
        ("b@x", "B", 0),
    );
    batch.delete("users", "id = id OR 1", 1);
    batch.update("users", &["name"], ("x",), "1=1; DROP TABLE users; --", 1);
    batch.upsert(
        "users",
        USER,
        ("c@x", "C", 0),
        &["email) DO NOTHING; DROP TABLE users; --"],
    );
    batch.insert("sqlite_schema", &["sql"], ("DROP TABLE users",));
    batch.delete("daily_metrics", "user_id", 1); // a view
    let report = db.apply(&batch)?;
    assert_eq!(report.applied, 3);
    let reasons: Vec<&str> = report.failed.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(reasons.len(), 7, "{reasons:#?}");
    assert!(
        reasons[0].contains("no table named \"users; DROP TABLE users\""),
        "{reasons:#?}"
    );
    assert!(
        reasons[1].contains("has no column \"name\\\"; DROP TABLE users; --\""),
        "{reasons:#?}"
    );
    assert!(
        reasons[2].contains("has no column \"id = id OR 1\""),
        "{reasons:#?}"
    );
    assert_eq!(
        count(&db, "users")?,
        3,
        "the table still exists with its rows"
    );
    Ok(())
}

#[test]
fn invalid_options_and_an_empty_batch() -> Result<()> {
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .build()?;
    let mut batch = Batch::new().max_batch(0);
    users(&mut batch, 0..3);
    let err = db.apply(&batch).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "max_batch",
                ..
            }
        ),
        "{err}"
    );
    let err = db.apply(&Batch::new().max_failure_rate(1.5)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "max_failure_rate",
                ..
            }
        ),
        "{err}"
    );

    let report = db.apply(&Batch::new())?;
    assert_eq!(
        (report.applied, report.chunks, report.failed.len()),
        (0, 0, 0)
    );
    assert!(report.aborted.is_none());
    Ok(())
}
