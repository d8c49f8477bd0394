//! The job queue's section of a [`Report`](super::Report): plain figures, filled in by the
//! queue (`strata::jobs`) when the `Db` has used it.

use serde::Serialize;

/// The job queue's figures in a [`Report`](super::Report): what waits in the database (every
/// process's jobs) and what this process's workers ran.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobsReport {
    /// Jobs waiting, running and dead per queue, by queue name.
    pub queues: Vec<QueueDepth>,
    /// What this process's workers did, per kind, by kind.
    pub kinds: Vec<KindReport>,
    /// Jobs enqueued by commits of this process.
    pub enqueued: u64,
    /// How long the oldest waiting job has been enqueued, in microseconds (0 with none).
    pub oldest_pending_age_us: f64,
}

/// One queue's depth in a [`JobsReport`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueDepth {
    /// The queue's name.
    pub queue: String,
    /// Whether the queue is paused.
    pub paused: bool,
    /// Jobs waiting (due or not, including retries waiting out their backoff).
    pub pending: u64,
    /// Jobs waiting whose run time has come.
    pub due: u64,
    /// Jobs a worker holds a lease on.
    pub running: u64,
    /// Jobs in the dead letters.
    pub dead: u64,
}

/// What this process's workers did with one kind of job.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindReport {
    /// The job kind.
    pub kind: String,
    /// Runs that completed.
    pub completed: u64,
    /// Runs that failed (handler error or panic), retried or not.
    pub failed: u64,
    /// Failed runs put back to be retried after their backoff.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
    /// From the time a job was due (enqueued, for jobs without a delay) to its handler's
    /// start.
    pub start_lag: Percentiles,
    /// Handler run times.
    pub run_time: Percentiles,
}

/// A latency distribution, in microseconds.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The largest.
    pub max_us: f64,
}
