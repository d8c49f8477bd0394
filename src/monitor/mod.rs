//! Monitoring: what a [`Db`](crate::Db) measures about its own work, with no help from the
//! caller's code.
//!
//! * [`Report`] ([`Db::report`](crate::Db::report)): statements ([`QueryStats`]), slow ones ([`SlowQuery`]), the
//!   reader pool ([`PoolStats`]), prepared-statement caches ([`StatementCacheStats`]), the write
//!   path ([`WriteReport`], [`WriteStats`]); [`Report::delta`] subtracts two.
//! * [`Alert`]: conditions passed to [`Config::on_alert`](crate::Config::on_alert), at most once per condition and window.
//! * [`Trends`] ([`Report::trends`]): per-window figures of every statement and cache, and
//!   how the last window compares with the earlier ones; [`Alert::Regression`] when a
//!   statement's p95 rose past [`Config::regression_threshold`](crate::Config::regression_threshold).
//! * [`CheckpointStats`] ([`Db::checkpoints`](crate::Db::checkpoints)): the background WAL checkpoints.
//!
//! Inside: SQLite's trace hook sees the statements of `read` and `write` closures; sampling
//! keeps tracing within a budget of added time; statements are counted per SQL text; the
//! `metrics` feature publishes the same figures through the `metrics` facade.

mod alert;
mod jobs;
mod metrics;
pub(crate) mod queries;
mod report;
pub(crate) mod sampling;
mod settings;
mod slow;
mod trace;
mod trends;
mod windows;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use alert::Alert;
pub use jobs::{JobsReport, KindReport, Percentiles, QueueDepth};
pub use queries::QueryStats;
pub use report::{PoolStats, Report, StatementCacheStats, WriteReport, WriteStats};
pub(crate) use settings::MonitorSettings;
pub use slow::SlowQuery;
pub use trends::{CacheTrend, CacheWindow, StatementTrend, StatementWindow, Trend, Trends};

pub use crate::checkpoint::{CheckpointResult, CheckpointStats};

use crate::cache::CacheManager;
use crate::location::Target;
use alert::Alerts;
use queries::Queries;
use slow::SlowLog;
use windows::{CacheRings, TrendClock};

/// A cache needs this many lookups in a window before its hit rate can raise an alert: a few
/// misses of a cold cache say nothing.
const MIN_LOOKUPS: u64 = 100;

/// The monitoring state of one `Db`, shared by its writer and the scopes of its reads.
///
/// The windowed checks run at the end of a statement's scope, possibly on the writer in the
/// middle of a transaction: they read only what they check (the caches' counters and the WAL
/// file's size), through handles given at open, never the rest of the `Db`.
pub(crate) struct Monitor {
    pub(crate) enabled: bool,
    pub(crate) slow_query_threshold: Duration,
    pub(crate) sampler: sampling::Sampler,
    pub(crate) queries: Queries,
    pub(crate) slow: SlowLog,
    pub(crate) alerts: Alerts,
    /// The statement clock: TSC-based where the CPU has an invariant TSC, the OS clock
    /// elsewhere; calibrated once per process (see `trace` for why not `Instant`).
    pub(crate) clock: quanta::Clock,
    /// `clock.raw()` at open.
    epoch_raw: u64,
    epoch: Instant,
    window: Duration,
    next_check_ns: AtomicU64,
    cache_hit_rate_alert: f64,
    pool_wait_alert: Duration,
    pool_waits: AtomicU64,
    pool_wait_ns: AtomicU64,
    /// Where the database lives, for the WAL file's size.
    target: Target,
    /// The caches whose hit rates the windowed checks watch.
    caches: Arc<CacheManager>,
    journal_size_limit: u64,
    statement_cache_capacity: usize,
    label: Arc<str>,
    windows: Mutex<Windows>,
    trend: TrendClock,
    /// The latest trend window a statement's end was seen in: the first end in a new one
    /// cuts the caches' windows.
    latest_window: AtomicU64,
    cache_rings: Mutex<CacheRings>,
}

/// Where the previous windowed check left the cache counters.
struct Windows {
    at: Instant,
    caches: HashMap<String, (u64, u64)>,
}

impl Monitor {
    /// The monitor of the database at `target`: `journal_size_limit` is the WAL size past which
    /// an alert fires, `statement_cache_capacity` what the report shows for the statement
    /// cache, `caches` those whose hit rates the windowed checks watch.
    pub(crate) fn new(
        settings: &MonitorSettings,
        journal_size_limit: u64,
        statement_cache_capacity: usize,
        target: &Target,
        caches: Arc<CacheManager>,
    ) -> Self {
        // The first clock of the process calibrates (about 1 ms): at open, not in a statement.
        let clock = quanta::Clock::new();
        let epoch_raw = clock.raw();
        let epoch = Instant::now();
        let label: Arc<str> = target.path.display().to_string().into();
        let trend = TrendClock::new(
            settings.trend_window,
            settings.trend_windows,
            settings.regression_threshold,
            settings.trend_clock.clone(),
        );
        Monitor {
            enabled: settings.enabled,
            slow_query_threshold: settings.slow_query_threshold,
            sampler: sampling::Sampler::new(settings.trace_budget),
            queries: Queries::new(Arc::clone(&label), trend.clone()),
            slow: SlowLog::new(settings.slow_query_log_size, Arc::clone(&label)),
            alerts: Alerts::new(
                settings.alert_window,
                settings.on_alert.clone(),
                Arc::clone(&label),
            ),
            clock,
            epoch_raw,
            epoch,
            window: settings.alert_window,
            next_check_ns: AtomicU64::new(nanos(settings.alert_window)),
            cache_hit_rate_alert: settings.cache_hit_rate_alert,
            pool_wait_alert: settings.pool_wait_alert,
            pool_waits: AtomicU64::new(0),
            pool_wait_ns: AtomicU64::new(0),
            target: target.clone(),
            caches,
            journal_size_limit,
            statement_cache_capacity,
            label,
            windows: Mutex::new(Windows {
                at: epoch,
                caches: HashMap::new(),
            }),
            trend,
            latest_window: AtomicU64::new(0),
            cache_rings: Mutex::new(CacheRings::default()),
        }
    }

    /// The trend window of a statement that ended at `end_raw` (statement clock ticks).
    pub(crate) fn window_at(&self, end_raw: u64) -> u64 {
        self.trend
            .index(self.clock.delta_as_nanos(self.epoch_raw, end_raw))
    }

    fn window_now(&self) -> u64 {
        self.window_at(self.clock.raw())
    }

    /// True for the one caller that first sees a statement end in trend window `index`.
    pub(crate) fn new_window(&self, index: u64) -> bool {
        index > self.latest_window.load(Ordering::Relaxed)
            && self.latest_window.fetch_max(index, Ordering::Relaxed) < index
    }

    /// Cuts the caches' trend windows up to now and fires the regressions found so far.
    pub(crate) fn trend_upkeep(&self) {
        let now = self.window_now();
        self.cut_caches(now);
        self.fire_regressions();
    }

    fn cut_caches(&self, now: u64) {
        if now > self.cache_rings.lock().at() {
            let stats = self.caches.stats();
            self.cache_rings.lock().cut(now, &stats, &self.trend);
        }
    }

    fn fire_regressions(&self) {
        for alert in self.queries.take_regressions() {
            self.alerts.fire(alert);
        }
    }

    /// Every statement's and cache's trend over the windows completed so far.
    pub(crate) fn trends(&self) -> Trends {
        let now = self.window_now();
        self.cut_caches(now);
        let statements = self.queries.trends(now);
        self.fire_regressions();
        Trends {
            window_us: self.trend.length.as_nanos() as f64 / 1000.0,
            completed_windows: now,
            statements,
            caches: self.cache_rings.lock().trends(now, &self.trend),
        }
    }

    /// Time since the `Db` opened.
    pub(crate) fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// True once per alert window, for the one caller that claims the check.
    pub(crate) fn checks_due(&self, now_raw: u64) -> bool {
        let at = self.clock.delta_as_nanos(self.epoch_raw, now_raw);
        let next = self.next_check_ns.load(Ordering::Relaxed);
        at >= next
            && self
                .next_check_ns
                .compare_exchange(
                    next,
                    at.saturating_add(nanos(self.window)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Counts a `read` that found no idle reader and waited `waited` for one.
    pub(crate) fn pool_wait(&self, waited: Duration) {
        self.pool_waits.fetch_add(1, Ordering::Relaxed);
        self.pool_wait_ns
            .fetch_add(nanos(waited), Ordering::Relaxed);
        metrics::pool_wait(&self.label, waited);
        if self.enabled && waited >= self.pool_wait_alert {
            self.alerts.fire(Alert::PoolSaturated { wait: waited });
        }
    }

    /// The WAL file's size; 0 for an in-memory database or before the WAL exists.
    pub(crate) fn wal_bytes(&self) -> u64 {
        self.target.wal_bytes().unwrap_or(0)
    }

    /// The windowed checks: each cache's hit rate since the previous check, and the WAL size.
    /// The exported cache and WAL series are refreshed here too.
    pub(crate) fn run_checks(&self) {
        let now = self.window_now();
        self.queries.roll(now);
        self.cut_caches(now);
        self.fire_regressions();
        let caches = self.caches.stats();
        let wal_bytes = self.wal_bytes();
        metrics::checks(&self.label, &caches, wal_bytes);
        let mut alerts = Vec::new();
        {
            let mut windows = self.windows.lock();
            let now = Instant::now();
            let window = now.duration_since(windows.at);
            windows.at = now;
            for cache in &caches {
                let (hits0, misses0) = windows
                    .caches
                    .insert(cache.name.clone(), (cache.hits, cache.misses))
                    .unwrap_or((0, 0));
                let hits = cache.hits.saturating_sub(hits0);
                let lookups = hits + cache.misses.saturating_sub(misses0);
                let hit_rate = hits as f64 / lookups.max(1) as f64;
                if lookups >= MIN_LOOKUPS && hit_rate < self.cache_hit_rate_alert {
                    alerts.push(Alert::LowCacheHitRate {
                        cache: cache.name.clone(),
                        hit_rate,
                        window,
                    });
                }
            }
        }
        if !self.target.memory && wal_bytes > self.journal_size_limit {
            alerts.push(Alert::WalOverLimit {
                bytes: wal_bytes,
                limit: self.journal_size_limit,
            });
        }
        for alert in alerts {
            self.alerts.fire(alert);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheSpec;
    use crate::error::{Error, Result};
    use crate::location::{wal_path, Location};

    /// A monitor of `target` whose alerts land in the returned list.
    fn monitor(
        target: &Target,
        caches: Arc<CacheManager>,
        wal_limit: u64,
    ) -> (Monitor, Arc<Mutex<Vec<Alert>>>) {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&fired);
        let mut settings = MonitorSettings::default();
        settings
            .on_alert
            .push(Arc::new(move |a: &Alert| sink.lock().push(a.clone())));
        let monitor = Monitor::new(&settings, wal_limit, 16, target, caches);
        (monitor, fired)
    }

    #[test]
    fn the_windowed_checks_read_only_the_caches_and_the_wal_file() -> Result<()> {
        // No Db at all: the monitor's own handles are all the checks use.
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            path: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join("m.db");
        let target = Target::resolve(&Location::File(path.clone()))?;
        let caches = Arc::new(CacheManager::new(Vec::new(), Duration::from_secs(1)));
        let cache = caches.register(CacheSpec::<i64, i64>::new("cold"))?;
        for key in 0..2 * MIN_LOOKUPS as i64 {
            assert!(cache.get(&key).is_none());
        }
        std::fs::write(wal_path(&path), vec![0u8; 4096]).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let (monitor, fired) = monitor(&target, caches, 1024);
        monitor.run_checks();
        let fired = fired.lock();
        assert!(
            fired.iter().any(
                |a| matches!(a, Alert::LowCacheHitRate { cache, hit_rate, .. } if cache == "cold" && *hit_rate == 0.0)
            ),
            "{fired:?}"
        );
        assert!(
            fired.contains(&Alert::WalOverLimit {
                bytes: 4096,
                limit: 1024
            }),
            "{fired:?}"
        );
        Ok(())
    }
}
