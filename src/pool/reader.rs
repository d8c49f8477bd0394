//! A reader as the pool holds it: the connection and its read transaction's BEGIN and COMMIT,
//! prepared once when the reader opens and stepped through the C API.
//!
//! Every `Db::read` runs one BEGIN and one COMMIT. Through rusqlite's statement cache each is a
//! hash lookup of its text, a parameter check and a reset with cleared bindings on return to
//! the cache (about 3 000 instructions for the pair, more than the memdb VFS costs a primary-key
//! lookup); a statement held here is one `sqlite3_step` and one `sqlite3_reset`.

use std::ffi::CStr;
use std::ptr::{self, NonNull};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{ffi, Connection};

/// A reader connection with its prepared BEGIN and COMMIT.
pub(crate) struct ReaderConn {
    // Fields drop in declaration order: the statements are finalized before the connection
    // closes (SQLite refuses to close a connection with statements left).
    begin: Prepared,
    commit: Prepared,
    conn: Connection,
}

impl ReaderConn {
    fn new(conn: Connection) -> rusqlite::Result<ReaderConn> {
        Ok(ReaderConn {
            begin: Prepared::new(&conn, c"BEGIN")?,
            commit: Prepared::new(&conn, c"COMMIT")?,
            conn,
        })
    }

    /// Starts the read transaction (deferred: the read lock is taken by the first statement).
    pub(crate) fn begin(&self) -> rusqlite::Result<()> {
        self.begin.run(&self.conn)
    }

    /// Ends the read transaction.
    pub(crate) fn commit(&self) -> rusqlite::Result<()> {
        self.commit.run(&self.conn)
    }
}

impl std::ops::Deref for ReaderConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// A statement prepared on the connection beside it in [`ReaderConn`], finalized on drop.
struct Prepared(NonNull<ffi::sqlite3_stmt>);

// SAFETY: the statement is used only together with the connection it was prepared on, which
// moves between threads with it (rusqlite's `Connection` is `Send`; the bundled SQLite is built
// thread-safe), and never by two threads at once: `ReaderConn` is not `Sync`.
unsafe impl Send for Prepared {}

impl Prepared {
    fn new(conn: &Connection, sql: &CStr) -> rusqlite::Result<Prepared> {
        let mut stmt = ptr::null_mut();
        // SAFETY: the handle is the live connection `conn` borrows; `sql` is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                conn.handle(),
                sql.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(Prepared(stmt)),
            _ => Err(failure(conn, rc)),
        }
    }

    /// Steps the statement to its end and resets it.
    fn run(&self, conn: &Connection) -> rusqlite::Result<()> {
        // SAFETY: the statement is alive (finalized only on drop) and belongs to `conn`.
        let rc = unsafe { ffi::sqlite3_step(self.0.as_ptr()) };
        // The message must be read before the reset, which may replace it.
        let outcome = if rc == ffi::SQLITE_DONE {
            Ok(())
        } else {
            Err(failure(conn, rc))
        };
        // SAFETY: as above. Its result repeats the step's error, already taken.
        unsafe { ffi::sqlite3_reset(self.0.as_ptr()) };
        outcome
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: the statement is alive and dropped once; its connection is still open (see
        // `ReaderConn`'s field order).
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

/// The error SQLite reported on `conn` with result code `rc`.
fn failure(conn: &Connection, rc: i32) -> rusqlite::Error {
    // SAFETY: the handle is live; the message is copied before anything else runs on it.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(conn.handle());
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message)
}

/// r2d2's manager of readers: rusqlite's manager (file, flags, the readers' pragmas) with the
/// transaction statements prepared on each new connection.
pub(crate) struct ReaderManager(pub(crate) SqliteConnectionManager);

impl r2d2::ManageConnection for ReaderManager {
    type Connection = ReaderConn;
    type Error = rusqlite::Error;

    fn connect(&self) -> rusqlite::Result<ReaderConn> {
        ReaderConn::new(self.0.connect()?)
    }

    fn is_valid(&self, conn: &mut ReaderConn) -> rusqlite::Result<()> {
        self.0.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut ReaderConn) -> bool {
        self.0.has_broken(&mut conn.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn begin_and_commit_bracket_a_transaction_and_errors_carry_sqlite_message() -> Result<()> {
        let conn = ReaderConn::new(Connection::open_in_memory()?)?;
        assert!(conn.is_autocommit());
        conn.begin()?;
        assert!(!conn.is_autocommit());
        conn.commit()?;
        assert!(conn.is_autocommit());
        let err = conn.commit().unwrap_err();
        assert!(
            err.to_string().contains("no transaction is active"),
            "{err}"
        );
        // The statements are reusable after an error, and the connection closes cleanly
        // (finalized statements first) when dropped.
        conn.begin()?;
        assert!(!conn.is_autocommit());
        conn.commit()?;
        let conn = ReaderConn::new(Connection::open_in_memory()?)?;
        let ReaderConn {
            begin,
            commit,
            conn,
        } = conn;
        drop((begin, commit));
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}
