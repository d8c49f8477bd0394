//! The monitoring setters of [`Config`]: they fill the monitor's own settings.

use std::sync::Arc;
use std::time::Duration;

use super::Config;
use crate::cache::Clock;
use crate::monitor::Alert;

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

    /// The length of a trend window: each statement's and cache's figures (calls, mean, p95,
    /// hit rate) are kept per window for [`Report::trends`](crate::monitor::Report::trends),
    /// and [`Alert::Regression`] compares the last window with the earlier ones. Must be at
    /// least 1 ms. Defaults to 60 s.
    pub fn trend_window(mut self, window: Duration) -> Self {
        self.monitor.trend_window = window;
        self
    }

    /// How many completed trend windows are kept (and averaged into a baseline). Must be
    /// between 2 and 1440. Defaults to 60 (an hour of 1-minute windows).
    pub fn trend_windows(mut self, windows: usize) -> Self {
        self.monitor.trend_windows = windows;
        self
    }

    /// [`Alert::Regression`] fires for a statement whose p95 over the last trend window is
    /// more than this fraction above the average p95 of its earlier kept windows (0.5: 50%
    /// slower). Must be above 0. Defaults to 0.5.
    pub fn regression_threshold(mut self, threshold: f64) -> Self {
        self.monitor.regression_threshold = threshold;
        self
    }

    /// The clock the trend windows follow; for tests, a
    /// [`ManualClock`](crate::cache::ManualClock) moves them on without waiting. Statement
    /// durations are still measured on the real clock. Defaults to the monitor's own
    /// monotonic clock (the one that times statements, read anyway when one ends).
    pub fn trend_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.monitor.trend_clock = Some(clock);
        self
    }
}
