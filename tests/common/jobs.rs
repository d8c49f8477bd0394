//! What the job queue's test files share: the database they open and how they wait for the
//! pools' background work.

use std::time::{Duration, Instant};

use strata::jobs::{Queue, WorkerPool};
use strata::{Db, Result};

/// How long a test waits for background work before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh `Db` on a file in `dir`.
pub fn open(dir: &tempfile::TempDir) -> Result<Db> {
    Db::open(dir.path().join("jobs.db"))
}

/// The one integer `sql` selects.
pub fn count(db: &Db, sql: &str) -> Result<i64> {
    db.read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
}

/// Waits until `done` holds (tests wait for background work; no timing is asserted).
pub fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done()? {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Shuts `pool` down with a deadline too short for the one job it runs: the job is abandoned
/// (left leased, not released), and its handler, finishing on its own, still completes it.
pub fn shutdown_abandons_the_running_job(db: &Db, queue: &Queue, pool: WorkerPool) -> Result<()> {
    let shutdown = pool.shutdown(Duration::from_millis(10));
    assert_eq!((shutdown.released, shutdown.abandoned), (0, 1));
    assert_eq!(
        count(db, "SELECT count(*) FROM strata_jobs WHERE state = 1")?,
        1
    );
    wait_until("the late completion", || queue.is_empty())
}
