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
mod instances;
mod report;

use crate::advisor::{self, nplusone};
use crate::cache::CacheManager;
use crate::checkpoint::Checkpointer;
use crate::config::Config;
use crate::error::{panic_error, system_errno, Error, Result};
use crate::events::Capture;
use crate::follower::{Follow, Follower, Source};
use crate::instances::log::ChangeLog;
use crate::instances::replica::Replica;
use crate::instances::turn::Turn;
use crate::location::Target;
use crate::migrate::{self, StartupLock};
use crate::monitor::Monitor;
use crate::pool::{self, Pragmas, Reader, ReaderConn, Readers};
use crate::sql::rollback;
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
    /// The thread that notices other processes' commits (none in memory); stopped first on
    /// drop.
    pub(crate) follower: Option<Follower>,
    /// Whether this is a LiteFS replica.
    pub(crate) replica: Replica,
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
        let log = config.instances.as_ref().map(|settings| {
            capture.pin_every_row();
            Arc::new(ChangeLog::new(settings))
        });
        let turn = match &config.instances {
            Some(settings) if settings.fair_turns && !read_only => {
                Some(Turn::open(&target.path, config.busy_timeout)?)
            }
            _ => None,
        };
        #[allow(unused_mut)] // set only with a shared tier
        let mut manager = CacheManager::new(
            std::mem::take(&mut config.caches),
            config.foreign_write_check,
        )
        .with_memory_limit(config.cache_memory_limit);
        #[cfg(feature = "redis")]
        if let Some(settings) = config.shared_tier.take() {
            let tier = crate::cache::SharedTier::new(settings)?;
            manager.set_shared_tier(Arc::new(tier));
        }
        let caches = Arc::new(manager);
        if read_only {
            caches.init_foreign_writes(&conn)?;
        }
        let sink = Arc::clone(&caches);
        capture.add_sink(Arc::new(move |set| sink.apply(set)));
        let readers = pool::open_readers(&target, &pragmas, &config)?;
        // The follower's own connection: its reads of the log never wait for the writer (which
        // may be waiting for another process's lock) or for a pooled reader.
        let follower_conn = match &log {
            Some(_) => Some(pool::open_read_only(&target, &pragmas)?),
            None => None,
        };
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
            // A LiteFS replica cannot write: its primary creates the log.
            let replica = Replica::new(Some(target.path.as_path()))
                .primary()
                .is_some();
            if log.is_some() && !target.memory && !replica {
                if let Err(error) = ChangeLog::create(&conn) {
                    return Err(error.locate(&target.path, system_errno(&conn)));
                }
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
        #[cfg(feature = "redis")]
        if let Some(tier) = caches.shared_tier() {
            // Weak: the monitor holds the caches, which hold the tier.
            let monitor = Arc::downgrade(&monitor);
            tier.on_event(Arc::new(move |event| {
                use crate::cache::shared::TierEvent;
                use crate::monitor::Alert;
                let alert = match event {
                    TierEvent::Down(error) => Alert::SharedTierDown { error },
                    TierEvent::Recovered(down_for) => Alert::SharedTierRecovered { down_for },
                };
                if let Some(monitor) = monitor.upgrade() {
                    monitor.alerts.fire(alert);
                }
            }));
        }
        let path = target.path.clone();
        let mut writer = Writer::new(
            conn,
            config.max_group,
            capture,
            checkpointer,
            Arc::clone(&monitor),
            path,
        );
        if let Some(log) = &log {
            writer = writer.with_instances(Arc::clone(log), turn);
        }
        let writer = Arc::new(writer);
        let follower = if target.memory {
            None
        } else {
            let (interval, source, help_after) = match (&config.instances, log, follower_conn) {
                (Some(settings), Some(log), Some(conn)) => (
                    settings.follow_interval,
                    Source::Log { conn, log },
                    Some(settings.resolved_read_help_after()),
                ),
                _ => (config.foreign_write_check, Source::Writer, None),
            };
            let follow = Follow {
                interval,
                caches: Arc::clone(&caches),
                writer: Arc::clone(&writer),
                monitor: Arc::clone(&monitor),
                path: target.path.display().to_string(),
            };
            Some(
                Follower::start(follow, source, help_after).map_err(|source| Error::Io {
                    path: target.path.clone(),
                    source,
                })?,
            )
        };
        let replica = Replica::new((!target.memory).then_some(target.path.as_path()));
        let db = Db {
            inner: Arc::new(Inner {
                target,
                writer,
                readers,
                caches,
                read_only,
                monitor,
                advisor: advisor::State::new(&config, expected_schema_version),
                jobs: std::sync::OnceLock::new(),
                jobs_init: parking_lot::Mutex::new(()),
                follower,
                replica,
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

    fn on_this_reader<T, F>(&self, reader: &ReaderConn, scoped: bool, f: F) -> Result<T>
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
            reader
                .begin()
                .map_err(|e| Error::from(e).with_sql("BEGIN"))?;
        }
        let conn: &Connection = reader;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let site = crate::monitor::sampling::site_of::<F>();
            self.inner.monitor.watch(conn, site, || f(conn))
        }))
        .unwrap_or_else(|payload| Err(panic_error(payload)));
        match outcome {
            Ok(value) if scoped => match reader.commit() {
                Ok(()) => Ok(value),
                Err(e) => {
                    // The reader must go back to the pool outside any transaction.
                    rollback(conn);
                    Err(Error::from(e).with_sql("COMMIT"))
                }
            },
            Ok(value) => Ok(value),
            Err(err) => {
                rollback(conn);
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
        self.check_writable()?;
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
        // The follower holds the writer and reads the file: it stops before the last writes.
        drop(self.follower.take());
        if self.read_only {
            return;
        }
        // Statistics refreshed on close are what the next open plans with; the checkpoint
        // leaves the file self-contained even while other processes keep the WAL open (SQLite
        // checkpoints on close only as the last connection). Its wait for readers is bounded
        // like optimize's: a reader holding a snapshot must not stall the close (and every
        // writer of the file) for the whole busy_timeout.
        if let Some(log) = &self.writer.log {
            // A TRUNCATE (or RESTART) checkpoint rewrites the WAL header, which moves the
            // other instances' `data_version` with no entry to explain it: they would drop
            // their caches. Their last connection to close checkpoints the WAL anyway.
            self.writer.with_conn(|c| {
                let _ = log.optimize(c);
            });
            return;
        }
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
