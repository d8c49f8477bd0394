//! strata: the data access layer for Rust services on SQLite.
//!
//! One [`Db`] handle owns everything between a service and its database file: a single writer
//! connection whose transactions are all `BEGIN IMMEDIATE`, a pool of read-only readers, tuned
//! PRAGMAs read back after they are applied, a prepared-statement cache per connection, and
//! refinery migrations applied at open under a cross-process lock.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let db = strata::Db::open(dir.path().join("app.db"))?; // WAL, tuned, migrated
//!
//! let id = db.write(|tx| {
//!     tx.execute(
//!         "INSERT INTO users (email, name, created_at) VALUES (?1, ?2, ?3)",
//!         ("ada@example.com", "Ada", 0),
//!     )?;
//!     Ok(tx.last_insert_rowid())
//! })?;
//!
//! // Several queries in one read share a snapshot and one WAL read lock.
//! let name: String = db.read(|c| {
//!     let mut stmt = c.prepare_cached("SELECT name FROM users WHERE id = ?1")?;
//!     Ok(stmt.query_row([id], |row| row.get(0))?)
//! })?;
//! assert_eq!(name, "Ada");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod advisor;
mod batch;
mod cache;
mod checkpoint;
mod config;
mod db;
pub mod domain;
mod error;
mod events;
mod location;
mod migrate;
mod monitor;
mod pool;
mod repo;
pub mod workload;
mod writer;

pub use advisor::{
    health_check, Advice, AdviseOptions, Checkpoint, Health, IndexAdvice, IndexUse,
    MaintenanceReport, NPlusOne, ObservedStatement, PlanNode, PoolHealth, QueryPlan,
    RedundantIndex, ScopeKind, ServedStatement, SkippedStatement, Speedup, Step, TableAccess,
    UnusedIndex, ANALYSIS_LIMIT,
};
pub use batch::{Batch, BatchFailure, BatchReport, IntoValues, OpKind};
pub use cache::{
    AnyCache, CacheManager, CacheSettings, CacheSpec, CacheStats, Cached, Clock, EntityCache,
    Invalidation, InvalidationRule, ManualClock, SystemClock,
};
pub use checkpoint::{CheckpointResult, CheckpointStats};
pub use config::{Config, Synchronous};
pub use db::Db;
pub use error::{ConstraintKind, Error, Result};
pub use events::{Change, ChangeKind, ChangeSet, Values};
pub use migrate::embedded_runner;
pub use monitor::{
    Alert, PoolStats, QueryStats, Report, SlowQuery, StatementCacheStats, WriteReport,
};
pub use repo::{Entity, Repository};
pub use writer::WriteStats;

/// The rusqlite version strata is built on, re-exported so callers name the same types.
pub use rusqlite;
