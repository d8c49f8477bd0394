//! What a handler gets besides its payload: the job's identity and attempt, heartbeats, and
//! the transactional completion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::schema::{duration_ms, now_ms};
use super::store::{self, Claimed};
use crate::db::Db;
use crate::error::{Error, Result};

/// The job a handler runs, passed to it with the payload.
pub struct JobContext {
    pub(crate) job: Claimed,
    pub(crate) db: Db,
    pub(crate) lease: Duration,
    /// Set by [`JobContext::complete_in`]: the handler completed the job in its own write.
    pub(crate) completed: AtomicBool,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.job.id)
            .field("kind", &self.job.kind)
            .field("attempt", &self.job.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> i64 {
        self.job.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// The job's queue.
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// This run's number: 1 on the first run, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// How many runs the job may have.
    pub fn max_attempts(&self) -> u32 {
        self.job.max_attempts
    }

    /// The database, for the handler's own reads and writes.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Completes the job on `conn`, the connection of the handler's own [`Db::write`]
    /// closure: the job's completion commits with the handler's changes or not at all, so its
    /// effects are applied exactly once with respect to the database. If this run no longer
    /// holds the job's lease (it expired and another run took over), returns
    /// [`Error::JobLeaseLost`]: let it propagate, so the closure's changes roll back.
    ///
    /// A handler that calls this returns `Ok(())` after its write committed; the worker then
    /// leaves the job alone. If the write rolled back and the handler returns an error, the
    /// job is retried as usual.
    pub fn complete_in(&self, conn: &Connection) -> Result<()> {
        if !store::complete(conn, self.job.id, self.job.token)? {
            return Err(Error::JobLeaseLost { id: self.job.id });
        }
        self.completed.store(true, Ordering::Release);
        Ok(())
    }

    /// Extends the job's lease by the pool's lease time from now. The pool already extends
    /// the leases of its running jobs every third of the lease time; a handler calls this only
    /// to check it still holds the job ([`Error::JobLeaseLost`] if not).
    pub fn heartbeat(&self) -> Result<()> {
        let until = now_ms().saturating_add(duration_ms(self.lease));
        let (id, token) = (self.job.id, self.job.token);
        if self.db.write(|c| store::extend(c, id, token, until))? {
            Ok(())
        } else {
            Err(Error::JobLeaseLost { id })
        }
    }
}
