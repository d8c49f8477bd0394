//! The dead letters: jobs that failed their last attempt or could not run, with their last
//! error; listed, retried (as new jobs) or purged.

use std::time::SystemTime;

use rusqlite::{Connection, Row};

use super::job::{Enqueued, Priority};
use super::queue::Queue;
use super::schema::{now_ms, system_time};
use crate::error::Result;

/// A job in the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The job's id (a retry enqueues it under a new id).
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its payload, as JSON text.
    pub payload: String,
    /// Its priority.
    pub priority: Priority,
    /// Runs it had.
    pub attempts: u32,
    /// Runs it was allowed.
    pub max_attempts: u32,
    /// Its unique key, if it had one.
    pub unique_key: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: SystemTime,
    /// When its first run started (`None` if it never reached a handler).
    pub first_run_at: Option<SystemTime>,
    /// When it was moved here.
    pub failed_at: SystemTime,
    /// The last run's error, or why it could not run.
    pub last_error: String,
}

const SELECT: &str = "SELECT id, queue, kind, payload, priority, attempts, max_attempts, \
     unique_key, enqueued_at, first_run_at, failed_at, last_error FROM strata_dead_jobs";

fn dead_letter(r: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        queue: r.get(1)?,
        kind: r.get(2)?,
        payload: r.get(3)?,
        priority: Priority::from_rank(r.get(4)?),
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        unique_key: r.get(7)?,
        enqueued_at: system_time(r.get(8)?),
        first_run_at: r.get::<_, Option<i64>>(9)?.map(system_time),
        failed_at: system_time(r.get(10)?),
        last_error: r.get(11)?,
    })
}

/// Every dead letter, oldest failure first.
pub(crate) fn list(conn: &Connection) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY failed_at, id"))?;
    let rows = stmt.query_map([], dead_letter)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Enqueues dead letter `id` again as a new job (attempts from zero, due now) and removes it
/// from the dead letters. `None` if there is no such dead letter; a unique key an unfinished
/// job holds makes it [`Enqueued::deduplicated`], and the dead letter stays.
pub(crate) fn retry(conn: &Connection, id: i64) -> Result<Option<Enqueued>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE id = ?1"))?;
    let Some(dead) = stmt.query_map([id], dead_letter)?.next().transpose()? else {
        return Ok(None);
    };
    let job = super::Job {
        kind: dead.kind,
        payload: dead.payload,
        queue: dead.queue,
        priority: dead.priority,
        run_at: None,
        delay: std::time::Duration::ZERO,
        max_attempts: dead.max_attempts,
        unique_key: dead.unique_key,
    };
    let enqueued = super::queue::enqueue_on(conn, &job, now_ms())?;
    if !enqueued.deduplicated {
        conn.prepare_cached("DELETE FROM strata_dead_jobs WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(Some(enqueued))
}

impl Queue {
    /// Every job in the dead letters, oldest failure first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.db.read(list)
    }

    /// Enqueues dead letter `id` again as a new job (its attempts from zero, due now) and
    /// removes it from the dead letters, in one transaction. `None` if there is no such dead
    /// letter. If an unfinished job holds its unique key, nothing changes and the result is
    /// [`deduplicated`](Enqueued::deduplicated).
    pub fn retry_dead(&self, id: i64) -> Result<Option<Enqueued>> {
        self.db.write(|c| retry(c, id))
    }

    /// Retries every dead letter (see [`Queue::retry_dead`]); returns how many were enqueued.
    pub fn retry_all_dead(&self) -> Result<usize> {
        self.db.write(|c| {
            let ids: Vec<i64> = c
                .prepare_cached("SELECT id FROM strata_dead_jobs ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut n = 0;
            for id in ids {
                n += usize::from(retry(c, id)?.is_some_and(|e| !e.deduplicated));
            }
            Ok(n)
        })
    }

    /// Deletes the dead letters that failed before `before` (every one with `None`); returns
    /// how many.
    pub fn purge_dead(&self, before: Option<SystemTime>) -> Result<usize> {
        let before = before.map_or(i64::MAX, super::schema::ms);
        self.db.write(|c| {
            Ok(
                c.prepare_cached("DELETE FROM strata_dead_jobs WHERE failed_at < ?1")?
                    .execute([before])?,
            )
        })
    }
}
