//! strata: the data access layer for Rust services on SQLite.
//!
//! One [`Db`] handle owns everything between a service and its database file: a single writer
//! connection whose transactions are all `BEGIN IMMEDIATE`, a pool of read-only readers, tuned
//! PRAGMAs read back after they are applied, a prepared-statement cache per connection, and
//! the service's refinery migrations applied at open.
//!
//! A service brings its own schema as refinery migrations; strata applies them at open (under a
//! cross-process lock) and applies nothing else.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! // A service usually embeds its folder: `refinery::embed_migrations!("migrations")`.
//! let v1 = refinery::Migration::unapplied(
//!     "V1__accounts",
//!     "CREATE TABLE accounts (id INTEGER PRIMARY KEY, login TEXT NOT NULL UNIQUE)",
//! )?;
//! let dir = tempfile::tempdir().unwrap();
//! let db = strata::Db::builder()
//!     .path(dir.path().join("service.db")) // WAL, tuned
//!     .migrations(refinery::Runner::new(&[v1]))
//!     .build()?;
//!
//! let id = db.write(|tx| {
//!     tx.execute("INSERT INTO accounts (login) VALUES (?1)", ["ada"])?;
//!     Ok(tx.last_insert_rowid())
//! })?;
//!
//! // Several queries in one read share a snapshot and one WAL read lock.
//! let login: String = db.read(|c| {
//!     let mut stmt = c.prepare_cached("SELECT login FROM accounts WHERE id = ?1")?;
//!     Ok(stmt.query_row([id], |row| row.get(0))?)
//! })?;
//! assert_eq!(login, "ada");
//! # Ok(()) }
//! ```
//!
//! Beyond [`Db`] and its [`Config`]:
//!
//! * [`Repository`] and [`Entity`]: read-through cached CRUD for one table; [`Batch`]: bulk
//!   changes in chunked transactions ([`batch`] has its report types).
//! * [`cache`]: entity caches kept consistent with every committed write.
//! * [`events`]: the [`ChangeSet`](events::ChangeSet) each commit publishes.
//! * [`jobs`]: a durable job queue in the same database, enqueued atomically with a write.
//! * [`monitor`]: per-statement statistics, slow queries, alerts, the [`Report`](monitor::Report).
//! * [`advisor`]: query plans, index advice, N+1 warnings, maintenance and health.
//! * [`instances`]: several processes or hosts on one file: the change log that keeps their
//!   caches exact, fair turns at the write lock, LiteFS replicas.
//! * [`domain`]: the expense tracker, strata's reference application with its own migrations.
//! * `asynch` (feature `tokio`): `AsyncDb`, the async API for tokio services, on threads
//!   strata owns.
#![warn(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod advisor;
#[cfg(feature = "tokio")]
pub mod asynch;
pub mod batch;
pub mod cache;
mod checkpoint;
mod config;
mod db;
pub mod domain;
mod error;
pub mod events;
mod follower;
pub mod instances;
pub mod jobs;
mod location;
mod migrate;
pub mod monitor;
mod pool;
mod repo;
mod schema;
mod sql;
mod writer;

#[cfg(feature = "tokio")]
pub use asynch::AsyncDb;
pub use batch::Batch;
pub use config::{Config, Synchronous};
pub use db::Db;
pub use error::{ConstraintKind, Error, Result};
pub use repo::{Entity, Repository};

/// The refinery version strata applies migrations with (see [`Config::migrations`]).
pub use refinery;
/// The rusqlite version strata is built on, re-exported so callers name the same types.
pub use rusqlite;
