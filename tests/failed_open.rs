//! A failed open leaves an existing database as it was: on rollback-journal databases made by
//! another program (Python's sqlite3 module), opens that fail at validation, at the switch to
//! WAL and in the migrations leave the file in its journal mode, with its content and without
//! strata's history table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use refinery::{Migration, Runner};
use strata::rusqlite::{Connection, OpenFlags};
use strata::{Db, Error, Result};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `path` with Python's sqlite3 module: a rollback-journal (DELETE) database with one
/// table and one row, in journal mode `mode`.
fn foreign_db(path: &Path, mode: &str) {
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.execute('PRAGMA journal_mode=' + sys.argv[2])\n\
        c.execute('CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)')\n\
        c.execute(\"INSERT INTO notes(body) VALUES ('kept')\")\n\
        c.commit()\n\
        c.close()\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(mode)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "python3 created the database");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read the database file")
}

/// What a failed open must have left: the journal mode in the header (bytes 18 and 19: 1 for a
/// rollback journal, 2 for WAL), no WAL or shared-memory file (for a rollback-journal file),
/// the row, and no refinery history.
fn assert_untouched(path: &Path, header_version: u8) -> Result<()> {
    let bytes = read(path);
    assert_eq!(
        (bytes[18], bytes[19]),
        (header_version, header_version),
        "journal mode in the header"
    );
    if header_version == 1 {
        for suffix in ["-wal", "-shm", "-journal"] {
            assert!(!sibling(path, suffix).exists(), "{suffix} left behind");
        }
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let body: String = c.query_row("SELECT body FROM notes", [], |r| r.get(0))?;
    assert_eq!(body, "kept");
    let history: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'refinery_schema_history'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(history, 0, "no migration history");
    Ok(())
}

/// A runner whose second migration does not parse.
fn broken_runner() -> Result<Runner> {
    Ok(Runner::new(&[
        Migration::unapplied("V1__good", "CREATE TABLE added(x);")?,
        Migration::unapplied("V2__bad", "CREATE TABLE oops(")?,
    ]))
}

#[test]
fn failed_migration_leaves_a_rollback_journal_database_as_it_was() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("foreign.db");
    foreign_db(&path, "DELETE");
    let err = Db::builder()
        .path(&path)
        .readers(2)
        .migrations(broken_runner()?)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Migration { .. }), "{err:?}");
    assert_untouched(&path, 1)?;
    // The program that made it still works on it, in its own journal mode.
    let c = Connection::open(&path)?;
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "delete");
    Ok(())
}

#[test]
fn failed_migration_leaves_a_wal_database_in_wal() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("foreign-wal.db");
    foreign_db(&path, "WAL");
    let err = Db::builder()
        .path(&path)
        .migrations(broken_runner()?)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Migration { .. }), "{err:?}");
    assert_untouched(&path, 2)
}

#[test]
fn mmap_past_sqlites_cap_fails_validation_and_writes_nothing() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("foreign.db");
    foreign_db(&path, "DELETE");
    let before = read(&path);
    let err = Db::builder()
        .path(&path)
        .mmap_size(4 << 30)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "mmap_size",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(read(&path), before, "byte for byte");
    assert_untouched(&path, 1)
}

#[test]
fn open_that_cannot_switch_to_wal_writes_nothing() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("foreign.db");
    foreign_db(&path, "DELETE");
    let before = read(&path);
    // Another connection in a write transaction: the switch to WAL, the first write of an
    // open, cannot take its lock.
    let holder = Connection::open(&path)?;
    holder.execute_batch("BEGIN EXCLUSIVE")?;
    let err = Db::builder()
        .path(&path)
        .busy_timeout(Duration::from_millis(50))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    holder.execute_batch("ROLLBACK")?;
    drop(holder);
    assert_eq!(read(&path), before, "byte for byte");
    assert_untouched(&path, 1)
}

#[test]
fn a_database_that_opened_after_a_failed_open_migrates() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("foreign.db");
    foreign_db(&path, "DELETE");
    assert!(Db::builder()
        .path(&path)
        .migrations(broken_runner()?)
        .build()
        .is_err());
    let good = Runner::new(&[Migration::unapplied("V1__good", "CREATE TABLE added(x);")?]);
    let db = Db::builder().path(&path).migrations(good).build()?;
    assert_eq!(db.schema_version()?, Some(1));
    drop(db);
    assert_eq!(read(&path)[18], 2, "now in WAL");
    Ok(())
}
