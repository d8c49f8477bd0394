//! `Report`: everything the monitor knows about a `Db` at one moment, and the difference of two.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::queries::{self, QueryStats};
use super::slow::SlowQuery;
use super::Monitor;
use crate::cache::CacheStats;

/// A snapshot of a `Db`'s figures, from [`Db::report`](crate::Db::report).
///
/// Serializes (serde) with stable field names; every duration is in microseconds (`_us`, with
/// nanosecond precision). Counters grow for the life of the `Db`; [`Report::delta`] turns two
/// snapshots into the figures of the window between them. With monitoring off
/// ([`Config::monitoring`](crate::Config::monitoring)) `queries`, `slow_queries`,
/// `statement_cache` and `trends` stay empty.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// let db = strata::Db::builder().build()?;
/// db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;
/// let before = db.report();
/// db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))?;
/// let window = db.report().delta(&before);
/// assert_eq!(window.queries[0].sql, "SELECT count(*) FROM t");
/// assert_eq!(window.queries[0].calls, 1);
/// let json = serde_json::to_value(&window).unwrap();
/// assert_eq!(json["queries"][0]["calls"], 1);
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether statements are monitored.
    pub monitoring: bool,
    /// Time since the `Db` opened; in a delta, the length of the window.
    pub uptime_us: f64,
    /// The reader pool.
    pub pool: PoolStats,
    /// Reuse of prepared statements.
    pub statement_cache: StatementCacheStats,
    /// Every registered cache's counters.
    pub caches: Vec<CacheStats>,
    /// The write path: commits and group sizes.
    pub writes: WriteReport,
    /// Per-statement statistics, longest total time first. At most 1000 distinct SQL texts are
    /// tracked; executions of further ones are counted under `(other statements)`.
    pub queries: Vec<QueryStats>,
    /// The latest slow statements, oldest first (at most `slow_query_log_size`).
    pub slow_queries: Vec<SlowQuery>,
    /// Slow statements seen, including those the log had no room for.
    pub slow_queries_total: u64,
    /// Alerts fired (after the once-per-window rule).
    pub alerts_fired: u64,
    /// The size of the WAL file now (0 in memory). A gauge: a delta keeps the later value.
    pub wal_bytes: u64,
    /// The job queue's figures, once the `Db` has used it ([`Db::jobs`](crate::Db::jobs));
    /// a delta keeps the later snapshot's.
    pub jobs: Option<super::JobsReport>,
    /// Per-window figures of every statement and cache and their trends (empty with
    /// monitoring off); a delta keeps the later snapshot's.
    pub trends: super::Trends,
    /// The shared cache tier's counters, when the `Db` has one (feature `redis`); a delta
    /// keeps the later snapshot's.
    #[cfg(feature = "redis")]
    pub shared_tier: Option<crate::cache::SharedTierStats>,
    /// The change log of several instances and its follower, with
    /// [`Config::instances`](crate::Config::instances) on; a delta keeps the later snapshot's.
    pub instances: Option<crate::instances::InstancesReport>,
}

/// The reader pool in a [`Report`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PoolStats {
    /// The most readers (`Config::readers`).
    pub max_size: u32,
    /// Readers open now.
    pub size: u32,
    /// Readers open and idle now.
    pub idle: u32,
    /// `read` calls that found no idle reader and waited for one.
    pub waits: u64,
    /// Time spent in those waits.
    pub wait_time_us: f64,
}

/// Reuse of prepared statements, in a [`Report`].
///
/// rusqlite's statement cache keeps no counters, so these are measured on the executions
/// themselves: SQLite counts the runs of each prepared statement, and a statement whose first
/// run it is was just prepared. `misses` are executions that needed a fresh prepare (a
/// `prepare_cached` miss, or a statement prepared uncached, as `Connection::execute` and
/// `query_row` do on every call); `hits` are executions of a statement prepared before (a
/// `prepare_cached` hit, or one statement run repeatedly). Evictions are not observable; only
/// statements run inside `read` and `write` closures are counted.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatementCacheStats {
    /// Statements kept per connection (`Config::statement_cache_capacity`).
    pub capacity: usize,
    /// Executions of an already prepared statement.
    pub hits: u64,
    /// Executions of a freshly prepared statement.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before the first execution.
    pub hit_rate: f64,
}

/// A snapshot of the write path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// `write` calls whose closure succeeded and whose transaction committed.
    pub writes: u64,
    /// `write` calls that returned an error.
    pub failed_writes: u64,
    /// Transactions whose BEGIN or COMMIT failed (every caller in them got the error).
    pub failed_commits: u64,
    /// The largest group committed in one transaction.
    pub max_group: u64,
}

impl WriteStats {
    /// Mean number of `write` calls per committed transaction.
    pub fn mean_group(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.writes as f64 / self.commits as f64
        }
    }
}

/// The write path in a [`Report`]: [`WriteStats`] plus the mean group size.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WriteReport {
    /// The counters (serialized inline: `commits`, `writes`, ...). In a delta, `max_group` is
    /// the later snapshot's (a maximum cannot be subtracted).
    #[serde(flatten)]
    pub stats: WriteStats,
    /// Mean `write` calls per committed transaction.
    pub mean_group: f64,
}

impl WriteReport {
    fn new(stats: WriteStats) -> Self {
        WriteReport {
            stats,
            mean_group: stats.mean_group(),
        }
    }
}

impl StatementCacheStats {
    fn new(capacity: usize, hits: u64, misses: u64) -> Self {
        let lookups = hits + misses;
        StatementCacheStats {
            capacity,
            hits,
            misses,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        }
    }
}

impl Report {
    /// The figures of the window from `earlier` to `self` (two reports of the same `Db`, the
    /// earlier one first): counters are subtracted, percentiles and maxima of each statement
    /// come from the difference of its latency histograms, `slow_queries` keeps the entries
    /// recorded after `earlier`, and gauges (pool sizes, cache sizes, WAL bytes) are `self`'s.
    /// Statements that did not run in the window are left out.
    pub fn delta(&self, earlier: &Report) -> Report {
        let before: HashMap<&str, &QueryStats> = earlier
            .queries
            .iter()
            .map(|q| (q.sql.as_str(), q))
            .collect();
        let mut queries: Vec<QueryStats> = self
            .queries
            .iter()
            .map(|q| match before.get(q.sql.as_str()) {
                Some(old) => q.since(old),
                None => q.clone(),
            })
            .filter(|q| q.calls > 0)
            .collect();
        queries::sort_by_total(&mut queries);

        let caches = self
            .caches
            .iter()
            .map(|c| match earlier.caches.iter().find(|e| e.name == c.name) {
                Some(old) => cache_since(c, old),
                None => c.clone(),
            })
            .collect();

        let last_seq = earlier.slow_queries.last().map_or(0, |s| s.seq);
        let w = &self.writes.stats;
        let e = &earlier.writes.stats;
        Report {
            monitoring: self.monitoring,
            uptime_us: (self.uptime_us - earlier.uptime_us).max(0.0),
            pool: PoolStats {
                waits: self.pool.waits.saturating_sub(earlier.pool.waits),
                wait_time_us: (self.pool.wait_time_us - earlier.pool.wait_time_us).max(0.0),
                ..self.pool
            },
            statement_cache: StatementCacheStats::new(
                self.statement_cache.capacity,
                self.statement_cache
                    .hits
                    .saturating_sub(earlier.statement_cache.hits),
                self.statement_cache
                    .misses
                    .saturating_sub(earlier.statement_cache.misses),
            ),
            caches,
            writes: WriteReport::new(WriteStats {
                commits: w.commits.saturating_sub(e.commits),
                writes: w.writes.saturating_sub(e.writes),
                failed_writes: w.failed_writes.saturating_sub(e.failed_writes),
                failed_commits: w.failed_commits.saturating_sub(e.failed_commits),
                max_group: w.max_group,
            }),
            queries,
            slow_queries: self
                .slow_queries
                .iter()
                .filter(|s| s.seq > last_seq)
                .cloned()
                .collect(),
            slow_queries_total: self
                .slow_queries_total
                .saturating_sub(earlier.slow_queries_total),
            alerts_fired: self.alerts_fired.saturating_sub(earlier.alerts_fired),
            wal_bytes: self.wal_bytes,
            jobs: self.jobs.clone(),
            trends: self.trends.clone(),
            #[cfg(feature = "redis")]
            shared_tier: self.shared_tier.clone(),
            instances: self.instances.clone(),
        }
    }
}

fn cache_since(now: &CacheStats, old: &CacheStats) -> CacheStats {
    let mut delta = CacheStats::empty(&now.name, now.capacity);
    delta.hits = now.hits.saturating_sub(old.hits);
    delta.misses = now.misses.saturating_sub(old.misses);
    delta.loads = now.loads.saturating_sub(old.loads);
    delta.load_errors = now.load_errors.saturating_sub(old.load_errors);
    delta.evictions = now.evictions.saturating_sub(old.evictions);
    delta.expirations = now.expirations.saturating_sub(old.expirations);
    delta.invalidations = now.invalidations.saturating_sub(old.invalidations);
    // Gauges, not counters: what the cache holds now.
    delta.size = now.size;
    delta.bytes = now.bytes;
    delta.max_bytes = now.max_bytes;
    delta.finish()
}

impl Monitor {
    /// The monitor's own figures together with those of the parts the `Db` owns: the reader
    /// pool (its most readers, those open and those idle now), the caches and the write path.
    pub(crate) fn report(
        &self,
        (max_readers, open_readers, idle_readers): (u32, u32, u32),
        caches: Vec<CacheStats>,
        writes: WriteStats,
    ) -> Report {
        let (queries, trends) = if self.enabled {
            (self.queries.snapshot(), self.trends())
        } else {
            (Vec::new(), super::Trends::default())
        };
        let (calls, prepares) = queries
            .iter()
            .fold((0, 0), |(c, p), q| (c + q.calls, p + q.prepares));
        let report = Report {
            monitoring: self.enabled,
            uptime_us: self.uptime().as_nanos() as f64 / 1000.0,
            pool: PoolStats {
                max_size: max_readers,
                size: open_readers,
                idle: idle_readers,
                waits: self.pool_waits.load(Ordering::Relaxed),
                wait_time_us: self.pool_wait_ns.load(Ordering::Relaxed) as f64 / 1000.0,
            },
            statement_cache: StatementCacheStats::new(
                self.statement_cache_capacity,
                calls - prepares,
                prepares,
            ),
            caches,
            writes: WriteReport::new(writes),
            queries,
            slow_queries: self.slow.snapshot(),
            slow_queries_total: self.slow.total(),
            alerts_fired: self.alerts.fired(),
            wal_bytes: self.wal_bytes(),
            jobs: None,
            trends,
            #[cfg(feature = "redis")]
            shared_tier: self.caches.shared_tier().map(|tier| tier.stats()),
            instances: None,
        };
        super::metrics::report(&self.label, &report);
        report
    }
}
