//! What the job queue's test files share: the database they open and how they wait for the
//! pools' background work.

use std::time::{Duration, Instant};

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
