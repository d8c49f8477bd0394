//! What the advisor keeps per `Db`: the observed statements, the N+1 detector, the last
//! checkpoint, and the handle that stops the scheduled maintenance.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use parking_lot::Mutex;

use super::nplusone::Detector;
use super::observe::Observed;
use crate::checkpoint::CheckpointResult;
use crate::config::Config;

/// The advisor's per-`Db` state, owned by the `Db`'s shared inner.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) observed: Observed,
    pub(crate) n_plus_one: Detector,
    /// Shared with the scheduled maintenance thread.
    pub(crate) last_checkpoint: Arc<Mutex<Option<CheckpointResult>>>,
    /// Dropping this sender (with the `Db`) wakes and ends the scheduled maintenance thread.
    pub(crate) stop: Mutex<Option<Sender<()>>>,
    /// The WAL size past which [`Db::health`](crate::Db::health) reports a problem: the
    /// `journal_size_limit` the `Db` was opened with.
    pub(crate) wal_limit: u64,
    /// The highest migration version of the runner applied at open; `None` without one.
    pub(crate) expected_schema_version: Option<i32>,
}

impl State {
    pub(crate) fn new(config: &Config, expected_schema_version: Option<i32>) -> State {
        State {
            observed: Observed::default(),
            n_plus_one: Detector::new(config.n_plus_one_threshold),
            last_checkpoint: Arc::new(Mutex::new(None)),
            stop: Mutex::new(None),
            wal_limit: config.journal_size_limit,
            expected_schema_version,
        }
    }
}
