//! `Db`: the handle a service keeps. Opens, tunes and migrates the database; runs reads on the
//! reader pool and writes on the writer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use crate::advisor::{self, nplusone};
use crate::cache::CacheManager;
use crate::checkpoint::Checkpointer;
use crate::config::{Config, Migrations};
use crate::error::{Error, Result};
use crate::events::Capture;
use crate::location::Target;
use crate::migrate::{self, StartupLock};
use crate::monitor::Monitor;
use crate::pool::{self, Pragmas, Reader, Readers};
use crate::writer::{self, Writer};

/// A handle to one SQLite database: one writer connection, a pool of read-only readers.
///
/// `Db` is cheap to clone (an `Arc` inside) and `Send + Sync`; clones share everything. When the
/// last handle drops, `PRAGMA optimize` runs on the writer so that the planner's statistics stay
/// fresh without a maintenance job.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) target: Target,
    pub(crate) writer: Writer,
    pub(crate) readers: Readers,
    pub(crate) caches: Arc<CacheManager>,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) advisor: advisor::State,
    pub(crate) read_only: bool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.target.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if missing) the database file at `path` with every default, and applies
    /// strata's migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Config::new().path(path).build()
    }

    /// Opens a private in-memory database that every connection of this `Db` shares, with
    /// strata's migrations applied. Two `Db`s never share one.
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
    /// switches to WAL, the pragmas are applied and read back, migrations run, the lock is
    /// released and the reader pool opens.
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
        let runner = match std::mem::replace(&mut config.migrations, Migrations::Skip) {
            _ if read_only => None,
            Migrations::Embedded => Some(migrate::embedded_runner()),
            Migrations::Runner(r) => Some(migrate::configure(r)),
            Migrations::Skip => None,
        };
        if let Some(runner) = runner {
            migrate::run(&mut conn, &runner)?;
        }
        drop(lock);
        let capture = Arc::new(Capture::default());
        capture.install(&conn)?;
        let caches = Arc::new(CacheManager::new(
            std::mem::take(&mut config.caches),
            config.foreign_write_check,
        ));
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
        let monitor = Arc::new(Monitor::new(&config, &target));
        let db = Db {
            inner: Arc::new(Inner {
                target,
                writer: Writer::new(
                    conn,
                    config.max_group,
                    capture,
                    checkpointer,
                    Arc::clone(&monitor),
                ),
                readers,
                caches,
                read_only,
                monitor,
                advisor: advisor::State::new(&config),
            }),
        };
        db.inner.monitor.attach(&db.inner);
        db.init_foreign_writes()?;
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
        let alert = |w: &nplusone::NPlusOne| self.n_plus_one_alert(w);
        let _scope = nplusone::Scope::enter(
            &self.inner.advisor.n_plus_one,
            nplusone::ScopeKind::Read,
            &alert,
        );
        if scoped {
            writer::run_statement(&reader, "BEGIN")?;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let site = crate::monitor::sampling::site_of::<F>();
            self.inner.monitor.watch(&reader, site, || f(&reader))
        }))
        .unwrap_or_else(|payload| Err(writer::panic_error(payload)));
        match outcome {
            Ok(value) if scoped => {
                writer::run_statement(&reader, "COMMIT")?;
                Ok(value)
            }
            Ok(value) => Ok(value),
            Err(err) => {
                writer::rollback(&reader);
                Err(err)
            }
        }
    }

    /// Runs `f` inside an IMMEDIATE transaction on the writer and returns after COMMIT, once
    /// the transaction's [`ChangeSet`](crate::ChangeSet) has been applied to the caches.
    ///
    /// Concurrent calls are group-committed: calls that arrive while a transaction runs join it
    /// (those that arrive while it commits run together in the next one), each inside its own
    /// SAVEPOINT. An error or a panic in `f` rolls back `f`'s changes only and is returned to
    /// this caller; if the COMMIT itself fails, every caller of that transaction gets
    /// [`Error::GroupFailed`] with the same shared cause. An uncontended call runs on the
    /// caller's thread. Calling `write` from inside a write closure is [`Error::NestedWrite`]:
    /// use the connection the closure received.
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

    fn n_plus_one_alert(&self, warning: &nplusone::NPlusOne) {
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

impl Drop for Inner {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        // Statistics refreshed on close are what the next open plans with; the checkpoint
        // leaves the file self-contained even while other processes keep the WAL open (SQLite
        // checkpoints on close only as the last connection).
        self.writer.with_conn(|c| {
            let _ = c.execute_batch("PRAGMA optimize");
            if !self.target.memory {
                let _ = crate::checkpoint::checkpoint(c, "TRUNCATE");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_sees_write() -> Result<()> {
        let db = Db::builder().no_migrations().build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")?))?;
        let x: i64 = db.read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))?;
        assert_eq!(x, 7);
        Ok(())
    }

    #[test]
    fn failed_write_rolls_back() -> Result<()> {
        let db = Db::builder().no_migrations().build()?;
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
        let db = Db::builder().no_migrations().readers(1).build()?;
        let err = db.read(|_| -> Result<()> { panic!("boom") }).unwrap_err();
        assert!(matches!(err, Error::Panic { ref message } if message == "boom"));
        // The only reader must be usable again, outside any transaction.
        db.read(|c| {
            assert!(!c.is_autocommit());
            Ok(())
        })
    }
}
