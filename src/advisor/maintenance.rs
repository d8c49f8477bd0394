//! Maintenance: `PRAGMA optimize` to keep the planner's statistics fresh and a TRUNCATE
//! checkpoint to bring the WAL back to zero bytes, on demand or every `optimize_interval`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::checkpoint::{self, CheckpointResult};
use crate::db::{Db, Inner};
use crate::error::{system_errno, Error, Result};
use crate::location::Target;
use crate::writer::Writer;

/// The row budget of each ANALYZE that `optimize` runs (`PRAGMA analysis_limit`): enough for
/// good statistics, bounded so that maintenance on a large file stays in milliseconds.
pub const ANALYSIS_LIMIT: i64 = 1000;

/// `PRAGMA optimize` mask: 0x02 runs ANALYZE where it may help, 0x10 applies the analysis
/// limit, 0x10000 checks every table (the writer that runs maintenance has not queried them
/// itself, so the default "tables this connection used" would skip them all).
const OPTIMIZE_MASK: u32 = 0x10012;

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
    /// The TRUNCATE checkpoint's outcome.
    pub checkpoint: CheckpointResult,
    /// How long it all took.
    pub elapsed: Duration,
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
    // Bounded: readers keep a TRUNCATE checkpoint waiting while it holds the write lock.
    let checkpoint = checkpoint::truncate(conn)?;
    ran.push("PRAGMA wal_checkpoint(TRUNCATE)".to_owned());
    Ok(MaintenanceReport {
        ran,
        analyzed,
        wal_bytes_before,
        wal_bytes_after: wal(),
        checkpoint,
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
        let inner = &self.inner;
        optimize(&inner.writer, &inner.target, &inner.advisor.last_checkpoint)
    }
}

/// Runs maintenance on `writer` (between transactions) and records its checkpoint in `last`.
fn optimize(
    writer: &Writer,
    target: &Target,
    last: &Mutex<Option<CheckpointResult>>,
) -> Result<MaintenanceReport> {
    // A full disk fails the ANALYZE or the checkpoint as `DiskFull`, naming the file.
    let report = writer.with_conn(|c| {
        run(c, || target.wal_bytes()).map_err(|err| err.locate(&target.path, system_errno(c)))
    })?;
    *last.lock() = Some(report.checkpoint);
    Ok(report)
}

/// Starts the maintenance thread when `interval` is set: `optimize` every interval for as long
/// as the `Db` lives. The thread holds only what maintenance uses (the writer, weakly between
/// runs, the location and the last-checkpoint slot), never the `Db`; dropping the last handle
/// drops the sender and wakes the thread to end.
pub(crate) fn schedule(inner: &Inner, interval: Option<Duration>) {
    let Some(interval) = interval else {
        return;
    };
    let (stop, wait) = mpsc::channel::<()>();
    *inner.advisor.stop.lock() = Some(stop);
    let writer: Weak<Writer> = Arc::downgrade(&inner.writer);
    let target = inner.target.clone();
    let last = Arc::clone(&inner.advisor.last_checkpoint);
    let spawned = std::thread::Builder::new()
        .name("strata-optimize".into())
        .spawn(move || loop {
            match wait.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {
                    let Some(writer) = writer.upgrade() else {
                        return;
                    };
                    match optimize(&writer, &target, &last) {
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
        let writer = Arc::downgrade(&db.inner.writer);
        drop(db);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (weak.upgrade().is_some() || writer.upgrade().is_some()) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            weak.upgrade().is_none(),
            "the thread must not keep the Db alive"
        );
        assert!(
            writer.upgrade().is_none(),
            "the thread must not keep the writer connection open"
        );
        Ok(())
    }
}
