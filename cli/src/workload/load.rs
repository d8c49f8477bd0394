//! The load runner: worker threads running the mixed workload, phase after phase, each
//! recording its own latencies, merged when the run ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::engine::Engine;
use super::latency::{round3, Latency, LatencySummary};
use super::ops::{Mix, Operation, Worker};
use super::phases::Phase;
use super::samples::{Sample, Sampler};
use super::seed::Dataset;
use strata::domain::ExpenseTracker;
use strata::{Error, Result};

/// When a run stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Phases run one after another, each with its threads for its duration.
    Phases(Vec<Phase>),
    /// `threads` workers share `iterations` calls (as evenly as they divide).
    Iterations {
        /// Worker threads.
        threads: usize,
        /// Calls in all.
        iterations: u64,
    },
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Threads and how long.
    pub schedule: Schedule,
    /// The share of calls that are reads, 0 to 1.
    pub read_ratio: f64,
    /// Zipf exponent of the keys (0 uniform).
    pub zipf: f64,
    /// Seed of the workers' generators: equal options draw equal keys.
    pub seed: u64,
}

impl LoadOptions {
    /// Checks the options: a read ratio within 0..=1, a finite skew >= 0, at least one phase,
    /// one thread and one iteration.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, value: String, reason: &str| {
            Err(Error::InvalidValue {
                field,
                value,
                reason: reason.to_owned(),
            })
        };
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return invalid(
                "read ratio",
                self.read_ratio.to_string(),
                "must be within 0 and 1",
            );
        }
        if !self.zipf.is_finite() || self.zipf < 0.0 {
            return invalid("zipf", self.zipf.to_string(), "must be a number >= 0");
        }
        match &self.schedule {
            Schedule::Phases(phases) if phases.is_empty() => {
                invalid("phases", String::new(), "at least one phase is needed")
            }
            Schedule::Phases(phases) => match phases.iter().find(|p| p.threads == 0) {
                Some(p) => invalid("threads", p.name.clone(), "must be at least 1"),
                None => Ok(()),
            },
            Schedule::Iterations { threads: 0, .. } => {
                invalid("threads", "0".into(), "must be at least 1")
            }
            Schedule::Iterations { iterations: 0, .. } => {
                invalid("iterations", "0".into(), "must be at least 1")
            }
            Schedule::Iterations { .. } => Ok(()),
        }
    }

    /// The longest thread count of the schedule.
    pub fn max_threads(&self) -> usize {
        match &self.schedule {
            Schedule::Phases(p) => p.iter().map(|p| p.threads).max().unwrap_or(0),
            Schedule::Iterations { threads, .. } => *threads,
        }
    }
}

/// Where a run is, for progress bars; passed to the caller about ten times a second.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The running phase's name (`main` for a run by iterations).
    pub phase: String,
    /// Wall time since the run started.
    pub elapsed: Duration,
    /// Calls done so far, all threads together.
    pub ops: u64,
    /// How far the run is, 0 to 1 (by time for phases, by calls for iterations).
    pub fraction: f64,
}

/// One phase's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseResult {
    /// The phase's name.
    pub name: String,
    /// Its worker threads.
    pub threads: usize,
    /// Its wall time; serialized as `elapsed_ms`.
    #[serde(rename = "elapsed_ms", with = "super::phases::millis")]
    pub elapsed: Duration,
    /// Calls done (errors included).
    pub ops: u64,
    /// Calls per second.
    pub throughput: f64,
}

/// What a run did: latencies per operation, the phases, and the first error of each
/// operation that had errors.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Latencies of each operation, in [`Operation::ALL`] order.
    pub operations: Vec<(Operation, Latency)>,
    /// The phases, in the order they ran.
    pub phases: Vec<PhaseResult>,
    /// The first error message of each operation that failed at least once, by name.
    pub first_errors: BTreeMap<&'static str, String>,
    /// The run over time, about one sample a second.
    pub samples: Vec<Sample>,
}

impl LoadResult {
    /// Successful calls of all operations.
    pub fn ok_ops(&self) -> u64 {
        self.operations.iter().map(|(_, l)| l.count()).sum()
    }

    /// Failed calls of all operations.
    pub fn errors(&self) -> u64 {
        self.operations.iter().map(|(_, l)| l.errors()).sum()
    }

    /// Successful calls per second of wall time.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            round3(self.ok_ops() as f64 / secs)
        } else {
            0.0
        }
    }

    /// Every successful call of every operation in one summary: the run's own percentiles.
    pub fn overall(&self) -> LatencySummary {
        let mut all = Latency::new();
        for (_, l) in &self.operations {
            all.merge(l);
        }
        all.summary(self.elapsed)
    }
}

/// What one worker thread hands back.
struct ThreadResult {
    latencies: Vec<Latency>,
    first_errors: Vec<Option<String>>,
}

/// How often workers publish their call count for progress.
const PUBLISH_EVERY: u64 = 64;

/// Runs the workload on `tracker` over `data` as `options` say, calling `progress` about ten
/// times a second from the calling thread.
pub fn run(
    tracker: &ExpenseTracker,
    data: Dataset,
    options: &LoadOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<LoadResult> {
    run_on(&Engine::Strata(tracker.clone()), data, options, progress)
}

/// Runs the workload on `engine` (strata's tracker or the raw engine) over `data` as
/// `options` say, calling `progress` about ten times a second from the calling thread and
/// sampling the run once a second.
pub fn run_on(
    engine: &Engine,
    data: Dataset,
    options: &LoadOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<LoadResult> {
    options.validate()?;
    if data.is_empty() {
        return Err(Error::InvalidValue {
            field: "database",
            value: engine.path().display().to_string(),
            reason: "has no users to run a workload on (seed it first)".into(),
        });
    }
    let mix = Mix::new(options.read_ratio);
    let start = Instant::now();
    let done = AtomicU64::new(0);
    let mut latencies: Vec<Latency> = Operation::ALL.iter().map(|_| Latency::new()).collect();
    let mut first_errors: Vec<Option<String>> = vec![None; Operation::ALL.len()];
    let mut phases = Vec::new();
    let mut sampler = Sampler::new(engine, start);

    let plan: Vec<(String, usize, Limit)> = match &options.schedule {
        Schedule::Phases(list) => list
            .iter()
            .map(|p| (p.name.clone(), p.threads, Limit::Time(p.duration)))
            .collect(),
        Schedule::Iterations {
            threads,
            iterations,
        } => vec![("main".to_owned(), *threads, Limit::Calls(*iterations))],
    };
    let planned_time: Duration = plan
        .iter()
        .map(|(_, _, l)| match l {
            Limit::Time(d) => *d,
            Limit::Calls(_) => Duration::ZERO,
        })
        .sum();

    for (index, (name, threads, limit)) in plan.iter().enumerate() {
        let phase_start = Instant::now();
        let ops_before = done.load(Ordering::Relaxed);
        let workers = (0..*threads)
            .map(|t| {
                let seed = options.seed ^ ((index as u64) << 32) ^ t as u64;
                Worker::new(engine.clone(), data, options.zipf, seed)
            })
            .collect::<Result<Vec<_>>>()?;
        let results: Vec<ThreadResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .into_iter()
                .enumerate()
                .map(|(t, worker)| {
                    let calls = match limit {
                        Limit::Calls(n) => Some(share(*n, *threads as u64, t as u64)),
                        Limit::Time(_) => None,
                    };
                    let deadline = match limit {
                        Limit::Time(d) => Some(phase_start + *d),
                        Limit::Calls(_) => None,
                    };
                    let (mix, done) = (&mix, &done);
                    scope.spawn(move || work(worker, mix, deadline, calls, done))
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                let ops = done.load(Ordering::Relaxed);
                let fraction = match limit {
                    Limit::Time(_) if planned_time > Duration::ZERO => {
                        start.elapsed().as_secs_f64() / planned_time.as_secs_f64()
                    }
                    Limit::Calls(n) => (ops - ops_before) as f64 / (*n).max(1) as f64,
                    Limit::Time(_) => 0.0,
                };
                progress(&Progress {
                    phase: name.clone(),
                    elapsed: start.elapsed(),
                    ops,
                    fraction: fraction.clamp(0.0, 1.0),
                });
                sampler.tick(name, *threads, ops);
                std::thread::sleep(Duration::from_millis(100));
            }
            handles
                .into_iter()
                .map(|h| {
                    // The panic's message is on stderr already (the default hook printed it).
                    h.join().map_err(|_| Error::Panic {
                        message: "a load worker panicked".to_owned(),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let elapsed = phase_start.elapsed();
        sampler.end_phase(name, *threads, done.load(Ordering::Relaxed));
        let ops = done.load(Ordering::Relaxed) - ops_before;
        for result in results {
            for (i, l) in result.latencies.iter().enumerate() {
                latencies[i].merge(l);
            }
            for (i, e) in result.first_errors.into_iter().enumerate() {
                if first_errors[i].is_none() {
                    first_errors[i] = e;
                }
            }
        }
        phases.push(PhaseResult {
            name: name.clone(),
            threads: *threads,
            elapsed,
            ops,
            throughput: round3(ops as f64 / elapsed.as_secs_f64().max(1e-9)),
        });
    }
    progress(&Progress {
        phase: plan.last().map(|p| p.0.clone()).unwrap_or_default(),
        elapsed: start.elapsed(),
        ops: done.load(Ordering::Relaxed),
        fraction: 1.0,
    });

    Ok(LoadResult {
        elapsed: start.elapsed(),
        operations: Operation::ALL.iter().copied().zip(latencies).collect(),
        phases,
        first_errors: Operation::ALL
            .iter()
            .zip(first_errors)
            .filter_map(|(op, e)| Some((op.name(), e?)))
            .collect(),
        samples: sampler.finish(),
    })
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Time(Duration),
    Calls(u64),
}

/// Thread `t`'s share of `n` calls over `threads` threads.
fn share(n: u64, threads: u64, t: u64) -> u64 {
    n / threads + u64::from(t < n % threads)
}

/// One worker thread: draws and runs operations until the deadline or its call count.
fn work(
    mut worker: Worker,
    mix: &Mix,
    deadline: Option<Instant>,
    calls: Option<u64>,
    done: &AtomicU64,
) -> ThreadResult {
    let mut latencies: Vec<Latency> = Operation::ALL.iter().map(|_| Latency::new()).collect();
    let mut first_errors: Vec<Option<String>> = vec![None; Operation::ALL.len()];
    let mut n: u64 = 0;
    let mut unpublished = 0;
    let mut now = Instant::now();
    loop {
        if calls.is_some_and(|c| n >= c) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        let op = mix.next(worker.rng());
        let result = worker.run(op);
        let end = Instant::now();
        let slot = op.index();
        match result {
            Ok(()) => latencies[slot].record(end - now),
            Err(err) => {
                latencies[slot].record_error();
                if first_errors[slot].is_none() {
                    first_errors[slot] = Some(err.one_line());
                }
            }
        }
        now = end;
        n += 1;
        unpublished += 1;
        if unpublished == PUBLISH_EVERY {
            done.fetch_add(unpublished, Ordering::Relaxed);
            unpublished = 0;
        }
    }
    done.fetch_add(unpublished, Ordering::Relaxed);
    ThreadResult {
        latencies,
        first_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::seed::{seed, Scale};
    use strata::Db;

    fn seeded() -> Result<(Db, ExpenseTracker, Dataset)> {
        let tracker = ExpenseTracker::open_in_memory()?;
        let db = tracker.db().clone();
        seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?;
        let data = Dataset::read(&db)?;
        Ok((db, tracker, data))
    }

    #[test]
    fn iterations_run_exactly() -> Result<()> {
        let (_db, tracker, data) = seeded()?;
        let options = LoadOptions {
            schedule: Schedule::Iterations {
                threads: 3,
                iterations: 1001,
            },
            read_ratio: 0.8,
            zipf: 1.0,
            seed: 1,
        };
        let mut calls = 0;
        let result = run(&tracker, data, &options, &mut |_| calls += 1)?;
        assert_eq!(result.ok_ops() + result.errors(), 1001);
        assert_eq!(result.errors(), 0, "{:?}", result.first_errors);
        assert!(calls >= 1);
        assert_eq!(result.phases.len(), 1);
        assert_eq!(result.phases[0].ops, 1001);
        Ok(())
    }

    #[test]
    fn phases_run_in_order() -> Result<()> {
        let (_db, tracker, data) = seeded()?;
        let phases = super::super::phases::parse_phases("a:100ms:1,b:100ms:2")?;
        let options = LoadOptions {
            schedule: Schedule::Phases(phases),
            read_ratio: 0.9,
            zipf: 0.0,
            seed: 2,
        };
        let result = run(&tracker, data, &options, &mut |_| {})?;
        let names: Vec<&str> = result.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(result.elapsed >= Duration::from_millis(200));
        assert!(result.phases.iter().all(|p| p.ops > 0));
        Ok(())
    }

    #[test]
    fn bad_options_are_refused() -> Result<()> {
        let (_db, tracker, data) = seeded()?;
        let good = LoadOptions {
            schedule: Schedule::Iterations {
                threads: 1,
                iterations: 1,
            },
            read_ratio: 0.5,
            zipf: 1.0,
            seed: 0,
        };
        let mut bad = vec![good.clone(), good.clone(), good.clone(), good.clone()];
        bad[0].read_ratio = 1.5;
        bad[1].zipf = -1.0;
        bad[2].schedule = Schedule::Phases(Vec::new());
        bad[3].schedule = Schedule::Iterations {
            threads: 0,
            iterations: 5,
        };
        for options in bad {
            assert!(run(&tracker, data, &options, &mut |_| {}).is_err());
        }
        let empty = Dataset {
            users: 0,
            categories: 0,
            expenses: 0,
        };
        assert!(run(&tracker, empty, &good, &mut |_| {}).is_err());
        assert_eq!(share(10, 3, 0) + share(10, 3, 1) + share(10, 3, 2), 10);
        Ok(())
    }
}
