//! One transaction of group commit, open to the calls that queue while it runs.
//!
//! A group does not wait for its callers before it begins: it runs the calls already queued,
//! then takes the ones that arrive while it runs, until as many as the last group had are in
//! or none came for [`GATHER_WAIT`]. The SQL of the first callers thus overlaps with the return
//! trips of the others, which on few cores is most of what a group of single-row writes costs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rusqlite::{CachedStatement, Connection};

use super::job::{Job, Signal, Work};
use super::{execute, prepare, rollback, run_statement, run_work, Writer};
use crate::checkpoint;
use crate::error::{Error, Result};

/// How long an open group waits for a caller it expects before it commits without it; a few
/// times the round trip of a caller that returns and calls again.
const GATHER_WAIT: Duration = Duration::from_micros(100);

impl Writer {
    /// Runs one group starting with `first`. `own` is true
    /// while the leader's own call may still be among them (its first group): a leader that
    /// serves later groups does not call again meanwhile, so they expect one caller fewer.
    pub(super) fn run_group(&self, first: Arc<Job>, own: bool) {
        let started = Instant::now();
        let mut pending = VecDeque::from([first]);
        let want = {
            let mut queue = self.queue.lock();
            let take = queue.waiting.len().min(self.max_group - 1);
            pending.extend(queue.waiting.drain(..take));
            queue
                .expected
                .saturating_sub(usize::from(!own))
                .clamp(1, self.max_group)
        };
        let mut taken = pending.len();
        let mut timed_out = false;
        let conn = self.conn.lock();
        let mut txn = Transaction::new(self, &conn);
        let mut idle_since: Option<Instant> = None;
        'group: loop {
            while let Some(job) = pending.pop_front() {
                if let Err(err) = txn.run(job) {
                    // BEGIN failed (another process holds the lock past busy_timeout): the
                    // calls taken so far would wait as long again, so they fail with it.
                    for job in pending.drain(..) {
                        self.deliver(&job, Err(err.duplicate()));
                    }
                    break 'group;
                }
            }
            if taken >= self.max_group {
                break;
            }
            let mut queue = self.queue.lock();
            if !queue.waiting.is_empty() {
                let take = queue.waiting.len().min(self.max_group - taken);
                pending.extend(queue.waiting.drain(..take));
                taken += take;
                idle_since = None;
                continue;
            }
            if taken >= want {
                break;
            }
            if idle_since.get_or_insert_with(Instant::now).elapsed() >= GATHER_WAIT {
                timed_out = true;
                break;
            }
            // Yielding rather than sleeping: the callers coming back need this CPU, and a
            // sleeping leader would need a wake-up of its own.
            MutexGuard::unlocked(&mut queue, thread::yield_now);
        }
        txn.commit();
        drop(conn);
        // The expectation grows with the groups and shrinks only when callers fail to come
        // back, so one small group does not shrink the ones after it.
        let callers = taken + usize::from(!own);
        let mut queue = self.queue.lock();
        if timed_out || callers > queue.expected {
            queue.expected = callers;
        }
        drop(queue);
        let took = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.group_nanos.load(Ordering::Relaxed);
        self.group_nanos
            .store(old - old / 8 + took / 8, Ordering::Relaxed);
    }

    /// Hands a caller its outcome and counts it.
    pub(super) fn deliver(&self, job: &Job, result: Result<()>) {
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

/// The open transaction of a group: the calls that ran in it, waiting for its COMMIT.
struct Transaction<'w> {
    writer: &'w Writer,
    conn: &'w Connection,
    /// Calls run since BEGIN, with their outcome so far.
    ran: Vec<(Arc<Job>, Result<()>)>,
    /// True between BEGIN and COMMIT or ROLLBACK.
    open: bool,
    /// The update hook was on for this transaction (see `Capture::arm`).
    every_row: bool,
    /// The SAVEPOINT and RELEASE statements, taken from the statement cache once for the
    /// group: a cache lookup and return cost more than executing either statement.
    savepoint: Option<[CachedStatement<'w>; 2]>,
}

impl<'w> Transaction<'w> {
    fn new(writer: &'w Writer, conn: &'w Connection) -> Self {
        Transaction {
            writer,
            conn,
            ran: Vec::new(),
            open: false,
            every_row: false,
            savepoint: None,
        }
    }

    /// Runs one call: the first of a transaction directly after BEGIN, the others each in a
    /// SAVEPOINT. Fails only if BEGIN fails, after giving the call that error.
    fn run(&mut self, job: Arc<Job>) -> Result<()> {
        let writer = self.writer;
        let work = job.work.lock().take().expect("a job runs once");
        if !self.open {
            if let Err(err) = self.begin() {
                drop(work);
                writer
                    .counters
                    .failed_commits
                    .fetch_add(1, Ordering::Relaxed);
                writer.deliver(&job, Err(err.duplicate()));
                return Err(err);
            }
            // The first call needs no savepoint: nothing else ran in this transaction, so if
            // the call fails the whole transaction is rolled back and the next call begins
            // another.
            let result = run_work(self.conn, work);
            if let Err(err) = result {
                self.abandon();
                writer.deliver(&job, Err(err));
                return Ok(());
            }
            self.ran.push((job, Ok(())));
        } else {
            let result = self.run_in_savepoint(work);
            self.ran.push((job, result));
        }
        if self.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full) or the closure
            // ended it: nothing that ran in it can commit.
            let cause = match &self.ran.last().expect("just pushed").1 {
                Err(e) => e.duplicate(),
                Ok(()) => Error::closure("a write closure ended the transaction"),
            };
            self.fail_ran(&cause);
            self.open = false;
            self.writer.capture.discard();
            self.deliver_all();
        }
        Ok(())
    }

    /// Runs a call in a savepoint of its own, rolled back if the call fails.
    fn run_in_savepoint(&mut self, work: Work<'static>) -> Result<()> {
        let conn = self.conn;
        if self.savepoint.is_none() {
            self.savepoint = Some([prepare(conn, SAVEPOINT)?, prepare(conn, RELEASE)?]);
        }
        let [savepoint, release] = self.savepoint.as_mut().expect("prepared above");
        execute(savepoint, SAVEPOINT)?;
        let capture = &self.writer.capture;
        let mark = capture.mark();
        let result = run_work(conn, work);
        if conn.is_autocommit() {
            return result;
        }
        if result.is_err() {
            let _ = run_statement(conn, "ROLLBACK TO strata_write");
            capture.rollback_to(mark);
        }
        execute(release, RELEASE).and(result)
    }

    fn begin(&mut self) -> Result<()> {
        self.every_row = self.writer.capture.arm(self.conn)?;
        run_statement(self.conn, "BEGIN IMMEDIATE")?;
        self.open = true;
        Ok(())
    }

    /// Rolls the open transaction back; only its first call ran in it.
    fn abandon(&mut self) {
        rollback(self.conn);
        self.writer.capture.discard();
        self.open = false;
    }

    /// Commits what ran and hands every caller its outcome; a failed COMMIT fails them all.
    fn commit(mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let writer = self.writer;
        if let Err(err) = run_statement(self.conn, "COMMIT") {
            rollback(self.conn);
            writer.capture.discard();
            writer
                .counters
                .failed_commits
                .fetch_add(1, Ordering::Relaxed);
            self.fail_ran(&err);
        } else {
            writer.counters.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(checkpointer) = &writer.checkpointer {
                checkpointer.after_commit(self.conn, checkpoint::take_wal_pages());
            }
            writer
                .counters
                .max_group
                .fetch_max(self.ran.len() as u64, Ordering::Relaxed);
            // Applied before anyone returns: a read through the caches after `write` returns
            // sees this transaction.
            writer.capture.publish(self.every_row);
        }
        self.deliver_all();
    }

    /// Gives `cause` to every call of the transaction that had succeeded: none of it commits.
    fn fail_ran(&mut self, cause: &Error) {
        for (_, result) in &mut self.ran {
            if result.is_ok() {
                *result = Err(cause.duplicate());
            }
        }
    }

    fn deliver_all(&mut self) {
        for (job, result) in self.ran.drain(..) {
            self.writer.deliver(&job, result);
        }
    }
}

const SAVEPOINT: &str = "SAVEPOINT strata_write";
const RELEASE: &str = "RELEASE strata_write";

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Only reached open if a step above panicked: nothing of it may commit later.
        if self.open {
            rollback(self.conn);
            self.writer.capture.discard();
        }
    }
}
