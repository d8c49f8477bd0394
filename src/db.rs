//! `Db`: the handle a service keeps. Opens, tunes and migrates the database; runs reads on the
//! reader pool and writes on the writer.
//!
//! The core of the layering: the modules below it (location, sql, pool, checkpoint, events,
//! cache, monitor, writer, ...) never name `Db` or its `Inner`; each gets at open the handles
//! it needs. The features are `impl Db` blocks above it: in the submodules here and in the
//! advisor, batch and repository modules.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

mod caches;
mod changes;
mod report;

use crate::advisor::{self, nplusone};
use crate::cache::CacheManager;
use crate::checkpoint::Checkpointer;
use crate::config::Config;
use crate::error::{panic_error, system_errno, Error, Result};
use crate::events::Capture;
use crate::location::Target;
use crate::migrate::{self, StartupLock};
use crate::monitor::Monitor;
use crate::pool::{self, Pragmas, Reader, Readers};
use crate::sql::{rollback, run_statement};
use crate::writer::Writer;

/// A handle to one SQLite database: one writer connection, a pool of read-only readers.
///
/// `Db` is cheap to clone (an `Arc` inside) and `Send + Sync`; clones share everything. When the
/// last handle drops, `PRAGMA optimize` runs on the writer so that the planner's statistics stay
/// fresh without a maintenance job, then a TRUNCATE checkpoint that waits at most 100 ms for
/// readers of other connections (it reports nothing; a later one truncates).
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) target: Target,
    /// Shared with the scheduled maintenance thread, which holds it weakly between runs.
    pub(crate) writer: Arc<Writer>,
    pub(crate) readers: Readers,
    pub(crate) caches: Arc<CacheManager>,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) advisor: advisor::State,
    pub(crate) read_only: bool,
    /// The job queue's shared state, made by the first [`Db::jobs`] (a feature above the core,
    /// like the advisor's state).
    pub(crate) jobs: std::sync::OnceLock<Arc<crate::jobs::Shared>>,
    pub(crate) jobs_init: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.target.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if missing) the database file at `path` with every default. No
    /// migrations are applied: the schema is the service's (pass its refinery runner with
    /// [`Config::migrations`]; the expense tracker opens with
    /// [`ExpenseTracker::open`](crate::domain::ExpenseTracker::open)).
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Config::new().path(path).build()
    }

    /// Opens a private in-memory database that every connection of this `Db` shares; it starts
    /// empty (no migrations). Two `Db`s never share one.
    pub fn open_in_memory() -> Result<Db> {
        Config::new().in_memory().build()
    }

    /// A [`Config`] to set options on; finish with [`Config::build`].
    pub fn builder() -> Config {
        Config::new()
    }

    /// Opens a database with the given settings.
    ///
    /// In order: the settings are validated, the path is checked (directory, missing parent, not
    /// a database, truncated), a lock file beside the database is taken, the writer opens and
    /// its pragmas are applied and read back, change capture, the reader pool (one reader
    /// opened and checked) and the checkpointer are set up; only then is the file written: the
    /// switch to WAL, then the migrations, the last step of an open. A failed open leaves an
    /// existing database as it was: a failure before the switch has written nothing, and a
    /// failure of the migrations (rolled back) switches the file back to the journal mode it
    /// had. The lock is released and the background threads start once all of this succeeded.
    pub fn open_with(mut config: Config) -> Result<Db> {
        config.validate()?;
        let target = Target::resolve(&config.location)?;
        let pragmas = Pragmas::new(&config, &target);
        let read_only = config.read_only;
        let lock = if target.memory || read_only {
            None
        } else {
            Some(StartupLock::acquire(&target.path)?)
        };
        let mut conn = if read_only {
            pool::open_read_only(&target, &pragmas)?
        } else {
            pool::open_writer(&target, &pragmas)?
        };
        let runner = config
            .migrations
            .take()
            .filter(|_| !read_only)
            .map(migrate::configure);
        let capture = Arc::new(Capture::new(config.subscription_capacity));
        capture.install(&conn)?;
        let caches = Arc::new(
            CacheManager::new(
                std::mem::take(&mut config.caches),
                config.foreign_write_check,
            )
            .with_memory_limit(config.cache_memory_limit),
        );
        if read_only {
            caches.init_foreign_writes(&conn)?;
        }
        let sink = Arc::clone(&caches);
        capture.add_sink(Arc::new(move |set| sink.apply(set)));
        let readers = pool::open_readers(&target, &pragmas, &config)?;
        let checkpointer = match (target.memory || read_only, config.checkpoint_pages) {
            (true, _) | (_, 0) => None,
            (false, pages) => Some(Checkpointer::start(
                &target,
                &conn,
                pages,
                config.busy_timeout,
            )?),
        };
        let expected_schema_version = runner
            .as_ref()
            .and_then(|r| r.get_migrations().iter().map(|m| m.version()).max());
        if !read_only {
            let writes = write_at_open(&mut conn, &target, &pragmas, &caches, runner.as_ref());
            if let Err(err) = writes {
                // Leaving WAL needs the file to itself: the other connections go first.
                drop((readers, checkpointer));
                if let Some(previous) = err.previous_journal {
                    pool::restore_journal(&conn, &target, &previous);
                }
                return Err(err.error);
            }
            if let Some(checkpointer) = &checkpointer {
                // Migrations committed with the background checkpointer's WAL hook in place:
                // a large one must not leave its WAL unchecked until the first write.
                checkpointer.after_commit(&conn, crate::checkpoint::take_wal_pages());
            }
        }
        drop(lock);
        // Nothing below can fail: a `Db` exists only fully opened, and a half-opened one never
        // runs the optimize and checkpoint of its drop.
        let monitor = Arc::new(Monitor::new(
            &config.monitor,
            config.journal_size_limit,
            config.statement_cache_capacity,
            &target,
            Arc::clone(&caches),
        ));
        let path = target.path.clone();
        let db = Db {
            inner: Arc::new(Inner {
                target,
                writer: Arc::new(Writer::new(
                    conn,
                    config.max_group,
                    capture,
                    checkpointer,
                    Arc::clone(&monitor),
                    path,
                )),
                readers,
                caches,
                read_only,
                monitor,
                advisor: advisor::State::new(&config, expected_schema_version),
                jobs: std::sync::OnceLock::new(),
                jobs_init: parking_lot::Mutex::new(()),
            }),
        };
        advisor::schedule(&db.inner, config.optimize_interval);
        Ok(db)
    }

    /// The database's path (for an in-memory database, a `:memory:N` label).
    pub fn path(&self) -> &Path {
        &self.inner.target.path
    }

    /// Runs `f` on a reader inside one read transaction: every query in it sees the same
    /// snapshot, and the WAL read lock is taken once for all of them.
    ///
    /// The connection is read-only (`query_only=ON`). An error or panic in `f` ends the
    /// transaction and is returned; the reader goes back to the pool clean.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.on_reader(true, f)
    }

    /// Runs `f` on a reader without an explicit transaction, for a closure that runs one
    /// statement: that statement is its own snapshot, and BEGIN/COMMIT would only add cost.
    pub(crate) fn read_one<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.on_reader(false, f)
    }

    fn on_reader<T, F>(&self, scoped: bool, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T>,
    {
        let reader = self.reader()?;
        self.on_this_reader(&reader, scoped, f)
            .map_err(|err| err.locate(&self.inner.target.path, system_errno(&reader)))
    }

    fn on_this_reader<T, F>(&self, reader: &Connection, scoped: bool, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T>,
    {
        let alert = |w: &nplusone::NPlusOne| self.n_plus_one_alert(w);
        let _scope = nplusone::Scope::enter(
            &self.inner.advisor.n_plus_one,
            nplusone::ScopeKind::Read,
            &alert,
        );
        if scoped {
            run_statement(reader, "BEGIN")?;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let site = crate::monitor::sampling::site_of::<F>();
            self.inner.monitor.watch(reader, site, || f(reader))
        }))
        .unwrap_or_else(|payload| Err(panic_error(payload)));
        match outcome {
            Ok(value) if scoped => {
                run_statement(reader, "COMMIT")?;
                Ok(value)
            }
            Ok(value) => Ok(value),
            Err(err) => {
                rollback(reader);
                Err(err)
            }
        }
    }

    /// Runs `f` inside an IMMEDIATE transaction on the writer and returns after COMMIT, once
    /// the transaction's [`ChangeSet`](crate::events::ChangeSet) has been applied to the caches.
    ///
    /// Concurrent calls are group-committed: calls that arrive while a transaction runs join it
    /// (those that arrive while it commits run together in the next one), each inside its own
    /// SAVEPOINT. An error or a panic in `f` rolls back `f`'s changes only and is returned to
    /// this caller; if the COMMIT itself fails, every caller of that transaction gets
    /// [`Error::GroupFailed`] with the same shared cause. An uncontended call runs on the
    /// caller's thread. Calling `write` from inside a write closure is [`Error::NestedWrite`]:
    /// use the connection the closure received. A full disk fails the call with
    /// [`Error::DiskFull`] (inside [`Error::GroupFailed`] when it failed the group's COMMIT:
    /// test with [`Error::is_disk_full`]); nothing of it committed, and once there is space
    /// again the same `Db` writes.
    ///
    /// The transaction is strata's: `f` may open savepoints of its own, but BEGIN, COMMIT,
    /// ROLLBACK and strata's savepoint are refused ([`Error::TransactionControl`]), and
    /// replacing strata's hooks on the connection (authorizer, update or commit hook, capture
    /// function) fails the call with [`Error::HookTampered`]. Either way only `f`'s changes
    /// roll back.
    pub fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send,
        T: Send,
    {
        if self.inner.read_only {
            return Err(Error::ReadOnly {
                path: self.inner.target.path.clone(),
            });
        }
        let detector = &self.inner.advisor.n_plus_one;
        let alert = |w: &nplusone::NPlusOne| self.n_plus_one_alert(w);
        self.inner.writer.write(move |c| {
            let _scope = nplusone::Scope::enter(detector, nplusone::ScopeKind::Write, &alert);
            f(c)
        })
    }

    /// Fires the alert of an N+1 warning (the async writer's per-call scopes use it too).
    pub(crate) fn n_plus_one_alert(&self, warning: &nplusone::NPlusOne) {
        self.inner
            .monitor
            .alerts
            .fire(crate::monitor::Alert::NPlusOne {
                sql: warning.sql.clone(),
                calls: warning.calls,
            });
    }

    fn reader(&self) -> Result<Reader<'_>> {
        // An idle reader is taken without any deadline bookkeeping; only a caller that has to
        // wait pays for it.
        if let Some(reader) = self.inner.readers.try_get() {
            return Ok(reader);
        }
        let start = Instant::now();
        let reader = self.inner.readers.get();
        self.inner.monitor.pool_wait(start.elapsed());
        reader
    }
}

/// Why the writing part of an open failed, and the journal mode to go back to if the file had
/// already been switched to WAL.
struct OpenWriteError {
    error: Error,
    previous_journal: Option<String>,
}

/// The writes of an open, last and in this order: the switch to WAL (skipped for an in-memory
/// database), the pragmas read back once more and the caches' baseline for foreign writes
/// (the switch moves `data_version`; the writer's own commits never do), the migrations.
fn write_at_open(
    conn: &mut Connection,
    target: &Target,
    pragmas: &Pragmas,
    caches: &CacheManager,
    runner: Option<&refinery::Runner>,
) -> std::result::Result<(), Box<OpenWriteError>> {
    let previous_journal = if target.memory {
        None
    } else {
        let previous = pool::enable_wal(conn, target).map_err(|error| {
            Box::new(OpenWriteError {
                error: error.locate(&target.path, system_errno(conn)),
                previous_journal: None,
            })
        })?;
        Some(previous)
    };
    // A migration that fills the disk fails the open with `DiskFull`, naming the file.
    let fail = |error: Error, conn: &Connection| {
        Box::new(OpenWriteError {
            error: error.locate(&target.path, system_errno(conn)),
            previous_journal: previous_journal.clone(),
        })
    };
    pool::verify_writer(conn, target, pragmas).map_err(|e| fail(e, conn))?;
    caches
        .init_foreign_writes(conn)
        .map_err(|e| fail(e, conn))?;
    if let Some(runner) = runner {
        migrate::run(conn, runner).map_err(|e| fail(e, conn))?;
    }
    Ok(())
}

impl Config {
    /// Validates the settings and opens the database (see [`Db::open`]).
    pub fn build(self) -> Result<Db> {
        Db::open_with(self)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        // Statistics refreshed on close are what the next open plans with; the checkpoint
        // leaves the file self-contained even while other processes keep the WAL open (SQLite
        // checkpoints on close only as the last connection). Its wait for readers is bounded
        // like optimize's: a reader holding a snapshot must not stall the close (and every
        // writer of the file) for the whole busy_timeout.
        self.writer.with_conn(|c| {
            let _ = c.execute_batch("PRAGMA optimize");
            if !self.target.memory {
                let _ = crate::checkpoint::truncate(c);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_sees_write() -> Result<()> {
        let db = Db::builder().build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")?))?;
        let x: i64 = db.read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))?;
        assert_eq!(x, 7);
        Ok(())
    }

    #[test]
    fn failed_write_rolls_back() -> Result<()> {
        let db = Db::builder().build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;
        let err = db
            .write(|c| {
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Err::<(), _>(Error::closure("changed my mind"))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Closure(_)));
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
        assert_eq!(n, 0);
        Ok(())
    }

    #[test]
    fn panicking_read_returns_reader_clean() -> Result<()> {
        let db = Db::builder().readers(1).build()?;
        let err = db.read(|_| -> Result<()> { panic!("boom") }).unwrap_err();
        assert!(matches!(err, Error::Panic { ref message } if message == "boom"));
        // The only reader must be usable again, outside any transaction.
        db.read(|c| {
            assert!(!c.is_autocommit());
            Ok(())
        })
    }
}
