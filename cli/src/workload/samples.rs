//! Samples over time: once a second during a run, the calls done and the engine's counters,
//! for the HTML report's charts (throughput, cache hit rate and group commit over time).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::engine::{Counters, Engine};
use super::latency::round3;

/// One interval of a run (about a second; the last of a phase may be shorter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds from the start of the run to the end of the interval.
    pub t_ms: u64,
    /// The phase that ran.
    pub phase: String,
    /// Its worker threads.
    pub threads: usize,
    /// Calls done in the interval (errors included).
    pub ops: u64,
    /// Calls per second over the interval.
    pub throughput: f64,
    /// Share of cache lookups that hit in the interval, 0 to 1; absent without lookups.
    pub hit_rate: Option<f64>,
    /// Write transactions committed in the interval.
    pub commits: u64,
    /// Write operations committed in the interval.
    pub writes: u64,
    /// Write operations per transaction in the interval; absent without commits.
    pub mean_group: Option<f64>,
}

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Takes samples from an engine's counters and the run's call count.
#[derive(Debug)]
pub(crate) struct Sampler {
    engine: Engine,
    start: Instant,
    last_at: Instant,
    last_ops: u64,
    last: Counters,
    samples: Vec<Sample>,
}

impl Sampler {
    /// A sampler whose run started at `start`.
    pub(crate) fn new(engine: &Engine, start: Instant) -> Sampler {
        Sampler {
            last: engine.counters(),
            engine: engine.clone(),
            start,
            last_at: start,
            last_ops: 0,
            samples: Vec::new(),
        }
    }

    /// Takes a sample when an interval has passed since the last one.
    pub(crate) fn tick(&mut self, phase: &str, threads: usize, ops: u64) {
        if self.last_at.elapsed() >= INTERVAL {
            self.take(phase, threads, ops);
        }
    }

    /// Closes a phase: takes a sample of what ran since the last one, unless less than half an
    /// interval passed (its rate would mostly show the workers stopping; those calls go to the
    /// next phase's first sample).
    pub(crate) fn end_phase(&mut self, phase: &str, threads: usize, ops: u64) {
        if self.last_at.elapsed() >= INTERVAL / 2 {
            self.take(phase, threads, ops);
        }
    }

    fn take(&mut self, phase: &str, threads: usize, ops: u64) {
        let now = Instant::now();
        let counters = self.engine.counters();
        let secs = (now - self.last_at).as_secs_f64().max(1e-9);
        let d_ops = ops.saturating_sub(self.last_ops);
        let hits = counters.cache_hits.saturating_sub(self.last.cache_hits);
        let misses = counters.cache_misses.saturating_sub(self.last.cache_misses);
        let commits = counters.commits.saturating_sub(self.last.commits);
        let writes = counters.writes.saturating_sub(self.last.writes);
        self.samples.push(Sample {
            t_ms: u64::try_from((now - self.start).as_millis()).unwrap_or(u64::MAX),
            phase: phase.to_owned(),
            threads,
            ops: d_ops,
            throughput: round3(d_ops as f64 / secs),
            hit_rate: (hits + misses > 0).then(|| round3(hits as f64 / (hits + misses) as f64)),
            commits,
            writes,
            mean_group: (commits > 0).then(|| round3(writes as f64 / commits as f64)),
        });
        self.last_at = now;
        self.last_ops = ops;
        self.last = counters;
    }

    /// The samples taken.
    pub(crate) fn finish(self) -> Vec<Sample> {
        self.samples
    }
}
