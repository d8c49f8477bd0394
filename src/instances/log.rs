//! The writer's side of the change log: `strata_changes`, created when first needed, one row
//! appended per write transaction just before its COMMIT, pruned by age and count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::Connection;

use super::codec;
use super::InstanceSettings;
use crate::error::Result;
use crate::events::Capture;

/// The log table. `seq` has no AUTOINCREMENT: pruning always keeps the newest row, so the
/// sequence numbers stay dense and a reader tells a pruned entry from one never written.
pub(crate) const CREATE: &str = "CREATE TABLE IF NOT EXISTS strata_changes (
    seq INTEGER PRIMARY KEY,
    instance INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    changes BLOB NOT NULL
)";

const APPEND: &str = "INSERT INTO strata_changes (instance, at_us, changes) VALUES (?1, ?2, ?3)";

const PRUNE: &str = "DELETE FROM strata_changes
    WHERE seq < (SELECT max(seq) FROM strata_changes)
      AND (seq <= (SELECT max(seq) FROM strata_changes) - ?1 OR at_us < ?2)";

/// Appends between prunes: a prune's DELETE costs tens of microseconds, spread over this many
/// writes.
const PRUNE_EVERY: u64 = 256;

/// Microseconds since the Unix epoch: entries are compared across processes.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The change log as one writer appends to it.
pub(crate) struct ChangeLog {
    /// This instance's id in the log's rows.
    pub(crate) instance: i64,
    max_rows: i64,
    max_age: Duration,
    /// Reused for every entry's encoding.
    buffer: Mutex<Vec<u8>>,
    pub(crate) appended: AtomicU64,
    pub(crate) appended_bytes: AtomicU64,
}

impl ChangeLog {
    pub(crate) fn new(settings: &InstanceSettings) -> Self {
        ChangeLog {
            instance: rand::random::<i64>() & i64::MAX,
            max_rows: i64::try_from(settings.log_max_rows).unwrap_or(i64::MAX),
            max_age: settings.log_max_age,
            buffer: Mutex::new(Vec::new()),
            appended: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
        }
    }

    /// Creates `strata_changes` if it is missing, in an IMMEDIATE transaction of its own so
    /// that instances starting together create it once.
    pub(crate) fn create(conn: &Connection) -> Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let created = conn.execute_batch(CREATE);
        match created {
            Ok(()) => Ok(conn.execute_batch("COMMIT")?),
            Err(err) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(err.into())
            }
        }
    }

    /// Before COMMIT: appends the changes captured in the open transaction as one entry, and
    /// now and then prunes. The log's own rows are dropped from the capture again. Returns
    /// false if nothing was captured (no entry).
    pub(crate) fn append(&self, conn: &Connection, capture: &Capture) -> Result<bool> {
        let mark = capture.mark();
        if mark == 0 {
            return Ok(false);
        }
        let mut buffer = self.buffer.lock();
        buffer.clear();
        capture.with_pending(|changes| codec::encode(changes, &mut buffer));
        let at = now_us();
        let appended = conn
            .prepare_cached(APPEND)?
            .execute((self.instance, at, &buffer[..]));
        let n = self.appended.fetch_add(1, Ordering::Relaxed) + 1;
        self.appended_bytes
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        let pruned = match appended {
            Ok(_) if n.is_multiple_of(PRUNE_EVERY) => {
                let cutoff = at - self.max_age.as_micros().min(i64::MAX as u128) as i64;
                conn.prepare_cached(PRUNE)?
                    .execute((self.max_rows, cutoff))
                    .map(drop)
            }
            other => other.map(drop),
        };
        capture.rollback_to(mark);
        // Big entries (a bulk write) would keep their buffer for the life of the writer.
        if buffer.capacity() > 1 << 20 {
            *buffer = Vec::new();
        }
        pruned?;
        Ok(true)
    }

    /// Runs `PRAGMA optimize` (which may rewrite `sqlite_stat1`) in a transaction with an
    /// empty entry: the other instances see the commit explained, and keep their caches.
    pub(crate) fn optimize(&self, conn: &Connection) -> Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE; PRAGMA optimize;")?;
        let done = conn
            .prepare_cached(APPEND)
            .and_then(|mut s| s.execute((self.instance, now_us(), &[][..] as &[u8])))
            .and_then(|_| conn.execute_batch("COMMIT"));
        if done.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Ok(done?)
    }
}
