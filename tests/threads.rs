//! Closing a `Db` ends every thread it started. One test in its own file, so that it runs in a
//! process of its own and no other test's threads come and go meanwhile.

use std::time::{Duration, Instant};

use strata::{Db, Result};

/// The threads of this process, as Linux lists them.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Waits until the thread count is back to `baseline`; threads end shortly after the handles
/// that stop them drop, not necessarily before `drop` returns. Returns the last count seen.
fn settle(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = threads();
        if now <= baseline || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dropping_a_db_ends_every_thread_it_started() -> Result<()> {
    if !std::path::Path::new("/proc/self/task").is_dir() {
        eprintln!("no /proc/self/task: thread count unavailable on this system");
        return Ok(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let baseline = threads();
    for round in 0..20 {
        let db = Db::builder()
            .path(dir.path().join(format!("t{round}.db")))
            .readers(3)
            .checkpoint_pages(10)
            .optimize_interval(Some(Duration::from_millis(10)))
            .build()?;
        let changes = db.subscribe();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))?;
        // Readers are opened on r2d2's thread; use several at once so that it has work.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    db.read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))?))
                });
            }
        });
        assert!(threads() > baseline, "an open Db runs threads of its own");
        drop(changes);
        drop(db);
    }
    let after = settle(baseline);
    assert_eq!(
        after, baseline,
        "threads left running by 20 opened and dropped databases"
    );
    Ok(())
}
