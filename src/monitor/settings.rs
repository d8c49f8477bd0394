//! The monitoring settings a [`Config`](crate::Config) holds (its setters are in
//! `config/monitoring.rs`, so that the monitor never depends on the `Config`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::alert::Alert;
use crate::cache::Clock;
use crate::error::{Error, Result};

/// A callback registered with [`Config::on_alert`](crate::Config::on_alert).
pub(crate) type AlertCallback = Arc<dyn Fn(&Alert) + Send + Sync + 'static>;

/// What [`Config`](crate::Config) holds for the monitor.
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
    pub(crate) trend_window: Duration,
    pub(crate) trend_windows: usize,
    pub(crate) regression_threshold: f64,
    pub(crate) trend_clock: Option<Arc<dyn Clock>>,
}

/// The most trend windows kept: each statement keeps a slot per window.
pub(crate) const MAX_TREND_WINDOWS: usize = 1440;

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
            trend_window: Duration::from_secs(60),
            trend_windows: 60,
            regression_threshold: 0.5,
            trend_clock: None,
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
            .field("trend_window", &self.trend_window)
            .field("trend_windows", &self.trend_windows)
            .field("regression_threshold", &self.regression_threshold)
            .field("trend_clock", &self.trend_clock.is_some())
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
        if self.trend_window < Duration::from_millis(1) {
            return invalid("trend_window", "must be at least 1 ms");
        }
        if !(2..=MAX_TREND_WINDOWS).contains(&self.trend_windows) {
            return invalid("trend_windows", "must be between 2 and 1440");
        }
        if !self.regression_threshold.is_finite() || self.regression_threshold <= 0.0 {
            return invalid("regression_threshold", "must be a number above 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
            (Config::new().trend_window(Duration::ZERO), "trend_window"),
            (Config::new().trend_windows(1), "trend_windows"),
            (Config::new().trend_windows(100_000), "trend_windows"),
            (
                Config::new().regression_threshold(0.0),
                "regression_threshold",
            ),
            (
                Config::new().regression_threshold(f64::INFINITY),
                "regression_threshold",
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
