//! The `strata` command line's engine: the demo and the load test over the expense tracker, and
//! the maintenance commands, the job queue's commands. The binary (`src/main.rs`) is a thin clap layer over [`workload`].
//!
//! It lives in its own package so that a service linking the `strata` library builds none of
//! this (clap, indicatif, the load generator).

pub mod jobs;
pub mod stats;
pub mod workload;
