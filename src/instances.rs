//! Several instances on one database file: the change log that keeps every instance's caches
//! exact, the follower thread that applies it, the fair turn at the write lock, and LiteFS
//! replica awareness.
//!
//! With [`Config::instances`](crate::Config::instances), every write transaction appends what
//! it changed (table, kind, rowid and the watched columns' old and new values: what the
//! invalidation rules read) to the `strata_changes` table, in one row written just before its
//! COMMIT, so the entry commits, and replicates, with the data. A background thread per `Db`
//! polls its own read connection's `PRAGMA data_version` every
//! [`follow_interval`](InstanceSettings::follow_interval); when it moves it reads the entries
//! after its last sequence number and runs the other instances' through the same rules and
//! stale-fill guard as local commits. What the log cannot explain (a commit with no entry, an
//! entry pruned before it was read, an entry it cannot decode) drops every cache, counted in
//! [`InstancesReport::gaps`] with its reason, and fires [`Alert::ChangeLogGap`](crate::monitor::Alert::ChangeLogGap).
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! use strata::instances::InstanceSettings;
//! let dir = tempfile::tempdir().unwrap();
//! let db = strata::Db::builder()
//!     .path(dir.path().join("shared.db"))
//!     .instances(InstanceSettings::default())
//!     .build()?;
//! db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))?;
//! let report = db.instances_report().expect("instances are on");
//! assert_eq!(report.gaps, 0);
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

pub(crate) mod codec;
pub(crate) mod log;
pub(crate) mod replica;
pub(crate) mod turn;

/// The settings of several instances on one file ([`Config::instances`](crate::Config::instances)).
///
/// ```
/// use std::time::Duration;
/// use strata::instances::InstanceSettings;
/// let settings = InstanceSettings::default()
///     .follow_interval(Duration::from_millis(2))
///     .log_max_rows(50_000);
/// # let _ = settings;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSettings {
    pub(crate) follow_interval: Duration,
    pub(crate) log_max_age: Duration,
    pub(crate) log_max_rows: u64,
    pub(crate) fair_turns: bool,
    pub(crate) read_help_after: Option<Duration>,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        InstanceSettings {
            follow_interval: Duration::from_millis(1),
            log_max_age: Duration::from_secs(60),
            log_max_rows: 10_000,
            fair_turns: true,
            read_help_after: None,
        }
    }
}

impl InstanceSettings {
    /// How often the follower thread looks at `PRAGMA data_version`: the bound, plus the time
    /// to apply the entries, on how long after another instance's `write` returned this one's
    /// caches may still serve the old value. A look costs about a microsecond. Must be
    /// non-zero. Defaults to 1 ms.
    pub fn follow_interval(mut self, interval: Duration) -> Self {
        self.follow_interval = interval;
        self
    }

    /// How long an entry stays in `strata_changes`: an instance paused for longer (stopped,
    /// swapped out) finds its position pruned and drops its caches. Must be non-zero.
    /// Defaults to 60 s.
    pub fn log_max_age(mut self, age: Duration) -> Self {
        self.log_max_age = age;
        self
    }

    /// The most entries kept in `strata_changes` (one per write transaction). Must be at
    /// least 1. Defaults to 10,000.
    pub fn log_max_rows(mut self, rows: u64) -> Self {
        self.log_max_rows = rows;
        self
    }

    /// Whether the writers of several instances take turns at the write lock: a writer that
    /// waits announces it in a lock file beside the database, and the writer holding the lock
    /// lets it in before its next transaction. A writer that has held the lock back to back
    /// for 25 ms also pauses 2 ms, for writers that are not strata. Defaults to true.
    pub fn fair_turns(mut self, on: bool) -> Self {
        self.fair_turns = on;
        self
    }

    /// How old the follower's last look may be before a cache read of this `Db` takes the next
    /// one itself, on its own thread: on a busy machine a sleeping thread may be woken late,
    /// while the threads serving reads are running. A read that helps costs the look (a microsecond when nothing
    /// moved, plus applying what did); a read on time costs a clock read. Must be non-zero.
    /// Defaults to twice [`follow_interval`](Self::follow_interval), and at least 2 ms.
    pub fn read_help_after(mut self, age: Duration) -> Self {
        self.read_help_after = Some(age);
        self
    }

    /// [`read_help_after`](Self::read_help_after), set or default.
    pub(crate) fn resolved_read_help_after(&self) -> Duration {
        self.read_help_after.unwrap_or_else(|| {
            self.follow_interval
                .saturating_mul(2)
                .max(Duration::from_millis(2))
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.follow_interval.is_zero() {
            return invalid("instances.follow_interval", "must not be zero");
        }
        if self.log_max_age.is_zero() {
            return invalid("instances.log_max_age", "must not be zero");
        }
        if self.log_max_rows == 0 {
            return invalid("instances.log_max_rows", "must be at least 1");
        }
        if self.read_help_after.is_some_and(|d| d.is_zero()) {
            return invalid("instances.read_help_after", "must not be zero");
        }
        Ok(())
    }
}

/// The role of this `Db` in a replicated deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// This `Db` writes (no `.primary` file beside the database).
    Primary,
    /// A LiteFS replica: the `.primary` file beside the database names the primary, and
    /// `write` fails with [`Error::Replica`].
    Replica {
        /// The primary, as the `.primary` file names it.
        primary: String,
    },
}

/// What the change log and its follower did, in a [`Report`](crate::monitor::Report) (with
/// [`Config::instances`](crate::Config::instances) on).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstancesReport {
    /// This instance's id in `strata_changes` (random per open).
    pub instance: i64,
    /// Primary, or a replica and its primary.
    pub role: Role,
    /// Entries this instance appended (one per write transaction that changed rows).
    pub appended: u64,
    /// Bytes of those entries' encoded changes.
    pub appended_bytes: u64,
    /// Other instances' entries applied to the caches.
    pub applied: u64,
    /// Times the log could not explain a commit and every cache was dropped.
    pub gaps: u64,
    /// Why, the last time.
    pub last_gap: Option<String>,
    /// The sequence number of the last entry read.
    pub last_seq: i64,
    /// From another instance's entry being written (just before its COMMIT) to its
    /// invalidations applied here: median, in microseconds (0 before the first).
    pub propagation_p50_us: f64,
    /// The same, 99th percentile.
    pub propagation_p99_us: f64,
    /// The same, the largest.
    pub propagation_max_us: f64,
    /// Times this writer let a waiting instance's writer take the lock first.
    pub turns_given: u64,
    /// Pauses taken after holding the lock back to back, for writers that are not strata.
    pub pauses: u64,
}
