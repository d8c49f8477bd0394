//! The WAL bound. A read that holds an old snapshot keeps every checkpoint from copying the
//! frames after it, so the WAL grows past `journal_size_limit` however often the background
//! checkpointer runs: `Alert::WalOverLimit` must fire (once per alert window), and once the
//! reader lets go, `db.optimize()` (or, by itself, the background checkpointer followed by the
//! next commit) must bring the WAL back under the limit.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strata::monitor::Alert;
use strata::{Db, Result};

/// The WAL bound under test.
const LIMIT: u64 = 1024 * 1024;
/// Bytes written while the snapshot is held: six times the limit.
const WRITTEN: usize = 6 * 1024 * 1024;
/// One row's payload; one write per row.
const ROW: usize = 32 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

fn wal_file(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// A file `Db` with the small WAL bound, recording its alerts.
fn open(path: &Path, window: Duration) -> Result<(Db, Arc<Mutex<Vec<Alert>>>)> {
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&alerts);
    let db = Db::builder()
        .path(path)
        .readers(2)
        .journal_size_limit(LIMIT)
        // Checkpoint often (every ~400 KiB of WAL), so that the growth is the held
        // snapshot's doing, not a lazy checkpointer's.
        .checkpoint_pages(100)
        .alert_window(window)
        .on_alert(move |a| sink.lock().unwrap().push(a.clone()))
        .build()?;
    db.write(|c| {
        Ok(c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")?)
    })?;
    db.write(|c| {
        Ok(c.execute("INSERT INTO t (data) VALUES (zeroblob(100))", [])
            .map(drop)?)
    })?;
    Ok((db, alerts))
}

/// Writes `WRITTEN` bytes, one `ROW` per write.
fn write_rows(db: &Db) -> Result<()> {
    for _ in 0..WRITTEN / ROW {
        db.write(|c| {
            Ok(
                c.prepare_cached("INSERT INTO t (data) VALUES (zeroblob(?1))")?
                    .execute([ROW as i64])
                    .map(drop)?,
            )
        })?;
    }
    Ok(())
}

/// A `db.read` on another thread that opens its snapshot, tells `held`, and keeps it until
/// `release` is signalled; returns the row count it saw.
fn hold_snapshot<'s>(
    s: &'s thread::Scope<'s, '_>,
    db: &'s Db,
) -> (mpsc::Sender<()>, thread::ScopedJoinHandle<'s, Result<i64>>) {
    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let reader = s.spawn(move || {
        db.read(|c| {
            let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            held_tx.send(()).expect("main thread");
            let _ = release_rx.recv();
            // Still the same snapshot: none of the writes made meanwhile is visible.
            let again: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            assert_eq!(again, n, "the read transaction kept its snapshot");
            Ok(n)
        })
    });
    held.recv_timeout(Duration::from_secs(30))
        .expect("the reader opened its snapshot");
    (release, reader)
}

fn wal_alerts(alerts: &Mutex<Vec<Alert>>) -> Vec<(u64, u64)> {
    alerts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| match a {
            Alert::WalOverLimit { bytes, limit } => Some((*bytes, *limit)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_held_snapshot_grows_the_wal_alerts_once_per_window_and_optimize_restores_the_bound(
) -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wal.db");
    let window = Duration::from_millis(1500);
    let (db, alerts) = open(&path, window)?;
    db.check_alerts();
    assert!(
        wal_alerts(&alerts).is_empty(),
        "a small WAL raised an alert"
    );

    let (grown, checkpoints, first, second, third, busy_optimize) =
        thread::scope(|s| -> Result<_> {
            let (release, reader) = hold_snapshot(s, &db);
            write_rows(&db)?;
            // The commits woke the background checkpointer; its PASSIVE checkpoints can copy
            // nothing past the held snapshot. Wait for one to have run, so that the growth is
            // shown to be the snapshot's doing, not a checkpointer that had not run yet.
            let deadline = Instant::now() + Duration::from_secs(20);
            while db.checkpoints().runs == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            let grown = db.report().wal_bytes;
            let checkpoints = db.checkpoints();
            // Two checks in one window: one alert. The window counts from that alert, not from
            // the start of the writes (which may take longer than a window on a loaded machine).
            let fired_at = Instant::now();
            db.check_alerts();
            db.check_alerts();
            let first = wal_alerts(&alerts);
            // The next window: the condition persists, so it fires again, once.
            thread::sleep(window.saturating_sub(fired_at.elapsed()) + Duration::from_millis(100));
            db.check_alerts();
            db.check_alerts();
            let second = wal_alerts(&alerts);
            // optimize() while the snapshot is still held: the TRUNCATE checkpoint cannot
            // complete; that is reported, not an error, and the WAL stays as it is. It holds
            // the writer (and SQLite's write lock) while it waits for the reader, so a write
            // made meanwhile waits for it: that wait must stay short.
            let stalled = s.spawn(|| -> Result<Duration> {
                thread::sleep(Duration::from_millis(50));
                let t = Instant::now();
                db.write(|c| {
                    Ok(c.execute("INSERT INTO t (data) VALUES (zeroblob(10))", [])
                        .map(drop)?)
                })?;
                Ok(t.elapsed())
            });
            let t = Instant::now();
            let busy_optimize = db.optimize()?;
            let busy_took = t.elapsed();
            let stalled = stalled.join().expect("writer thread")?;
            let third = db.report().wal_bytes;
            release.send(()).expect("the reader is waiting");
            reader.join().expect("reader thread")?;
            Ok((
                grown,
                checkpoints,
                first,
                second,
                third,
                (busy_optimize, busy_took, stalled),
            ))
        })?;
    let (busy_optimize, busy_took, stalled) = busy_optimize;

    // Released: the next optimize copies everything back and truncates the WAL.
    let report = db.optimize()?;
    let after = db.report().wal_bytes;
    println!(
        "wal: limit {:.1} MiB; {:.1} MiB written under a held snapshot grew the WAL to {:.1} MiB \
         ({} background PASSIVE checkpoints ran, last {:?}); WalOverLimit alerts: {} in the first \
         window, {} after the second; optimize with the snapshot held: checkpoint busy {} after \
         {busy_took:.1?} (a write made meanwhile waited {stalled:.1?}), WAL {:.1} MiB; after release, optimize: WAL {:.1} MiB -> {:.1} MiB \
         (report.wal_bytes {after}, file {})",
        LIMIT as f64 / MIB,
        WRITTEN as f64 / MIB,
        grown as f64 / MIB,
        checkpoints.runs,
        checkpoints.last,
        first.len(),
        second.len(),
        busy_optimize.checkpoint.busy,
        third as f64 / MIB,
        report.wal_bytes_before.unwrap_or(0) as f64 / MIB,
        report.wal_bytes_after.unwrap_or(0) as f64 / MIB,
        wal_file(&path),
    );
    assert!(
        grown > 3 * LIMIT,
        "the held snapshot should have grown the WAL well past the limit ({grown} bytes)"
    );
    let last = checkpoints
        .last
        .expect("the background checkpointer never ran: the growth proves nothing");
    assert!(
        last.checkpointed_frames < last.log_frames,
        "the held snapshot should have kept the checkpoint from copying the WAL: {last:?}"
    );
    assert_eq!(first.len(), 1, "once per window: {first:?}");
    assert!(first[0].0 > LIMIT && first[0].1 == LIMIT, "{first:?}");
    assert_eq!(
        second.len(),
        2,
        "again in the next window, once: {second:?}"
    );
    assert!(busy_optimize.checkpoint.busy, "{busy_optimize:?}");
    assert!(
        third > LIMIT,
        "nothing could be truncated under the snapshot"
    );
    assert!(
        stalled < Duration::from_secs(1) && busy_took < Duration::from_secs(1),
        "optimize blocked the writer for {busy_took:.1?} waiting for a reader (a write waited \
         {stalled:.1?})"
    );
    assert!(!report.checkpoint.busy, "{report:?}");
    assert!(after <= LIMIT, "WAL still {after} bytes after optimize");
    assert_eq!(wal_file(&path), after);
    // Nothing was lost on the way.
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(rows as usize, 2 + WRITTEN / ROW);
    let integrity: String =
        db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))?;
    assert_eq!(integrity, "ok");
    Ok(())
}

/// Without `optimize`: once the snapshot is released, the background checkpointer copies the
/// WAL back and the next commit restarts the WAL and truncates it to `journal_size_limit`.
#[test]
fn once_the_snapshot_is_released_the_wal_returns_under_the_limit_by_itself() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wal.db");
    let (db, _alerts) = open(&path, Duration::from_secs(60))?;
    let grown = thread::scope(|s| -> Result<u64> {
        let (release, reader) = hold_snapshot(s, &db);
        write_rows(&db)?;
        let grown = db.report().wal_bytes;
        release.send(()).expect("the reader is waiting");
        reader.join().expect("reader thread")?;
        Ok(grown)
    })?;
    let runs_before = db.checkpoints().runs;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut writes = 0;
    let after = loop {
        // Small writes: each commit wakes the checkpointer while the WAL is large, and the
        // first commit after a complete checkpoint restarts the WAL.
        db.write(|c| {
            Ok(c.execute("INSERT INTO t (data) VALUES (zeroblob(10))", [])
                .map(drop)?)
        })?;
        writes += 1;
        let wal = db.report().wal_bytes;
        if wal <= LIMIT {
            break wal;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL stayed at {wal} bytes after {writes} writes; checkpoints {:?}",
            db.checkpoints()
        );
        thread::sleep(Duration::from_millis(10));
    };
    println!(
        "wal: without optimize, the WAL went from {:.1} MiB under the held snapshot to {:.2} MiB \
         {writes} small writes after the release ({} more background checkpoints)",
        grown as f64 / MIB,
        after as f64 / MIB,
        db.checkpoints().runs - runs_before,
    );
    assert!(grown > 3 * LIMIT);
    Ok(())
}
