//! Alerts: the conditions worth waking someone for, each fired at most once per window.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::settings::AlertCallback;

/// A condition reported to the callbacks of [`Config::on_alert`](crate::Config::on_alert).
///
/// Each condition fires at most once per [`alert_window`](crate::Config::alert_window): a slow
/// statement, an N+1 loop or a regression once per SQL text, a low hit rate once per cache, the
/// others once per `Db`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    /// A statement took at least `slow_query_threshold`.
    SlowQuery {
        /// The statement's SQL text.
        sql: String,
        /// How long it ran.
        duration: Duration,
    },
    /// A cache's hit rate over the last window was under `cache_hit_rate_alert`.
    LowCacheHitRate {
        /// The cache's name.
        cache: String,
        /// Hits over lookups in the window.
        hit_rate: f64,
        /// The window the rate is over.
        window: Duration,
    },
    /// A `read` waited at least `pool_wait_alert` for a free reader.
    PoolSaturated {
        /// How long it waited.
        wait: Duration,
    },
    /// The WAL file is larger than `journal_size_limit`: checkpoints are not keeping up, most
    /// likely because long reads hold old snapshots.
    WalOverLimit {
        /// The WAL file's size.
        bytes: u64,
        /// The configured `journal_size_limit`.
        limit: u64,
    },
    /// One statement ran more than `n_plus_one_threshold` times in one `read` or `write`
    /// closure: a loop of point queries that one `IN (...)` query or a join would answer.
    NPlusOne {
        /// The statement's SQL text.
        sql: String,
        /// How many times it ran in the closure.
        calls: u64,
    },
    /// A statement's p95 duration over the last trend window was more than
    /// `regression_threshold` above its baseline: the average p95 of its earlier kept windows
    /// (see [`Trends`](super::Trends); checked when a window closes, once the statement has
    /// at least 3 earlier windows and 10 traced runs in each window compared).
    Regression {
        /// The statement's SQL text.
        sql: String,
        /// The average p95 of its earlier windows.
        baseline_p95: Duration,
        /// Its p95 in the window that regressed.
        p95: Duration,
        /// The length of a trend window.
        window: Duration,
    },
    /// A call to the shared cache tier (Redis) failed or timed out: reads and writes go on
    /// from the local caches and the database, and the tier is tried again after a backoff.
    SharedTierDown {
        /// What failed.
        error: String,
    },
    /// The shared cache tier answers again after being down; every entry written before is
    /// ignored from now on (its global epoch was bumped), since invalidations may have been
    /// lost meanwhile.
    SharedTierRecovered {
        /// How long it was down.
        down_for: Duration,
    },
    /// The change log of several instances could not explain a commit (a writer that bypasses
    /// strata, a schema change, entries pruned before this instance read them): every cache
    /// was dropped.
    ChangeLogGap {
        /// Why.
        reason: String,
    },
}

impl Alert {
    /// A stable name of the alert's kind, as used in logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::SlowQuery { .. } => "slow_query",
            Alert::LowCacheHitRate { .. } => "low_cache_hit_rate",
            Alert::PoolSaturated { .. } => "pool_saturated",
            Alert::WalOverLimit { .. } => "wal_over_limit",
            Alert::NPlusOne { .. } => "n_plus_one",
            Alert::Regression { .. } => "regression",
            Alert::SharedTierDown { .. } => "shared_tier_down",
            Alert::SharedTierRecovered { .. } => "shared_tier_recovered",
            Alert::ChangeLogGap { .. } => "change_log_gap",
        }
    }

    /// What the once-per-window rule is applied to.
    fn key(&self) -> (&'static str, String) {
        let subject = match self {
            Alert::SlowQuery { sql, .. }
            | Alert::NPlusOne { sql, .. }
            | Alert::Regression { sql, .. } => sql.clone(),
            Alert::LowCacheHitRate { cache, .. } => cache.clone(),
            Alert::PoolSaturated { .. }
            | Alert::WalOverLimit { .. }
            | Alert::SharedTierDown { .. }
            | Alert::SharedTierRecovered { .. }
            | Alert::ChangeLogGap { .. } => String::new(),
        };
        (self.kind(), subject)
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alert::SlowQuery { sql, duration } => write!(f, "slow query ({duration:?}): {sql}"),
            Alert::LowCacheHitRate {
                cache,
                hit_rate,
                window,
            } => write!(
                f,
                "cache {cache}: hit rate {:.1}% over {window:?}",
                hit_rate * 100.0
            ),
            Alert::PoolSaturated { wait } => write!(f, "waited {wait:?} for a reader"),
            Alert::WalOverLimit { bytes, limit } => {
                write!(f, "WAL is {bytes} bytes, over journal_size_limit {limit}")
            }
            Alert::NPlusOne { sql, calls } => {
                write!(f, "N+1: {sql} ran {calls} times in one closure")
            }
            Alert::Regression {
                sql,
                baseline_p95,
                p95,
                window,
            } => write!(
                f,
                "regression: p95 {p95:?} over the last {window:?}, baseline {baseline_p95:?}: {sql}"
            ),
            Alert::SharedTierDown { error } => write!(f, "shared cache tier down: {error}"),
            Alert::SharedTierRecovered { down_for } => {
                write!(f, "shared cache tier back after {down_for:?}")
            }
            Alert::ChangeLogGap { reason } => {
                write!(f, "change-log gap, dropped every cache: {reason}")
            }
        }
    }
}

/// The callbacks and the once-per-window gate in front of them.
pub(crate) struct Alerts {
    window: Duration,
    callbacks: Vec<AlertCallback>,
    last: Mutex<HashMap<(&'static str, String), Instant>>,
    fired: AtomicU64,
    /// The `Db` the metrics are published for.
    db: Arc<str>,
}

impl Alerts {
    pub(crate) fn new(window: Duration, callbacks: Vec<AlertCallback>, db: Arc<str>) -> Self {
        Alerts {
            window,
            callbacks,
            last: Mutex::new(HashMap::new()),
            fired: AtomicU64::new(0),
            db,
        }
    }

    /// Alerts that passed the gate so far.
    pub(crate) fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// Fires `alert` unless the same condition fired less than a window ago. Returns whether
    /// it fired.
    pub(crate) fn fire(&self, alert: Alert) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            let key = alert.key();
            match last.get(&key) {
                Some(at) if now.duration_since(*at) < self.window => return false,
                _ => last.insert(key, now),
            };
        }
        self.fired.fetch_add(1, Ordering::Relaxed);
        super::metrics::alert(&self.db, &alert);
        // Slow queries were logged with their plan already, one line per statement.
        if !matches!(alert, Alert::SlowQuery { .. }) {
            tracing::warn!(kind = alert.kind(), "{alert}");
        }
        // A panicking callback must not take the statement or the pool checkout with it.
        if !std::thread::panicking() {
            for callback in &self.callbacks {
                let _ = catch_unwind(AssertUnwindSafe(|| callback(&alert)));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn fires_once_per_condition_and_window() -> Result<()> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let alerts = Alerts::new(
            Duration::from_secs(60),
            vec![Arc::new(move |a: &Alert| sink.lock().push(a.clone()))],
            "test".into(),
        );
        let slow = |sql: &str| Alert::SlowQuery {
            sql: sql.into(),
            duration: Duration::from_millis(20),
        };
        assert!(alerts.fire(slow("SELECT 1")));
        assert!(
            !alerts.fire(slow("SELECT 1")),
            "same statement, same window"
        );
        assert!(alerts.fire(slow("SELECT 2")), "another statement");
        assert!(alerts.fire(Alert::PoolSaturated {
            wait: Duration::from_secs(1)
        }));
        assert!(!alerts.fire(Alert::PoolSaturated {
            wait: Duration::from_secs(2)
        }));
        assert_eq!(seen.lock().len(), 3);
        assert_eq!(alerts.fired(), 3);
        Ok(())
    }

    #[test]
    fn a_panicking_callback_is_contained() -> Result<()> {
        let alerts = Alerts::new(
            Duration::from_millis(1),
            vec![Arc::new(|_: &Alert| panic!("callback bug"))],
            "test".into(),
        );
        assert!(alerts.fire(Alert::WalOverLimit { bytes: 2, limit: 1 }));
        Ok(())
    }
}
