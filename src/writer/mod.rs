//! The single writer connection and group commit.
//!
//! SQLite has one writer at a time and a commit costs a log write (and an fsync with
//! synchronous=FULL), so concurrent `write` calls are coalesced. A caller that finds the writer
//! free leads: it begins a transaction, runs its own closure, and then keeps the transaction
//! open for the calls that queue meanwhile, each in its own SAVEPOINT, until as many callers as
//! the last group had have come or none came for a while (`group.rs`). Then it commits, hands
//! every caller its outcome, and serves the queue for a few more groups before it passes the
//! leadership on. Nobody waits for more than the group in front of it plus its own.
//!
//! With more writer threads than cores, most of a group's wall time used to be its callers'
//! return trips: woken, scheduled, calling again. Taking them into the open transaction as they
//! arrive overlaps that with the SQL of those already in.
//!
//! The closures get the connection itself, so the transaction and the capture hooks are
//! guarded while they run (`events/guard.rs`): what a closure does to either fails that closure
//! alone, and its group goes on.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::checkpoint::{CheckpointStats, Checkpointer};
use crate::error::{panic_error, system_errno, Error, Result};
use crate::events::{in_write_closure, set_in_write_closure, Capture};
use crate::instances::log::ChangeLog;
use crate::instances::turn::Turn;
use crate::monitor::{Monitor, WriteStats};
use crate::sql::{execute, prepare, run_statement};

mod group;
mod job;

use job::{Job, Signal, Work};

/// How many groups one leader commits before handing the leadership to a waiting caller; bounds
/// how long a leader's own `write` call is held up serving others.
const SERVED_GROUPS: usize = 8;

/// The shortest time a queued caller yields before it sleeps: a sleeping caller needs a
/// wake-up, and waking a thread whose vCPU went idle takes 20-40 µs on a VM. Measured with 8
/// writers on 2 vCPUs (synchronous=NORMAL): sleeping at once gave 120-150k writes/s, 10 µs of
/// yielding 200k, 20 µs 265k, 40 µs 285-350k; 20-100 µs and budgets of 2-4 groups' time were
/// all within the noise of each other.
const MIN_SPIN: Duration = Duration::from_micros(40);

/// The longest a queued caller yields before it sleeps.
const MAX_SPIN: Duration = Duration::from_micros(250);

#[derive(Default)]
struct Queue {
    leader: bool,
    waiting: VecDeque<Arc<Job>>,
    /// How many callers the next group should gather: those of the last groups are likely
    /// about to call again.
    expected: usize,
}

/// Counters of the write path, for the monitoring report.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) failed_writes: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) max_group: AtomicU64,
}

/// The one connection allowed to write. Every transaction on it is `BEGIN IMMEDIATE`, so that a
/// writer waiting for another process's lock goes through busy_timeout instead of failing with
/// SQLITE_BUSY when a deferred transaction tries to upgrade.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    /// Moving average of how long a group takes, in nanoseconds.
    group_nanos: AtomicU64,
    max_group: usize,
    pub(crate) capture: Arc<Capture>,
    pub(crate) counters: WriteCounters,
    checkpointer: Option<Checkpointer>,
    monitor: Arc<Monitor>,
    /// The database file, named by the errors of a full disk or a damaged page.
    path: PathBuf,
    /// The change log every transaction appends to, with several instances.
    pub(crate) log: Option<Arc<ChangeLog>>,
    /// The turn at the write lock between instances' writers.
    pub(crate) turn: Option<Turn>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        max_group: usize,
        capture: Arc<Capture>,
        checkpointer: Option<Checkpointer>,
        monitor: Arc<Monitor>,
        path: PathBuf,
    ) -> Self {
        Writer {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            group_nanos: AtomicU64::new(0),
            max_group,
            capture,
            counters: WriteCounters::default(),
            checkpointer,
            monitor,
            path,
            log: None,
            turn: None,
        }
    }

    /// With several instances: every transaction appends its changes to `log`, and `turn`
    /// (if any) shares the write lock with the other instances' writers.
    pub(crate) fn with_instances(mut self, log: Arc<ChangeLog>, turn: Option<Turn>) -> Self {
        self.log = Some(log);
        self.turn = turn;
        self
    }

    pub(crate) fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpointer
            .as_ref()
            .map(Checkpointer::stats)
            .unwrap_or_default()
    }

    /// Runs `f` in an IMMEDIATE transaction, possibly together with other callers' closures, and
    /// returns after COMMIT and after the ChangeSet was applied to the sinks. An error or panic
    /// in `f` rolls back `f`'s changes only.
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send,
        T: Send,
    {
        if in_write_closure() {
            // This thread runs a write closure, so it leads the writer: queueing behind itself
            // would wait forever.
            return Err(Error::NestedWrite);
        }
        let mut output = None;
        let monitor = &self.monitor;
        let site = crate::monitor::sampling::site_of::<F>();
        let work: Work<'_> = Box::new(|conn| {
            // Only the caller's statements are monitored, not the savepoints around them.
            output = Some(monitor.watch(conn, site, || f(conn))?);
            Ok(())
        });
        // SAFETY: the closure borrows `f`, `output` and the monitor from this frame. It is only
        // ever run or dropped by a leader before that leader signals this job, and this function
        // does not return before it receives the signal (`Job::wait` cannot unwind), so the
        // borrows outlive every use. The lifetime is erased only to pass the box through the
        // queue.
        let work: Work<'static> = unsafe { std::mem::transmute::<Work<'_>, Work<'static>>(work) };
        let job = Arc::new(Job::new(work));
        let lead = {
            let mut queue = self.queue.lock();
            if queue.leader {
                queue.waiting.push_back(Arc::clone(&job));
                false
            } else {
                queue.leader = true;
                true
            }
        };
        let signal = if lead {
            Signal::Lead
        } else {
            job.wait(self.spin_budget())
        };
        let result = match signal {
            Signal::Done(result) => result,
            Signal::Lead => {
                self.lead(Arc::clone(&job));
                match job.signal.lock().take() {
                    Some(Signal::Done(result)) => result,
                    _ => unreachable!("a leader finishes its own job before it lets go"),
                }
            }
        };
        result.map(|()| output.take().expect("a successful job stores its output"))
    }

    /// Runs the group with `first` in it, then keeps serving the queue for up to
    /// [`SERVED_GROUPS`] groups before passing the leadership on: a hand-off wakes another
    /// thread while no transaction runs, which on few cores costs more than a commit.
    fn lead(&self, first: Arc<Job>) {
        let mut next = Some(first);
        for served in 0..SERVED_GROUPS {
            let Some(job) = next
                .take()
                .or_else(|| self.queue.lock().waiting.pop_front())
            else {
                break;
            };
            self.run_group(job, served == 0);
        }
        let mut queue = self.queue.lock();
        match queue.waiting.pop_front() {
            Some(next) => next.finish(Signal::Lead),
            None => queue.leader = false,
        }
    }

    /// How long a queued caller yields before it sleeps: about two groups' time, so that it
    /// sees its own group end without a wake-up (20 µs or more on a VM). Groups waiting on
    /// the disk leave the CPU to the yielding callers: with synchronous=FULL this took the mean
    /// group from 5.5 to 7.0 and the throughput from 42k to 57k writes/s (8 writers).
    fn spin_budget(&self) -> Duration {
        let group = Duration::from_nanos(self.group_nanos.load(Ordering::Relaxed));
        (group * 2).clamp(MIN_SPIN, MAX_SPIN)
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> WriteStats {
        let c = &self.counters;
        WriteStats {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            failed_writes: c.failed_writes.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            max_group: c.max_group.load(Ordering::Relaxed),
        }
    }

    /// The writer connection if no transaction holds it right now.
    pub(crate) fn try_with_conn<T>(&self, f: impl FnOnce(&Connection) -> T) -> Option<T> {
        self.conn.try_lock().map(|c| f(&c))
    }

    /// Direct access to the writer connection, outside any group, for maintenance (migrations,
    /// checkpoints, watches). Queued writes wait meanwhile.
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.conn.lock())
    }
}

/// Runs a closure, turning a panic into [`Error::Panic`], then checks what it did to the
/// connection: a closure that ran transaction control or removed a capture hook fails with
/// that, whatever it returned (it may have dropped SQLite's refusal).
fn run_work(conn: &Connection, writer: &Writer, work: Work<'static>) -> Result<()> {
    set_in_write_closure(true);
    let result =
        catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|p| Err(panic_error(p)));
    set_in_write_closure(false);
    writer
        .capture
        .check_closure(conn)
        .and(result)
        .map_err(|err| writer.locate(conn, err))
}

impl Writer {
    /// Names the database file in an error of SQLite's about it (full disk, damaged page).
    fn locate(&self, conn: &Connection, err: Error) -> Error {
        err.locate(&self.path, system_errno(conn))
    }
}
