//! Maintenance: `PRAGMA optimize` to keep the planner's statistics fresh and a TRUNCATE
//! checkpoint to bring the WAL back to zero bytes, on demand or every `optimize_interval`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use crate::db::{Db, Inner};
use crate::error::{Error, Result};

/// The row budget of each ANALYZE that `optimize` runs (`PRAGMA analysis_limit`): enough for
/// good statistics, bounded so that maintenance on a large file stays in milliseconds.
pub const ANALYSIS_LIMIT: i64 = 1000;

/// `PRAGMA optimize` mask: 0x02 runs ANALYZE where it may help, 0x10 applies the analysis
/// limit, 0x10000 checks every table (the writer that runs maintenance has not queried them
/// itself, so the default "tables this connection used" would skip them all).
const OPTIMIZE_MASK: u32 = 0x10012;

/// The longest the TRUNCATE checkpoint waits for readers of older snapshots (and for another
/// process's writer). SQLite makes it wait holding the write lock, on the writer that this
/// `Db`'s writes queue behind: with the connection's `busy_timeout` (5 s by default) one long
/// read stalled every write, of this `Db` and of other processes, for the whole timeout, and
/// another process's write could fail with SQLITE_BUSY (tests/wal.rs measured a 5.0 s stall).
/// A checkpoint cut short reports `busy`; a later one truncates.
pub(crate) const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// What one `optimize` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MaintenanceReport {
    /// The statements run, in order (the ANALYZE statements chosen by `PRAGMA optimize`
    /// included).
    pub ran: Vec<String>,
    /// The tables re-analyzed, as `PRAGMA optimize` named them (`ANALYZE "main"."t"`).
    pub analyzed: Vec<String>,
    /// The WAL file's size before, in bytes; `None` without a WAL (in-memory database).
    pub wal_bytes_before: Option<u64>,
    /// The WAL file's size after the checkpoint.
    pub wal_bytes_after: Option<u64>,
    /// The checkpoint's outcome.
    pub checkpoint: Checkpoint,
    /// How long it all took.
    pub elapsed: Duration,
}

/// The outcome of `PRAGMA wal_checkpoint(TRUNCATE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// True when a reader or writer kept the checkpoint from completing (the WAL was not
    /// truncated; it will be on a later one).
    pub busy: bool,
    /// Frames in the WAL (-1 without a WAL).
    pub log_frames: i64,
    /// Frames copied back into the database (-1 without a WAL).
    pub checkpointed_frames: i64,
    /// When it ran.
    pub at: SystemTime,
}

/// The size of the WAL beside a database file; `Some(0)` when there is none.
pub(crate) fn wal_bytes(path: &Path) -> Option<u64> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Some(std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len()))
}

/// Runs optimize and the checkpoint on `conn` (the writer, outside any transaction).
fn run(conn: &Connection, wal: impl Fn() -> Option<u64>) -> Result<MaintenanceReport> {
    let started = Instant::now();
    let wal_bytes_before = wal();
    let mut ran = Vec::new();
    let exec = |sql: &str, ran: &mut Vec<String>| -> Result<()> {
        conn.execute_batch(sql)
            .map_err(|e| Error::from(e).with_sql(sql))?;
        ran.push(sql.to_owned());
        Ok(())
    };
    exec(&format!("PRAGMA analysis_limit={ANALYSIS_LIMIT}"), &mut ran)?;
    // Debug mode (0x01) lists the ANALYZE statements without running them; the same mask
    // without it then runs them.
    let debug = format!("PRAGMA optimize({})", OPTIMIZE_MASK | 1);
    let analyzed: Vec<String> = conn
        .prepare(&debug)
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| Error::from(e).with_sql(&debug))?;
    exec(&format!("PRAGMA optimize({OPTIMIZE_MASK})"), &mut ran)?;
    ran.extend(analyzed.iter().cloned());
    let sql = "PRAGMA wal_checkpoint(TRUNCATE)";
    // The busy handler bounds the checkpoint's wait (see CHECKPOINT_WAIT); the writer's own
    // busy_timeout is restored whatever the checkpoint's outcome.
    let saved: i64 = conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .map_err(|e| Error::from(e).with_sql("PRAGMA busy_timeout"))?;
    let saved = Duration::from_millis(u64::try_from(saved).unwrap_or(0));
    conn.busy_timeout(CHECKPOINT_WAIT.min(saved))?;
    let outcome = conn.query_row(sql, [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    conn.busy_timeout(saved)?;
    let (busy, log_frames, checkpointed_frames) =
        outcome.map_err(|e| Error::from(e).with_sql(sql))?;
    ran.push(sql.to_owned());
    Ok(MaintenanceReport {
        ran,
        analyzed,
        wal_bytes_before,
        wal_bytes_after: wal(),
        checkpoint: Checkpoint {
            busy: busy != 0,
            log_frames,
            checkpointed_frames,
            at: SystemTime::now(),
        },
        elapsed: started.elapsed(),
    })
}

impl Db {
    /// Maintenance: `PRAGMA optimize` (re-analyzes the tables whose statistics are missing or
    /// stale, each ANALYZE bounded by [`ANALYSIS_LIMIT`] rows), then
    /// `PRAGMA wal_checkpoint(TRUNCATE)` (copies the WAL back into the database and truncates
    /// it to zero bytes).
    ///
    /// Runs on the writer connection between transactions: queued writes wait for it. A
    /// checkpoint that readers keep from completing waits for them at most 100 ms (it holds
    /// the write lock meanwhile) and then reports `busy` rather than failing.
    pub fn optimize(&self) -> Result<MaintenanceReport> {
        let target = &self.inner.target;
        let wal = || (!target.memory).then(|| wal_bytes(&target.path)).flatten();
        let report = self.inner.writer.with_conn(|c| run(c, wal))?;
        *self.inner.advisor.last_checkpoint.lock() = Some(report.checkpoint);
        Ok(report)
    }
}

/// Starts the maintenance thread when `interval` is set: `optimize` every interval for as long
/// as the `Db` lives. The thread holds no handle between runs, so it never keeps the `Db`
/// alive; dropping the last handle drops the sender and wakes the thread to end.
pub(crate) fn schedule(inner: &Arc<Inner>, interval: Option<Duration>) {
    let Some(interval) = interval else {
        return;
    };
    let (stop, wait) = mpsc::channel::<()>();
    *inner.advisor.stop.lock() = Some(stop);
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name("strata-optimize".into())
        .spawn(move || loop {
            match wait.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let db = Db { inner };
                    match db.optimize() {
                        Ok(report) => tracing::debug!(?report, "scheduled optimize"),
                        Err(err) => tracing::warn!(%err, "scheduled optimize failed"),
                    }
                }
                // The Db is gone (sender dropped) or asked to stop.
                _ => return,
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "could not start the scheduled optimize thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimize_on_memory_reports_no_wal() -> Result<()> {
        let db = Db::builder().build()?;
        db.write(|c| {
            Ok(c.execute_batch(
                "CREATE TABLE t(a); CREATE INDEX t_a ON t(a); INSERT INTO t VALUES (1);",
            )?)
        })?;
        let report = db.optimize()?;
        assert_eq!(report.wal_bytes_before, None);
        assert!(report.ran.iter().any(|s| s.starts_with("PRAGMA optimize")));
        assert!(report
            .ran
            .last()
            .is_some_and(|s| s.contains("wal_checkpoint")));
        // A table with an index lacking statistics is what optimize analyzes (empty tables
        // are skipped).
        assert_eq!(report.analyzed.len(), 1, "{report:?}");
        Ok(())
    }

    #[test]
    fn scheduled_thread_ends_with_the_db() -> Result<()> {
        let db = Db::builder()
            .optimize_interval(Some(Duration::from_millis(5)))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while db.inner.advisor.last_checkpoint.lock().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(db.inner.advisor.last_checkpoint.lock().is_some());
        let weak = Arc::downgrade(&db.inner);
        drop(db);
        let deadline = Instant::now() + Duration::from_secs(5);
        while weak.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            weak.upgrade().is_none(),
            "the thread must not keep the Db alive"
        );
        Ok(())
    }
}
