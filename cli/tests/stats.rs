//! `strata stats` on real database files made by the expense tracker: sizes, rows (estimated
//! and exact), pages, WAL, migration version and job queue depths, as text and JSON; the file
//! is only read (no queue tables created, nothing migrated); one-line errors for bad files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use strata::domain::ExpenseTracker;
use strata::jobs::Job;
use strata::rusqlite::{Connection, OpenFlags};
use strata::{Error, Result};

const USERS: i64 = 50;

fn strata(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .map_err(Error::closure)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `strata stats --db path --json [extra]`, parsed.
fn stats_json(path: &Path, extra: &[&str]) -> Result<Value> {
    let mut args = vec!["stats", "--db", arg(path), "--json"];
    args.extend_from_slice(extra);
    let out = strata(&args)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).map_err(Error::closure)
}

/// The names in the file's schema, read without writing.
fn schema_names(path: &Path) -> Result<Vec<String>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT name FROM sqlite_schema ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<strata::rusqlite::Result<_>>()?;
    Ok(names)
}

/// A tracker database (migrated) with `USERS` users and, with `jobs`, three jobs waiting in
/// the default queue and a paused `mail` queue; `analyze` runs ANALYZE (sqlite_stat1).
/// Returns its schema version.
fn tracker_db(path: &Path, jobs: bool, analyze: bool) -> Result<i64> {
    let tracker = ExpenseTracker::open(path)?;
    let db = tracker.db();
    db.write(|c| {
        let mut insert =
            c.prepare("INSERT INTO users (email, name, created_at) VALUES (?1, ?2, 0)")?;
        for i in 0..USERS {
            insert.execute((format!("u{i}@example.com"), format!("user {i}")))?;
        }
        Ok(())
    })?;
    if jobs {
        let queue = db.jobs()?;
        for i in 0..3 {
            queue.enqueue(Job::new("report", &i)?)?;
        }
        queue.pause("mail")?;
    }
    if analyze {
        db.write(|c| Ok(c.execute_batch("ANALYZE")?))?;
    }
    let version = db.schema_version()?.expect("the tracker migrates");
    Ok(i64::from(version))
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == name || t["queue"] == name))
        .unwrap_or_else(|| panic!("{name} not in {list:#}"))
}

#[test]
fn stats_of_a_tracker_database_with_a_job_queue() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let path = dir.path().join("tracker.db");
    let version = tracker_db(&path, true, true)?;
    let names = schema_names(&path)?;

    let json = stats_json(&path, &[])?;
    assert_eq!(json["schema_version"], version);
    assert_eq!(json["page_size"], 4096);
    let pages = json["page_count"].as_u64().expect("pages");
    assert_eq!(json["file_bytes"].as_u64(), Some(pages * 4096));
    assert!(json["freelist_pages"].is_u64() && json["wal_bytes"].is_u64());
    assert_eq!(json["sizes_from_dbstat"], true);
    assert_eq!(json["rows_from"], "sqlite_stat1");
    let users = find(&json["tables"], "users");
    assert_eq!(users["rows"], USERS);
    assert!(
        users["bytes"].as_u64().is_some_and(|b| b >= 4096),
        "{users}"
    );
    let sizes: u64 = json["tables"]
        .as_array()
        .into_iter()
        .chain(json["indexes"].as_array())
        .flatten()
        .map(|t| t["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(sizes <= pages * 4096, "{sizes} of {pages} pages");
    let email = json["indexes"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["table"] == "users"))
        .expect("users has an index (email UNIQUE)");
    assert!(email["bytes"].as_u64().is_some_and(|b| b > 0));
    let default = find(&json["jobs"], "default");
    assert_eq!(
        (default["pending"].as_u64(), default["running"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(default["paused"], false);
    assert_eq!(find(&json["jobs"], "mail")["paused"], true);

    // Counted rows, and the same database as text.
    let exact = stats_json(&path, &["--exact"])?;
    assert_eq!(exact["rows_from"], "exact");
    assert_eq!(find(&exact["tables"], "users")["rows"], USERS);
    assert_eq!(find(&exact["tables"], "strata_jobs")["rows"], 3);
    let out = strata(&["stats", "--db", arg(&path)])?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema = format!("schema V{version}");
    for expected in [
        schema.as_str(),
        "pages of 4096 B",
        "rows estimates from sqlite_stat1",
        "users",
        "job queue",
        "mail",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    assert_eq!(schema_names(&path)?, names, "stats changed the schema");
    Ok(())
}

#[test]
fn stats_only_reads() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let path = dir.path().join("plain.db");
    tracker_db(&path, false, false)?;
    let names = schema_names(&path)?;
    let before = std::fs::read(&path).map_err(Error::closure)?;
    let json = stats_json(&path, &[])?;
    assert_eq!(json["jobs"], Value::Null, "no queue: none reported");
    assert_eq!(schema_names(&path)?, names);
    assert!(!names.iter().any(|n| n.starts_with("strata_")), "{names:?}");
    assert_eq!(std::fs::read(&path).map_err(Error::closure)?, before);

    // Without migrations: no version; never analyzed: no estimates until counted.
    let bare = dir.path().join("bare.db");
    Connection::open(&bare)?.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")?;
    let json = stats_json(&bare, &[])?;
    assert_eq!(json["schema_version"], Value::Null);
    assert_eq!(json["rows_from"], "none");
    assert_eq!(find(&json["tables"], "t")["rows"], Value::Null);
    let json = stats_json(&bare, &["--exact"])?;
    assert_eq!(find(&json["tables"], "t")["rows"], 1);
    Ok(())
}

#[test]
fn stats_refuses_what_is_not_a_database() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let missing: PathBuf = dir.path().join("missing.db");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).map_err(Error::closure)?;
    for (path, expected) in [(&missing, "missing.db"), (&junk, "not an SQLite database")] {
        let out = strata(&["stats", "--db", arg(path)])?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("strata: ") && err.trim_end().lines().count() == 1,
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
    }
    assert!(!missing.exists(), "stats created the file");
    Ok(())
}
