//! The raw engine's job worker: the `suggest_category` jobs that the raw engine's
//! `create_expense` enqueues, run the way a careful service author would without strata.
//!
//! One thread. The engine's `create_expense` wakes it after the COMMIT that enqueued a job (a
//! condition variable: one process, so no need to poll for its own jobs), and it polls every
//! [`POLL_INTERVAL`] for jobs already in the file (or whose lease expired). A claim takes up to
//! [`BATCH`] due jobs in one short `BEGIN IMMEDIATE` transaction (state, lease, attempts, as
//! strata's queue writes them); each job then reads its expense and the keywords outside any
//! transaction and, in one `BEGIN IMMEDIATE` transaction, gives the expense its category
//! (resolved or created as strata's handler does) and deletes the job row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::raw::RawEngine;
use strata::domain::{now_millis, SuggestCategory, SUGGEST_CATEGORY};
use strata::{Error, Result};

/// How often the worker looks for jobs when nothing wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Jobs one claim takes at most (strata's pool claims its threads plus its prefetch: 1 + 4;
/// a simple worker takes a small fixed batch).
pub const BATCH: usize = 4;
/// How long a claim holds a job, as strata's default lease.
const LEASE_MS: i64 = 30_000;
/// The wait before a failed job runs again.
const RETRY_MS: i64 = 1_000;

/// The literal LIMIT keeps the statement prepared once: a bound `LIMIT ?` makes SQLite plan
/// (and re-prepare) it on every run.
const CLAIM: &str = "UPDATE strata_jobs
 SET state = 1, attempts = attempts + 1, lease_until = ?1, lease_token = ?2,
     first_run_at = coalesce(first_run_at, ?3)
 WHERE id IN (SELECT id FROM strata_jobs WHERE state = 0 AND run_at <= ?3 AND kind = ?4
              ORDER BY priority, run_at, id LIMIT 4)
 RETURNING id, payload, run_at, attempts, max_attempts";
/// Jobs whose worker died holding them wait again once their lease is over.
const RECLAIM: &str = "UPDATE strata_jobs SET state = 0, lease_until = NULL, lease_token = NULL \
     WHERE state = 1 AND lease_until < ?1 AND kind = ?2";
const CATEGORY_BY_NAME: &str = "SELECT id FROM categories WHERE user_id = ?1 AND name = ?2 LIMIT 1";
const INSERT_CATEGORY: &str =
    "INSERT INTO categories (user_id, name, created_at) VALUES (?1, ?2, ?3)";
const SET_CATEGORY: &str =
    "UPDATE expenses SET category_id = ?2 WHERE id = ?1 AND category_id IS NULL";
const DELETE_JOB: &str = "DELETE FROM strata_jobs WHERE id = ?1 AND lease_token = ?2";
const RETRY_JOB: &str = "UPDATE strata_jobs SET state = 0, run_at = ?3, lease_until = NULL, \
     lease_token = NULL, last_error = ?4 WHERE id = ?1 AND lease_token = ?2";
const BURY_JOB: &str = "INSERT INTO strata_dead_jobs (id, queue, kind, payload, priority, \
     max_attempts, unique_key, attempts, enqueued_at, first_run_at, failed_at, last_error) \
     SELECT id, queue, kind, payload, priority, max_attempts, unique_key, attempts, \
     enqueued_at, first_run_at, ?3, ?4 FROM strata_jobs WHERE id = ?1 AND lease_token = ?2";
/// A claimed job the worker did not start (it was stopped) waits for the next run, its
/// attempt not counted.
const RELEASE_JOB: &str = "UPDATE strata_jobs SET state = 0, attempts = attempts - 1, \
     lease_until = NULL, lease_token = NULL WHERE id = ?1 AND lease_token = ?2";

/// The raw engine's wake-up: set after a commit that enqueued a job, or to stop the worker.
#[derive(Debug, Default)]
pub(super) struct Wake {
    state: Mutex<WakeState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct WakeState {
    pending: bool,
    stop: bool,
}

impl Wake {
    /// A job was committed: wake the worker.
    pub(super) fn notify(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending = true;
        self.cv.notify_one();
    }

    fn set_stop(&self, stop: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.stop = stop;
        state.pending = false;
        self.cv.notify_one();
    }

    fn stopped(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop
    }

    /// Waits until woken, stopped or `timeout` passed; true when the wait timed out.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.pending && !state.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self
                .cv
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.pending = false;
        false
    }
}

/// What the raw worker did: completed and failed jobs, enqueue-to-start lag and run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RawJobStats {
    /// Jobs whose expense was handled and whose row was deleted.
    pub completed: u64,
    /// Runs that failed (retried after a second, or dead-lettered after their last attempt).
    pub failed: u64,
    /// Claim transactions that failed (the worker tries again at the next poll).
    pub failed_claims: u64,
    /// From the time a job was due to its start, median, µs (millisecond resolution, as
    /// strata's).
    pub lag_p50_us: f64,
    /// The same, 99th percentile.
    pub lag_p99_us: f64,
    /// A job's run time (its reads and its transaction), median, µs.
    pub run_p50_us: f64,
    /// The same, 99th percentile.
    pub run_p99_us: f64,
}

#[derive(Debug)]
struct Shared {
    completed: AtomicU64,
    failed: AtomicU64,
    failed_claims: AtomicU64,
    histograms: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Shared {
    fn stats(&self) -> RawJobStats {
        let h = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
        RawJobStats {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failed_claims: self.failed_claims.load(Ordering::Relaxed),
            lag_p50_us: q(&h.0, 0.5),
            lag_p99_us: q(&h.0, 0.99),
            run_p50_us: q(&h.1, 0.5),
            run_p99_us: q(&h.1, 0.99),
        }
    }
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(Error::closure)
}

/// The raw engine's running job worker; [`shutdown`](RawJobWorker::shutdown) stops it.
#[derive(Debug)]
pub struct RawJobWorker {
    engine: RawEngine,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RawJobWorker {
    /// Starts the worker thread on `engine`.
    pub fn start(engine: &RawEngine) -> Result<RawJobWorker> {
        let shared = Arc::new(Shared {
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_claims: AtomicU64::new(0),
            histograms: Mutex::new((histogram()?, histogram()?)),
        });
        engine.wake().set_stop(false);
        let (worker, state) = (engine.clone(), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("raw-jobs".into())
            .spawn(move || run(&worker, &state))
            .map_err(Error::closure)?;
        Ok(RawJobWorker {
            engine: engine.clone(),
            shared,
            thread: Some(thread),
        })
    }

    /// What the worker did so far.
    pub fn stats(&self) -> RawJobStats {
        self.shared.stats()
    }

    /// Stops claiming, lets the job in hand finish, puts the claimed jobs not started back,
    /// joins the thread; returns what the worker did.
    pub fn shutdown(mut self) -> RawJobStats {
        self.stop();
        self.shared.stats()
    }

    fn stop(&mut self) {
        self.engine.wake().set_stop(true);
        if let Some(thread) = self.thread.take() {
            // The loop returns rather than panics; a panic there has nothing left to report.
            let _ = thread.join();
        }
    }
}

impl Drop for RawJobWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `suggest_category` jobs in the engine's table now, waiting or leased.
pub fn jobs_left(engine: &RawEngine) -> Result<u64> {
    engine.count(
        "SELECT count(*) FROM strata_jobs WHERE kind = ?1",
        SUGGEST_CATEGORY,
    )
}

/// A job the worker holds a lease on.
struct Claimed {
    id: i64,
    payload: String,
    run_at: i64,
    attempt: i64,
    max_attempts: i64,
}

fn run(engine: &RawEngine, shared: &Shared) {
    // Unique enough for one worker per process: a later run's token differs from an earlier
    // run's, so a leftover lease is never mistaken for this one's.
    let mut token = now_millis() << 16;
    let mut reclaim = true;
    while !engine.wake().stopped() {
        token += 1;
        let jobs = claim(engine, token, reclaim).unwrap_or_else(|_| {
            shared.failed_claims.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        });
        // A full batch may have left more behind: claim again at once. Otherwise sleep until
        // a commit wakes the worker (one during these jobs counts) or the poll interval passes.
        let full = jobs.len() == BATCH;
        run_all(engine, shared, token, jobs);
        reclaim = !full && engine.wake().wait(POLL_INTERVAL);
    }
}

/// Runs the claimed jobs in turn; once the worker is stopped, releases the ones not started.
fn run_all(engine: &RawEngine, shared: &Shared, token: i64, jobs: Vec<Claimed>) {
    for job in jobs {
        if engine.wake().stopped() {
            let _ = engine.write(|c| release(c, job.id, token));
            continue;
        }
        let lag_ms = u64::try_from(now_millis() - job.run_at).unwrap_or(0);
        let start = Instant::now();
        let outcome = run_job(engine, &job, token);
        let elapsed = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        {
            let mut h = shared
                .histograms
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (lag, run) = &mut *h;
            let (lag_high, run_high) = (lag.high(), run.high());
            // Both values are capped at the bounds, so recording cannot fail.
            let _ = lag.record(lag_ms.saturating_mul(1000).min(lag_high));
            let _ = run.record(elapsed.min(run_high));
        }
        match outcome {
            Ok(()) => {
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                // If this fails too, the lease expires and a later poll takes the job again.
                let _ = engine.write(|c| fail(c, &job, token, &err.to_string()));
            }
        }
    }
}

fn claim(engine: &RawEngine, token: i64, reclaim: bool) -> Result<Vec<Claimed>> {
    engine.write(|c| {
        let now = now_millis();
        if reclaim {
            c.prepare_cached(RECLAIM)?
                .execute((now, SUGGEST_CATEGORY))?;
        }
        let mut stmt = c.prepare_cached(CLAIM)?;
        let rows = stmt.query_map((now + LEASE_MS, token, now, SUGGEST_CATEGORY), |r| {
            Ok(Claimed {
                id: r.get(0)?,
                payload: r.get(1)?,
                run_at: r.get(2)?,
                attempt: r.get(3)?,
                max_attempts: r.get(4)?,
            })
        })?;
        let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // RETURNING comes in no particular order.
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    })
}

/// The expense gets the category its description suggests (unless it has one or is gone)
/// and the job row goes, in one transaction.
fn run_job(engine: &RawEngine, job: &Claimed, token: i64) -> Result<()> {
    let payload: SuggestCategory = serde_json::from_str(&job.payload).map_err(Error::closure)?;
    let suggestion = match engine.get_expense(payload.expense_id)? {
        Some(e) if e.category_id.is_none() => engine
            .suggest_category(&e.description)?
            .map(|name| (e.user_id, name)),
        _ => None,
    };
    engine.write(|c| {
        if let Some((user_id, name)) = &suggestion {
            let existing: Option<i64> = c
                .prepare_cached(CATEGORY_BY_NAME)?
                .query_row((user_id, name), |r| r.get(0))
                .optional()?;
            let category = match existing {
                Some(id) => id,
                None => {
                    c.prepare_cached(INSERT_CATEGORY)?
                        .execute((user_id, name, now_millis()))?;
                    c.last_insert_rowid()
                }
            };
            c.prepare_cached(SET_CATEGORY)?
                .execute((payload.expense_id, category))?;
        }
        c.prepare_cached(DELETE_JOB)?.execute((job.id, token))?;
        Ok(())
    })
}

/// A failed run waits a second before the next attempt; its last attempt goes to the dead
/// letters.
fn fail(c: &Connection, job: &Claimed, token: i64, error: &str) -> rusqlite::Result<()> {
    let now = now_millis();
    if job.attempt >= job.max_attempts {
        c.prepare_cached(BURY_JOB)?
            .execute((job.id, token, now, error))?;
        c.prepare_cached(DELETE_JOB)?.execute((job.id, token))?;
    } else {
        c.prepare_cached(RETRY_JOB)?
            .execute((job.id, token, now + RETRY_MS, error))?;
    }
    Ok(())
}

fn release(c: &Connection, id: i64, token: i64) -> rusqlite::Result<()> {
    c.prepare_cached(RELEASE_JOB)?.execute((id, token))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::raw::copy_database;
    use crate::workload::seed::{seed, Scale};
    use strata::domain::{Expense, ExpenseTracker};

    fn uncategorized(user_id: i64, description: &str) -> Expense {
        Expense {
            id: 0,
            user_id,
            category_id: None,
            amount_cents: 1234,
            description: description.into(),
            expense_date: "2025-03-01".into(),
            created_at: now_millis(),
        }
    }

    /// Waits (without a time limit of its own: the test harness has one) until the worker has
    /// completed `n` jobs.
    fn until_completed(worker: &RawJobWorker, n: u64) {
        while worker.stats().completed < n {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn category_of(raw: &RawEngine, expense: i64) -> Result<Option<String>> {
        let Some(e) = raw.get_expense(expense)? else {
            return Err(Error::closure("the expense is gone"));
        };
        let Some(id) = e.category_id else {
            return Ok(None);
        };
        let categories = raw.categories_of(e.user_id)?;
        Ok(categories.into_iter().find(|c| c.id == id).map(|c| c.name))
    }

    #[test]
    fn the_worker_assigns_suggested_categories_and_deletes_the_jobs() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let path = dir.path().join("seed.db");
        let tracker = ExpenseTracker::open(&path)?.with_category_jobs()?;
        seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?;
        let copy = dir.path().join("raw.db");
        copy_database(&path, &copy)?;
        let raw = RawEngine::open(&copy, 3)?;

        // Enqueued before the worker starts: found by its first claim, not by a wake-up.
        let coffee = raw.create_expense(&uncategorized(7, "coffee at the station"))?;
        let nothing = raw.create_expense(&uncategorized(7, "something unlisted"))?;
        let suggestion = raw.suggest_category("coffee at the station")?;
        assert_eq!(
            suggestion,
            tracker.suggest_category("coffee at the station")?
        );
        assert!(suggestion.is_some());
        assert_eq!(jobs_left(&raw)?, 2);
        assert_eq!(category_of(&raw, coffee)?, None);

        let worker = RawJobWorker::start(&raw)?;
        until_completed(&worker, 2);
        assert_eq!(category_of(&raw, coffee)?, suggestion);
        assert_eq!(category_of(&raw, nothing)?, None, "no keyword, no category");
        assert_eq!(jobs_left(&raw)?, 0);

        // A user without a category of the suggested name gets one, as strata's handler does;
        // an expense created while the worker waits wakes it.
        let user = raw.write(|c| {
            c.execute(
                "INSERT INTO users (email, name, created_at) VALUES ('new@x', 'New', 1)",
                [],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        let train = raw.create_expense(&uncategorized(user, "train to work"))?;
        until_completed(&worker, 3);
        let stats = worker.shutdown();
        assert_eq!(
            category_of(&raw, train)?,
            raw.suggest_category("train to work")?
        );
        assert_eq!(raw.categories_of(user)?.len(), 1);
        assert_eq!(
            (stats.completed, stats.failed, stats.failed_claims),
            (3, 0, 0)
        );
        assert_eq!(jobs_left(&raw)?, 0);

        // Once stopped, jobs wait in the table for the next run.
        raw.create_expense(&uncategorized(7, "pizza tonight"))?;
        assert_eq!(jobs_left(&raw)?, 1);
        Ok(())
    }
}
