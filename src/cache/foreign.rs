//! Writes by other processes: the caches cannot see them through change capture, so the
//! writer connection's `PRAGMA data_version` is polled at most once per interval.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Detects commits by other processes through the writer connection's `PRAGMA data_version`,
/// which changes only when another connection commits (readers are read-only, so any such
/// connection is foreign).
pub(super) struct ForeignWrites {
    interval_ms: u64,
    epoch: Instant,
    pub(super) last_check_ms: AtomicU64,
    data_version: AtomicI64,
}

impl ForeignWrites {
    pub(super) fn new(interval: Duration) -> Self {
        ForeignWrites {
            interval_ms: interval.as_millis().min(u128::from(u64::MAX)) as u64,
            epoch: super::clock::coarse_now(),
            last_check_ms: AtomicU64::new(0),
            data_version: AtomicI64::new(i64::MIN),
        }
    }

    /// Milliseconds since this detector was made.
    pub(super) fn now_ms(&self) -> u64 {
        // The coarse clock: checked on every read-through, where `Instant::now` would cost
        // as much as the cache hit itself.
        super::clock::coarse_now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// True when the check is due, and claims it (one caller checks per interval).
    pub(super) fn due(&self) -> bool {
        let now = self.now_ms();
        let last = self.last_check_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.interval_ms
            && self
                .last_check_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Records the writer's data_version; true if it moved since the last record.
    pub(super) fn moved(&self, version: i64) -> bool {
        let before = self.data_version.swap(version, Ordering::Relaxed);
        before != i64::MIN && before != version
    }
}

/// The connection's `PRAGMA data_version`.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}
