//! A database whose pages are damaged after it was opened (a bad sector, another program
//! writing into the file): the statements that meet a damaged page fail with a typed
//! [`Error::Corrupt`] naming the file, the pages that are intact still read, nothing panics, and
//! `health` reports the damage.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use strata::rusqlite::Connection;
use strata::{Db, Error, Result};

const ROWS: i64 = 5_000;

/// A file with a table and an index of several levels, in rollback-journal mode so that every
/// page is in the database file itself.
fn build(path: &Path) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL);
         CREATE INDEX t_k ON t(k);",
    )?;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO t SELECT i, hex(randomblob(12)), randomblob(50) FROM n",
        [ROWS],
    )?;
    Ok(())
}

/// Overwrites the root page of index `name` with garbage, behind SQLite's back.
fn damage_index(path: &Path, name: &str) -> Result<()> {
    let conn = Connection::open(path)?;
    let root: i64 = conn.query_row(
        "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    drop(conn);
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
        .map_err(io)?;
    file.write_all(&vec![0xA5; page_size as usize])
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

fn corrupt_cause(err: &Error) -> Option<&Error> {
    match err {
        Error::Corrupt { .. } => Some(err),
        Error::GroupFailed { source } => corrupt_cause(source),
        _ => None,
    }
}

#[test]
fn a_damaged_index_page_fails_its_reads_and_writes_typed_and_health_finds_it() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("damaged.db");
    build(&path)?;
    let db = Db::open(&path)?;
    let key: String =
        db.read(|c| Ok(c.query_row("SELECT k FROM t WHERE id = 77", [], |r| r.get(0))?))?;
    assert!(db.health().ok);
    damage_index(&path, "t_k")?;
    // A connection keeps the pages it read while nothing commits, and quick_check read them
    // all: a commit (touching no page of the index) makes every reader read from the file.
    db.write(|c| Ok(c.execute_batch("CREATE TABLE after_damage(x)")?))?;

    // A lookup through the index meets the damaged page.
    let lookup = db.read(|c| {
        Ok(c.query_row("SELECT id FROM t WHERE k = ?1", [&key], |r| {
            r.get::<_, i64>(0)
        })?)
    });
    let err = lookup.expect_err("a lookup through a damaged index");
    assert!(
        matches!(&err, Error::Corrupt { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("damaged.db"), "{err}");

    // The table's own pages are intact and still read.
    let total: i64 = db
        .read(|c| Ok(c.query_row("SELECT sum(length(v)) FROM t NOT INDEXED", [], |r| r.get(0))?))?;
    assert_eq!(total, ROWS * 50);

    // A write that has to update the index fails the same way, and changes nothing.
    let write = db.write(|c| {
        c.execute("INSERT INTO t VALUES (?1, ?2, x'00')", (ROWS + 1, &key))?;
        Ok(())
    });
    let err = write.expect_err("an insert into a damaged index");
    assert!(
        corrupt_cause(&err).is_some_and(|e| e.path() == Some(path.as_path())),
        "{err:?}"
    );
    let rows: i64 =
        db.read(|c| Ok(c.query_row("SELECT max(id) FROM t NOT INDEXED", [], |r| r.get(0))?))?;
    assert_eq!(rows, ROWS);

    // health runs quick_check, which reads every page.
    let health = db.health();
    assert!(!health.ok, "{health:?}");
    assert!(
        health.quick_check.first().is_some_and(|line| line != "ok"),
        "{health:?}"
    );
    let alone = strata::advisor::health_check(&path);
    assert!(!alone.ok, "{alone:?}");
    Ok(())
}
