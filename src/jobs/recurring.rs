//! Recurring jobs: a job enqueued once per slot of a schedule, by whichever process's scheduler
//! gets there first.
//!
//! A schedule is a fixed interval ([`Recurring::every`]) or a cron expression
//! ([`Recurring::cron`]). An interval's slots are counted from the Unix epoch (slot `n` starts
//! at `n × interval`); a cron schedule's slot is its latest scheduled time at or before now, in
//! Unix ms. Firing a slot is one write: the schedule's row in `strata_job_schedules` moves to
//! the slot only if it was behind it, and the job is enqueued in the same transaction. Writes
//! to one file are serialized, so among processes (or pools) firing the same slot exactly one
//! sees the row move and enqueues.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::job::Job;
use super::queue::{enqueue_on, Queue};
use super::schema::{duration_ms, now_ms};
use crate::error::{Error, Result};

/// A job to enqueue once per slot of a schedule, under a schedule name. Register it with
/// [`WorkerPoolBuilder::recurring`](super::WorkerPoolBuilder::recurring) (the pool fires it at
/// each slot's start), or fire it yourself with [`Queue::fire`].
///
/// A pool fires the current slot when it starts, if no process has yet: a schedule whose
/// last time passed while no pool ran fires once, not once per missed slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Recurring {
    pub(crate) name: String,
    when: When,
    pub(crate) job: Job,
}

/// When a schedule's slots begin.
#[derive(Debug, Clone, PartialEq)]
enum When {
    /// Every `interval_ms` from the Unix epoch; the slot is the interval's index.
    Every { interval_ms: i64 },
    /// At the times of a cron expression, in UTC; the slot is the time in Unix ms.
    Cron(Box<cron::Schedule>),
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
            when: When::Every { interval_ms },
            job,
        })
    }

    /// Enqueues `job` at each time of the cron `expression`, in UTC, under the schedule
    /// `name`; the same name must mean the same schedule in every process.
    ///
    /// The expression has six or seven fields separated by spaces: seconds, minutes, hours,
    /// day of month, month, day of week and an optional year, each a value, `*`, a range
    /// (`1-5`), a list (`1,15`) or a step (`*/5`, `10-50/10`); months and days of the week
    /// also take names (`Jan`, `Mon-Fri`). `"0 */5 * * * *"` fires every five minutes on the
    /// minute; `"0 30 9 * * Mon-Fri"` at 09:30 UTC on weekdays. The classic five-field form
    /// has no seconds field and is refused. Shortcuts such as `@hourly` and `@daily` are
    /// accepted too. A slot is the schedule's latest time at or before the clock, to the
    /// second.
    ///
    /// An expression that does not parse is [`Error::InvalidConfig`] with the parser's
    /// message.
    pub fn cron(name: impl Into<String>, expression: &str, job: Job) -> Result<Recurring> {
        let schedule = cron::Schedule::from_str(expression).map_err(|e| Error::InvalidConfig {
            field: "recurring",
            reason: format!("cron expression {expression:?}: {e}"),
        })?;
        Ok(Recurring {
            name: name.into(),
            when: When::Cron(Box::new(schedule)),
            job,
        })
    }

    /// The slot `now` (Unix ms) falls in, or `None` before the schedule's first time.
    pub(crate) fn slot(&self, now: i64) -> Option<i64> {
        match &self.when {
            When::Every { interval_ms } => Some(now.div_euclid(*interval_ms)),
            When::Cron(schedule) => {
                // The latest time before the next whole second: times are whole seconds, so
                // that is the latest at or before `now`.
                let bound = utc(now.div_euclid(1000).saturating_add(1).saturating_mul(1000))?;
                let at = schedule.after(&bound).next_back()?;
                Some(at.timestamp_millis())
            }
        }
    }

    /// When the slot after the one of `now` starts (Unix ms); `i64::MAX` if the schedule has
    /// no time after `now`.
    pub(crate) fn next_slot_at(&self, now: i64) -> i64 {
        match &self.when {
            When::Every { interval_ms } => now
                .div_euclid(*interval_ms)
                .saturating_add(1)
                .saturating_mul(*interval_ms),
            When::Cron(schedule) => utc(now.div_euclid(1000).saturating_mul(1000))
                .and_then(|from| schedule.after(&from).next())
                .map_or(i64::MAX, |at| at.timestamp_millis()),
        }
    }
}

/// `ms` since the Unix epoch as a UTC time, if chrono can represent it.
fn utc(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Fires the slot of `now` for `schedule` on `conn` (inside a write): true if this call
/// enqueued its job, false if the slot had already fired (or the schedule has no slot yet).
pub(crate) fn fire_on(conn: &Connection, schedule: &Recurring, now: i64) -> Result<bool> {
    let Some(slot) = schedule.slot(now) else {
        return Ok(false);
    };
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
        assert_eq!((every.slot(250), every.next_slot_at(250)), (Some(2), 300));
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

    /// 2026-01-01T00:00:00Z in Unix ms: the tests' clock starts there.
    const T0: i64 = 1_767_225_600_000;
    const MINUTE: i64 = 60_000;

    fn jobs(c: &Connection) -> Result<Vec<i64>> {
        let mut stmt = c.prepare("SELECT enqueued_at FROM strata_jobs ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    #[test]
    fn a_cron_slot_is_the_latest_time_at_or_before_now() -> Result<()> {
        let every5 = Recurring::cron("c", "0 */5 * * * *", Job::new("tick", &())?)?;
        assert_eq!(every5.slot(T0), Some(T0), "exactly on a time");
        assert_eq!(every5.next_slot_at(T0), T0 + 5 * MINUTE);
        let later = T0 + 7 * MINUTE + 12_345;
        assert_eq!(every5.slot(later), Some(T0 + 5 * MINUTE));
        assert_eq!(every5.next_slot_at(later), T0 + 10 * MINUTE);
        let just_before = T0 + 5 * MINUTE - 1;
        assert_eq!(every5.slot(just_before), Some(T0));
        assert_eq!(every5.next_slot_at(just_before), T0 + 5 * MINUTE);

        let second = Recurring::cron("s", "* * * * * *", Job::new("tick", &())?)?;
        assert_eq!(second.slot(T0 + 1_999), Some(T0 + 1_000));
        assert_eq!(second.next_slot_at(T0 + 1_999), T0 + 2_000);

        let weekdays = Recurring::cron("w", "0 30 9 * * Mon-Fri", Job::new("tick", &())?)?;
        // 2026-01-01 is a Thursday; 2026-01-03 a Saturday, 2026-01-05 a Monday.
        let saturday_noon = T0 + 2 * 1440 * MINUTE + 12 * 60 * MINUTE;
        assert_eq!(
            weekdays.slot(saturday_noon),
            Some(T0 + 1440 * MINUTE + 570 * MINUTE),
            "Friday 09:30"
        );
        assert_eq!(
            weekdays.next_slot_at(saturday_noon),
            T0 + 4 * 1440 * MINUTE + 570 * MINUTE,
            "Monday 09:30"
        );

        let past = Recurring::cron("p", "0 0 0 1 1 * 2020", Job::new("tick", &())?)?;
        assert_eq!(past.next_slot_at(T0), i64::MAX, "no time left");
        let future = Recurring::cron("f", "0 0 0 1 1 * 2099", Job::new("tick", &())?)?;
        assert_eq!(future.slot(T0), None, "no time yet");
        Ok(())
    }

    #[test]
    fn a_cron_slot_fires_once_and_a_clock_set_back_fires_no_older_slot() -> Result<()> {
        let c = Connection::open_in_memory()?;
        crate::jobs::schema::create(&c)?;
        let every5 = Recurring::cron("c", "0 */5 * * * *", Job::new("tick", &())?)?;
        assert!(fire_on(&c, &every5, T0 + 2 * MINUTE)?, "the slot of T0");
        assert!(!fire_on(&c, &every5, T0 + 4 * MINUTE)?, "same slot");
        assert!(fire_on(&c, &every5, T0 + 5 * MINUTE)?, "the next slot");
        assert!(
            !fire_on(&c, &every5, T0 + 3 * MINUTE)?,
            "an older slot (a clock that jumped back)"
        );
        assert!(
            !fire_on(&c, &every5, T0 + 9 * MINUTE)?,
            "the slot that fired"
        );
        assert!(fire_on(&c, &every5, T0 + 11 * MINUTE)?);
        assert_eq!(
            jobs(&c)?,
            vec![T0 + 2 * MINUTE, T0 + 5 * MINUTE, T0 + 11 * MINUTE]
        );
        let future = Recurring::cron("f", "0 0 0 1 1 * 2099", Job::new("tick", &())?)?;
        assert!(!fire_on(&c, &future, T0)?, "no slot yet: nothing fires");
        Ok(())
    }

    #[test]
    fn a_bad_cron_expression_is_a_typed_error() -> Result<()> {
        for bad in [
            "",
            "not cron",
            "*/5 * * * *",
            "0 61 * * * *",
            "0 0 0 32 * *",
        ] {
            match Recurring::cron("b", bad, Job::new("tick", &())?) {
                Err(Error::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "recurring");
                    assert!(reason.contains("cron expression"), "{reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(Recurring::cron("h", "@hourly", Job::new("tick", &())?).is_ok());
        Ok(())
    }
}
