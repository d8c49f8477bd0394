//! Errors of the write path keep their cause: a constraint's kind and SQLite's error, and for
//! a group whose COMMIT failed, one shared cause every caller can follow down to SQLite.

use std::error::Error as _;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use strata::rusqlite::{self, ffi};
use strata::{ConstraintKind, Db, Error, Result};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A parent/child schema whose foreign key is checked at COMMIT, and an unrelated `log`.
fn open(dir: &tempfile::TempDir) -> Result<Db> {
    let db = Db::builder().path(dir.path().join("e.db")).build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT UNIQUE, name TEXT NOT NULL);
             CREATE TABLE child (parent_id INTEGER
                 REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TABLE strict_child (parent_id INTEGER REFERENCES parent (id));
             CREATE TABLE log (who TEXT NOT NULL);
             INSERT INTO parent VALUES (1, 'a', 'first');",
        )?)
    })?;
    Ok(db)
}

/// The extended result code of the first rusqlite error in `err`'s source chain.
fn sqlite_code(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = err.source();
    while let Some(e) = next {
        if let Some(rusqlite::Error::SqliteFailure(e, _)) = e.downcast_ref::<rusqlite::Error>() {
            return Some(e.extended_code);
        }
        next = e.source();
    }
    None
}

#[test]
fn each_constraint_violation_has_its_kind_and_sqlite_error() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    let cases = [
        (
            "INSERT INTO parent VALUES (2, 'a', 'dup')",
            ConstraintKind::Unique,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
        ),
        (
            "INSERT INTO strict_child VALUES (99)",
            ConstraintKind::ForeignKey,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
        ),
        (
            "INSERT INTO parent VALUES (3, 'c', NULL)",
            ConstraintKind::NotNull,
            ffi::SQLITE_CONSTRAINT_NOTNULL,
        ),
    ];
    for (sql, kind, code) in cases {
        let err = db.write(|c| Ok(c.execute(sql, []).map(drop)?)).unwrap_err();
        assert!(
            matches!(&err, Error::Constraint { kind: k, .. } if *k == kind),
            "{sql}: {err:?}"
        );
        assert_eq!(sqlite_code(&err), Some(code), "{sql}: {err:?}");
        let source = err.source().expect("a source");
        assert!(source.is::<rusqlite::Error>(), "{sql}: {source:?}");
    }
    Ok(())
}

#[test]
fn a_failed_commit_gives_every_caller_of_the_group_the_same_cause() -> Result<()> {
    let dir = tempdir();
    let db = &open(&dir)?;
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let results: Vec<Result<()>> = thread::scope(|s| {
        // The first call leaves a deferred foreign key violation: its statement succeeds, the
        // group's COMMIT fails.
        let holder = s.spawn(move || {
            db.write(move |c| {
                c.execute("INSERT INTO child VALUES (99)", [])?;
                started_tx.send(()).expect("test alive");
                release_rx.recv().expect("test alive");
                Ok(())
            })
        });
        started_rx.recv().expect("holder started");
        let queued: Vec<_> = ["q-1", "q-2"]
            .into_iter()
            .map(|who| {
                s.spawn(move || {
                    db.write(move |c| {
                        Ok(c.execute("INSERT INTO log VALUES (?1)", [who]).map(drop)?)
                    })
                })
            })
            .collect();
        // Time for the two to queue; it only shapes the group.
        thread::sleep(Duration::from_millis(300));
        release_tx.send(()).expect("holder alive");
        std::iter::once(holder)
            .chain(queued)
            .map(|h| h.join().expect("no panic escapes write"))
            .collect()
    });
    assert_eq!(db.write_stats().failed_commits, 1);
    let causes: Vec<Arc<Error>> = results
        .iter()
        .map(|r| match r {
            Err(Error::GroupFailed { source }) => Arc::clone(source),
            other => panic!("expected GroupFailed, got {other:?}"),
        })
        .collect();
    assert!(
        causes.iter().all(|c| Arc::ptr_eq(c, &causes[0])),
        "one shared cause"
    );
    assert_eq!(
        causes[0].constraint_kind(),
        Some(ConstraintKind::ForeignKey)
    );
    for result in &results {
        let err = result.as_ref().unwrap_err();
        assert!(err.is_foreign_key_violation(), "{err:?}");
        assert_eq!(
            sqlite_code(err),
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            "the chain reaches SQLite's error: {err:?}"
        );
    }
    let rows: i64 = db.read(|c| {
        Ok(c.query_row(
            "SELECT (SELECT count(*) FROM log) + (SELECT count(*) FROM child)",
            [],
            |r| r.get(0),
        )?)
    })?;
    assert_eq!(rows, 0, "nothing of the failed transaction committed");
    db.write(|c| {
        Ok(c.execute("INSERT INTO log VALUES ('after')", [])
            .map(drop)?)
    })?;
    Ok(())
}
