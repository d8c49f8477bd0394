//! `AsyncConfig`: the threads and queues of an [`AsyncDb`](crate::AsyncDb).

use std::time::Duration;

use crate::db::Db;
use crate::error::{Error, Result};

/// The settings of an [`AsyncDb`](crate::AsyncDb): how many reader threads it runs, how many
/// calls its queues hold, how long a caller waits for a place in a full queue.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// let db = strata::Db::open_in_memory()?;
/// let adb = strata::asynch::AsyncConfig::default()
///     .reader_threads(2)
///     .read_queue(256)
///     .build(db)?;
/// # drop(adb); Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct AsyncConfig {
    pub(crate) reader_threads: Option<usize>,
    pub(crate) read_queue: Option<usize>,
    pub(crate) write_queue: Option<usize>,
    pub(crate) max_batch: Option<usize>,
    pub(crate) queue_wait: Option<Duration>,
    pub(crate) reply_spin: Option<Duration>,
}

/// The settings with every default filled in for one `Db`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) reader_threads: usize,
    pub(crate) read_queue: usize,
    pub(crate) write_queue: usize,
    pub(crate) max_batch: usize,
    pub(crate) queue_wait: Duration,
    pub(crate) reply_spin: Duration,
}

impl AsyncConfig {
    /// How many reader threads take work from the shared read queue; each checks a reader
    /// out of the `Db`'s pool for each call. Defaults to the pool's size
    /// ([`Config::readers`](crate::Config::readers)): more threads would only wait for a reader.
    pub fn reader_threads(mut self, threads: usize) -> Self {
        self.reader_threads = Some(threads);
        self
    }

    /// How many read calls (and other calls run on the reader threads) may be queued; when
    /// full, callers wait for a place. Defaults to 64 per reader thread.
    pub fn read_queue(mut self, calls: usize) -> Self {
        self.read_queue = Some(calls);
        self
    }

    /// How many write calls may be queued for the writer thread; when full, callers wait for a
    /// place. Defaults to 1024.
    pub fn write_queue(mut self, calls: usize) -> Self {
        self.write_queue = Some(calls);
        self
    }

    /// The most queued writes the writer thread runs in one transaction (each in a savepoint of
    /// its own). Defaults to 256.
    pub fn max_batch(mut self, calls: usize) -> Self {
        self.max_batch = Some(calls);
        self
    }

    /// How long a call waits for a place in a full queue before it fails with
    /// [`Error::QueueFull`]. Waiting needs the tokio runtime's time driver (a call that finds a
    /// place at once never touches it). Defaults to 30 s.
    pub fn queue_wait(mut self, wait: Duration) -> Self {
        self.queue_wait = Some(wait);
        self
    }

    /// How long a call that is the only one in flight on the reader threads looks for its
    /// reply on its own thread (yielding the CPU between looks) before it suspends its task.
    /// A suspended task needs a wake-up of the runtime's worker thread, which on a VM costs
    /// 5-40 µs, several times a primary-key read; with other calls in flight the runtime has
    /// work to do meanwhile and the call suspends at once. `Duration::ZERO` turns it off.
    /// Defaults to 20 µs.
    pub fn reply_spin(mut self, spin: Duration) -> Self {
        self.reply_spin = Some(spin);
        self
    }

    /// Starts the threads of an [`AsyncDb`](crate::AsyncDb) over `db`.
    pub fn build(self, db: Db) -> Result<super::AsyncDb> {
        let settings = self.settings(&db)?;
        Ok(super::AsyncDb::start(db, settings))
    }

    pub(crate) fn settings(&self, db: &Db) -> Result<Settings> {
        let reader_threads = self
            .reader_threads
            .unwrap_or(db.inner.readers.max_size() as usize);
        let settings = Settings {
            reader_threads,
            read_queue: self.read_queue.unwrap_or(64 * reader_threads.max(1)),
            write_queue: self.write_queue.unwrap_or(1024),
            max_batch: self.max_batch.unwrap_or(256),
            queue_wait: self.queue_wait.unwrap_or(Duration::from_secs(30)),
            reply_spin: self.reply_spin.unwrap_or(Duration::from_micros(20)),
        };
        let zero = [
            ("reader_threads", settings.reader_threads),
            ("read_queue", settings.read_queue),
            ("write_queue", settings.write_queue),
            ("max_batch", settings.max_batch),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, n)| *n == 0) {
            return Err(Error::InvalidConfig {
                field,
                reason: "must be at least 1".into(),
            });
        }
        Ok(settings)
    }
}
