//! The monitoring settings of a [`Config`] and their setters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::alert::Alert;
use crate::config::Config;
use crate::error::{Error, Result};

/// A callback registered with [`Config::on_alert`].
pub(crate) type AlertCallback = Arc<dyn Fn(&Alert) + Send + Sync + 'static>;

/// What [`Config`] holds for the monitor.
#[derive(Clone)]
pub(crate) struct MonitorSettings {
    pub(crate) enabled: bool,
    pub(crate) slow_query_threshold: Duration,
    pub(crate) trace_budget: f64,
    pub(crate) slow_query_log_size: usize,
    pub(crate) alert_window: Duration,
    pub(crate) cache_hit_rate_alert: f64,
    pub(crate) pool_wait_alert: Duration,
    pub(crate) on_alert: Vec<AlertCallback>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            enabled: true,
            slow_query_threshold: Duration::from_millis(10),
            trace_budget: 0.02,
            slow_query_log_size: 100,
            alert_window: Duration::from_secs(60),
            cache_hit_rate_alert: 0.5,
            pool_wait_alert: Duration::from_millis(100),
            on_alert: Vec::new(),
        }
    }
}

impl fmt::Debug for MonitorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorSettings")
            .field("enabled", &self.enabled)
            .field("slow_query_threshold", &self.slow_query_threshold)
            .field("trace_budget", &self.trace_budget)
            .field("slow_query_log_size", &self.slow_query_log_size)
            .field("alert_window", &self.alert_window)
            .field("cache_hit_rate_alert", &self.cache_hit_rate_alert)
            .field("pool_wait_alert", &self.pool_wait_alert)
            .field("on_alert", &self.on_alert.len())
            .finish()
    }
}

impl MonitorSettings {
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.slow_query_log_size == 0 {
            return invalid("slow_query_log_size", "must be at least 1");
        }
        if self.trace_budget.is_nan() || self.trace_budget <= 0.0 {
            return invalid(
                "trace_budget",
                "must be above 0 (turn monitoring off with `monitoring(false)`)",
            );
        }
        if self.alert_window.is_zero() {
            return invalid("alert_window", "must be non-zero");
        }
        if !(0.0..=1.0).contains(&self.cache_hit_rate_alert) {
            return invalid("cache_hit_rate_alert", "must be between 0 and 1");
        }
        Ok(())
    }
}

impl Config {
    /// Per-statement statistics, the slow-query log and alerts (see [`Db::report`]). Off, no
    /// connection is traced and the report holds only pool, cache, write and WAL figures.
    /// Defaults to on.
    ///
    /// [`Db::report`]: crate::Db::report
    pub fn monitoring(mut self, enabled: bool) -> Self {
        self.monitor.enabled = enabled;
        self
    }

    /// Statements that take at least this long are kept in the slow-query log with their plan,
    /// logged with `tracing::warn!` and raise [`Alert::SlowQuery`]. Defaults to 10 ms.
    pub fn slow_query_threshold(mut self, threshold: Duration) -> Self {
        self.monitor.slow_query_threshold = threshold;
        self
    }

    /// How much time statement tracing may add to `read` and `write` closures, as a share of
    /// their untraced time, on average per call site. Tracing costs about 150 ns per statement
    /// (SQLite reads the clock around each one), so closures are traced by sampling: each call
    /// site (closure type) is traced on its first call and then with a probability chosen to
    /// stay within this budget, and a traced call counts for the calls it stands for.
    /// [`QueryStats`](crate::monitor::QueryStats) counts are then unbiased estimates; a statement that
    /// is slow every time is in the slow-query log from its second run. `1.0` or more traces
    /// every call (exact counts, at up to twice the time of loops of tiny statements). Must be
    /// above 0. Defaults to 0.02 (2%).
    pub fn trace_budget(mut self, budget: f64) -> Self {
        self.monitor.trace_budget = budget;
        self
    }

    /// The most slow queries kept; older ones make room for newer ones. Must be at least 1.
    /// Defaults to 100.
    pub fn slow_query_log_size(mut self, size: usize) -> Self {
        self.monitor.slow_query_log_size = size;
        self
    }

    /// An alert fires at most once per condition (and per statement or cache) in this window,
    /// and cache hit rates and the WAL size are evaluated once per window. Must be non-zero.
    /// Defaults to 60 s.
    pub fn alert_window(mut self, window: Duration) -> Self {
        self.monitor.alert_window = window;
        self
    }

    /// [`Alert::LowCacheHitRate`] fires for a cache whose hit rate over one alert window is
    /// below this (with at least 100 lookups in the window, so that a cold cache seen a few
    /// times does not alert); 0 turns it off. Must be between 0 and 1. Defaults to 0.5.
    pub fn cache_hit_rate_alert(mut self, hit_rate: f64) -> Self {
        self.monitor.cache_hit_rate_alert = hit_rate;
        self
    }

    /// [`Alert::PoolSaturated`] fires when a `read` waited at least this long for a free
    /// reader. Defaults to 100 ms.
    pub fn pool_wait_alert(mut self, wait: Duration) -> Self {
        self.monitor.pool_wait_alert = wait;
        self
    }

    /// Adds a callback for [`Alert`]s; every callback added gets every alert. Defaults to none.
    ///
    /// A callback runs on the thread that saw the condition, possibly while strata holds a
    /// connection (the writer, during a group commit): it must return quickly and must not
    /// call back into the `Db`. Hand the alert to another thread for anything more. A panic
    /// in a callback is caught and ignored.
    pub fn on_alert(mut self, callback: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.monitor.on_alert.push(Arc::new(callback));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_monitor_settings_are_refused() -> Result<()> {
        Config::new().validate()?;
        for (config, field) in [
            (Config::new().slow_query_log_size(0), "slow_query_log_size"),
            (Config::new().alert_window(Duration::ZERO), "alert_window"),
            (
                Config::new().cache_hit_rate_alert(1.5),
                "cache_hit_rate_alert",
            ),
            (
                Config::new().cache_hit_rate_alert(f64::NAN),
                "cache_hit_rate_alert",
            ),
        ] {
            match config.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        Ok(())
    }
}
