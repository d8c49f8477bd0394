//! The background checkpointer: WAL checkpoints off the commit path.
//!
//! SQLite's auto-checkpoint runs inside the COMMIT that pushes the WAL past 1000 pages, so one
//! unlucky writer pays for copying the WAL into the database file and for its fsync — milliseconds
//! on a slow disk, while every other writer queues behind it. strata turns auto-checkpoint off on
//! the writer and hands the work to a thread with its own connection, woken when a commit leaves
//! the WAL past the threshold. A PASSIVE checkpoint never blocks the writer or the readers.
//!
//! A PASSIVE checkpoint copies the frames that exist when it starts; under sustained writes new
//! frames keep arriving, the WAL is never wholly copied when a write transaction begins, and
//! SQLite can only restart the WAL from its start in that state: the file grows without bound
//! (4 GB in a 10-second single-writer benchmark). So when the WAL reaches
//! [`CATCH_UP_FACTOR`] times the threshold, the writer itself, between two transactions, runs a
//! PASSIVE checkpoint of what the background one has not copied yet; with no write in between,
//! it completes (unless a reader still needs old frames), and the next transaction restarts the
//! WAL. The background checkpoints have done most of the copying by then, so this pause is short.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::location::Target;

thread_local! {
    /// WAL pages reported by the writer's wal hook, read back by the same thread after COMMIT
    /// (the hook is a plain `fn`, so it cannot reach the `Db` itself).
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

fn record_wal_pages(_: &rusqlite::hooks::Wal, pages: i32) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Takes the WAL size the last commit on this thread reported (0 if none since the last take).
pub(crate) fn take_wal_pages() -> i32 {
    WAL_PAGES.with(|p| p.replace(0))
}

/// The outcome of one checkpoint, as `PRAGMA wal_checkpoint` reports it: a background or
/// catch-up checkpoint ([`CheckpointStats::last`]), or the TRUNCATE checkpoint of
/// [`Db::optimize`](crate::Db::optimize).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckpointResult {
    /// True if the checkpoint could not complete because a lock was held (a reader of an older
    /// snapshot, or another writer); a later one completes it.
    pub busy: bool,
    /// Frames in the WAL (-1 without a WAL).
    pub log_frames: i64,
    /// Frames copied into the database file (-1 without a WAL).
    pub checkpointed_frames: i64,
    /// When it ran.
    pub at: SystemTime,
}

/// The longest a TRUNCATE checkpoint waits for readers of older snapshots (and for another
/// process's writer). SQLite makes it wait holding the write lock, on the writer that this
/// `Db`'s writes queue behind: with the connection's `busy_timeout` (5 s by default) one long
/// read stalled every write, of this `Db` and of other processes, for the whole timeout, and
/// another process's write could fail with SQLITE_BUSY (tests/wal.rs measured a 5.0 s stall).
/// A checkpoint cut short reports `busy`; a later one truncates.
pub(crate) const TRUNCATE_WAIT: Duration = Duration::from_millis(100);

/// Runs `PRAGMA wal_checkpoint(<mode>)` on `conn`.
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<CheckpointResult> {
    debug_assert!(matches!(mode, "PASSIVE" | "FULL" | "RESTART" | "TRUNCATE"));
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
            at: SystemTime::now(),
        })
    })
}

/// Copies the WAL back into the database file and truncates it to zero bytes, on `conn` (the
/// writer, outside any transaction), waiting for readers at most [`TRUNCATE_WAIT`] instead of
/// the connection's `busy_timeout`, which is restored whatever the outcome.
pub(crate) fn truncate(conn: &Connection) -> Result<CheckpointResult> {
    let saved: i64 = conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .map_err(|e| Error::from(e).with_sql("PRAGMA busy_timeout"))?;
    let saved = Duration::from_millis(u64::try_from(saved).unwrap_or(0));
    conn.busy_timeout(TRUNCATE_WAIT.min(saved))?;
    let outcome = checkpoint(conn, "TRUNCATE");
    conn.busy_timeout(saved)?;
    outcome.map_err(|e| Error::from(e).with_sql("PRAGMA wal_checkpoint(TRUNCATE)"))
}

/// What the background checkpointer has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointStats {
    /// Checkpoints run.
    pub runs: u64,
    /// The last one's outcome.
    pub last: Option<CheckpointResult>,
}

#[derive(Default)]
struct State {
    wanted: bool,
    stop: bool,
    runs: u64,
    last: Option<CheckpointResult>,
    /// The background thread is checkpointing now.
    running: bool,
    /// The writer is catching up: the background thread waits (two checkpoints at once make
    /// the second fail with SQLITE_BUSY, whatever its busy handler).
    held: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The WAL size, in multiples of the background threshold, at which the writer checkpoints
/// itself between transactions.
pub(crate) const CATCH_UP_FACTOR: i32 = 4;

/// The checkpointer thread and its connection.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    threshold: i32,
    /// WAL pages at which the writer next checkpoints itself; moved past the current size after
    /// each try, so a reader that keeps a catch-up from completing is not retried every commit.
    catch_up_at: AtomicI32,
    /// WAL pages at which the writer next wakes the background thread: once per threshold of
    /// growth, not at every commit past it. Each pass syncs the database file, and a pass per
    /// commit of a few pages took a core's worth of wake-ups and fsyncs from the writers.
    wake_at: AtomicI32,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns auto-checkpoint off on `writer` and starts the thread; `threshold` is in WAL pages.
    pub(crate) fn start(
        target: &Target,
        writer: &Connection,
        threshold: u32,
        busy_timeout: Duration,
    ) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            &target.name,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| target.open_error(e))?;
        conn.busy_timeout(busy_timeout)?;
        // Replaces SQLite's auto-checkpoint hook on the writer (both use sqlite3_wal_hook).
        writer.wal_hook(Some(record_wal_pages));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("strata-checkpoint".into())
            .spawn(move || run(&conn, &worker))
            .map_err(|source| Error::Io {
                path: target.path.clone(),
                source,
            })?;
        let threshold = i32::try_from(threshold).unwrap_or(i32::MAX);
        Ok(Checkpointer {
            shared,
            threshold,
            catch_up_at: AtomicI32::new(threshold.saturating_mul(CATCH_UP_FACTOR)),
            wake_at: AtomicI32::new(threshold),
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit, still holding `writer`, with the WAL size the
    /// commit reported: wakes the background checkpointer past the threshold, and checkpoints
    /// on `writer` itself when the WAL has outgrown the background checkpoints (see the module
    /// docs).
    pub(crate) fn after_commit(&self, writer: &Connection, wal_pages: i32) {
        if wal_pages < self.threshold {
            // The WAL restarted: catch-ups start over from the first multiple.
            self.catch_up_at.store(
                self.threshold.saturating_mul(CATCH_UP_FACTOR),
                Ordering::Relaxed,
            );
            self.wake_at.store(self.threshold, Ordering::Relaxed);
            return;
        }
        if wal_pages >= self.catch_up_at.load(Ordering::Relaxed) {
            self.catch_up_at
                .store(wal_pages.saturating_add(self.threshold), Ordering::Relaxed);
            self.catch_up(writer);
            return;
        }
        if wal_pages < self.wake_at.load(Ordering::Relaxed) {
            return;
        }
        self.wake_at
            .store(wal_pages.saturating_add(self.threshold), Ordering::Relaxed);
        let mut state = self.shared.state.lock();
        if !state.wanted {
            state.wanted = true;
            self.shared.wake.notify_all();
        }
    }

    /// Checkpoints on the writer connection, after the background pass in progress (if any)
    /// has finished and with the background thread held off meanwhile.
    fn catch_up(&self, writer: &Connection) {
        {
            let mut state = self.shared.state.lock();
            state.held = true;
            while state.running {
                self.shared.wake.wait(&mut state);
            }
        }
        let outcome = checkpoint(writer, "PASSIVE");
        let mut state = self.shared.state.lock();
        state.held = false;
        state.runs += 1;
        match outcome {
            Ok(result) => state.last = Some(result),
            Err(err) => tracing::warn!(%err, "writer catch-up checkpoint failed"),
        }
        self.shared.wake.notify_all();
    }

    /// How many background checkpoints ran, and the last one's outcome.
    pub(crate) fn stats(&self) -> CheckpointStats {
        let state = self.shared.state.lock();
        CheckpointStats {
            runs: state.runs,
            last: state.last,
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    loop {
        {
            let mut state = shared.state.lock();
            while (!state.wanted || state.held) && !state.stop {
                shared.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.wanted = false;
            state.running = true;
        }
        let outcome = checkpoint(conn, "PASSIVE");
        let mut state = shared.state.lock();
        state.running = false;
        shared.wake.notify_all();
        state.runs += 1;
        match outcome {
            Ok(result) => state.last = Some(result),
            Err(err) => tracing::warn!(%err, "background checkpoint failed"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn commits_past_the_threshold_checkpoint_in_the_background() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Config::new()
            .path(dir.path().join("c.db"))
            .checkpoint_pages(8)
            .build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x BLOB)")?))?;
        for _ in 0..20 {
            db.write(|c| {
                Ok(c.execute("INSERT INTO t VALUES (zeroblob(8192))", [])
                    .map(drop)?)
            })?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stats = db.checkpoints();
            if stats.runs > 0 && stats.last.is_some_and(|r| r.checkpointed_frames > 0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no background checkpoint ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    #[test]
    fn sustained_writes_keep_the_wal_bounded() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let db = Config::new().path(&path).checkpoint_pages(16).build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x BLOB)")?))?;
        // Back to back, each commit two pages or more: without the writer's catch-ups the
        // background checkpoints never see a wholly copied WAL and it grows past 20 MB.
        for _ in 0..2_000 {
            db.write(|c| {
                Ok(c.execute("INSERT INTO t VALUES (zeroblob(4096))", [])
                    .map(drop)?)
            })?;
        }
        let bytes = crate::location::wal_bytes(&path);
        assert!(bytes < 2 << 20, "WAL grew to {bytes} bytes");
        Ok(())
    }

    #[test]
    fn the_background_thread_is_woken_once_per_threshold_of_growth() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Config::new()
            .path(dir.path().join("r.db"))
            .checkpoint_pages(50)
            .build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x BLOB)")?))?;
        // 600 commits of one row each, two WAL frames or more apiece, with time between them for
        // the thread to finish a pass. Woken at every commit past the threshold, it ran a pass
        // for most of them; once per 50 pages of growth, plus a catch-up per four thresholds, it
        // is a few dozen.
        for _ in 0..600 {
            std::thread::sleep(std::time::Duration::from_micros(200));
            db.write(|c| {
                Ok(c.execute("INSERT INTO t VALUES (zeroblob(100))", [])
                    .map(drop)?)
            })?;
        }
        let runs = db.checkpoints().runs;
        assert!((1..=60).contains(&runs), "{runs} checkpoint runs");
        Ok(())
    }

    #[test]
    fn truncate_reports_a_reader_as_busy_and_restores_busy_timeout() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path)?;
        writer.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )?;
        writer.busy_timeout(Duration::from_secs(30))?;
        let reader = Connection::open(&path)?;
        reader.execute_batch("BEGIN")?;
        reader.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?;
        let held = truncate(&writer)?;
        assert!(held.busy, "{held:?}");
        let timeout: i64 = writer.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
        assert_eq!(timeout, 30_000);
        reader.execute_batch("COMMIT")?;
        let done = truncate(&writer)?;
        assert!(!done.busy && done.log_frames == 0, "{done:?}");
        assert_eq!(crate::location::wal_bytes(&path), 0);
        Ok(())
    }

    #[test]
    fn optimize_health_and_the_checkpointer_share_one_checkpoint_type() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Config::new().path(dir.path().join("o.db")).build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))?;
        let report = db.optimize()?;
        assert!(!report.checkpoint.busy, "{report:?}");
        assert_eq!(db.health().last_checkpoint, Some(report.checkpoint));
        let background: Option<CheckpointResult> = db.checkpoints().last;
        assert!(background.is_none_or(|b| b.at <= report.checkpoint.at));
        Ok(())
    }
}
