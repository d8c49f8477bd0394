//! The statement table: counters and a latency histogram per SQL text.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use super::alert::Alert;
use super::trends::StatementTrend;
use super::windows::{Regression, StatementRing, Totals, TrendClock};

/// Shards of the table: threads running different statements rarely share a lock.
const SHARDS: usize = 16;

/// The most distinct statements tracked. SQL with literals inlined (instead of bound
/// parameters) would otherwise grow the table without bound; later statements are counted
/// together under [`OTHER`].
pub(crate) const MAX_STATEMENTS: usize = 1000;

/// The SQL text the statements past [`MAX_STATEMENTS`] are counted under.
pub(crate) const OTHER: &str = "(other statements)";

/// The table's key: a statement's SQL text as SQLite holds it, not checked for UTF-8 on every
/// execution (it is converted once, for the report).
type Sql = Box<[u8]>;

/// Two significant digits (1%) keep a histogram at a few KiB; three would cost ~100 KiB per
/// statement for the same nanosecond range.
const SIGFIG: u8 = 2;

/// One finished execution of a statement, as the trace saw it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Execution {
    pub(crate) nanos: u64,
    pub(crate) rows: u64,
    pub(crate) fullscan_steps: u64,
    pub(crate) sorts: u64,
    pub(crate) autoindexes: u64,
    /// The prepared statement ran for the first time (it was just prepared).
    pub(crate) fresh: bool,
    /// How many executions this one stands for: closures are traced by sampling (see
    /// `sampling`); 0 for a run seen only for the slow-query log.
    pub(crate) weight: u64,
    /// The trend window it ended in (see `windows`).
    pub(crate) window: u64,
}

/// The statistics of one SQL text in a [`Report`](crate::monitor::Report), sorted there by total time.
///
/// Durations are in microseconds, with nanosecond precision; percentiles come from a histogram
/// that keeps two significant digits (1%). Closures are traced by sampling (see
/// [`Config::trace_budget`](crate::Config::trace_budget)): a traced execution counts for the
/// executions it stands for, so counts and totals are unbiased estimates, exact with a budget
/// of 1.
#[non_exhaustive]
#[derive(Debug, Clone, Serialize)]
pub struct QueryStats {
    /// The statement's SQL text, as prepared.
    pub sql: String,
    /// Executions that finished (a statement reset or run to completion).
    pub calls: u64,
    /// Rows returned (DML without RETURNING returns none).
    pub rows: u64,
    /// Time of all executions, from the first step to completion or reset.
    pub total_us: f64,
    /// `total_us / calls`.
    pub mean_us: f64,
    /// Median duration.
    pub p50_us: f64,
    /// 95th percentile duration.
    pub p95_us: f64,
    /// 99th percentile duration.
    pub p99_us: f64,
    /// Longest duration.
    pub max_us: f64,
    /// Rows stepped through in full table scans (`SQLITE_STMTSTATUS_FULLSCAN_STEP`); an indexed
    /// lookup has none.
    pub fullscan_steps: u64,
    /// Sorts the statement needed (`SQLITE_STMTSTATUS_SORT`): ORDER BY or GROUP BY without an
    /// index that provides the order.
    pub sorts: u64,
    /// Rows put into automatic indexes (`SQLITE_STMTSTATUS_AUTOINDEX`): an index is missing.
    pub autoindexes: u64,
    /// Executions that needed a freshly prepared statement (see
    /// [`StatementCacheStats`](crate::monitor::StatementCacheStats)).
    pub prepares: u64,
    #[serde(skip)]
    pub(crate) histogram: Latencies,
}

/// The latency histogram kept in a snapshot for [`Report::delta`](crate::monitor::Report::delta); its
/// `Debug` is short, unlike the histogram's thousands of buckets.
#[derive(Clone)]
pub(crate) struct Latencies(pub(crate) Histogram<u64>);

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latencies({} samples)", self.0.len())
    }
}

impl QueryStats {
    fn empty(sql: &str) -> Self {
        QueryStats {
            sql: sql.to_owned(),
            calls: 0,
            rows: 0,
            total_us: 0.0,
            mean_us: 0.0,
            p50_us: 0.0,
            p95_us: 0.0,
            p99_us: 0.0,
            max_us: 0.0,
            fullscan_steps: 0,
            sorts: 0,
            autoindexes: 0,
            prepares: 0,
            histogram: Latencies(new_histogram()),
        }
    }

    /// The statistics of `self`'s executions since `earlier` (the same statement in an earlier
    /// report). Percentiles and the maximum come from the difference of the two histograms.
    pub(crate) fn since(&self, earlier: &QueryStats) -> QueryStats {
        let mut histogram = self.histogram.0.clone();
        let exact = histogram.subtract(&earlier.histogram.0).is_ok();
        let mut delta = QueryStats {
            sql: self.sql.clone(),
            calls: self.calls.saturating_sub(earlier.calls),
            rows: self.rows.saturating_sub(earlier.rows),
            total_us: (self.total_us - earlier.total_us).max(0.0),
            fullscan_steps: self.fullscan_steps.saturating_sub(earlier.fullscan_steps),
            sorts: self.sorts.saturating_sub(earlier.sorts),
            autoindexes: self.autoindexes.saturating_sub(earlier.autoindexes),
            prepares: self.prepares.saturating_sub(earlier.prepares),
            ..QueryStats::empty("")
        };
        if exact {
            delta.histogram = Latencies(histogram);
            delta.max_us = us(delta.histogram.0.max());
        } else {
            // Only when `earlier` is not an earlier snapshot of the same table.
            delta.histogram = self.histogram.clone();
            delta.max_us = self.max_us;
        }
        delta.finish()
    }

    /// Computes mean and percentiles from the counters and the histogram.
    fn finish(mut self) -> Self {
        self.mean_us = if self.calls == 0 {
            0.0
        } else {
            self.total_us / self.calls as f64
        };
        let h = &self.histogram.0;
        if !h.is_empty() {
            self.p50_us = us(h.value_at_quantile(0.50));
            self.p95_us = us(h.value_at_quantile(0.95));
            self.p99_us = us(h.value_at_quantile(0.99));
        }
        self
    }
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("2 significant digits are a valid histogram")
}

/// The live counters of one statement.
struct Counters {
    calls: u64,
    rows: u64,
    nanos: u64,
    max_nanos: u64,
    fullscan_steps: u64,
    sorts: u64,
    autoindexes: u64,
    prepares: u64,
    histogram: Histogram<u64>,
    /// The per-window figures, allocated with the row so that recording never allocates.
    ring: StatementRing,
    #[cfg(feature = "metrics")]
    published: super::metrics::Statement,
}

impl Counters {
    fn new(_db: &str, _sql: &str, window: u64, trend: &TrendClock) -> Self {
        Counters {
            calls: 0,
            rows: 0,
            nanos: 0,
            max_nanos: 0,
            fullscan_steps: 0,
            sorts: 0,
            autoindexes: 0,
            prepares: 0,
            histogram: new_histogram(),
            ring: StatementRing::new(window, trend.kept, new_histogram()),
            #[cfg(feature = "metrics")]
            published: super::metrics::Statement::new(_db, _sql),
        }
    }

    fn add(&mut self, run: &Execution, trend: &TrendClock) -> Option<Regression> {
        let w = run.weight;
        self.max_nanos = self.max_nanos.max(run.nanos);
        if w == 0 {
            return None;
        }
        // The window in progress closes before this run counts: it belongs to the next.
        let regression = if self.ring.due(run.window) {
            self.roll(run.window, trend)
        } else {
            None
        };
        self.calls += w;
        self.rows += run.rows * w;
        self.nanos += run.nanos * w;
        self.fullscan_steps += run.fullscan_steps * w;
        self.sorts += run.sorts * w;
        self.autoindexes += run.autoindexes * w;
        self.prepares += u64::from(run.fresh) * w;
        // The histogram resizes itself to any duration; recording cannot fail.
        let _ = self.histogram.record_n(run.nanos, w);
        #[cfg(feature = "metrics")]
        self.published.add(run);
        self.ring.count();
        regression
    }

    /// Closes the statement's trend window in progress if `now` is past it.
    fn roll(&mut self, now: u64, trend: &TrendClock) -> Option<Regression> {
        let totals = Totals {
            calls: self.calls,
            nanos: self.nanos,
            histogram: &self.histogram,
        };
        self.ring.roll(now, &totals, trend)
    }

    fn snapshot(&self, sql: &str) -> QueryStats {
        QueryStats {
            sql: sql.to_owned(),
            calls: self.calls,
            rows: self.rows,
            total_us: us(self.nanos),
            max_us: us(self.max_nanos),
            fullscan_steps: self.fullscan_steps,
            sorts: self.sorts,
            autoindexes: self.autoindexes,
            prepares: self.prepares,
            histogram: Latencies(self.histogram.clone()),
            ..QueryStats::empty("")
        }
        .finish()
    }
}

/// FxHash: the keys are SQL texts of the application's own code, not input an attacker picks
/// to collide, so SipHash's cost on every statement buys nothing here.
type Fx = rustc_hash::FxBuildHasher;

/// The statements seen by one `Db`'s monitor.
pub(crate) struct Queries {
    shards: Vec<Mutex<HashMap<Sql, Counters, Fx>>>,
    tracked: Mutex<usize>,
    /// The `Db` the metrics are published for.
    db: Arc<str>,
    trend: TrendClock,
    /// Regressions found while a shard was locked, fired once it is not (a callback could
    /// otherwise run a statement that needs the same shard).
    regressions: Mutex<Vec<Alert>>,
}

impl Queries {
    pub(crate) fn new(db: Arc<str>, trend: TrendClock) -> Self {
        Queries {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            tracked: Mutex::new(0),
            db,
            trend,
            regressions: Mutex::new(Vec::new()),
        }
    }

    /// Queues the alert of a regression of `sql`.
    #[cold]
    fn regressed(&self, sql: &[u8], found: Regression) {
        self.regressions.lock().push(Alert::Regression {
            sql: String::from_utf8_lossy(sql).into_owned(),
            baseline_p95: std::time::Duration::from_nanos(found.baseline_p95_ns),
            p95: std::time::Duration::from_nanos(found.p95_ns),
            window: self.trend.length,
        });
    }

    /// The regressions found since the last call, to fire.
    pub(crate) fn take_regressions(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.regressions.lock())
    }

    fn shard(&self, sql: &[u8]) -> &Mutex<HashMap<Sql, Counters, Fx>> {
        let hash = Fx::default().hash_one(sql);
        // The high bits: FxHash's low bits are the weakest.
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// Counts one execution of `sql`. A known statement costs one hash and one uncontended
    /// lock; only the first execution of a new text allocates. Returns true when the run
    /// closed a window that regressed: its alert waits in [`Queries::take_regressions`].
    pub(crate) fn record(&self, sql: &[u8], run: &Execution) -> bool {
        let mut shard = self.shard(sql).lock();
        if let Some(counters) = shard.get_mut(sql) {
            if let Some(found) = counters.add(run, &self.trend) {
                drop(shard);
                self.regressed(sql, found);
                return true;
            }
            return false;
        }
        let admitted = {
            let mut tracked = self.tracked.lock();
            let admitted = *tracked < MAX_STATEMENTS;
            *tracked += usize::from(admitted);
            admitted
        };
        if admitted {
            let text = String::from_utf8_lossy(sql);
            let mut counters = Counters::new(&self.db, &text, run.window, &self.trend);
            // A new row's window is the run's own: nothing to roll, nothing to regress.
            let _ = counters.add(run, &self.trend);
            shard.insert(sql.into(), counters);
            false
        } else {
            drop(shard);
            let other = OTHER.as_bytes();
            let mut shard = self.shard(other).lock();
            // The overflow row mixes statements: a change of mix is not a regression.
            let _ = shard
                .entry(other.into())
                .or_insert_with(|| Counters::new(&self.db, OTHER, run.window, &self.trend))
                .add(run, &self.trend);
            false
        }
    }

    /// Rolls the windows of statements that have not run since theirs ended, queuing their
    /// regressions.
    pub(crate) fn roll(&self, now: u64) {
        let mut found = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            for (sql, counters) in shard.iter_mut() {
                if let Some(r) = counters.roll(now, &self.trend) {
                    if **sql != *OTHER.as_bytes() {
                        found.push((sql.clone(), r));
                    }
                }
            }
        }
        for (sql, r) in found {
            self.regressed(&sql, r);
        }
    }

    /// Every statement's trend over the windows completed before `now`, biggest move first.
    /// Rolls the windows of statements that have not run since theirs ended (queuing their
    /// regressions).
    pub(crate) fn trends(&self, now: u64) -> Vec<StatementTrend> {
        self.roll(now);
        let mut all = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            for (sql, counters) in shard.iter() {
                let text = String::from_utf8_lossy(sql);
                all.push(counters.ring.trend(&text, now, &self.trend));
            }
        }
        super::trends::sort_by_movement(&mut all);
        all
    }

    /// Every statement's statistics, by total time, longest first.
    pub(crate) fn snapshot(&self) -> Vec<QueryStats> {
        let mut all: Vec<QueryStats> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.lock();
                shard
                    .iter()
                    .map(|(sql, c)| c.snapshot(&String::from_utf8_lossy(sql)))
                    .collect::<Vec<_>>()
            })
            .collect();
        sort_by_total(&mut all);
        all
    }
}

/// Longest total first; ties by SQL text so that reports are stable.
pub(crate) fn sort_by_total(queries: &mut [QueryStats]) {
    queries.sort_by(|a, b| {
        b.total_us
            .total_cmp(&a.total_us)
            .then_with(|| a.sql.cmp(&b.sql))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn queries() -> Queries {
        let trend = TrendClock::new(std::time::Duration::from_secs(60), 60, 0.5, None);
        Queries::new("test".into(), trend)
    }

    fn run(nanos: u64, rows: u64) -> Execution {
        Execution {
            nanos,
            rows,
            weight: 1,
            ..Execution::default()
        }
    }

    #[test]
    fn counts_and_percentiles_per_statement() -> Result<()> {
        let q = queries();
        for i in 1..=100 {
            q.record(b"SELECT a", &run(i * 1000, 1));
        }
        q.record(b"SELECT b", &run(500_000, 3));
        let all = q.snapshot();
        assert_eq!(all[0].sql, "SELECT a", "sorted by total time");
        let a = &all[0];
        assert_eq!((a.calls, a.rows), (100, 100));
        assert_eq!(a.total_us, 5050.0);
        assert_eq!(a.mean_us, 50.5);
        assert_eq!(a.max_us, 100.0);
        assert!((a.p50_us - 50.0).abs() <= 0.5, "p50 {}", a.p50_us);
        assert!((a.p99_us - 99.0).abs() <= 1.0, "p99 {}", a.p99_us);
        assert_eq!((all[1].calls, all[1].rows), (1, 3));
        Ok(())
    }

    #[test]
    fn since_subtracts_counters_and_histograms() -> Result<()> {
        let q = queries();
        for _ in 0..10 {
            q.record(b"S", &run(1_000, 1));
        }
        let earlier = q.snapshot().remove(0);
        for _ in 0..10 {
            q.record(b"S", &run(1_000_000, 2));
        }
        let later = q.snapshot().remove(0);
        let delta = later.since(&earlier);
        assert_eq!((delta.calls, delta.rows), (10, 20));
        assert_eq!(delta.total_us, 10_000.0);
        assert!((delta.p50_us - 1000.0).abs() <= 10.0, "{}", delta.p50_us);
        assert!(
            later.p50_us < 2.0,
            "the whole history's median is the fast half"
        );
        Ok(())
    }

    #[test]
    fn statements_past_the_cap_share_one_row() -> Result<()> {
        let q = queries();
        for i in 0..MAX_STATEMENTS + 5 {
            q.record(format!("SELECT {i}").as_bytes(), &run(1, 0));
        }
        let all = q.snapshot();
        assert_eq!(all.len(), MAX_STATEMENTS + 1);
        let other = all.iter().find(|s| s.sql == OTHER).expect("overflow row");
        assert_eq!(other.calls, 5);
        Ok(())
    }
}
