//! What a `Db` tells about itself: the monitoring report and its alerts, the write path's and
//! the checkpointer's counters, the N+1 warnings and the schema version.

use super::Db;
use crate::advisor::NPlusOne;
use crate::checkpoint::CheckpointStats;
use crate::error::Result;
use crate::migrate;
use crate::monitor::{Report, WriteStats};

impl Db {
    /// A snapshot of this database's figures: pool, statement reuse, caches, writes,
    /// per-statement statistics, slow queries, WAL size and, once the job queue is used, its depths
    /// and latencies (see [`Report`]).
    pub fn report(&self) -> Report {
        let inner = &self.inner;
        let readers = inner.readers.state();
        let mut report = inner.monitor.report(
            (inner.readers.max_size(), readers.connections, readers.idle),
            inner.caches.stats(),
            self.write_stats(),
        );
        // A queue's figures need a read of its tables; a report is still a report without them.
        report.jobs = inner
            .jobs
            .get()
            .and_then(|shared| self.read(|c| shared.stats.report(c)).ok());
        report.instances = self.instances_report();
        report
    }

    /// Runs the windowed alert checks now: each cache's hit rate since the previous check, and
    /// the WAL size against `journal_size_limit`. They also run by themselves, at most once per
    /// [`alert_window`](crate::Config::alert_window), when a statement ends; call this from a
    /// service's own scheduler when reads are too rare for that. Does nothing with monitoring
    /// off.
    pub fn check_alerts(&self) {
        if self.inner.monitor.enabled {
            self.inner.monitor.run_checks();
        }
    }

    /// Counters of the write path: commits, writes, failures, the largest group.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    /// What the background checkpointer has done (nothing for in-memory databases, or with
    /// [`checkpoint_pages(0)`](crate::Config::checkpoint_pages)).
    pub fn checkpoints(&self) -> CheckpointStats {
        self.inner.writer.checkpoint_stats()
    }

    /// The recent N+1 warnings (at most 64, oldest first): statements run more than
    /// `n_plus_one_threshold` times in one `read` or `write` scope.
    pub fn n_plus_one_warnings(&self) -> Vec<NPlusOne> {
        self.inner.advisor.n_plus_one.recent()
    }

    /// The highest applied migration version, or `None` for a database without refinery history.
    pub fn schema_version(&self) -> Result<Option<i32>> {
        self.read(migrate::schema_version)
    }
}
