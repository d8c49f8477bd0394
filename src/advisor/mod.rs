//! The query optimizer. It never changes the live database: it reads the schema and the
//! statistics on a reader and works on a private in-memory copy.
//!
//! * Plans: [`Db::explain`](crate::Db::explain) gives a [`QueryPlan`] (a tree of [`PlanNode`]s,
//!   each a [`Step`]; [`TableAccess`] and [`IndexUse`] summarize it).
//! * Index advice: [`Db::advise`](crate::Db::advise) with [`AdviseOptions`] gives [`Advice`]:
//!   [`IndexAdvice`] serving [`ServedStatement`]s (with a measured [`Speedup`]), and
//!   [`SkippedStatement`]s; the workload is the [`ObservedStatement`]s or given queries.
//! * Index hygiene: [`RedundantIndex`], [`UnusedIndex`].
//! * N+1 detection: [`NPlusOne`] warnings per [`ScopeKind`].
//! * Maintenance: [`Db::optimize`](crate::Db::optimize) gives a [`MaintenanceReport`] (with its
//!   [`CheckpointResult`](crate::monitor::CheckpointResult)); health: [`health_check`] of a file or `Db::health`, a [`Health`] with its
//!   [`PoolHealth`].

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
