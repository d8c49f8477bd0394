//! The demo and the load test: seeded expense-tracker data, a mixed workload over every domain
//! operation on worker threads, latency per operation, reports (text and JSON), and comparison
//! with a saved run. The `strata` binary is a thin layer over this module.
//!
//! * [`seed`]: deterministic data at a [`Scale`], inserted through `Batch`.
//! * [`ops`]: the nine [`Operation`]s, their read/write [`Mix`] and the [`Worker`] that runs them.
//! * [`zipf`]: the seeded [`Rng`] and the [`Zipf`] sampler for key skew.
//! * [`phases`]: `name:duration:threads` phases and durations.
//! * [`load`]: the runner; [`latency`]: per-operation histograms; [`samples`]: the run over
//!   time, a sample a second.
//! * [`engine`]: which code runs the operations: strata's tracker or the [`raw`] engine a
//!   service author would write without strata, and its job worker [`raw_jobs`]; [`versus`]: the two side by side.
//! * [`report`]: [`LoadReport`] (the `--json` file) and its text, [`jobs_figures`]: its job
//!   worker's figures; [`compare`](mod@compare): baselines;
//!   [`html`]: the `--html` page.
//! * [`sections`]: the report sections that monitoring and the index advisor fill;
//!   [`admin`]: the `migrate`, `advise`, `optimize` and `health` commands.
//! * [`commands`]: `demo` and `load` end to end; [`prepare`](mod@prepare): the database a run
//!   works on; [`progress`]: the progress bar.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! use strata_cli::workload::{load, seed, Dataset, LoadOptions, Scale, Schedule};
//!
//! let tracker = strata::domain::ExpenseTracker::open_in_memory()?;
//! let db = tracker.db();
//! seed::seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?; // 100 users, 1000 expenses
//! let options = LoadOptions {
//!     schedule: Schedule::Iterations { threads: 2, iterations: 1000 },
//!     read_ratio: 0.9,
//!     zipf: 1.0,
//!     seed: 42,
//! };
//! let result = load::run(&tracker, Dataset::read(db)?, &options, &mut |_| {})?;
//! assert_eq!(result.ok_ops() + result.errors(), 1000);
//! # Ok(()) }
//! ```

pub mod admin;
pub mod commands;
pub mod compare;
pub mod engine;
pub mod html;
pub mod jobs_figures;
pub mod latency;
pub mod load;
pub mod ops;
pub mod phases;
pub mod prepare;
pub mod processes;
pub mod progress;
pub mod raw;
pub mod raw_jobs;
pub mod report;
pub mod samples;
pub mod sections;
pub mod seed;
pub mod versus;
pub mod zipf;

pub use compare::{compare, Baseline, Comparison};
pub use engine::{Engine, EngineKind};
pub use jobs_figures::JobsFigures;
pub use latency::{Latency, LatencySummary};
pub use load::{LoadOptions, LoadResult, Progress, Schedule};
pub use ops::{Mix, OpClass, Operation, Worker};
pub use phases::{parse_duration, parse_phases, Phase};
pub use raw::RawEngine;
pub use raw_jobs::{RawJobStats, RawJobWorker};
pub use report::LoadReport;
pub use samples::Sample;
pub use sections::{report_sections, ExtraSections, Section};
pub use seed::{Dataset, Scale, SeedReport};
pub use versus::{Ratios, Versus};
pub use zipf::{Rng, Zipf};
