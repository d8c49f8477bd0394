//! Publication through the `metrics` facade (feature `metrics`); without the feature every
//! function here is empty and compiles away.
//!
//! Every series has a `db` label (the database path). Per-statement series add a `sql` label:
//! the statement's text with whitespace collapsed, cut at 200 characters. Its cardinality is
//! bounded by the statement table (1000 texts per `Db`, then `(other statements)`); SQL with
//! literals inlined instead of bound parameters would fill it.
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `strata_query_calls_total` | counter | db, sql |
//! | `strata_query_rows_total` | counter | db, sql |
//! | `strata_query_duration_seconds` | histogram | db, sql |
//! | `strata_query_fullscan_steps_total` | counter | db, sql |
//! | `strata_query_sorts_total` | counter | db, sql |
//! | `strata_query_autoindexes_total` | counter | db, sql |
//! | `strata_statement_cache_hits_total` / `_misses_total` | counter | db |
//! | `strata_slow_queries_total` | counter | db |
//! | `strata_alerts_total` | counter | db, kind |
//! | `strata_pool_waits_total` | counter | db |
//! | `strata_pool_wait_seconds` | histogram | db |
//! | `strata_pool_size`, `strata_pool_idle` | gauge | db |
//! | `strata_cache_hits_total`, `_misses_total`, `_evictions_total` | counter | db, cache |
//! | `strata_cache_hit_rate`, `strata_cache_size` | gauge | db, cache |
//! | `strata_write_commits_total`, `strata_writes_total`, `strata_write_failures_total` | counter | db |
//! | `strata_write_mean_group` | gauge | db |
//! | `strata_wal_bytes` | gauge | db |
//!
//! Per-statement and event series are updated as statements run. The others are copied from a
//! [`Report`] whenever one is made by [`Db::report`](crate::Db::report); the cache and WAL
//! series also by the windowed checks, once per `alert_window` (they read only the caches and
//! the WAL, not the pool or the writer). The recorder must be installed before the `Db` opens:
//! statement handles are registered when a statement is first seen.

#[cfg(feature = "metrics")]
pub(crate) use enabled::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::*;

#[cfg(not(feature = "metrics"))]
mod disabled {
    use std::time::Duration;

    use crate::cache::CacheStats;
    use crate::monitor::{Alert, Report};

    pub(crate) fn alert(_db: &str, _alert: &Alert) {}
    pub(crate) fn slow_query(_db: &str) {}
    pub(crate) fn pool_wait(_db: &str, _waited: Duration) {}
    pub(crate) fn report(_db: &str, _report: &Report) {}
    pub(crate) fn checks(_db: &str, _caches: &[CacheStats], _wal_bytes: u64) {}
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use metrics::{counter, gauge, histogram, Counter, Histogram};

    use crate::cache::CacheStats;
    use crate::monitor::queries::Execution;
    use crate::monitor::{Alert, Report};

    /// The longest `sql` label; longer statements are cut (on a character boundary).
    const MAX_SQL_LABEL: usize = 200;

    fn sql_label(sql: &str) -> String {
        let mut label = String::with_capacity(sql.len().min(MAX_SQL_LABEL));
        for word in sql.split_whitespace() {
            if !label.is_empty() {
                label.push(' ');
            }
            label.push_str(word);
        }
        if label.len() > MAX_SQL_LABEL {
            let mut cut = MAX_SQL_LABEL;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
        }
        label
    }

    /// The handles of one statement's series, registered once so that a statement's
    /// execution costs no label formatting.
    pub(crate) struct Statement {
        calls: Counter,
        rows: Counter,
        duration: Histogram,
        fullscan_steps: Counter,
        sorts: Counter,
        autoindexes: Counter,
        cache_hits: Counter,
        cache_misses: Counter,
    }

    impl Statement {
        pub(crate) fn new(db: &str, sql: &str) -> Self {
            let sql = sql_label(sql);
            let labels = [("db", db.to_owned()), ("sql", sql)];
            let db = [("db", db.to_owned())];
            Statement {
                calls: counter!("strata_query_calls_total", &labels),
                rows: counter!("strata_query_rows_total", &labels),
                duration: histogram!("strata_query_duration_seconds", &labels),
                fullscan_steps: counter!("strata_query_fullscan_steps_total", &labels),
                sorts: counter!("strata_query_sorts_total", &labels),
                autoindexes: counter!("strata_query_autoindexes_total", &labels),
                cache_hits: counter!("strata_statement_cache_hits_total", &db),
                cache_misses: counter!("strata_statement_cache_misses_total", &db),
            }
        }

        pub(crate) fn add(&self, run: &Execution) {
            let w = run.weight;
            if w == 0 {
                return;
            }
            self.calls.increment(w);
            self.rows.increment(run.rows * w);
            self.duration.record_many(
                run.nanos as f64 / 1e9,
                usize::try_from(w).unwrap_or(usize::MAX),
            );
            self.fullscan_steps.increment(run.fullscan_steps * w);
            self.sorts.increment(run.sorts * w);
            self.autoindexes.increment(run.autoindexes * w);
            if run.fresh {
                self.cache_misses.increment(w);
            } else {
                self.cache_hits.increment(w);
            }
        }
    }

    pub(crate) fn alert(db: &str, alert: &Alert) {
        counter!("strata_alerts_total", "db" => db.to_owned(), "kind" => alert.kind()).increment(1);
    }

    pub(crate) fn slow_query(db: &str) {
        counter!("strata_slow_queries_total", "db" => db.to_owned()).increment(1);
    }

    pub(crate) fn pool_wait(db: &str, waited: Duration) {
        counter!("strata_pool_waits_total", "db" => db.to_owned()).increment(1);
        histogram!("strata_pool_wait_seconds", "db" => db.to_owned()).record(waited.as_secs_f64());
    }

    pub(crate) fn report(db: &str, report: &Report) {
        let label = || db.to_owned();
        gauge!("strata_pool_size", "db" => label()).set(report.pool.size);
        gauge!("strata_pool_idle", "db" => label()).set(report.pool.idle);
        let w = &report.writes;
        counter!("strata_write_commits_total", "db" => label()).absolute(w.stats.commits);
        counter!("strata_writes_total", "db" => label()).absolute(w.stats.writes);
        counter!("strata_write_failures_total", "db" => label()).absolute(w.stats.failed_writes);
        gauge!("strata_write_mean_group", "db" => label()).set(w.mean_group);
        checks(db, &report.caches, report.wal_bytes);
    }

    /// The series the windowed checks refresh: those of what they read.
    pub(crate) fn checks(db: &str, caches: &[CacheStats], wal_bytes: u64) {
        let label = || db.to_owned();
        gauge!("strata_wal_bytes", "db" => label()).set(wal_bytes as f64);
        for c in caches {
            let labels = [("db", label()), ("cache", c.name.clone())];
            counter!("strata_cache_hits_total", &labels).absolute(c.hits);
            counter!("strata_cache_misses_total", &labels).absolute(c.misses);
            counter!("strata_cache_evictions_total", &labels).absolute(c.evictions);
            gauge!("strata_cache_hit_rate", &labels).set(c.hit_rate);
            gauge!("strata_cache_size", &labels).set(c.size as f64);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::Result;

        #[test]
        fn sql_labels_are_collapsed_and_cut() -> Result<()> {
            assert_eq!(
                sql_label("SELECT a,\n       b\tFROM t"),
                "SELECT a, b FROM t"
            );
            let long = format!("SELECT '{}'", "é".repeat(300));
            let label = sql_label(&long);
            assert!(label.len() <= MAX_SQL_LABEL && label.starts_with("SELECT 'é"));
            Ok(())
        }
    }
}
