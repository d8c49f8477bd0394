//! What a job is before it is enqueued: its kind, payload and options.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The queue a job goes to unless [`Job::queue`] names another.
pub const DEFAULT_QUEUE: &str = "default";

/// How many times a job runs before it goes to the dead letters, unless
/// [`Job::max_attempts`] says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Which due jobs run first: high, then normal, then low; within one priority, the earliest
/// run time first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum Priority {
    /// Runs before every due normal and low job.
    High,
    /// The default.
    #[default]
    Normal,
    /// Runs when no high or normal job is due.
    Low,
}

impl Priority {
    /// The stored value: lower runs first.
    pub(crate) fn rank(self) -> i64 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The priority of a stored rank (an unknown one reads as low).
    pub(crate) fn from_rank(rank: i64) -> Priority {
        match rank {
            0 => Priority::High,
            1 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

/// A job to enqueue: a kind (which handler runs it), a JSON payload and options. Build one
/// with [`Job::new`] and the setters; enqueue it with
/// [`Queue::enqueue`](super::Queue::enqueue) or, inside a write,
/// [`Queue::enqueue_in`](super::Queue::enqueue_in).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub(crate) kind: String,
    pub(crate) payload: String,
    pub(crate) queue: String,
    pub(crate) priority: Priority,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) delay: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) unique_key: Option<String>,
}

impl Job {
    /// A job of `kind` carrying `payload` (serialized to JSON now; a payload serde cannot
    /// serialize is [`Error::InvalidValue`]).
    pub fn new(kind: impl Into<String>, payload: &impl Serialize) -> Result<Job> {
        let kind = kind.into();
        let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidValue {
            field: "job payload",
            value: kind.clone(),
            reason: e.to_string(),
        })?;
        Ok(Job {
            kind,
            payload,
            queue: DEFAULT_QUEUE.to_owned(),
            priority: Priority::Normal,
            run_at: None,
            delay: Duration::ZERO,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
        })
    }

    /// The queue the job goes to. Defaults to [`DEFAULT_QUEUE`].
    pub fn queue(mut self, queue: impl Into<String>) -> Job {
        self.queue = queue.into();
        self
    }

    /// Which due jobs run first. Defaults to [`Priority::Normal`].
    pub fn priority(mut self, priority: Priority) -> Job {
        self.priority = priority;
        self
    }

    /// Runs the job no earlier than `delay` after it is enqueued. Defaults to no delay.
    pub fn delay(mut self, delay: Duration) -> Job {
        self.delay = delay;
        self.run_at = None;
        self
    }

    /// Runs the job no earlier than `at` (wall-clock time). Defaults to at once.
    pub fn run_at(mut self, at: SystemTime) -> Job {
        self.run_at = Some(at);
        self.delay = Duration::ZERO;
        self
    }

    /// How many times the job may run (handler errors and panics retry it) before it goes to
    /// the dead letters; at least 1. Defaults to [`DEFAULT_MAX_ATTEMPTS`] (3).
    pub fn max_attempts(mut self, attempts: u32) -> Job {
        self.max_attempts = attempts.max(1);
        self
    }

    /// A key at most one unfinished job may hold: enqueueing while a job with the same key is
    /// waiting or running enqueues nothing and returns that job's id with
    /// [`Enqueued::deduplicated`] set. The key is free again once the job completes or goes
    /// to the dead letters. Defaults to none.
    pub fn unique_key(mut self, key: impl Into<String>) -> Job {
        self.unique_key = Some(key.into());
        self
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (with `deduplicated`, the id of the unfinished job that holds the key).
    pub id: i64,
    /// True if a job with the same unique key was already waiting or running, so nothing was
    /// enqueued.
    pub deduplicated: bool,
}
