//! The background checkpointer: WAL checkpoints off the commit path.
//!
//! SQLite's auto-checkpoint runs inside the COMMIT that pushes the WAL past 1000 pages, so one
//! unlucky writer pays for copying the WAL into the database file and for its fsync — milliseconds
//! on a slow disk, while every other writer queues behind it. strata turns auto-checkpoint off on
//! the writer and hands the work to a thread with its own connection, woken when a commit leaves
//! the WAL past the threshold. A PASSIVE checkpoint never blocks the writer or the readers.

use std::cell::Cell;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::Result;
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

/// The outcome of one checkpoint, as `PRAGMA wal_checkpoint` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointResult {
    /// True if the checkpoint could not complete because a lock was held.
    pub busy: bool,
    /// Frames in the WAL.
    pub log_frames: i64,
    /// Frames copied into the database file.
    pub checkpointed_frames: i64,
}

/// Runs `PRAGMA wal_checkpoint(<mode>)` on `conn`.
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<CheckpointResult> {
    debug_assert!(matches!(mode, "PASSIVE" | "FULL" | "RESTART" | "TRUNCATE"));
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
        })
    })
}

/// What the background checkpointer has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointStats {
    /// Checkpoints run.
    pub runs: u64,
    /// The last one's outcome.
    pub last: Option<CheckpointResult>,
}

impl crate::Db {
    /// What the background checkpointer has done (nothing for in-memory databases, or with
    /// [`checkpoint_pages(0)`](crate::Config::checkpoint_pages)).
    pub fn checkpoints(&self) -> CheckpointStats {
        self.inner.writer.checkpoint_stats()
    }
}

#[derive(Default)]
struct State {
    wanted: bool,
    stop: bool,
    runs: u64,
    last: Option<CheckpointResult>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The checkpointer thread and its connection.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    threshold: i32,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns auto-checkpoint off on `writer` and starts the thread; `threshold` is in WAL pages.
    pub(crate) fn start(
        target: &Target,
        writer: &Connection,
        threshold: u32,
        busy_timeout: std::time::Duration,
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
            .map_err(|source| crate::Error::Io {
                path: target.path.clone(),
                source,
            })?;
        Ok(Checkpointer {
            shared,
            threshold: i32::try_from(threshold).unwrap_or(i32::MAX),
            thread: Some(thread),
        })
    }

    /// Called after each commit with the WAL size it reported.
    pub(crate) fn after_commit(&self, wal_pages: i32) {
        if wal_pages >= self.threshold {
            let mut state = self.shared.state.lock();
            if !state.wanted {
                state.wanted = true;
                self.shared.wake.notify_one();
            }
        }
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
            while !state.wanted && !state.stop {
                shared.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        let outcome = checkpoint(conn, "PASSIVE");
        let mut state = shared.state.lock();
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
        self.shared.wake.notify_one();
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
            .no_migrations()
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
}
