//! The queue's own tables, created by strata the first time a `Db` uses the queue, whatever
//! migrations the service runs.
//!
//! The statements run in one `db.write`, that is one `BEGIN IMMEDIATE` transaction: several
//! processes starting at once take the write lock in turn, and each after the first finds the
//! tables there (`IF NOT EXISTS`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::error::Result;

/// The waiting and running jobs. A finished job is deleted; a failed one moves to
/// `strata_dead_jobs`. Ids are AUTOINCREMENT so that an id is never reused: a dead letter
/// keeps its job's id, and a retried one is enqueued under a new id.
pub(crate) const JOBS: &str = "strata_jobs";

/// State of a row of [`JOBS`]: waiting for its run time (or a retry).
pub(crate) const PENDING: i64 = 0;
/// State of a row of [`JOBS`]: claimed by a worker whose lease runs until `lease_until`.
pub(crate) const RUNNING: i64 = 1;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS strata_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    unique_key TEXT,
    lease_until INTEGER,
    lease_token INTEGER,
    first_run_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS strata_jobs_due ON strata_jobs (state, priority, run_at);
CREATE UNIQUE INDEX IF NOT EXISTS strata_jobs_unique ON strata_jobs (unique_key)
    WHERE unique_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS strata_dead_jobs (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    unique_key TEXT,
    attempts INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    first_run_at INTEGER,
    failed_at INTEGER NOT NULL,
    last_error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strata_job_queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strata_job_schedules (
    name TEXT PRIMARY KEY,
    last_slot INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Creates the queue's tables if they are missing (on a connection inside a write).
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(DDL)?;
    Ok(())
}

/// Whether the queue's tables exist (for readers that must not create them, like the CLI).
pub(crate) fn exists(conn: &Connection) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'strata_jobs'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

pub(crate) use super::clock::now_ms;

/// A wall-clock time as milliseconds since the Unix epoch.
pub(crate) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A Unix-milliseconds time back as a `SystemTime`.
pub(crate) fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
