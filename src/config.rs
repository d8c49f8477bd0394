//! `Config`: the builder every [`Db`](crate::Db) is opened from.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::cache::CacheSettings;
use crate::error::{Error, Result};
use crate::instances::InstanceSettings;
pub(crate) use crate::location::Location;
use crate::monitor::MonitorSettings;

mod monitoring;
#[cfg(feature = "redis")]
mod shared_tier;

/// SQLite's `synchronous` levels that strata supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=NORMAL`: in WAL mode a commit is durable against application crashes; a power
    /// loss may roll back the last transactions but never corrupts the file.
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it returns; durable against power loss.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> i64 {
        match self {
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
        }
    }
}

/// Settings for opening a [`Db`](crate::Db); every setter documents its default.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let db = strata::Db::builder()
///     .path(dir.path().join("app.db"))
///     .readers(4)
///     .statement_cache_capacity(256)
///     .build()?;
/// assert_eq!(db.read(|c| Ok(c.query_row("PRAGMA query_only", [], |r| r.get::<_, i64>(0))?))?, 1);
/// # Ok(()) }
/// ```
pub struct Config {
    pub(crate) location: Location,
    pub(crate) readers: usize,
    pub(crate) busy_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) synchronous: Synchronous,
    pub(crate) cache_size_kib: u32,
    pub(crate) mmap_size: u64,
    pub(crate) journal_size_limit: u64,
    pub(crate) statement_cache_capacity: usize,
    pub(crate) max_group: usize,
    pub(crate) caches: Vec<CacheSettings>,
    pub(crate) foreign_write_check: Duration,
    pub(crate) cache_memory_limit: Option<usize>,
    pub(crate) checkpoint_pages: u32,
    pub(crate) read_only: bool,
    /// The service's refinery migrations, applied at open; `None` applies nothing.
    pub(crate) migrations: Option<refinery::Runner>,
    pub(crate) monitor: MonitorSettings,
    pub(crate) n_plus_one_threshold: usize,
    pub(crate) optimize_interval: Option<Duration>,
    pub(crate) subscription_capacity: usize,
    /// The shared cache tier, if any (feature `redis`).
    #[cfg(feature = "redis")]
    pub(crate) shared_tier: Option<crate::cache::SharedTierSettings>,
    pub(crate) instances: Option<InstanceSettings>,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            location: Location::Memory,
            readers: 2 * cores,
            busy_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
            synchronous: Synchronous::Normal,
            cache_size_kib: 8 * 1024,
            mmap_size: 0,
            journal_size_limit: 64 * 1024 * 1024,
            statement_cache_capacity: 128,
            max_group: 64,
            caches: Vec::new(),
            foreign_write_check: Duration::from_millis(100),
            cache_memory_limit: None,
            checkpoint_pages: 1000,
            read_only: false,
            migrations: None,
            monitor: MonitorSettings::default(),
            n_plus_one_threshold: 20,
            optimize_interval: None,
            subscription_capacity: crate::events::DEFAULT_SUBSCRIPTION_CAPACITY,
            #[cfg(feature = "redis")]
            shared_tier: None,
            instances: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let migrations = match &self.migrations {
            Some(_) => "runner",
            None => "none",
        };
        let mut f = f.debug_struct("Config");
        f.field("location", &self.location)
            .field("readers", &self.readers)
            .field("busy_timeout", &self.busy_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("synchronous", &self.synchronous)
            .field("cache_size_kib", &self.cache_size_kib)
            .field("mmap_size", &self.mmap_size)
            .field("journal_size_limit", &self.journal_size_limit)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("max_group", &self.max_group)
            .field("caches", &self.caches)
            .field("foreign_write_check", &self.foreign_write_check)
            .field("cache_memory_limit", &self.cache_memory_limit)
            .field("checkpoint_pages", &self.checkpoint_pages)
            .field("read_only", &self.read_only)
            .field("migrations", &migrations)
            .field("monitor", &self.monitor)
            .field("n_plus_one_threshold", &self.n_plus_one_threshold)
            .field("optimize_interval", &self.optimize_interval)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("instances", &self.instances);
        #[cfg(feature = "redis")]
        f.field("shared_tier", &self.shared_tier);
        f.finish()
    }
}

impl Config {
    /// The largest [`mmap_size`](Config::mmap_size): the bundled SQLite's compile-time cap
    /// (`SQLITE_MAX_MMAP_SIZE`, just under 2 GiB). SQLite silently lowers a larger setting to
    /// it; strata refuses one up front instead, before anything is opened.
    pub const MAX_MMAP_SIZE: u64 = 0x7fff_0000;

    /// A config with every default: an in-memory database, no migrations.
    pub fn new() -> Self {
        Self::default()
    }

    /// The database file; created if missing (its directory must exist).
    /// Defaults to a private in-memory database.
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Location::File(path.as_ref().to_path_buf());
        self
    }

    /// A private in-memory database that every connection of the `Db` shares.
    /// This is the default.
    pub fn in_memory(mut self) -> Self {
        self.location = Location::Memory;
        self
    }

    /// The number of read-only reader connections in the pool. Must be at least 1.
    /// Defaults to twice the number of cores.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// How long a statement waits for a lock held by another connection before failing with
    /// [`Error::Busy`]. Defaults to 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long `read` waits for a free reader before failing with [`Error::PoolTimeout`].
    /// Must be longer than `busy_timeout`. Defaults to 10 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// The durability of commits. Defaults to [`Synchronous::Normal`].
    pub fn synchronous(mut self, level: Synchronous) -> Self {
        self.synchronous = level;
        self
    }

    /// SQLite's page cache per connection, in KiB (`PRAGMA cache_size=-N`). Defaults to 8192.
    pub fn cache_size_kib(mut self, kib: u32) -> Self {
        self.cache_size_kib = kib;
        self
    }

    /// Bytes of the file mapped into memory per connection (`PRAGMA mmap_size`); 0 turns memory
    /// mapping off; at most [`Config::MAX_MMAP_SIZE`]. Defaults to 0: in WAL mode a reader
    /// unmaps the whole file whenever another connection has committed since its last read, so
    /// with a writer at work the mapping is torn down and faulted back in constantly (measured
    /// here: the mixed load test ran at half the throughput with 256 MiB mapped). Worth turning
    /// on for read-mostly databases.
    pub fn mmap_size(mut self, bytes: u64) -> Self {
        self.mmap_size = bytes;
        self
    }

    /// The size the WAL is truncated back to after a checkpoint (`PRAGMA journal_size_limit`).
    /// Defaults to 64 MiB.
    pub fn journal_size_limit(mut self, bytes: u64) -> Self {
        self.journal_size_limit = bytes;
        self
    }

    /// Prepared statements kept per connection by `prepare_cached`. Must be at least 1.
    /// Defaults to 128.
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = capacity;
        self
    }

    /// The most `write` calls committed together in one transaction by group commit. Must be at
    /// least 1 (1 turns grouping off). Defaults to 64.
    pub fn max_group(mut self, max_group: usize) -> Self {
        self.max_group = max_group;
        self
    }

    /// Overrides capacity or TTLs of the cache with the settings' name (a later call for the
    /// same name replaces an earlier one). Defaults to each cache's registered spec.
    pub fn cache(mut self, settings: CacheSettings) -> Self {
        self.caches.retain(|s| s.name != settings.name);
        self.caches.push(settings);
        self
    }

    /// The most bytes every cache of the `Db` may weigh together (as their weighers count):
    /// when an insert passes it, the largest caches (the coldest first among equals) evict
    /// their least recently used entries until the sum is a 16th under it. Must be at least 1.
    /// Defaults to no limit.
    pub fn cache_memory_limit(mut self, bytes: usize) -> Self {
        self.cache_memory_limit = Some(bytes);
        self
    }

    /// How often a background thread checks whether another process wrote the database (and
    /// if so drops every cache); cache reads also check at most this often, when the writer
    /// is free. A cached value can be this much older than a foreign write, plus one local
    /// write transaction. Not used with [`instances`](Config::instances), whose change log
    /// replaces it. Defaults to 100 ms.
    pub fn foreign_write_check(mut self, interval: Duration) -> Self {
        self.foreign_write_check = interval;
        self
    }

    /// Several instances (processes, or LiteFS hosts) share this database file: every write
    /// transaction also appends what it changed to `strata_changes`, and a background thread
    /// applies the other instances' entries to this `Db`'s caches, so that each invalidates
    /// exactly what another's writes made stale instead of dropping everything (see
    /// [`instances`](crate::instances)). Not for an in-memory database. Defaults to off.
    pub fn instances(mut self, settings: InstanceSettings) -> Self {
        self.instances = Some(settings);
        self
    }

    /// WAL size, in pages, past which a background thread checkpoints the WAL into the database
    /// (PASSIVE: it never blocks readers or the writer), so that no commit pays for a checkpoint
    /// and its fsync. 0 leaves SQLite's auto-checkpoint inside COMMIT. Defaults to 1000 (SQLite's
    /// own auto-checkpoint size).
    pub fn checkpoint_pages(mut self, pages: u32) -> Self {
        self.checkpoint_pages = pages;
        self
    }

    /// Opens an existing database file without ever writing to it: no migrations (even those
    /// given to [`migrations`](Config::migrations)), no switch to
    /// WAL, no checkpoints, no `PRAGMA optimize` on close, every connection `query_only`;
    /// `write` fails with [`Error::ReadOnly`]. For inspecting a database (`strata advise`).
    /// Defaults to off.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The service's own refinery migrations, applied at open under a cross-process lock, all
    /// pending ones in one transaction; a history that differs from the runner's migrations
    /// fails the open. Defaults to none: strata never changes a schema it was not given (the
    /// expense tracker's are [`domain::migrations`](crate::domain::migrations)).
    ///
    /// ```
    /// # fn main() -> strata::Result<()> {
    /// // A service usually embeds its own folder with `refinery::embed_migrations!("migrations")`
    /// // and passes `migrations::runner()`.
    /// let users = refinery::Migration::unapplied(
    ///     "V1__users",
    ///     "CREATE TABLE users (id INTEGER PRIMARY KEY, login TEXT NOT NULL)",
    /// )?;
    /// let db = strata::Db::builder()
    ///     .migrations(refinery::Runner::new(&[users]))
    ///     .build()?;
    /// assert_eq!(db.schema_version()?, Some(1));
    /// # Ok(()) }
    /// ```
    pub fn migrations(mut self, runner: refinery::Runner) -> Self {
        self.migrations = Some(runner);
        self
    }

    /// How many times one statement may run in one `read` or `write` scope before an N+1
    /// warning names it (see [`Db::n_plus_one_warnings`](crate::Db::n_plus_one_warnings)).
    /// Must be at least 1. Defaults to 20.
    pub fn n_plus_one_threshold(mut self, threshold: usize) -> Self {
        self.n_plus_one_threshold = threshold;
        self
    }

    /// Runs [`Db::optimize`](crate::Db::optimize) on a background thread every `interval` for
    /// as long as the `Db` lives (the thread ends when the last handle drops). Must not be
    /// zero. Defaults to `None`: no scheduled maintenance.
    pub fn optimize_interval(mut self, interval: Option<Duration>) -> Self {
        self.optimize_interval = interval;
        self
    }

    /// The ChangeSets each [`Subscription`](crate::events::Subscription) holds for its subscriber;
    /// when it is full the oldest is dropped and the subscriber is told how many it missed.
    /// Must be at least 1. Defaults to 1024.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity;
        self
    }

    /// Checks the settings; [`build`](Config::build) calls this before opening anything.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.readers == 0 {
            return invalid("readers", "must be at least 1");
        }
        if self.statement_cache_capacity == 0 {
            return invalid("statement_cache_capacity", "must be at least 1");
        }
        if self.read_only && self.location == Location::Memory {
            return invalid("read_only", "an in-memory database has nothing to read");
        }
        if self.cache_memory_limit == Some(0) {
            return invalid("cache_memory_limit", "must be at least 1");
        }
        for cache in &self.caches {
            cache.validate()?;
        }
        #[cfg(feature = "redis")]
        if let Some(tier) = &self.shared_tier {
            tier.validate()?;
        }
        self.monitor.validate()?;
        if self.max_group == 0 {
            return invalid("max_group", "must be at least 1");
        }
        if self.connection_timeout <= self.busy_timeout {
            return invalid(
                "connection_timeout",
                "must be longer than busy_timeout, or pool waits would hide lock waits",
            );
        }
        if self.busy_timeout.as_millis() > i32::MAX as u128 {
            return invalid("busy_timeout", "must fit in i32 milliseconds");
        }
        if let Some(instances) = &self.instances {
            if self.location == Location::Memory {
                return invalid("instances", "an in-memory database has no other instances");
            }
            instances.validate()?;
        }
        if self.subscription_capacity == 0 {
            return invalid("subscription_capacity", "must be at least 1");
        }
        if self.n_plus_one_threshold == 0 {
            return invalid("n_plus_one_threshold", "must be at least 1");
        }
        if self.optimize_interval.is_some_and(|i| i.is_zero()) {
            return invalid("optimize_interval", "must not be zero");
        }
        if self.mmap_size > Self::MAX_MMAP_SIZE {
            return invalid(
                "mmap_size",
                &format!(
                    "must be at most {} bytes, SQLite's limit",
                    Self::MAX_MMAP_SIZE
                ),
            );
        }
        if self.journal_size_limit > i64::MAX as u64 {
            return invalid("journal_size_limit", "must fit in i64");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() -> Result<()> {
        Config::default().validate()
    }

    #[test]
    fn zero_readers_is_refused() {
        let err = Config::new().readers(0).validate().unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "readers",
                ..
            }
        ));
    }

    #[test]
    fn pool_timeout_must_exceed_busy_timeout() {
        let err = Config::new()
            .busy_timeout(Duration::from_secs(20))
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "connection_timeout",
                ..
            }
        ));
    }

    #[test]
    fn mmap_past_sqlites_cap_is_refused() {
        let err = Config::new().mmap_size(4 << 30).validate().unwrap_err();
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
        assert!(Config::new()
            .mmap_size(Config::MAX_MMAP_SIZE)
            .validate()
            .is_ok());
    }

    #[test]
    fn mmap_cap_is_the_bundled_sqlites() -> Result<()> {
        // SQLite lowers a larger mmap_size to its compile-time cap: read back, the cap shows.
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = rusqlite::Connection::open(dir.path().join("m.db"))?;
        let capped: i64 = conn.query_row("PRAGMA mmap_size=4294967296", [], |r| r.get(0))?;
        assert_eq!(capped as u64, Config::MAX_MMAP_SIZE);
        Ok(())
    }
}
