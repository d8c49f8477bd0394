//! The query optimizer: plans (`EXPLAIN QUERY PLAN` as a tree), the index advisor, redundant
//! and unused indexes, N+1 detection, maintenance (`PRAGMA optimize`, checkpoints) and health.
//!
//! The advisor never changes the live database: it reads the schema and the statistics on a
//! reader and works on a private in-memory copy.

mod advise;
mod analyze;
mod candidates;
mod catalog;
mod copy;
mod estimate;
mod health;
mod indexes;
mod maintenance;
mod measure;
mod migration;
pub(crate) mod nplusone;
mod observe;
mod plan;
mod resolve;
mod state;
mod tokens;
mod verify;

pub use advise::{Advice, AdviseOptions, IndexAdvice, ServedStatement, SkippedStatement};
pub use health::{health_check, Health, Leftover, LeftoverKind, PoolHealth};
pub use indexes::{RedundantIndex, UnusedIndex};
pub use maintenance::{MaintenanceReport, ANALYSIS_LIMIT};
pub use measure::Speedup;
pub use nplusone::{NPlusOne, ScopeKind};
pub use observe::ObservedStatement;
pub use plan::{IndexUse, PlanNode, QueryPlan, Step, TableAccess};

pub(crate) use maintenance::schedule;
pub(crate) use state::State;
