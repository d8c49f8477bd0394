//! Connections: the single writer, the pool of read-only readers, and the PRAGMAs each gets.

mod reader;

use std::sync::Arc;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::config::DbConfig;
use rusqlite::Connection;

use crate::config::{Config, Synchronous};
use crate::error::{Error, Result};
use crate::location::Target;

pub(crate) use reader::ReaderConn;
use reader::ReaderManager;

/// A reader checked out of r2d2, boxed: r2d2's guard is ten words, and a read moves it from
/// the idle stack to the caller and back (four copies of it were a tenth of a primary-key
/// lookup's instructions beyond raw rusqlite's).
type Pooled = Box<r2d2::PooledConnection<ReaderManager>>;

/// The read-only readers: an r2d2 pool, which creates them, bounds their number and makes
/// callers wait with a timeout, fronted by a stack of idle checked-out readers. A read takes
/// the top of the stack under one uncontended lock; r2d2's own checkout and return (a lock and
/// a few clock reads each way) are paid only when the stack is empty or a caller waits in
/// r2d2. That is a quarter of a primary-key lookup's overhead on this path.
pub(crate) struct Readers {
    pool: r2d2::Pool<ReaderManager>,
    idle: parking_lot::Mutex<Vec<Pooled>>,
    /// Callers waiting in r2d2 for a reader; while there are any, returned readers go back to
    /// r2d2, which wakes them.
    waiting: std::sync::atomic::AtomicUsize,
}

/// A reader in use; goes back to the idle stack (or to r2d2) on drop.
pub(crate) struct Reader<'a> {
    conn: Option<Pooled>,
    readers: &'a Readers,
}

impl std::ops::Deref for Reader<'_> {
    type Target = ReaderConn;
    fn deref(&self) -> &ReaderConn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.release(conn);
        }
    }
}

/// The pool's size as r2d2 sees it, with the readers idle in the stack counted as idle.
pub(crate) struct ReaderState {
    pub(crate) connections: u32,
    pub(crate) idle: u32,
}

impl Readers {
    /// An idle reader at once, if there is one and nobody is waiting for one: a caller that
    /// took the reader just handed to a waiter could starve that waiter into a pool timeout.
    pub(crate) fn try_get(&self) -> Option<Reader<'_>> {
        if self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return None;
        }
        let conn = self
            .idle
            .lock()
            .pop()
            .or_else(|| self.pool.try_get().map(Box::new))?;
        Some(Reader {
            conn: Some(conn),
            readers: self,
        })
    }

    /// A reader, waiting up to the pool's connection timeout; a timeout reports how long this
    /// call waited.
    pub(crate) fn get(&self) -> Result<Reader<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        let started = std::time::Instant::now();
        // Announce the wait before looking at the stack once more: a reader released meanwhile
        // is either seen here or, seeing the announcement, handed to r2d2 (which wakes us).
        self.waiting.fetch_add(1, SeqCst);
        // Bound first: the stack's lock must not be held while waiting in r2d2.
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => Ok(conn),
            None => self.pool.get().map(Box::new),
        };
        self.waiting.fetch_sub(1, SeqCst);
        match conn {
            Ok(conn) => Ok(Reader {
                conn: Some(conn),
                readers: self,
            }),
            Err(source) => Err(Error::PoolTimeout {
                waited: started.elapsed(),
                source: Box::new(source),
            }),
        }
    }

    fn release(&self, conn: Pooled) {
        use std::sync::atomic::Ordering::SeqCst;
        self.idle.lock().push(conn);
        if self.waiting.load(SeqCst) > 0 {
            // Dropping a pooled connection returns it to r2d2, which wakes a waiter; dropped
            // outside the stack's lock.
            let handed = self.idle.lock().pop();
            drop(handed);
        }
    }

    pub(crate) fn max_size(&self) -> u32 {
        self.pool.max_size()
    }

    pub(crate) fn state(&self) -> ReaderState {
        let state = self.pool.state();
        ReaderState {
            connections: state.connections,
            idle: state.idle_connections + self.idle.lock().len() as u32,
        }
    }
}

/// Which side a connection is on: the pragmas differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// The per-connection settings derived from a [`Config`], cheap to clone into the pool's init.
#[derive(Debug, Clone)]
pub(crate) struct Pragmas {
    busy_timeout_ms: i64,
    synchronous: Synchronous,
    cache_size_kib: i64,
    mmap_size: i64,
    journal_size_limit: i64,
    statement_cache_capacity: usize,
    memory: bool,
}

impl Pragmas {
    pub(crate) fn new(config: &Config, target: &Target) -> Self {
        Pragmas {
            busy_timeout_ms: config.busy_timeout.as_millis() as i64,
            synchronous: config.synchronous,
            cache_size_kib: i64::from(config.cache_size_kib),
            mmap_size: config.mmap_size as i64,
            journal_size_limit: config.journal_size_limit as i64,
            statement_cache_capacity: config.statement_cache_capacity,
            memory: target.memory,
        }
    }

    /// The pragmas in the order they are applied, with the value each must read back as.
    fn list(&self, role: Role) -> Vec<(&'static str, String, String)> {
        let int = |name, v: i64| (name, v.to_string(), v.to_string());
        let mut list = vec![
            // busy_timeout first: every later pragma may need to wait for a lock.
            int("busy_timeout", self.busy_timeout_ms),
            int("synchronous", self.synchronous.pragma_value()),
            int("cache_size", -self.cache_size_kib),
            ("temp_store", "MEMORY".into(), "2".into()),
        ];
        // memdb keeps pages in memory already; mapping does not apply to it.
        if !self.memory {
            list.push(int("mmap_size", self.mmap_size));
        }
        list.push(("foreign_keys", "ON".into(), "1".into()));
        list.push(int("journal_size_limit", self.journal_size_limit));
        list.push(("trusted_schema", "OFF".into(), "0".into()));
        match role {
            Role::Reader => list.push(("query_only", "ON".into(), "1".into())),
            // Rows deleted by REPLACE conflict resolution reach the change capture triggers only
            // with recursive triggers on.
            Role::Writer => list.push(("recursive_triggers", "ON".into(), "1".into())),
        }
        list
    }

    fn apply(&self, conn: &Connection, role: Role) -> rusqlite::Result<()> {
        conn.set_prepared_statement_cache_capacity(self.statement_cache_capacity);
        // A double-quoted name is an identifier only. SQLite's legacy fallback (on in the bundled
        // build) reads a "name" that matches no column as a string literal, so a generated
        // statement naming a misspelled or hostile column would silently select the name itself
        // instead of failing. DDL keeps the fallback: existing schemas may rely on it.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
        for (name, value, _) in self.list(role) {
            // PRAGMA values cannot be bound as parameters; every value here is generated by
            // strata from typed settings, never from caller strings.
            conn.execute_batch(&format!("PRAGMA {name}={value}"))?;
        }
        Ok(())
    }

    fn verify(&self, conn: &Connection, role: Role, target: &Target) -> Result<()> {
        for (name, _, expected) in self.list(role) {
            let actual: rusqlite::types::Value =
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
            let actual = match actual {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            };
            if actual != expected {
                return Err(Error::Pragma {
                    path: target.path.clone(),
                    name,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// Opens the writer of a read-only `Db`: a reader in all but name, the file left as it is.
pub(crate) fn open_read_only(target: &Target, pragmas: &Pragmas) -> Result<Connection> {
    let conn = Connection::open_with_flags(&target.name, target.reader_flags())
        .map_err(|e| target.open_error(e))?;
    pragmas
        .apply(&conn, Role::Reader)
        .map_err(|e| target.open_error(e))?;
    pragmas.verify(&conn, Role::Reader, target)?;
    Ok(conn)
}

/// Opens the writer with the tuned pragmas, read back, and leaves the journal mode as it is:
/// nothing here writes to the file, so a setting SQLite refuses fails the open before the
/// switch to WAL (see [`enable_wal`]).
pub(crate) fn open_writer(target: &Target, pragmas: &Pragmas) -> Result<Connection> {
    let conn = Connection::open_with_flags(&target.name, target.writer_flags())
        .map_err(|e| target.open_error(e))?;
    pragmas
        .apply(&conn, Role::Writer)
        .map_err(|e| target.open_error(e))?;
    pragmas.verify(&conn, Role::Writer, target)?;
    Ok(conn)
}

/// Reads the pragmas back again: a switch of journal mode may reset some of them.
pub(crate) fn verify_writer(conn: &Connection, target: &Target, pragmas: &Pragmas) -> Result<()> {
    pragmas.verify(conn, Role::Writer, target)
}

/// Switches the writer's file to WAL, the first write of an open and a permanent one (it is
/// recorded in the file's header). Returns the journal mode the file had, for
/// [`restore_journal`] should the open fail after this.
pub(crate) fn enable_wal(conn: &Connection, target: &Target) -> Result<String> {
    let query = |sql: &str| -> Result<String> {
        conn.query_row(sql, [], |r| r.get::<_, String>(0))
            .map_err(|e| target.open_error(e))
    };
    let previous = query("PRAGMA journal_mode")?.to_ascii_lowercase();
    let mode = query("PRAGMA journal_mode=WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Pragma {
            path: target.path.clone(),
            name: "journal_mode",
            expected: "wal".into(),
            actual: mode,
        });
    }
    Ok(previous)
}

/// Undoes [`enable_wal`] after a failed open, so that a database another program keeps in a
/// rollback journal is not left in WAL (which that program may not handle). Needs every other
/// connection of this open closed: leaving WAL takes an exclusive lock. A failure is logged and
/// otherwise ignored, the open's own error being the one to report.
pub(crate) fn restore_journal(conn: &Connection, target: &Target, previous: &str) {
    if previous == "wal" {
        return;
    }
    // `previous` came from SQLite's own answer to `PRAGMA journal_mode`; only its known
    // values are spliced into the statement.
    let mode = match previous {
        "delete" | "truncate" | "persist" | "memory" | "off" => previous,
        _ => "delete",
    };
    let restored = conn.query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| {
        r.get::<_, String>(0)
    });
    match restored {
        Ok(now) if now.eq_ignore_ascii_case(mode) => {}
        Ok(now) => {
            tracing::warn!(path = %target.path.display(), %now, "failed open left the database in this journal mode")
        }
        Err(err) => {
            tracing::warn!(path = %target.path.display(), %err, "failed open could not leave WAL")
        }
    }
}

/// Builds the reader pool. One reader is opened and checked here so that a bad file or a pragma
/// mismatch fails the open at once instead of surfacing as a pool timeout later.
pub(crate) fn open_readers(target: &Target, pragmas: &Pragmas, config: &Config) -> Result<Readers> {
    let init_pragmas = pragmas.clone();
    let manager = ReaderManager(
        SqliteConnectionManager::file(&target.name)
            .with_flags(target.reader_flags())
            .with_init(move |c| init_pragmas.apply(c, Role::Reader)),
    );
    let probe = r2d2::ManageConnection::connect(&manager).map_err(|e| target.open_error(e))?;
    pragmas.verify(&probe, Role::Reader, target)?;
    drop(probe);
    let pool = r2d2::Pool::builder()
        .max_size(config.readers as u32)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(config.connection_timeout)
        // No reaper: readers idle in strata's stack are checked out as far as r2d2 knows, so it
        // could never reap them, and its periodic job would keep the pool's thread asleep for up
        // to 30 s after the `Db` is gone (a service or test suite opening many databases piled
        // those threads up).
        .idle_timeout(None)
        .max_lifetime(None)
        .thread_pool(Arc::new(reader_thread_pool()))
        .build_unchecked(manager);
    Ok(Readers {
        pool,
        idle: parking_lot::Mutex::new(Vec::new()),
        waiting: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// The thread r2d2 opens readers on. Dropped with the pool (the last reader returned), it ends
/// at once: pending jobs are dropped rather than waited for.
fn reader_thread_pool() -> scheduled_thread_pool::ScheduledThreadPool {
    scheduled_thread_pool::ScheduledThreadPool::builder()
        .num_threads(1)
        .thread_name_pattern("strata-readers")
        .on_drop_behavior(scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;

    #[test]
    fn reader_refuses_writes() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::new().path(dir.path().join("r.db"));
        let target = Target::resolve(&config.location)?;
        let pragmas = Pragmas::new(&config, &target);
        let writer = open_writer(&target, &pragmas)?;
        writer.execute_batch("CREATE TABLE t(x)")?;
        let pool = open_readers(&target, &pragmas, &config)?;
        let reader = pool.get()?;
        assert!(reader.execute("INSERT INTO t VALUES (1)", []).is_err());
        Ok(())
    }

    #[test]
    fn a_pool_timeout_reports_the_time_waited() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let timeout = std::time::Duration::from_millis(50);
        let config = Config::new()
            .path(dir.path().join("r.db"))
            .readers(1)
            .connection_timeout(timeout);
        let target = Target::resolve(&config.location)?;
        let pragmas = Pragmas::new(&config, &target);
        let _writer = open_writer(&target, &pragmas)?;
        let pool = open_readers(&target, &pragmas, &config)?;
        let _held = pool.get()?;
        match pool.get() {
            Err(err @ Error::PoolTimeout { .. }) => {
                let Error::PoolTimeout { waited, .. } = &err else {
                    unreachable!()
                };
                assert!(*waited >= timeout, "reported {waited:?}");
                assert!(std::error::Error::source(&err).is_some(), "{err:?}");
            }
            Err(other) => panic!("expected PoolTimeout, got {other:?}"),
            Ok(_) => panic!("a second reader from a pool of one"),
        }
        Ok(())
    }

    #[test]
    fn memory_pragmas_verify() -> Result<()> {
        let config = Config::new();
        let target = Target::resolve(&Location::Memory)?;
        let pragmas = Pragmas::new(&config, &target);
        let _writer = open_writer(&target, &pragmas)?;
        let _pool = open_readers(&target, &pragmas, &config)?;
        Ok(())
    }
}
