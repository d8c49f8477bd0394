//! Migrations: refinery runners applied at open, grouped, under a cross-process lock.

use std::fs::{File, OpenOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The settings strata applies to every runner: all pending migrations in one transaction, and a
/// history that differs from the code is an error rather than something to paper over.
pub(crate) fn configure(runner: refinery::Runner) -> refinery::Runner {
    runner
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
}

/// Applies the runner's pending migrations on `conn`, returning the versions applied.
/// A failed run leaves the file as it found it.
pub(crate) fn run(conn: &mut Connection, runner: &refinery::Runner) -> Result<Vec<i32>> {
    let had_history = history_exists(conn)?;
    let outcome = run_runner(conn, runner);
    if outcome.is_err() && !had_history {
        // refinery creates its history table before, and outside, the grouped transaction
        // that failed: a database that had none (a service's own, say) gets none.
        conn.execute_batch("DROP TABLE IF EXISTS refinery_schema_history")?;
    }
    outcome
}

fn run_runner(conn: &mut Connection, runner: &refinery::Runner) -> Result<Vec<i32>> {
    // refinery panics on a history row it cannot parse (an `applied_on` that is not RFC 3339, a
    // checksum that is not a number): a damaged or foreign history table must fail the open
    // with an error, not unwind through the caller. Its transaction is rolled back on unwind.
    let outcome = catch_unwind(AssertUnwindSafe(|| runner.run(conn))).map_err(|payload| {
        let reason = match crate::error::panic_error(payload) {
            Error::Panic { message } => message,
            other => other.to_string(),
        };
        Error::Migration {
            version: None,
            message: format!("unreadable refinery_schema_history: {reason}"),
            applied: Vec::new(),
        }
    })?;
    match outcome {
        Ok(report) => Ok(report
            .applied_migrations()
            .iter()
            .map(|m| m.version())
            .collect()),
        Err(err) => {
            let mut error = Error::from(err);
            if let Error::Migration { version, .. } = &mut error {
                if version.is_none() {
                    *version = failing_version(conn, runner);
                }
            }
            Err(error)
        }
    }
}

/// A grouped run fails as a whole without saying which migration broke; replaying the pending
/// ones in a transaction that is always rolled back finds it.
fn failing_version(conn: &mut Connection, runner: &refinery::Runner) -> Option<i32> {
    let applied: Vec<i32> = runner
        .get_applied_migrations(conn)
        .ok()?
        .iter()
        .map(|m| m.version())
        .collect();
    let tx = conn.transaction().ok()?;
    let failing = runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.contains(&m.version()))
        .find(|m| tx.execute_batch(m.sql().unwrap_or_default()).is_err())
        .map(|m| m.version());
    drop(tx);
    failing
}

fn history_exists(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'refinery_schema_history')",
        [],
        |r| r.get(0),
    )?)
}

/// The highest migration version recorded in refinery's history table, if any.
pub(crate) fn schema_version(conn: &Connection) -> Result<Option<i32>> {
    if !history_exists(conn)? {
        return Ok(None);
    }
    Ok(conn.query_row(
        "SELECT MAX(version) FROM refinery_schema_history",
        [],
        |r| r.get(0),
    )?)
}

/// An exclusive OS lock on a file beside the database, held while a process switches the file
/// to WAL and migrates it, so that processes starting at once apply each migration once.
/// The lock is released when the guard drops (or the process dies).
pub(crate) struct StartupLock {
    _file: File,
}

impl StartupLock {
    /// The lock file's path for a database path.
    pub(crate) fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push("-lock");
        PathBuf::from(name)
    }

    /// Blocks until this process holds the lock.
    pub(crate) fn acquire(db: &Path) -> Result<StartupLock> {
        let path = Self::path_for(db);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    Error::ReadOnly {
                        path: db.to_owned(),
                    }
                }
                _ => Error::Io {
                    path: path.clone(),
                    source,
                },
            })?;
        file.lock().map_err(|source| Error::Io { path, source })?;
        Ok(StartupLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_migrations_apply_in_order() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        let applied = run(&mut conn, &crate::domain::migrations())?;
        assert_eq!(applied, vec![1, 2]);
        assert_eq!(schema_version(&conn)?, Some(2));
        // A second run has nothing left to apply.
        assert!(run(&mut conn, &crate::domain::migrations())?.is_empty());
        Ok(())
    }

    #[test]
    fn broken_migration_is_named() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        let good = refinery::Migration::unapplied("V1__good", "CREATE TABLE a(x);")
            .map_err(Error::from)?;
        let bad =
            refinery::Migration::unapplied("V2__bad", "CREATE TABLE oops(").map_err(Error::from)?;
        let runner = configure(refinery::Runner::new(&[good, bad]));
        match run(&mut conn, &runner) {
            Err(Error::Migration { version, .. }) => assert_eq!(version, Some(2)),
            other => panic!("expected a migration error, got {other:?}"),
        }
        // Grouped: nothing of V1 was left behind either, nor refinery's history table.
        assert_eq!(schema_version(&conn)?, None);
        assert!(!history_exists(&conn)?);
        Ok(())
    }
}
