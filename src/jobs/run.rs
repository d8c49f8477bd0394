//! The pool's threads: the dispatcher claims due jobs in short writes and keeps their leases
//! alive; the workers run handlers and record each outcome.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use super::context::JobContext;
use super::schema::{duration_ms, now_ms, system_time};
use super::stats::Ended;
use super::store::{self, Claimed, Filter};
use super::worker::{Completed, Failure, Finished, Handler, JobError, PoolInner};
use crate::error::{panic_error, Result};

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// A seed that differs between processes and pools: lease tokens must not collide across
/// processes working one file.
fn seed() -> u64 {
    let local = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ (std::ptr::from_ref(&local) as u64)
}

/// `first` doubled for each run after the first, capped at `max`, scaled by `jitter`.
fn backoff(first: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let doubled = first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
        .min(max);
    doubled.mul_f64(jitter)
}

impl PoolInner {
    /// The dispatcher: claims as many due jobs as there is room for, then sleeps until woken
    /// (an enqueue commit, a finished run, a resume), the next run time, the next heartbeat or
    /// the poll interval, whichever comes first.
    pub(crate) fn dispatch_loop(&self) {
        let mut rng = Rng::seed_from_u64(seed());
        let s = &self.settings;
        let heartbeat_every = s.lease / 3;
        let mut last_reclaim: Option<Instant> = None;
        let mut last_heartbeat = Instant::now();
        // When each schedule's next slot starts (Unix ms); 0 fires the current slot first.
        let mut next_fire = vec![0_i64; s.recurring.len()];
        loop {
            if self.state.lock().stopping {
                return;
            }
            self.fire_schedules(&mut next_fire);
            if last_heartbeat.elapsed() >= heartbeat_every {
                self.heartbeat();
                last_heartbeat = Instant::now();
            }
            let (want, full) = self.room();
            let finished = std::mem::take(&mut self.state.lock().finished);
            let mut next_due = None;
            if want > 0 || !finished.is_empty() {
                let reclaim =
                    want > 0 && last_reclaim.is_none_or(|at| at.elapsed() >= s.poll_interval);
                match self.claim(want, &full, reclaim, rng.random(), &finished) {
                    Ok((jobs, due)) => {
                        self.announce(&finished);
                        if reclaim {
                            last_reclaim = Some(Instant::now());
                        }
                        let got = jobs.len();
                        self.hand_out(jobs);
                        if want > 0 && got == want {
                            continue;
                        }
                        next_due = due;
                    }
                    Err(err) => {
                        tracing::warn!(%err, "job claim failed; retrying after the poll interval")
                    }
                }
            }
            let mut timeout = s
                .poll_interval
                .min(heartbeat_every.saturating_sub(last_heartbeat.elapsed()));
            if let Some(due) = next_due.into_iter().chain(next_fire.iter().copied()).min() {
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                timeout = timeout.min(Duration::from_millis(wait));
            }
            self.waker.wait(timeout);
        }
    }

    /// Fires the schedules whose slot has begun; failures are retried at the next wake.
    fn fire_schedules(&self, next_fire: &mut [i64]) {
        let now = now_ms();
        for (schedule, next) in self.settings.recurring.iter().zip(next_fire.iter_mut()) {
            if now < *next {
                continue;
            }
            match self
                .queue
                .db
                .write(|c| super::recurring::fire_on(c, schedule, now))
            {
                Ok(_) => *next = schedule.next_slot_at(now),
                Err(err) => {
                    tracing::warn!(%err, schedule = %schedule.name, "firing a recurring job failed")
                }
            }
        }
    }

    /// How many jobs to claim now, and the kinds at their concurrency limit (JSON array).
    fn room(&self) -> (usize, String) {
        let state = self.state.lock();
        let held = state.ready.len() + state.running.len();
        let mut want = (self.settings.threads + self.settings.prefetch).saturating_sub(held);
        let mut full: Vec<&str> = Vec::new();
        for (kind, limit) in &self.settings.limits {
            let room = limit.saturating_sub(state.per_kind.get(kind).copied().unwrap_or(0));
            if room == 0 {
                full.push(kind);
            } else {
                // One claim could take all its jobs of a limited kind: it takes no more jobs
                // than that kind has room for, and the next claim takes more.
                want = want.min(room);
            }
        }
        (
            want,
            serde_json::to_string(&full).unwrap_or_else(|_| "[]".into()),
        )
    }

    fn claim(
        &self,
        want: usize,
        full: &str,
        reclaim: bool,
        token: i64,
        finished: &[Finished],
    ) -> Result<(Vec<Claimed>, Option<i64>)> {
        let s = &self.settings;
        let filter = Filter {
            queues: s.queues.as_deref(),
            kinds: match s.unknown {
                super::UnknownKind::Leave => Some(&self.kinds),
                super::UnknownKind::DeadLetter => None,
            },
            full,
        };
        self.queue.db.write(|c| {
            let now = now_ms();
            for job in finished {
                if !store::complete(c, job.id, job.token)? {
                    tracing::warn!(id = job.id, "job completed after its lease was lost");
                }
            }
            if want == 0 {
                return Ok((Vec::new(), None));
            }
            if reclaim {
                store::reclaim_expired(c, now)?;
            }
            let lease_until = now.saturating_add(duration_ms(s.lease));
            let jobs = store::claim(c, &filter, want, now, lease_until, token)?;
            let due = if jobs.len() < want {
                store::next_due(c, now)?
            } else {
                None
            };
            Ok((jobs, due))
        })
    }

    fn hand_out(&self, jobs: Vec<Claimed>) {
        if jobs.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        if state.stopping {
            // A claim that committed while the pool began to stop: its jobs were not in
            // `ready` when the shutdown drained it, and no worker will take them now.
            drop(state);
            let released = self.release(&jobs);
            self.state.lock().released_late += released;
            return;
        }
        for job in jobs {
            *state.per_kind.entry(job.kind.clone()).or_default() += 1;
            state.ready.push_back(job);
        }
        drop(state);
        self.work.notify_all();
    }

    /// Counts and notifies completed runs (once their completion committed).
    pub(crate) fn announce(&self, finished: &[Finished]) {
        if finished.is_empty() {
            return;
        }
        let stats = &self.queue.shared.stats;
        let mut receivers = self.completed.lock();
        for f in finished {
            stats.ended(&f.kind, Some(f.run_time), Ended::Completed);
            let done = Completed {
                id: f.id,
                kind: f.kind.clone(),
                attempt: f.attempt,
                run_time: f.run_time,
            };
            receivers.retain(|tx| {
                !matches!(
                    tx.try_send(done.clone()),
                    Err(std::sync::mpsc::TrySendError::Disconnected(_))
                )
            });
        }
    }

    /// Completes the runs the dispatcher has not (the pool is stopping).
    pub(crate) fn flush_finished(&self) {
        let finished = std::mem::take(&mut self.state.lock().finished);
        if finished.is_empty() {
            return;
        }
        let result = self.queue.db.write(|c| {
            for job in &finished {
                store::complete(c, job.id, job.token)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => self.announce(&finished),
            Err(err) => {
                tracing::warn!(%err, "completing finished jobs failed; they will run again")
            }
        }
    }

    /// Extends the leases of every job the pool holds, in one write.
    fn heartbeat(&self) {
        let held: Vec<(i64, i64)> = {
            let state = self.state.lock();
            state
                .ready
                .iter()
                .map(|j| (j.id, j.token))
                .chain(state.running.iter().map(|(id, token)| (*id, *token)))
                .chain(state.finished.iter().map(|f| (f.id, f.token)))
                .collect()
        };
        if held.is_empty() {
            return;
        }
        let until = now_ms().saturating_add(duration_ms(self.settings.lease));
        let result = self.queue.db.write(|c| {
            for (id, token) in &held {
                store::extend(c, *id, *token, until)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(%err, "job lease heartbeat failed");
        }
    }

    /// Hands unstarted jobs back to the queue; returns how many were.
    pub(crate) fn release(&self, jobs: &[Claimed]) -> usize {
        if jobs.is_empty() {
            return 0;
        }
        let result = self.queue.db.write(|c| {
            let mut n = 0;
            for job in jobs {
                n += usize::from(store::release(c, job.id, job.token)?);
            }
            Ok(n)
        });
        self.queue.shared.wake_all();
        result.unwrap_or_else(|err| {
            tracing::warn!(%err, "releasing claimed jobs failed; their leases will expire");
            0
        })
    }

    /// A worker thread: runs ready jobs until the pool stops.
    pub(crate) fn work_loop(&self) {
        let mut rng = Rng::seed_from_u64(seed());
        loop {
            let job = {
                let mut state = self.state.lock();
                loop {
                    if state.stopping {
                        return;
                    }
                    if let Some(job) = state.ready.pop_front() {
                        state.running.insert(job.id, job.token);
                        break job;
                    }
                    self.work.wait(&mut state);
                }
            };
            let (id, kind) = (job.id, job.kind.clone());
            self.run(job, &mut rng);
            let mut state = self.state.lock();
            state.running.remove(&id);
            if let Some(n) = state.per_kind.get_mut(&kind) {
                *n = n.saturating_sub(1);
            }
            let stopping = state.stopping;
            drop(state);
            if stopping {
                // The dispatcher may be gone: a handler that outlived the shutdown's wait
                // completes its own run.
                self.flush_finished();
            }
            self.waker.wake();
        }
    }

    fn run(&self, job: Claimed, rng: &mut Rng) {
        let stats = &self.queue.shared.stats;
        let lag = u64::try_from(now_ms() - job.run_at).unwrap_or(0);
        stats.started(&job.kind, Duration::from_millis(lag));
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            let reason = format!("no handler for kind {}", job.kind);
            return self.bury(&job, &reason, None);
        };
        // Shared with an async handler's future, which may outlive this run (a runtime that
        // shut down drops it whenever it likes).
        let ctx = Arc::new(JobContext {
            job,
            db: self.queue.db.clone(),
            lease: self.settings.lease,
            completed: AtomicBool::new(false),
        });
        let start = Instant::now();
        let outcome = match handler {
            Handler::Sync(handler) => {
                catch_unwind(AssertUnwindSafe(|| handler(&ctx, &ctx.job.payload))).unwrap_or_else(
                    |payload| Err(Failure::Handler(panic_error(payload).to_string())),
                )
            }
            // This thread waits for the future (parked), so that everything after the handler
            // stays on strata's threads and the pool's threads bound the futures in flight.
            #[cfg(feature = "tokio")]
            Handler::Async(handler) => match &self.runtime {
                Some(runtime) => super::tasks::run(runtime, &handler, &ctx),
                None => Err(Failure::Handler(
                    "no tokio runtime for an async handler".into(),
                )),
            },
        };
        let run_time = start.elapsed();
        let job = &ctx.job;
        match outcome {
            Ok(()) => {
                let finished = Finished {
                    id: job.id,
                    token: job.token,
                    kind: job.kind.clone(),
                    attempt: job.attempt,
                    run_time,
                };
                if ctx.completed.load(Ordering::Acquire) {
                    self.announce(std::slice::from_ref(&finished));
                } else {
                    // Completed by the dispatcher's next write, with its next claim: one
                    // commit for both (a crash before it runs the job again, as a crash
                    // before any completion would).
                    self.state.lock().finished.push(finished);
                }
            }
            Err(Failure::Payload(error)) => {
                let reason = format!("payload does not deserialize: {error}");
                self.bury(job, &reason, Some(run_time));
            }
            Err(Failure::Handler(error)) if job.attempt >= job.max_attempts => {
                self.bury(job, &error, Some(run_time));
            }
            Err(Failure::Handler(error)) => {
                let run_at = now_ms().saturating_add(duration_ms(self.backoff(job.attempt, rng)));
                let result = self
                    .queue
                    .db
                    .write(|c| store::retry(c, job.id, job.token, run_at, &error));
                if let Err(err) = result {
                    tracing::warn!(id = job.id, %err, "job retry failed; it will run again after its lease");
                }
                stats.ended(&job.kind, Some(run_time), Ended::Retried);
                self.notify_error(job, error, Some(run_at));
                // A pool that handles the kind may be idle until the retry is due.
                self.waker.wake();
            }
        }
    }

    /// The wait before the retry that follows run `attempt`: doubling from the first backoff,
    /// capped, less a random jitter of up to half (so that jobs failing together do not retry
    /// together).
    fn backoff(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let s = &self.settings;
        backoff(
            s.backoff,
            s.max_backoff,
            attempt,
            rng.random_range(0.5..=1.0),
        )
    }

    fn bury(&self, job: &Claimed, error: &str, run_time: Option<Duration>) {
        let result = self
            .queue
            .db
            .write(|c| store::bury(c, job.id, job.token, now_ms(), error));
        if let Err(err) = result {
            tracing::warn!(id = job.id, %err, "moving a job to the dead letters failed; it will run again");
        }
        self.queue
            .shared
            .stats
            .ended(&job.kind, run_time, Ended::Dead);
        self.notify_error(job, error.to_owned(), None);
    }

    fn notify_error(&self, job: &Claimed, error: String, retry_at: Option<i64>) {
        let event = JobError {
            id: job.id,
            kind: job.kind.clone(),
            attempt: job.attempt,
            error,
            retry_at: retry_at.map(system_time),
        };
        self.errors.lock().retain(|tx| {
            !matches!(
                tx.try_send(event.clone()),
                Err(std::sync::mpsc::TrySendError::Disconnected(_))
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_less_the_jitter() -> Result<()> {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let at = |attempt| backoff(first, max, attempt, 1.0);
        assert_eq!(at(1), Duration::from_millis(100));
        assert_eq!(at(2), Duration::from_millis(200));
        assert_eq!(at(4), Duration::from_millis(800));
        assert_eq!(at(5), max);
        assert_eq!(at(u32::MAX), max, "no overflow on absurd attempts");
        assert_eq!(backoff(first, max, 2, 0.5), Duration::from_millis(100));
        let mut rng = Rng::seed_from_u64(seed());
        for _ in 0..100 {
            let j: f64 = rng.random_range(0.5..=1.0);
            let d = backoff(first, max, 3, j);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
        Ok(())
    }
}
