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
}

impl State {
    pub(crate) fn new(config: &Config) -> State {
        State {
            observed: Observed::default(),
            n_plus_one: Detector::new(config.n_plus_one_threshold),
            last_checkpoint: Arc::new(Mutex::new(None)),
            stop: Mutex::new(None),
        }
    }
}
