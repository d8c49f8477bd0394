//! Recurring jobs: a job enqueued once per slot of a fixed interval, by whichever process's
//! scheduler gets there first.
//!
//! Slots are counted from the Unix epoch (slot `n` starts at `n × interval`). Firing a slot is
//! one write: the schedule's row in `strata_job_schedules` moves to the slot only if it was
//! behind it, and the job is enqueued in the same transaction. Writes to one file are
//! serialized, so among processes (or pools) firing the same slot exactly one sees the row
//! move and enqueues.

use std::time::Duration;

use rusqlite::Connection;

use super::job::Job;
use super::queue::{enqueue_on, Queue};
use super::schema::{duration_ms, now_ms};
use crate::error::{Error, Result};

/// A job to enqueue once every `interval`, under a schedule name. Register it with
/// [`WorkerPoolBuilder::recurring`](super::WorkerPoolBuilder::recurring) (the pool fires it at
/// each slot's start), or fire it yourself with [`Queue::fire`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recurring {
    pub(crate) name: String,
    pub(crate) interval_ms: i64,
    pub(crate) job: Job,
}

impl Recurring {
    /// Enqueues `job` once per `interval` (at least 1 ms) under the schedule `name`; the same
    /// name must mean the same schedule in every process.
    pub fn every(name: impl Into<String>, interval: Duration, job: Job) -> Result<Recurring> {
        let interval_ms = duration_ms(interval);
        if interval_ms < 1 {
            return Err(Error::InvalidConfig {
                field: "recurring",
                reason: "the interval must be at least 1 ms".into(),
            });
        }
        Ok(Recurring {
            name: name.into(),
            interval_ms,
            job,
        })
    }

    /// The slot `now` (Unix ms) falls in.
    pub(crate) fn slot(&self, now: i64) -> i64 {
        now.div_euclid(self.interval_ms)
    }

    /// When the slot after the one of `now` starts (Unix ms).
    pub(crate) fn next_slot_at(&self, now: i64) -> i64 {
        (self.slot(now) + 1).saturating_mul(self.interval_ms)
    }
}

/// Fires the slot of `now` for `schedule` on `conn` (inside a write): true if this call
/// enqueued its job, false if the slot had already fired.
pub(crate) fn fire_on(conn: &Connection, schedule: &Recurring, now: i64) -> Result<bool> {
    let slot = schedule.slot(now);
    let moved = conn
        .prepare_cached(
            "INSERT INTO strata_job_schedules (name, last_slot) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_slot = excluded.last_slot
             WHERE last_slot < excluded.last_slot",
        )?
        .execute((&schedule.name, slot))?;
    if moved == 1 {
        enqueue_on(conn, &schedule.job, now)?;
    }
    Ok(moved == 1)
}

impl Queue {
    /// Fires the current slot of `schedule`: enqueues its job if no process has in this slot.
    /// Returns whether this call enqueued it.
    pub fn fire(&self, schedule: &Recurring) -> Result<bool> {
        self.db.write(|c| fire_on(c, schedule, now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_fires_once_and_the_next_slot_again() -> Result<()> {
        let c = Connection::open_in_memory()?;
        crate::jobs::schema::create(&c)?;
        let every = Recurring::every("s", Duration::from_millis(100), Job::new("tick", &())?)?;
        assert_eq!((every.slot(250), every.next_slot_at(250)), (2, 300));
        assert!(fire_on(&c, &every, 250)?);
        assert!(!fire_on(&c, &every, 299)?, "same slot");
        assert!(
            !fire_on(&c, &every, 150)?,
            "an earlier slot (a clock that jumped back)"
        );
        assert!(fire_on(&c, &every, 300)?);
        let n: i64 = c.query_row("SELECT count(*) FROM strata_jobs", [], |r| r.get(0))?;
        assert_eq!(n, 2);
        assert!(Recurring::every("z", Duration::ZERO, Job::new("t", &())?).is_err());
        Ok(())
    }
}
