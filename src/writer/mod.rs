//! The single writer connection and group commit.
//!
//! SQLite has one writer at a time and a commit costs an fsync-bound log write, so concurrent
//! `write` calls are coalesced: while one transaction commits, further calls queue, and the next
//! transaction runs all queued calls, each inside its own SAVEPOINT. A caller that finds the
//! writer free does the work on its own thread (leader); when it has committed it hands the
//! leadership to the first queued caller and returns, so nobody waits for more than the group
//! in front of it plus its own.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

use crate::checkpoint::{self, CheckpointStats, Checkpointer};
use crate::error::{Error, Result};
use crate::events::Capture;
use crate::monitor::Monitor;

mod job;

use job::{Job, Signal, Work};

/// How many groups one leader commits before handing the leadership to a waiting caller; bounds
/// how long a leader's own `write` call is held up serving others.
const SERVED_GROUPS: usize = 8;

/// How long a new leader waits for the callers of the last group to queue again; a few times
/// the round trip of a caller that returns and calls again.
const GATHER_WAIT: Duration = Duration::from_micros(100);

/// The shortest time a queued caller yields before it sleeps. Each yield is a context switch
/// among the waiting callers, which the leader's core pays for too when the group is busy with
/// SQL: measured with 8 writers on 2 vCPUs (synchronous=NORMAL, against one commit per write),
/// 40 µs gave 1.8x, 80 µs 1.76x, 250 µs 1.64x, 10 µs 1.32x and no yielding at all 1.08x.
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

/// A snapshot of the write path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// `write` calls whose closure succeeded and whose transaction committed.
    pub writes: u64,
    /// `write` calls that returned an error.
    pub failed_writes: u64,
    /// Transactions whose BEGIN or COMMIT failed (every caller in them got the error).
    pub failed_commits: u64,
    /// The largest group committed in one transaction.
    pub max_group: u64,
}

impl WriteStats {
    /// Mean number of `write` calls per committed transaction.
    pub fn mean_group(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.writes as f64 / self.commits as f64
        }
    }
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
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        max_group: usize,
        capture: Arc<Capture>,
        checkpointer: Option<Checkpointer>,
        monitor: Arc<Monitor>,
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
        }
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
        if IN_WRITE.with(Cell::get) {
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
            let mut group: Vec<Arc<Job>> = next.take().into_iter().collect();
            {
                let mut queue = self.queue.lock();
                let timed_out = served == 0 && self.gather(&mut queue);
                let take = queue.waiting.len().min(self.max_group - group.len());
                group.extend(queue.waiting.drain(..take));
                // The expectation grows with the groups and shrinks only when callers fail to
                // come back, so one small group does not shrink the ones after it.
                if served == 0 && (timed_out || group.len() > queue.expected) {
                    queue.expected = group.len();
                }
            }
            if group.is_empty() {
                break;
            }
            self.run_group(&group);
        }
        let mut queue = self.queue.lock();
        match queue.waiting.pop_front() {
            Some(next) => next.finish(Signal::Lead),
            None => queue.leader = false,
        }
    }

    /// Waits up to [`GATHER_WAIT`] for the other callers of the last group to queue again; true
    /// if they did not all come. Without this wait the first caller back would commit alone
    /// and the others would form the next group, doubling the commits under steady load. An
    /// uncontended caller (last group of one) does not wait.
    fn gather(&self, queue: &mut MutexGuard<'_, Queue>) -> bool {
        let want = queue.expected.min(self.max_group).saturating_sub(1);
        if queue.waiting.len() >= want {
            return false;
        }
        let started = Instant::now();
        while queue.waiting.len() < want {
            if started.elapsed() >= GATHER_WAIT {
                return true;
            }
            // Yielding rather than sleeping: the callers coming back need this CPU, and a
            // sleeping leader would need a wake-up of its own.
            MutexGuard::unlocked(queue, thread::yield_now);
        }
        false
    }

    /// How long a queued caller yields before it sleeps: about two groups' time, so that it
    /// sees its own group end without a wake-up (which costs ~10 µs on a VM). Groups waiting on
    /// the disk leave the CPU to the yielding callers: with synchronous=FULL this took the mean
    /// group from 5.5 to 7.0 and the throughput from 42k to 57k writes/s (8 writers).
    fn spin_budget(&self) -> Duration {
        let group = Duration::from_nanos(self.group_nanos.load(Ordering::Relaxed));
        (group * 2).clamp(MIN_SPIN, MAX_SPIN)
    }

    /// Runs one group and folds its duration into the moving average.
    fn run_group(&self, group: &[Arc<Job>]) {
        let started = Instant::now();
        self.run_group_inner(group);
        let took = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let old = self.group_nanos.load(Ordering::Relaxed);
        self.group_nanos
            .store(old - old / 8 + took / 8, Ordering::Relaxed);
    }

    fn run_group_inner(&self, group: &[Arc<Job>]) {
        let conn = self.conn.lock();
        let begun = self
            .capture
            .arm(&conn)
            .and_then(|every_row| run_statement(&conn, "BEGIN IMMEDIATE").map(|()| every_row));
        let every_row = match begun {
            Ok(every_row) => every_row,
            Err(err) => {
                self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                self.fail_all(group, err);
                return;
            }
        };
        let single = group.len() == 1;
        let mut results: Vec<Result<()>> = Vec::with_capacity(group.len());
        for job in group {
            let work = job.work.lock().take().expect("a job runs once");
            let result = if single {
                run_work(&conn, work)
            } else {
                self.run_in_savepoint(&conn, work)
            };
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk full) or the closure
                // ended it: nothing of this group can commit.
                let cause = match &result {
                    Err(e) => e.duplicate(),
                    Ok(()) => Error::closure("a write closure ended the transaction"),
                };
                results.push(result.and(Err(cause.duplicate())));
                for earlier in results.iter_mut().filter(|r| r.is_ok()) {
                    *earlier = Err(cause.duplicate());
                }
                for _ in results.len()..group.len() {
                    results.push(Err(cause.duplicate()));
                }
                self.capture.discard();
                drop(conn);
                self.deliver(group, results);
                return;
            }
            results.push(result);
        }
        if single && results[0].is_err() {
            rollback(&conn);
            self.capture.discard();
        } else if let Err(err) = run_statement(&conn, "COMMIT") {
            rollback(&conn);
            self.capture.discard();
            self.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(err.duplicate());
            }
        } else {
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(checkpointer) = &self.checkpointer {
                checkpointer.after_commit(&conn, checkpoint::take_wal_pages());
            }
            self.counters
                .max_group
                .fetch_max(group.len() as u64, Ordering::Relaxed);
            // Applied before anyone returns: a read through the caches after `write` returns
            // sees this transaction.
            self.capture.publish(every_row);
        }
        drop(conn);
        self.deliver(group, results);
    }

    fn run_in_savepoint(&self, conn: &Connection, work: Work<'static>) -> Result<()> {
        run_statement(conn, "SAVEPOINT strata_write")?;
        let mark = self.capture.mark();
        let result = run_work(conn, work);
        if conn.is_autocommit() {
            return result;
        }
        if result.is_err() {
            let _ = run_statement(conn, "ROLLBACK TO strata_write");
            self.capture.rollback_to(mark);
        }
        run_statement(conn, "RELEASE strata_write").and(result)
    }

    fn fail_all(&self, group: &[Arc<Job>], err: Error) {
        let mut results: Vec<Result<()>> = Vec::with_capacity(group.len());
        for _ in 1..group.len() {
            results.push(Err(err.duplicate()));
        }
        results.insert(0, Err(err));
        self.deliver(group, results);
    }

    fn deliver(&self, group: &[Arc<Job>], results: Vec<Result<()>>) {
        for (job, result) in group.iter().zip(results) {
            // A closure that never ran is dropped here, while its caller still waits: it may
            // borrow from that caller's stack.
            drop(job.work.lock().take());
            let counter = if result.is_ok() {
                &self.counters.writes
            } else {
                &self.counters.failed_writes
            };
            counter.fetch_add(1, Ordering::Relaxed);
            job.finish(Signal::Done(result));
        }
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

impl crate::Db {
    /// Counters of the write path: commits, writes, failures, the largest group.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }
}

thread_local! {
    /// True while this thread runs a write closure.
    static IN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Runs a closure, turning a panic into [`Error::Panic`].
fn run_work(conn: &Connection, work: Work<'static>) -> Result<()> {
    IN_WRITE.with(|w| w.set(true));
    let result =
        catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|p| Err(panic_error(p)));
    IN_WRITE.with(|w| w.set(false));
    result
}

/// Runs a transaction-control statement through the statement cache.
pub(crate) fn run_statement(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(|e| Error::from(e).with_sql(sql))
}

/// Rolls back whatever transaction is open; a failure here means SQLite already rolled back.
pub(crate) fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run_statement(conn, "ROLLBACK");
    }
}

/// Turns a caught panic payload into [`Error::Panic`].
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    Error::Panic { message }
}
