//! `Db::health` and `health_check`: each check turns `ok` off by itself (quick_check, WAL over
//! its limit, migration version, reader pool), and what a crashed process left behind (a hot
//! journal, a WAL) is reported as recoverable, not as damage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use refinery::{Migration, Runner};
use strata::advisor::{health_check, LeftoverKind};
use strata::rusqlite::Connection;
use strata::{Db, Result};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn runner() -> Result<Runner> {
    Ok(Runner::new(&[
        Migration::unapplied("V1__t", "CREATE TABLE t(x);")?,
        Migration::unapplied("V2__index", "CREATE INDEX t_x ON t(x);")?,
    ]))
}

fn open(path: &Path) -> Result<Db> {
    Db::builder()
        .path(path)
        .readers(2)
        .migrations(runner()?)
        .build()
}

/// Runs `script` in Python with the database path as `sys.argv[1]`; the script ends with
/// `os._exit(0)`, a process dying without closing its connection.
fn python(path: &Path, script: &str) {
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "python3 ran the script");
}

#[test]
fn a_healthy_db_reports_what_each_check_found() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir.path().join("ok.db"))?;
    let h = db.health();
    assert!(h.ok, "{h:?}");
    assert_eq!(h.quick_check, ["ok"]);
    assert_eq!(
        (h.schema_version, h.expected_schema_version),
        (Some(2), Some(2))
    );
    assert_eq!(h.wal_limit, Some(64 * 1024 * 1024));
    assert!(h.pool.is_some_and(|p| p.available && p.max_size == 2));
    assert_eq!(h.leftover, None);
    Ok(())
}

#[test]
fn a_corrupt_page_fails_quick_check() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("corrupt.db");
    let db = open(&path)?;
    db.write(|c| {
        Ok(c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT printf('%0100d', i) FROM n;",
        )?)
    })?;
    drop(db);
    assert!(health_check(&path).ok);
    let mut bytes = std::fs::read(&path).expect("read");
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    // The last page is a b-tree leaf of t or of its index: an invalid page type breaks it.
    let last = bytes.len() - page;
    bytes[last] = 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let h = health_check(&path);
    assert!(!h.ok, "{h:?}");
    // SQLite reports this damage either as lines of quick_check or as its error.
    assert!(h.quick_check != ["ok"], "{h:?}");
    assert!(
        h.problems.iter().all(|p| p.starts_with("quick_check")),
        "{h:?}"
    );
    Ok(())
}

#[test]
fn a_wal_past_its_limit_is_a_problem_until_a_checkpoint() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("wal.db"))
        .migrations(runner()?)
        .journal_size_limit(32 * 1024)
        // No background checkpoints; SQLite's own waits for 1000 pages.
        .checkpoint_pages(0)
        .build()?;
    for i in 0..20 {
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (zeroblob(8000 + ?1))", [i])?))?;
    }
    let h = db.health();
    assert!(!h.ok, "{h:?}");
    assert!(h.wal_bytes.unwrap_or(0) > 32 * 1024);
    assert!(h.problems.iter().all(|p| p.starts_with("WAL is")), "{h:?}");
    db.optimize()?;
    let h = db.health();
    assert!(h.ok, "{h:?}");
    Ok(())
}

#[test]
fn a_migration_version_other_than_expected_is_a_problem() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("version.db");
    let db = open(&path)?;
    assert!(db.health().ok);
    // Another program rewrites the history.
    Connection::open(&path)?
        .execute_batch("DELETE FROM refinery_schema_history WHERE version = 2")?;
    let h = db.health();
    assert!(!h.ok, "{h:?}");
    assert_eq!(
        (h.schema_version, h.expected_schema_version),
        (Some(1), Some(2))
    );
    // Without migrations, no version is expected.
    drop(db);
    let db = Db::builder().path(&path).build()?;
    let h = db.health();
    assert!(h.ok && h.expected_schema_version.is_none(), "{h:?}");
    Ok(())
}

#[test]
fn an_exhausted_reader_pool_is_a_problem() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("pool.db"))
        .migrations(runner()?)
        .readers(1)
        .busy_timeout(Duration::from_millis(10))
        .connection_timeout(Duration::from_millis(100))
        .build()?;
    let (held, wait_held) = mpsc::channel();
    let (release, wait_release) = mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<()> {
        let db = &db;
        let holder = s.spawn(move || {
            db.read(|_| {
                held.send(()).expect("main thread");
                let _ = wait_release.recv();
                Ok(())
            })
        });
        wait_held.recv().expect("the reader is held");
        let h = db.health();
        release.send(()).expect("the holder waits");
        holder.join().expect("holder")?;
        assert!(!h.ok, "{h:?}");
        assert!(h.pool.is_some_and(|p| !p.available), "{h:?}");
        assert!(h.quick_check.is_empty(), "no reader, no check");
        Ok(())
    })?;
    assert!(db.health().ok);
    Ok(())
}

#[test]
fn a_hot_journal_left_by_a_crash_is_recoverable_not_corrupt() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("hot.db");
    // A rollback-journal database whose process dies in a transaction that had to spill pages
    // into the database file: the journal is hot.
    python(
        &path,
        "import sqlite3, sys, os\n\
         c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         c.execute('CREATE TABLE t(x)')\n\
         c.execute('INSERT INTO t VALUES (1)')\n\
         c.execute('PRAGMA cache_size=2')\n\
         c.execute('BEGIN')\n\
         c.execute('INSERT INTO t SELECT zeroblob(1000) FROM (WITH RECURSIVE n(i) AS \
            (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) SELECT i FROM n)')\n\
         os._exit(0)\n",
    );
    let journal = sibling(&path, "-journal");
    let before = (
        std::fs::read(&path).expect("db"),
        std::fs::read(&journal).expect("journal"),
    );
    assert!(!before.1.is_empty(), "the crash left a journal");

    let h = health_check(&path);
    assert!(h.ok, "{h:?}");
    assert_eq!(h.quick_check, ["ok"]);
    let leftover = h.leftover.expect("the journal is reported");
    assert_eq!(leftover.kind, LeftoverKind::HotJournal);
    assert!(leftover.recoverable);
    assert_eq!(leftover.bytes, before.1.len() as u64);
    let after = (
        std::fs::read(&path).expect("db"),
        std::fs::read(&journal).expect("journal"),
    );
    assert!(after == before, "the check wrote neither file");

    // An open rolls it back: the crashed transaction is gone, the committed row is there.
    let db = Db::builder().path(&path).build()?;
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(rows, 1);
    drop(db);
    let h = health_check(&path);
    assert!(h.ok && h.leftover.is_none(), "{h:?}");
    Ok(())
}

#[test]
fn a_wal_left_by_a_crash_is_reported_and_read() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("wal-left.db");
    python(
        &path,
        "import sqlite3, sys, os\n\
         c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         c.execute('PRAGMA journal_mode=WAL')\n\
         c.execute('PRAGMA wal_autocheckpoint=0')\n\
         c.execute('CREATE TABLE t(x)')\n\
         c.execute('INSERT INTO t VALUES (1)')\n\
         os._exit(0)\n",
    );
    let wal = std::fs::metadata(sibling(&path, "-wal")).map_or(0, |m| m.len());
    assert!(wal > 0, "committed frames are in the WAL");
    let h = health_check(&path);
    assert!(h.ok, "{h:?}");
    assert_eq!(h.quick_check, ["ok"]);
    let leftover = h.leftover.expect("the WAL is reported");
    assert_eq!((leftover.kind, leftover.bytes), (LeftoverKind::Wal, wal));
    assert!(leftover.recoverable);
    let db = Db::builder().path(&path).build()?;
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(rows, 1, "the committed row survived the crash");
    Ok(())
}
