//! The queue handle: enqueueing (inside a caller's write or on its own), pausing queues, and
//! the per-`Db` state every handle and worker pool of one process shares.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OptionalExtension};

use super::job::{Enqueued, Job};
use super::schema::{self, duration_ms, ms, now_ms, JOBS};
use super::stats::Stats;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::{ChangeKind, ChangeSet};

/// The job queue of one database: enqueue jobs, pause and resume queues, read and retry the
/// dead letters. Get it with [`Db::jobs`]; it is cheap to clone and every clone (and every
/// [`WorkerPool`](super::WorkerPool) started from one) shares the same state.
#[derive(Clone)]
pub struct Queue {
    pub(crate) db: Db,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// What the handles and pools of one `Db` share: who to wake when a job is enqueued, and the
/// figures of the jobs this process ran.
pub(crate) struct Shared {
    wakers: Mutex<Vec<Weak<Waker>>>,
    pub(crate) stats: Stats,
}

impl Shared {
    /// Wakes every worker pool of this process (a job was enqueued, a queue resumed).
    pub(crate) fn wake_all(&self) {
        let mut wakers = self.wakers.lock();
        wakers.retain(|w| match w.upgrade() {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        });
    }

    pub(crate) fn add_waker(&self, waker: &Arc<Waker>) {
        self.wakers.lock().push(Arc::downgrade(waker));
    }

    /// The change-capture sink: a committed insert into the jobs table (from this process's
    /// writer, by any code) wakes the pools. Claims and completions update and delete rows of
    /// the same table; they wake nobody.
    fn on_commit(&self, set: &ChangeSet) {
        let inserted = set
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Insert && &*c.table == JOBS)
            .count();
        if inserted > 0 {
            self.stats.enqueued(inserted as u64);
            self.wake_all();
        }
    }
}

/// A flag and a condition variable a pool's dispatcher sleeps on.
#[derive(Default)]
pub(crate) struct Waker {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Waker {
    pub(crate) fn wake(&self) {
        *self.woken.lock() = true;
        self.cond.notify_all();
    }

    /// Sleeps until woken or `timeout` passes; returns whether it was woken (and clears it).
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let mut woken = self.woken.lock();
        if !*woken {
            self.cond.wait_for(&mut woken, timeout);
        }
        std::mem::replace(&mut *woken, false)
    }
}

impl Db {
    /// The job queue on this database ([`strata::jobs`](crate::jobs)). The first call on a
    /// `Db` creates the queue's `strata_` tables if they are missing (in one IMMEDIATE
    /// transaction, so processes starting together do not collide) and has the change capture
    /// watch the jobs table, so that a commit that enqueues wakes this process's workers.
    ///
    /// Call it outside write closures ([`Error::NestedWrite`] inside one); keep the `Queue`
    /// and use [`Queue::enqueue_in`] inside writes.
    pub fn jobs(&self) -> Result<Queue> {
        if let Some(shared) = self.inner.jobs.get() {
            return Ok(Queue {
                db: self.clone(),
                shared: Arc::clone(shared),
            });
        }
        if crate::events::in_write_closure() {
            return Err(Error::NestedWrite);
        }
        self.write(schema::create)?;
        let shared = Arc::new(Shared {
            wakers: Mutex::default(),
            stats: Stats::default(),
        });
        let writer = &self.inner.writer;
        // One `jobs()` wins a race between threads; the loser's sink holds a dead Weak.
        let _init = self.inner.jobs_init.lock();
        if let Some(existing) = self.inner.jobs.get() {
            return Ok(Queue {
                db: self.clone(),
                shared: Arc::clone(existing),
            });
        }
        writer.with_conn(|conn| writer.capture.watch(conn, JOBS, &[]))?;
        let weak = Arc::downgrade(&shared);
        writer.capture.add_sink(Arc::new(move |set| {
            if let Some(shared) = weak.upgrade() {
                shared.on_commit(set);
            }
        }));
        let _ = self.inner.jobs.set(Arc::clone(&shared));
        Ok(Queue {
            db: self.clone(),
            shared,
        })
    }
}

impl Queue {
    /// The database this queue lives in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Enqueues `job` in a transaction of its own. A job with a unique key that an unfinished
    /// job holds enqueues nothing ([`Enqueued::deduplicated`]).
    pub fn enqueue(&self, job: Job) -> Result<Enqueued> {
        self.db.write(|c| self.enqueue_in(c, job))
    }

    /// Enqueues `job` on `conn`, the connection a [`Db::write`] closure received: the job
    /// commits or rolls back with the closure's other changes, and this process's workers are
    /// woken when it commits.
    pub fn enqueue_in(&self, conn: &Connection, job: Job) -> Result<Enqueued> {
        enqueue_on(conn, &job, now_ms())
    }

    /// Pauses `queue` (in the database, so for every process): workers claim none of its jobs
    /// until [`Queue::resume`]. Jobs already running finish.
    pub fn pause(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, true)
    }

    /// Resumes a paused `queue` and wakes this process's workers.
    pub fn resume(&self, queue: &str) -> Result<()> {
        self.set_paused(queue, false)?;
        self.shared.wake_all();
        Ok(())
    }

    /// Whether `queue` is paused.
    pub fn is_paused(&self, queue: &str) -> Result<bool> {
        self.db.read(|c| {
            let paused: Option<bool> = c
                .prepare_cached("SELECT paused FROM strata_job_queues WHERE name = ?1")?
                .query_row([queue], |r| r.get(0))
                .optional()?;
            Ok(paused.unwrap_or(false))
        })
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.db.write(|c| {
            c.prepare_cached(
                "INSERT INTO strata_job_queues (name, paused) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            )?
            .execute((queue, paused))?;
            Ok(())
        })
    }

    /// The number of jobs waiting or running, in every queue.
    pub fn len(&self) -> Result<u64> {
        self.db.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT count(*) FROM strata_jobs")?
                .query_row([], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// True if no job is waiting or running.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Inserts `job` (due at `now` plus its delay, or its run-at time) unless its unique key is
/// held.
pub(crate) fn enqueue_on(conn: &Connection, job: &Job, now: i64) -> Result<Enqueued> {
    let run_at = match job.run_at {
        Some(at) => ms(at),
        None => now.saturating_add(duration_ms(job.delay)),
    };
    // OR IGNORE and no RETURNING: a statement that cannot abort needs no statement journal
    // (it copied every page it touched, ~7k instructions an enqueue), and RETURNING buffers
    // its row in an ephemeral table (another ~6k). Every column but the unique key comes from
    // a typed `Job` and is not NULL, so the only row ignored is a held unique key.
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO strata_jobs
                (queue, kind, payload, priority, run_at, enqueued_at, max_attempts, unique_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute((
            &job.queue,
            &job.kind,
            &job.payload,
            job.priority.rank(),
            run_at,
            now,
            job.max_attempts,
            &job.unique_key,
        ))?;
    if inserted == 1 {
        return Ok(Enqueued {
            id: conn.last_insert_rowid(),
            deduplicated: false,
        });
    }
    let id: i64 = conn
        .prepare_cached("SELECT id FROM strata_jobs WHERE unique_key = ?1")?
        .query_row([&job.unique_key], |r| r.get(0))?;
    Ok(Enqueued {
        id,
        deduplicated: true,
    })
}
