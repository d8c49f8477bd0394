//! Which code runs the workload: strata's expense tracker, or the [`RawEngine`] a service
//! author would write without strata.

use std::path::Path;

use serde::Serialize;

use super::raw::RawEngine;
use strata::domain::ExpenseTracker;

/// The engines `strata load --engine` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// strata's expense tracker: caches, group commit, background checkpoints.
    #[default]
    Strata,
    /// Plain rusqlite on an r2d2 pool: no caches, one transaction per write.
    Raw,
    /// strata, then raw, each on its own copy of the same seeded database; reports the ratios.
    Both,
}

/// What a worker runs its operations on. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Engine {
    /// strata's expense tracker.
    Strata(ExpenseTracker),
    /// The raw engine.
    Raw(RawEngine),
}

impl From<ExpenseTracker> for Engine {
    fn from(tracker: ExpenseTracker) -> Self {
        Engine::Strata(tracker)
    }
}

impl From<RawEngine> for Engine {
    fn from(raw: RawEngine) -> Self {
        Engine::Raw(raw)
    }
}

/// Running totals an engine keeps, sampled once a second during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Cache lookups that hit, all caches together (0 for the raw engine).
    pub cache_hits: u64,
    /// Cache lookups that missed.
    pub cache_misses: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// Write operations committed (more than `commits` when group commit shares transactions).
    pub writes: u64,
}

impl Engine {
    /// `strata` or `raw`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Strata(_) => "strata",
            Engine::Raw(_) => "raw",
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        match self {
            Engine::Strata(t) => t.db().path(),
            Engine::Raw(r) => r.path(),
        }
    }

    /// The engine's totals now.
    pub fn counters(&self) -> Counters {
        match self {
            Engine::Strata(t) => {
                let (cache_hits, cache_misses) = t
                    .db()
                    .caches()
                    .stats()
                    .iter()
                    .fold((0, 0), |(h, m), c| (h + c.hits, m + c.misses));
                let writes = t.db().write_stats();
                Counters {
                    cache_hits,
                    cache_misses,
                    commits: writes.commits,
                    writes: writes.writes,
                }
            }
            Engine::Raw(r) => Counters {
                commits: r.commits(),
                writes: r.commits(),
                ..Counters::default()
            },
        }
    }
}
