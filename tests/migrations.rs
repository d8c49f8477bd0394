//! Migrations at open: the expense tracker's, a service's own runner, none (the default);
//! divergent, missing and broken migrations; several processes opening one fresh file at once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use refinery::{Migration, Runner};
use strata::rusqlite::Connection;
use strata::{Db, Error, Result};

/// A database with the expense tracker's schema (a plain `Db::open` applies no migrations).
fn tracker_db(path: impl AsRef<std::path::Path>) -> strata::Result<strata::Db> {
    strata::Db::builder()
        .path(path)
        .migrations(strata::domain::migrations())
        .build()
}

/// The performance indexes of V2, as named in the migration file itself.
const V2_SQL: &str = include_str!("../migrations/V2__performance_indexes.sql");

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn v2_index_names() -> Vec<String> {
    V2_SQL
        .lines()
        .filter_map(|line| line.trim().strip_prefix("CREATE INDEX "))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .expect("index name")
                .to_owned()
        })
        .collect()
}

/// refinery's history: (version, name, checksum, applied_on) in version order.
fn history(c: &Connection) -> Result<Vec<(i32, String, String, String)>> {
    let mut stmt = c.prepare(
        "SELECT version, name, checksum, applied_on FROM refinery_schema_history ORDER BY version, applied_on",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

fn versions(c: &Connection) -> Result<Vec<i32>> {
    Ok(history(c)?.into_iter().map(|(v, ..)| v).collect())
}

fn names_of(c: &Connection, kind: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare(
        "SELECT name FROM sqlite_schema WHERE type = ?1 AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let rows = stmt.query_map([kind], |r| r.get(0))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

/// Opens `path` with a runner made of `migrations` (name, sql).
fn open_with_runner(path: &Path, migrations: &[(&str, &str)]) -> Result<Db> {
    let migrations = migrations
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Db::builder()
        .path(path)
        .readers(1)
        .migrations(Runner::new(&migrations))
        .build()
}

/// Opens `path` without migrating, to inspect it.
fn inspect(path: &Path) -> Result<Db> {
    Db::builder().path(path).readers(1).build()
}

#[test]
fn fresh_file_gets_both_migrations_once() -> Result<()> {
    let dir = tempdir();
    let db = tracker_db(dir.path().join("app.db"))?;
    assert_eq!(db.schema_version()?, Some(2));
    let (history, indexes, tables) =
        db.read(|c| Ok((history(c)?, names_of(c, "index")?, names_of(c, "table")?)))?;
    let versions: Vec<i32> = history.iter().map(|(v, ..)| *v).collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(history[0].1, "schema");
    assert_eq!(history[1].1, "performance_indexes");

    let expected = v2_index_names();
    assert_eq!(expected.len(), 7, "V2 declares its indexes: {expected:?}");
    for name in &expected {
        assert!(indexes.contains(name), "index {name} missing: {indexes:?}");
    }
    for table in ["users", "categories", "expenses", "keywords"] {
        assert!(tables.iter().any(|t| t == table), "table {table} missing");
    }
    Ok(())
}

#[test]
fn reopening_applies_nothing_new() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("app.db");
    let first = {
        let db = tracker_db(&path)?;
        db.read(history)?
    };
    assert_eq!(first.len(), 2);
    for _ in 0..2 {
        let db = tracker_db(&path)?;
        assert_eq!(db.schema_version()?, Some(2));
        assert_eq!(db.read(history)?, first, "history unchanged on reopen");
    }
    Ok(())
}

#[test]
fn custom_runner_replaces_strata_migrations() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("svc.db");
    let db = open_with_runner(
        &path,
        &[
            (
                "V1__accounts",
                "CREATE TABLE accounts(id INTEGER PRIMARY KEY);",
            ),
            ("V2__ledger", "CREATE TABLE ledger(account_id INTEGER);"),
        ],
    )?;
    assert_eq!(db.schema_version()?, Some(2));
    let (versions, tables) = db.read(|c| Ok((versions(c)?, names_of(c, "table")?)))?;
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(
        tables,
        vec!["accounts", "ledger", "refinery_schema_history"],
        "the service's tables and no strata tables"
    );
    Ok(())
}

#[test]
fn default_open_creates_no_tables() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("bare.db"))
        .readers(1)
        .build()?;
    assert_eq!(db.schema_version()?, None);
    assert!(db.read(|c| names_of(c, "table"))?.is_empty());
    Ok(())
}

#[test]
fn divergent_migration_is_refused() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("div.db");
    let applied = {
        let db = open_with_runner(&path, &[("V1__a", "CREATE TABLE a(x);")])?;
        db.read(history)?
    };
    match open_with_runner(&path, &[("V1__a", "CREATE TABLE a(x, y);")]) {
        Err(Error::Migration {
            version, applied, ..
        }) => {
            assert_eq!(version, Some(1));
            assert!(applied.is_empty());
        }
        other => panic!("expected a divergent migration error, got {other:?}"),
    }
    let db = inspect(&path)?;
    assert_eq!(db.read(history)?, applied, "history untouched");
    Ok(())
}

#[test]
fn missing_migration_is_refused() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("miss.db");
    let v1 = ("V1__a", "CREATE TABLE a(x);");
    let applied = {
        let db = open_with_runner(&path, &[v1, ("V2__b", "CREATE TABLE b(x);")])?;
        db.read(history)?
    };
    match open_with_runner(&path, &[v1]) {
        Err(Error::Migration { version, .. }) => assert_eq!(version, Some(2)),
        other => panic!("expected a missing migration error, got {other:?}"),
    }
    let db = inspect(&path)?;
    assert_eq!(db.read(history)?, applied, "history untouched");
    Ok(())
}

#[test]
fn broken_migration_is_named_and_rolls_back_the_group() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("broken.db");
    let v1 = ("V1__good", "CREATE TABLE good(x);");
    let v2 = ("V2__bad", "CREATE TABLE oops(");
    match open_with_runner(&path, &[v1, v2]) {
        Err(Error::Migration {
            version, applied, ..
        }) => {
            assert_eq!(version, Some(2));
            assert!(applied.is_empty(), "grouped: nothing applied: {applied:?}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    {
        let db = inspect(&path)?;
        assert_eq!(db.schema_version()?, None, "V1 not left applied");
        let tables = db.read(|c| names_of(c, "table"))?;
        assert!(!tables.iter().any(|t| t == "good"), "tables: {tables:?}");
    }

    // With V1 already applied, a broken V2 is still named and V1 stays as it was.
    let v1_history = {
        let db = open_with_runner(&path, &[v1])?;
        db.read(history)?
    };
    match open_with_runner(&path, &[v1, v2]) {
        Err(Error::Migration { version, .. }) => assert_eq!(version, Some(2)),
        other => panic!("expected a migration error, got {other:?}"),
    }
    let db = inspect(&path)?;
    assert_eq!(db.read(history)?, v1_history);
    Ok(())
}

const CHILD_DB: &str = "STRATA_CHILD_DB";
const CHILD_START: &str = "STRATA_CHILD_START_MS";
const CHILDREN: usize = 4;

/// A migration slow enough (a few hundred ms) that processes starting together overlap inside
/// it: without the startup lock, a second process reads the history before the first commits.
const SLOW_ROWS: i64 = 200_000;
fn slow_runner() -> Result<Runner> {
    let v1 = Migration::unapplied(
        "V1__slow",
        &format!(
            "CREATE TABLE big(x INTEGER);
             INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {SLOW_ROWS}) SELECT x FROM c;"
        ),
    )?;
    let v2 = Migration::unapplied("V2__index", "CREATE INDEX big_x ON big(x);")?;
    Ok(Runner::new(&[v1, v2]))
}

/// In a child process (`STRATA_CHILD_DB` set): waits for the common start time, opens the
/// database with `build` and reports whether the open succeeded. `None` in the parent.
fn as_child(build: impl FnOnce(&Path) -> Result<Db>) -> Option<Result<()>> {
    let path = std::env::var_os(CHILD_DB)?;
    // Every child opens at the same moment, not whenever its process happened to start.
    let start: u64 = std::env::var(CHILD_START)
        .expect("start time")
        .parse()
        .expect("start time in ms");
    let start = UNIX_EPOCH + Duration::from_millis(start);
    if let Ok(wait) = start.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    Some(build(Path::new(&path)).and_then(|db| {
        assert_eq!(db.schema_version()?, Some(2));
        Ok(())
    }))
}

/// Re-runs this test binary as `CHILDREN` processes running only `test`, opening `path` at
/// the same moment (child `i` after `i * stagger`), and checks that every one succeeded.
fn run_children(test: &str, path: &Path, stagger: Duration) {
    let exe = std::env::current_exe().expect("current test binary");
    let start = SystemTime::now() + Duration::from_millis(500);
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            let start = start + stagger * i as u32;
            let start = start.duration_since(UNIX_EPOCH).expect("clock").as_millis();
            Command::new(&exe)
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, path)
                .env(CHILD_START, start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a child test process")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().expect("wait for child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child {i} failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // The child really ran the test (and not zero tests).
        assert!(stdout.contains("1 passed"), "child {i} did not run {test}");
    }
}

/// Several processes open one fresh file at once; the startup lock makes each migration apply
/// once. The test re-runs itself as the children: with `STRATA_CHILD_DB` set, it only opens.
#[test]
fn processes_opening_a_fresh_file_at_once_migrate_once() -> Result<()> {
    if let Some(outcome) = as_child(|path| {
        Db::builder()
            .migrations(strata::domain::migrations())
            .path(path)
            .readers(1)
            .build()
    }) {
        return outcome;
    }
    let dir = tempdir();
    let path = dir.path().join("shared.db");
    run_children(
        "processes_opening_a_fresh_file_at_once_migrate_once",
        &path,
        Duration::ZERO,
    );
    let db = inspect(&path)?;
    assert_eq!(db.read(versions)?, vec![1, 2], "each version exactly once");
    assert_eq!(db.schema_version()?, Some(2));
    Ok(())
}

/// The same with a slow migration and the children 25 ms apart, so that the later ones arrive
/// while the first is migrating (processes arriving in the same instant tend to be serialized
/// by SQLite's write lock before they read the history, hiding a missing startup lock).
#[test]
fn processes_racing_through_a_slow_migration_apply_it_once() -> Result<()> {
    if let Some(outcome) = as_child(|path| {
        Db::builder()
            .path(path)
            .readers(1)
            .migrations(slow_runner()?)
            .build()
    }) {
        return outcome;
    }
    let dir = tempdir();
    let path = dir.path().join("slow.db");
    run_children(
        "processes_racing_through_a_slow_migration_apply_it_once",
        &path,
        Duration::from_millis(25),
    );
    let db = inspect(&path)?;
    assert_eq!(db.read(versions)?, vec![1, 2], "each version exactly once");
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM big", [], |r| r.get(0))?))?;
    assert_eq!(rows, SLOW_ROWS, "the data migration ran once");
    Ok(())
}
