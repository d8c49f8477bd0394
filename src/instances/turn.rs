//! Taking turns at the write lock between the writers of several processes.
//!
//! SQLite gives the write lock to whoever asks while it is free, and a writer that finds it
//! taken sleeps in its busy handler and asks again. A strata writer serving back-to-back
//! writes asks again microseconds after its COMMIT, so the other process's writer, asleep,
//! rarely finds the lock free: measured, it failed with "database is locked" after a 10 s
//! busy_timeout. Here a writer that finds the lock taken announces it with a shared `flock`
//! on a file beside the database (`<db>-turn`) and polls every 50 µs; the holder, before its
//! next BEGIN, tries an exclusive `flock` on that file, which fails while anyone waits, and
//! then waits (at most [`MAX_YIELD`]) until the waiter got the lock. Alone, that is two
//! system calls per transaction.
//!
//! A writer that is not strata cannot announce itself: for it, a writer that has held the lock
//! back to back for [`STREAK`] pauses for [`PAUSE`] before its next BEGIN, so that the other's
//! busy handler (SQLite's sleeps up to 100 ms between tries) finds it free now and then.

use std::cell::RefCell;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::error::{Error, Result};

/// The longest a holder waits for an announced waiter to take the lock.
const MAX_YIELD: Duration = Duration::from_millis(5);
/// How long a waiter sleeps between tries while it has announced itself.
const POLL: Duration = Duration::from_micros(50);
/// Back-to-back holding after which a writer pauses for foreign writers.
const STREAK: Duration = Duration::from_millis(25);
/// The pause.
const PAUSE: Duration = Duration::from_millis(2);
/// Two transactions are back to back when the second begins within this of the first's end:
/// gaps this short are all a foreign writer's busy handler could land in. Longer gaps leave it
/// room, and a writer with them (one thread writing a tenth of its calls) pauses for nothing.
const BACK_TO_BACK: Duration = Duration::from_micros(200);

/// The turn file of one writer.
pub(crate) struct Turn {
    file: Arc<File>,
    busy_timeout: Duration,
    state: Mutex<Streak>,
    pub(crate) given: AtomicU64,
    pub(crate) pauses: AtomicU64,
}

struct Streak {
    since: Option<Instant>,
    last_end: Option<Instant>,
}

/// What the busy handler of the writer thread in BEGIN needs.
struct Waiting {
    file: Arc<File>,
    deadline: Instant,
    announced: bool,
}

thread_local! {
    static WAITING: RefCell<Option<Waiting>> = const { RefCell::new(None) };
}

/// The turn file's path for a database path.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-turn");
    PathBuf::from(name)
}

impl Turn {
    pub(crate) fn open(db: &Path, busy_timeout: Duration) -> Result<Turn> {
        let path = path_for(db);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io { path, source })?;
        Ok(Turn {
            file: Arc::new(file),
            busy_timeout,
            state: Mutex::new(Streak {
                since: None,
                last_end: None,
            }),
            given: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        })
    }

    /// Before BEGIN: lets an announced waiter go first, or pauses after a long streak.
    pub(crate) fn before_begin(&self) {
        let now = Instant::now();
        {
            let mut streak = self.state.lock();
            let back_to_back = streak
                .last_end
                .is_some_and(|end| now.duration_since(end) < BACK_TO_BACK);
            if !back_to_back {
                streak.since = Some(now);
            } else if streak
                .since
                .is_some_and(|s| now.duration_since(s) >= STREAK)
            {
                streak.since = None;
                drop(streak);
                self.pauses.fetch_add(1, Ordering::Relaxed);
                thread::sleep(PAUSE);
                self.state.lock().since = Some(Instant::now());
                return;
            }
        }
        if self.waiter_present() {
            self.given.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            while started.elapsed() < MAX_YIELD && self.waiter_present() {
                thread::sleep(POLL / 2);
            }
        }
    }

    /// After COMMIT or ROLLBACK.
    pub(crate) fn after_end(&self) {
        self.state.lock().last_end = Some(Instant::now());
    }

    /// Whether another writer holds its shared lock on the turn file (waits for the lock).
    fn waiter_present(&self) -> bool {
        match self.file.try_lock() {
            Ok(()) => {
                let _ = self.file.unlock();
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => false,
        }
    }

    /// Runs BEGIN (`begin`) with the turn's busy handler on `conn`, then puts the plain
    /// busy_timeout back for the rest of the transaction.
    pub(crate) fn begin<T>(&self, conn: &Connection, begin: impl FnOnce() -> T) -> T {
        WAITING.with(|w| {
            *w.borrow_mut() = Some(Waiting {
                file: Arc::clone(&self.file),
                deadline: Instant::now() + self.busy_timeout,
                announced: false,
            })
        });
        let handler = conn.busy_handler(Some(busy));
        let outcome = begin();
        if handler.is_ok() {
            let _ = conn.busy_timeout(self.busy_timeout);
        }
        if let Some(waiting) = WAITING.with(|w| w.borrow_mut().take()) {
            if waiting.announced {
                let _ = waiting.file.unlock();
            }
        }
        outcome
    }
}

/// The busy handler during BEGIN: announces the wait, then polls until busy_timeout.
fn busy(_count: i32) -> bool {
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        let Some(waiting) = w.as_mut() else {
            return false;
        };
        if !waiting.announced {
            // Fails only while a holder probes with its exclusive lock: the next try announces.
            waiting.announced = waiting.file.try_lock_shared().is_ok();
        }
        let now = Instant::now();
        if now >= waiting.deadline {
            return false;
        }
        thread::sleep(POLL.min(waiting.deadline - now));
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_seen_and_its_release_ends_the_yield() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: PathBuf::new(),
            source: e,
        })?;
        let db = dir.path().join("x.db");
        let turn = Turn::open(&db, Duration::from_secs(1))?;
        assert!(!turn.waiter_present());
        let other = File::open(path_for(&db)).map_err(|e| Error::Io {
            path: PathBuf::new(),
            source: e,
        })?;
        other
            .try_lock_shared()
            .expect("a shared lock on a free file");
        assert!(turn.waiter_present());
        other.unlock().expect("unlock");
        turn.before_begin();
        assert_eq!(turn.given.load(Ordering::Relaxed), 0);
        Ok(())
    }
}
