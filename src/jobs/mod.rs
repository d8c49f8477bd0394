//! A durable job queue in the service's own database.
//!
//! A job is a row of strata's `strata_jobs` table (created by [`Db::jobs`] on first use):
//! enqueued inside a [`Db::write`] with [`Queue::enqueue_in`], it commits or rolls back with
//! the write that causes it, and survives the process. A [`WorkerPool`] runs handlers
//! registered per kind on threads of its own:
//!
//! * **Claiming** takes several due jobs (high priority first, then earliest run time) in one
//!   short write through the group-commit writer, each under a lease with a random token. A
//!   pool that dies stops renewing its leases; once they expire any pool runs the jobs again.
//!   Every change a worker makes to a job names the token, so a run that lost its lease
//!   changes nothing.
//! * **Waking**: the change capture watches the jobs table, and a commit that inserts a job
//!   wakes this process's pools before `write` returns; polling
//!   ([`poll_interval`](WorkerPoolBuilder::poll_interval)) only finds other processes' jobs and
//!   expired leases. Delayed jobs and retries wake the pool at their run time.
//! * **Failures**: a handler's error or panic retries the job with exponential backoff and
//!   jitter; after `max_attempts` runs it goes to the [`DeadLetter`]s with its last error, from
//!   which it can be retried or purged. A payload that does not deserialize goes there at
//!   once.
//! * **Exactly once** with respect to the database: a handler that writes calls
//!   [`JobContext::complete_in`] inside its own write, so its effects and the job's
//!   completion commit together.
//! * **Async handlers** (feature `tokio`): `WorkerPoolBuilder::async_handler` runs a
//!   handler's future on a tokio runtime, with the claims, completions, retries and limits of
//!   sync handlers kept on the pool's threads.
//! * [`Recurring`] jobs fire once per slot of an interval or a cron expression, whatever the
//!   number of processes.
//!
//! Run times, leases and slots are wall-clock milliseconds, shared by every process on the
//! machine. A clock that jumps forward expires leases early: the jobs run again, and the
//! earlier run's completion, naming a token that no longer holds, changes nothing (with
//! [`JobContext::complete_in`], its effects roll back). A clock that jumps back delays due
//! jobs and slots; a slot that already fired never fires again.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! use std::time::Duration;
//! use strata::jobs::{Job, Priority};
//!
//! let db = strata::Db::builder().build()?;
//! db.write(|c| Ok(c.execute_batch("CREATE TABLE mails (id INTEGER PRIMARY KEY, sent INT)")?))?;
//! let queue = db.jobs()?;
//!
//! // The job commits with the row it refers to, or not at all.
//! db.write(|c| {
//!     c.execute("INSERT INTO mails (id, sent) VALUES (1, 0)", [])?;
//!     queue.enqueue_in(c, Job::new("send_mail", &1_i64)?.priority(Priority::High))?;
//!     Ok(())
//! })?;
//!
//! let mut workers = queue
//!     .workers()
//!     .threads(2)
//!     .handler("send_mail", |ctx, id: i64| {
//!         // The mail's state and the job's completion commit together.
//!         ctx.db().write(|c| {
//!             c.execute("UPDATE mails SET sent = 1 WHERE id = ?1", [id])?;
//!             ctx.complete_in(c)
//!         })
//!     });
//! let completed = workers.completed(); // subscribed before the first run
//! let pool = workers.start()?;
//! let done = completed.recv_timeout(Duration::from_secs(10)).unwrap();
//! assert_eq!(done.kind, "send_mail");
//! pool.shutdown(Duration::from_secs(1));
//! assert!(queue.is_empty()? && queue.dead_letters()?.is_empty());
//! # Ok(()) }
//! ```

mod clock;
mod context;
mod dead;
mod job;
mod queue;
mod recurring;
mod run;
pub(crate) mod schema;
mod stats;
mod store;
#[cfg(feature = "tokio")]
mod tasks;
mod worker;

pub use crate::monitor::{JobsReport, KindReport, Percentiles, QueueDepth};
pub use context::JobContext;
pub use dead::DeadLetter;
pub use job::{Enqueued, Job, Priority, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};
pub use queue::Queue;
pub(crate) use queue::Shared;
pub use recurring::Recurring;
pub use worker::{Completed, JobError, Shutdown, UnknownKind, WorkerPool, WorkerPoolBuilder};

use crate::db::Db;
use crate::error::Result;

/// Whether the queue's tables exist in `db`, without creating them (for tools that inspect a
/// database and must not write to it).
pub fn exists(db: &Db) -> Result<bool> {
    db.read(schema::exists)
}

impl Queue {
    /// The queue's figures: depth per queue and state, the oldest waiting job's age, and what
    /// this process's workers ran per kind (also in [`Db::report`](crate::Db::report)).
    pub fn report(&self) -> Result<JobsReport> {
        self.db.read(|c| self.shared.stats.report(c))
    }
}
