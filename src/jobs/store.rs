//! The statements that move a job between states: claim (with its lease), heartbeat,
//! complete, retry, bury in the dead letters, release. Each runs on a connection inside a
//! write; every change to a claimed job names its lease token, so a worker whose lease expired
//! (and whose job another worker claimed since) changes nothing.

use rusqlite::Connection;

use super::schema::{PENDING, RUNNING};
use crate::error::Result;

/// A job a worker holds a lease on.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: i64,
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) payload: String,
    /// This run's number, from 1.
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    /// When the job was due (Unix ms).
    pub(crate) run_at: i64,
    pub(crate) priority: i64,
    pub(crate) token: i64,
}

/// Which jobs a claim may take.
pub(crate) struct Filter<'a> {
    /// JSON array of queue names, or `None` for every queue.
    pub(crate) queues: Option<&'a str>,
    /// JSON array of kinds, or `None` for every kind.
    pub(crate) kinds: Option<&'a str>,
    /// JSON array of kinds not to take now (at their concurrency limit).
    pub(crate) full: &'a str,
}

/// The claim's statement. `LIMIT +?7`, not `LIMIT ?7`: SQLite reads a bare parameter's bound
/// value while it plans a LIMIT, so that rebinding it expires the statement and every claim
/// was parsed and planned anew (that took 70% of a claim's CPU time in
/// jobs_end_to_end_producers). The unary plus hides the value from the planner, so the cached
/// statement is reused.
const CLAIM: &str = "UPDATE strata_jobs
 SET state = 1, attempts = attempts + 1, lease_until = ?1, lease_token = ?2,
     first_run_at = coalesce(first_run_at, ?3)
 WHERE id IN (
     SELECT id FROM strata_jobs
     WHERE state = 0 AND run_at <= ?3
       AND (?4 IS NULL OR queue IN (SELECT value FROM json_each(?4)))
       AND (?5 IS NULL OR kind IN (SELECT value FROM json_each(?5)))
       AND kind NOT IN (SELECT value FROM json_each(?6))
       AND queue NOT IN (SELECT name FROM strata_job_queues WHERE paused)
     ORDER BY priority, run_at, id
     LIMIT +?7)
 RETURNING id, queue, kind, payload, attempts, max_attempts, run_at, priority";

/// Claims up to `limit` due jobs of unpaused queues, highest priority and earliest run time
/// first, leasing them until `lease_until` under `token`.
pub(crate) fn claim(
    conn: &Connection,
    filter: &Filter<'_>,
    limit: usize,
    now: i64,
    lease_until: i64,
    token: i64,
) -> Result<Vec<Claimed>> {
    let mut stmt = conn.prepare_cached(CLAIM)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        (
            lease_until,
            token,
            now,
            filter.queues,
            filter.kinds,
            filter.full,
            limit,
        ),
        |r| {
            Ok(Claimed {
                id: r.get(0)?,
                queue: r.get(1)?,
                kind: r.get(2)?,
                payload: r.get(3)?,
                attempt: r.get(4)?,
                max_attempts: r.get(5)?,
                run_at: r.get(6)?,
                priority: r.get(7)?,
                token,
            })
        },
    )?;
    let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING comes in no particular order.
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    Ok(jobs)
}

/// The earliest run time after `now` of a waiting job (a delayed job or a retry), by one index
/// seek per priority.
pub(crate) fn next_due(conn: &Connection, now: i64) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(run_at) FROM strata_jobs WHERE state = 0 AND priority = ?1 AND run_at > ?2",
    )?;
    let mut earliest: Option<i64> = None;
    for priority in 0..3 {
        let at: Option<i64> = stmt.query_row((priority, now), |r| r.get(0))?;
        earliest = match (earliest, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

/// Puts the jobs whose lease expired before `now` (their worker died or stalled) back to
/// waiting, or in the dead letters if that was their last attempt. Returns how many.
pub(crate) fn reclaim_expired(conn: &Connection, now: i64) -> Result<usize> {
    let buried = conn
        .prepare_cached(&format!(
            "INSERT INTO strata_dead_jobs ({DEAD_COLUMNS})
             SELECT {FROM_JOBS}, ?1, 'lease expired during attempt ' || attempts
             FROM strata_jobs
             WHERE state = {RUNNING} AND lease_until < ?1 AND attempts >= max_attempts"
        ))?
        .execute([now])?;
    conn.prepare_cached(&format!(
        "DELETE FROM strata_jobs
         WHERE state = {RUNNING} AND lease_until < ?1 AND attempts >= max_attempts"
    ))?
    .execute([now])?;
    let released = conn
        .prepare_cached(&format!(
            "UPDATE strata_jobs
             SET state = {PENDING}, lease_until = NULL, lease_token = NULL,
                 last_error = 'lease expired during attempt ' || attempts
             WHERE state = {RUNNING} AND lease_until < ?1"
        ))?
        .execute([now])?;
    Ok(buried + released)
}

/// Extends the lease of a job still held under `token`; false if it is not.
pub(crate) fn extend(conn: &Connection, id: i64, token: i64, lease_until: i64) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE strata_jobs SET lease_until = ?3 WHERE id = ?1 AND lease_token = ?2",
        )?
        .execute((id, token, lease_until))?;
    Ok(n == 1)
}

/// Deletes a finished job held under `token`; false if the lease was lost.
pub(crate) fn complete(conn: &Connection, id: i64, token: i64) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM strata_jobs WHERE id = ?1 AND lease_token = ?2")?
        .execute((id, token))?;
    Ok(n == 1)
}

/// Puts a failed job back to waiting until `run_at`, with its error.
pub(crate) fn retry(
    conn: &Connection,
    id: i64,
    token: i64,
    run_at: i64,
    error: &str,
) -> Result<bool> {
    let n = conn
        .prepare_cached(&format!(
            "UPDATE strata_jobs
             SET state = {PENDING}, run_at = ?3, lease_until = NULL, lease_token = NULL,
                 last_error = ?4
             WHERE id = ?1 AND lease_token = ?2"
        ))?
        .execute((id, token, run_at, error))?;
    Ok(n == 1)
}

/// Hands an unstarted job back (a pool shutting down): waiting again, its attempt not
/// counted.
pub(crate) fn release(conn: &Connection, id: i64, token: i64) -> Result<bool> {
    let n = conn
        .prepare_cached(&format!(
            "UPDATE strata_jobs
             SET state = {PENDING}, attempts = max(attempts - 1, 0), lease_until = NULL,
                 lease_token = NULL
             WHERE id = ?1 AND lease_token = ?2"
        ))?
        .execute((id, token))?;
    Ok(n == 1)
}

/// The dead letters' columns, in the order [`FROM_JOBS`] then failed_at and last_error fill
/// them.
pub(crate) const DEAD_COLUMNS: &str = "id, queue, kind, payload, priority, max_attempts, \
     unique_key, attempts, enqueued_at, first_run_at, failed_at, last_error";
const FROM_JOBS: &str = "id, queue, kind, payload, priority, max_attempts, unique_key, attempts, \
     enqueued_at, first_run_at";

/// Moves a job held under `token` to the dead letters with `error`.
pub(crate) fn bury(conn: &Connection, id: i64, token: i64, now: i64, error: &str) -> Result<bool> {
    let n = conn
        .prepare_cached(&format!(
            "INSERT INTO strata_dead_jobs ({DEAD_COLUMNS})
             SELECT {FROM_JOBS}, ?3, ?4 FROM strata_jobs WHERE id = ?1 AND lease_token = ?2"
        ))?
        .execute((id, token, now, error))?;
    if n == 1 {
        complete(conn, id, token)?;
    }
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::job::{Job, Priority};
    use crate::jobs::queue::enqueue_on;

    const ALL: Filter<'static> = Filter {
        queues: None,
        kinds: None,
        full: "[]",
    };

    fn conn() -> Result<Connection> {
        let c = Connection::open_in_memory()?;
        crate::jobs::schema::create(&c)?;
        Ok(c)
    }

    fn add(c: &Connection, name: &str, priority: Priority, run_at: i64) -> Result<i64> {
        let job = Job::new("k", &name)?
            .priority(priority)
            .run_at(crate::jobs::schema::system_time(run_at));
        Ok(enqueue_on(c, &job, 0)?.id)
    }

    #[test]
    fn claims_of_different_sizes_reuse_the_prepared_statement() -> Result<()> {
        let c = conn()?;
        for i in 0..10 {
            add(&c, &format!("j{i}"), Priority::Normal, 1)?;
        }
        for limit in [1, 3, 2, 4] {
            assert_eq!(claim(&c, &ALL, limit, 10, 100, 7)?.len(), limit);
        }
        let reprepared = c
            .prepare_cached(CLAIM)?
            .get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(reprepared, 0, "a new LIMIT must not expire the statement");
        Ok(())
    }

    #[test]
    fn claims_due_jobs_by_priority_then_run_time() -> Result<()> {
        let c = conn()?;
        let low = add(&c, "low", Priority::Low, 1)?;
        let late = add(&c, "late", Priority::Normal, 50)?;
        let early = add(&c, "early", Priority::Normal, 10)?;
        let high = add(&c, "high", Priority::High, 90)?;
        add(&c, "future", Priority::High, 1_000)?;
        let jobs = claim(&c, &ALL, 10, 100, 200, 7)?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [high, early, late, low]);
        assert!(jobs.iter().all(|j| j.attempt == 1 && j.token == 7));
        assert!(
            claim(&c, &ALL, 10, 100, 200, 8)?.is_empty(),
            "leased jobs are not claimed again"
        );
        assert_eq!(next_due(&c, 100)?, Some(1_000));
        Ok(())
    }

    #[test]
    fn filters_and_paused_queues_hold_jobs_back() -> Result<()> {
        let c = conn()?;
        enqueue_on(&c, &Job::new("a", &())?.queue("q1"), 0)?;
        enqueue_on(&c, &Job::new("b", &())?.queue("q2"), 0)?;
        let only_b = Filter {
            queues: None,
            kinds: Some(r#"["b"]"#),
            full: "[]",
        };
        assert_eq!(claim(&c, &only_b, 10, 1, 2, 1)?[0].kind, "b");
        c.execute(
            "INSERT INTO strata_job_queues (name, paused) VALUES ('q1', 1)",
            [],
        )?;
        assert!(claim(&c, &ALL, 10, 1, 2, 1)?.is_empty());
        c.execute("UPDATE strata_job_queues SET paused = 0", [])?;
        let not_a = Filter {
            queues: Some(r#"["q1"]"#),
            kinds: None,
            full: r#"["a"]"#,
        };
        assert!(
            claim(&c, &not_a, 10, 1, 2, 1)?.is_empty(),
            "a kind at its limit waits"
        );
        assert_eq!(claim(&c, &ALL, 10, 1, 2, 1)?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_lost_lease_changes_nothing_and_an_expired_one_is_reclaimed() -> Result<()> {
        let c = conn()?;
        let id = add(&c, "x", Priority::Normal, 0)?;
        claim(&c, &ALL, 1, 1, 100, 5)?;
        assert!(!complete(&c, id, 6)?, "another token");
        assert!(!retry(&c, id, 6, 0, "e")?);
        assert!(!bury(&c, id, 6, 0, "e")?);
        assert!(extend(&c, id, 5, 200)?);
        assert_eq!(reclaim_expired(&c, 150)?, 0, "the lease was extended");
        assert_eq!(reclaim_expired(&c, 250)?, 1);
        let job = claim(&c, &ALL, 1, 300, 400, 9)?.remove(0);
        assert_eq!((job.id, job.attempt), (id, 2));
        assert!(complete(&c, id, 9)?);
        Ok(())
    }
}
