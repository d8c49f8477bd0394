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
use super::{execute, prepare, run_statement, run_work, Writer};
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
        if let Some(turn) = &self.turn {
            turn.after_end();
        }
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

/// How a call run in a savepoint ended.
enum Step {
    /// With this outcome; the transaction goes on.
    Done(Result<()>),
    /// With this error, which also ended the transaction, or left it holding changes of the
    /// failed call that can no longer be rolled back alone.
    Lost(Error),
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
            match run_work(self.conn, writer, work) {
                Ok(()) if self.conn.is_autocommit() => self.lose(job, swallowed_rollback()),
                Ok(()) => self.ran.push((job, Ok(()))),
                Err(err) => {
                    self.close_failed(&err);
                    writer.deliver(&job, Err(err));
                }
            }
        } else {
            match self.run_in_savepoint(work) {
                Step::Done(result) => self.ran.push((job, result)),
                Step::Lost(err) => self.lose(job, err),
            }
        }
        Ok(())
    }

    /// Runs a call in a savepoint of its own, rolled back if the call fails.
    fn run_in_savepoint(&mut self, work: Work<'static>) -> Step {
        let conn = self.conn;
        if self.savepoint.is_none() {
            match (prepare(conn, SAVEPOINT), prepare(conn, RELEASE)) {
                (Ok(savepoint), Ok(release)) => self.savepoint = Some([savepoint, release]),
                (Err(err), _) | (_, Err(err)) => return Step::Done(Err(err)),
            }
        }
        let [savepoint, release] = self.savepoint.as_mut().expect("prepared above");
        if let Err(err) = execute(savepoint, SAVEPOINT) {
            return Step::Done(Err(err));
        }
        let capture = &self.writer.capture;
        let mark = capture.mark();
        let result = run_work(conn, self.writer, work);
        if conn.is_autocommit() {
            return Step::Lost(result.err().unwrap_or_else(swallowed_rollback));
        }
        if let Err(err) = result {
            // Fails only if the savepoint is gone (a closure released it after removing the
            // authorizer): then its changes are merged into the transaction.
            return match run_statement(conn, ROLLBACK_TO).and(execute(release, RELEASE)) {
                Ok(()) => {
                    capture.rollback_to(mark);
                    Step::Done(Err(err))
                }
                Err(_) => Step::Lost(err),
            };
        }
        match execute(release, RELEASE) {
            Ok(()) => Step::Done(Ok(())),
            Err(err) => Step::Lost(err),
        }
    }

    fn begin(&mut self) -> Result<()> {
        self.every_row = self.writer.capture.arm(self.conn)?;
        let conn = self.conn;
        let begin = || run_statement(conn, BEGIN);
        let begun = match &self.writer.turn {
            Some(turn) => {
                turn.before_begin();
                turn.begin(conn, begin)
            }
            None => begin(),
        };
        begun.map_err(|err| self.writer.locate(self.conn, err))?;
        self.open = true;
        Ok(())
    }

    /// Rolls back whatever is still open of the transaction; a failure here means SQLite
    /// already rolled back.
    fn rollback(&mut self) {
        self.open = false;
        if !self.conn.is_autocommit() {
            let _ = run_statement(self.conn, ROLLBACK);
        }
    }

    /// Ends the transaction after a call failed in it: rolls back what is still open and
    /// drops the captured changes, except after a closure removed strata's hooks: it may have
    /// committed past them, so its changes are published, which errs on the side of
    /// invalidating.
    fn close_failed(&mut self, cause: &Error) {
        let ended_inside = self.conn.is_autocommit();
        self.rollback();
        if ended_inside && matches!(cause, Error::HookTampered { .. }) {
            self.writer.capture.publish(self.every_row);
        } else {
            self.writer.capture.discard();
        }
    }

    /// The call `job` failed with `err` in a way that took the transaction with it: ends the
    /// transaction, and fails the calls that had succeeded in it with a shared cause.
    fn lose(&mut self, job: Arc<Job>, err: Error) {
        self.close_failed(&err);
        self.fail_ran(Arc::new(err.duplicate()));
        self.ran.push((job, Err(err)));
        self.deliver_all();
    }

    /// Commits what ran and hands every caller its outcome; a failed COMMIT fails them all.
    fn commit(mut self) {
        if !self.open {
            return;
        }
        let writer = self.writer;
        if let Err(err) = self.log_and_commit() {
            let err = writer.locate(self.conn, err);
            self.rollback();
            writer.capture.discard();
            writer
                .counters
                .failed_commits
                .fetch_add(1, Ordering::Relaxed);
            self.fail_ran(Arc::new(err));
        } else {
            self.open = false;
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

    /// COMMIT, after the change log's entry (with several instances): the entry commits with
    /// the data, or neither does.
    fn log_and_commit(&self) -> Result<()> {
        let Some(log) = &self.writer.log else {
            return run_statement(self.conn, COMMIT);
        };
        log.append(self.conn, &self.writer.capture)?;
        run_statement(self.conn, COMMIT)
    }

    /// Gives `cause` to every call of the transaction that had succeeded: none of it commits.
    fn fail_ran(&mut self, cause: Arc<Error>) {
        for (_, result) in &mut self.ran {
            if result.is_ok() {
                *result = Err(Error::GroupFailed {
                    source: Arc::clone(&cause),
                });
            }
        }
    }

    fn deliver_all(&mut self) {
        for (job, result) in self.ran.drain(..) {
            self.writer.deliver(&job, result);
        }
    }
}

/// The error of a closure that returned `Ok` from a transaction SQLite had rolled back: it
/// dropped the error that caused the rollback (I/O error, disk full, `ON CONFLICT ROLLBACK`).
fn swallowed_rollback() -> Error {
    Error::closure(
        "SQLite rolled the transaction back during this write closure, which returned Ok",
    )
}

// BEGIN, COMMIT and ROLLBACK go through the statement cache under texts of their own: a
// closure asking the cache for "COMMIT" then gets a statement of its own, prepared through the
// authorizer, which refuses it (`events/guard.rs`); one that copied these texts would meet the
// commit hook. Holding the statements out of the cache for the group instead cost 1,500
// instructions per write (three more lookups and returns); the texts stay within 16 bytes,
// which the cache hashes fastest. The savepoint statements are held during queued calls.
const BEGIN: &str = "BEGIN IMMEDIATE;";
const COMMIT: &str = "COMMIT--strata";
const ROLLBACK: &str = "ROLLBACK--strata";
const SAVEPOINT: &str = "SAVEPOINT strata_write";
const RELEASE: &str = "RELEASE strata_write";
const ROLLBACK_TO: &str = "ROLLBACK TO strata_write";

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Only reached open if a step above panicked: nothing of it may commit later.
        if self.open {
            self.rollback();
            self.writer.capture.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SAVEPOINT_NAME;

    #[test]
    fn the_group_statements_name_the_savepoint_the_guard_protects() {
        for statement in [SAVEPOINT, RELEASE, ROLLBACK_TO] {
            assert!(
                statement.ends_with(&format!(" {SAVEPOINT_NAME}")),
                "{statement}"
            );
        }
    }
}
