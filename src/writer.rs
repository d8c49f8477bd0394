//! The single writer connection and the write path.

use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::error::{Error, Result};

/// The one connection allowed to write. Every transaction on it is `BEGIN IMMEDIATE`, so that a
/// writer waiting for another process's lock goes through busy_timeout instead of failing with
/// SQLITE_BUSY when a deferred transaction tries to upgrade.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
}

impl Writer {
    pub(crate) fn new(conn: Connection) -> Self {
        Writer {
            conn: Mutex::new(conn),
        }
    }

    /// Runs `f` inside one IMMEDIATE transaction and returns after COMMIT; on error or panic the
    /// transaction is rolled back and the database is as before.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        run_statement(&conn, "BEGIN IMMEDIATE")?;
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&conn)))
            .unwrap_or_else(|payload| Err(panic_error(payload)));
        match outcome {
            Ok(value) => match run_statement(&conn, "COMMIT") {
                Ok(()) => Ok(value),
                Err(err) => {
                    rollback(&conn);
                    Err(err)
                }
            },
            Err(err) => {
                rollback(&conn);
                Err(err)
            }
        }
    }

    /// Direct access to the writer connection for maintenance (migrations, checkpoints).
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.conn.lock())
    }
}

/// Runs a transaction-control statement through the statement cache.
pub(crate) fn run_statement(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(|e| Error::from(e).with_sql(sql))
}

/// Rolls back whatever transaction is open; a failure here means SQLite already rolled back.
pub(crate) fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run_statement(conn, "ROLLBACK");
    }
}

/// Turns a caught panic payload into [`Error::Panic`].
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    Error::Panic { message }
}
