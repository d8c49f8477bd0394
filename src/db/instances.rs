//! Several instances on one file, as a `Db` shows them: the role (primary or LiteFS replica),
//! the refusal of writes on a replica, and what the change log and its follower did.

use std::sync::atomic::Ordering;

use super::Db;
use crate::error::{Error, Result};
use crate::instances::{InstancesReport, Role};

impl Db {
    /// Primary, or a LiteFS replica naming its primary (the `.primary` file beside the
    /// database, looked at again at most every 100 ms).
    pub fn role(&self) -> Role {
        self.inner.replica.role()
    }

    /// Fails a write that cannot run here: a read-only `Db`, or a LiteFS replica.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly {
                path: self.inner.target.path.clone(),
            });
        }
        if let Some(primary) = self.inner.replica.primary() {
            return Err(Error::Replica {
                path: self.inner.target.path.clone(),
                primary,
            });
        }
        Ok(())
    }

    /// What the change log and its follower did, with
    /// [`Config::instances`](crate::Config::instances) on (`None` otherwise). Also in
    /// [`Report::instances`](crate::monitor::Report::instances).
    pub fn instances_report(&self) -> Option<InstancesReport> {
        let inner = &self.inner;
        let log = inner.writer.log.as_ref()?;
        let following = &inner.follower.as_ref()?.following;
        let (p50, p99, max) = {
            let h = following.propagation.lock();
            if h.is_empty() {
                (0.0, 0.0, 0.0)
            } else {
                (
                    h.value_at_quantile(0.5) as f64,
                    h.value_at_quantile(0.99) as f64,
                    h.max() as f64,
                )
            }
        };
        let (given, pauses) = inner.writer.turn.as_ref().map_or((0, 0), |t| {
            (
                t.given.load(Ordering::Relaxed),
                t.pauses.load(Ordering::Relaxed),
            )
        });
        Some(InstancesReport {
            instance: log.instance,
            role: self.role(),
            appended: log.appended.load(Ordering::Relaxed),
            appended_bytes: log.appended_bytes.load(Ordering::Relaxed),
            applied: following.applied.load(Ordering::Relaxed),
            gaps: following.gaps.load(Ordering::Relaxed),
            last_gap: following.last_gap.lock().clone(),
            last_seq: following.last_seq.load(Ordering::Relaxed),
            propagation_p50_us: p50,
            propagation_p99_us: p99,
            propagation_max_us: max,
            turns_given: given,
            pauses,
        })
    }
}
