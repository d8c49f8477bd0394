//! The figures of the jobs this process enqueued and ran, and the depths read from the
//! database, for [`Db::report`](crate::Db::report) and [`Queue::report`](super::Queue::report).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rusqlite::Connection;

use super::schema::now_ms;
use crate::error::Result;
use crate::monitor::{JobsReport, KindReport, Percentiles, QueueDepth};

/// Counters and latency histograms per kind.
#[derive(Default)]
pub(crate) struct Stats {
    kinds: Mutex<BTreeMap<String, KindCounters>>,
    enqueued: Mutex<u64>,
}

struct KindCounters {
    completed: u64,
    failed: u64,
    retried: u64,
    dead: u64,
    start_lag: Histogram<u64>,
    run_time: Histogram<u64>,
}

impl Default for KindCounters {
    fn default() -> Self {
        // Microseconds up to an hour at 2 significant digits: a few kilobytes per kind.
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        KindCounters {
            completed: 0,
            failed: 0,
            retried: 0,
            dead: 0,
            start_lag: histogram(),
            run_time: histogram(),
        }
    }
}

/// What became of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Retried,
    Dead,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        max_us: h.max() as f64,
    }
}

impl Stats {
    pub(crate) fn enqueued(&self, n: u64) {
        *self.enqueued.lock() += n;
    }

    /// A handler started `lag` after its job was due.
    pub(crate) fn started(&self, kind: &str, lag: Duration) {
        let mut kinds = self.kinds.lock();
        let k = kinds.entry(kind.to_owned()).or_default();
        let _ = k.start_lag.record(micros(lag).min(k.start_lag.high()));
    }

    /// A run of `kind` ended after `run_time` (`None` for a job that never reached a handler).
    pub(crate) fn ended(&self, kind: &str, run_time: Option<Duration>, ended: Ended) {
        let mut kinds = self.kinds.lock();
        let k = kinds.entry(kind.to_owned()).or_default();
        if let Some(t) = run_time {
            let _ = k.run_time.record(micros(t).min(k.run_time.high()));
        }
        match ended {
            Ended::Completed => k.completed += 1,
            Ended::Retried => {
                k.failed += 1;
                k.retried += 1;
            }
            Ended::Dead => {
                k.failed += 1;
                k.dead += 1;
            }
        }
    }

    /// The report: this process's counters and the depths in the database.
    pub(crate) fn report(&self, conn: &Connection) -> Result<JobsReport> {
        let kinds = self
            .kinds
            .lock()
            .iter()
            .map(|(kind, k)| KindReport {
                kind: kind.clone(),
                completed: k.completed,
                failed: k.failed,
                retried: k.retried,
                dead_lettered: k.dead,
                start_lag: percentiles(&k.start_lag),
                run_time: percentiles(&k.run_time),
            })
            .collect();
        let (queues, oldest) = depths(conn)?;
        Ok(JobsReport {
            queues,
            kinds,
            enqueued: *self.enqueued.lock(),
            oldest_pending_age_us: oldest,
        })
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Depth per queue and the oldest waiting job's age, read from the tables.
pub(crate) fn depths(conn: &Connection) -> Result<(Vec<QueueDepth>, f64)> {
    let now = now_ms();
    let mut queues: BTreeMap<String, QueueDepth> = BTreeMap::new();
    let mut oldest: Option<i64> = None;
    let mut stmt = conn.prepare_cached(
        "SELECT queue, count(*) FILTER (WHERE state = 0),
                count(*) FILTER (WHERE state = 0 AND run_at <= ?1),
                count(*) FILTER (WHERE state = 1),
                min(enqueued_at) FILTER (WHERE state = 0)
         FROM strata_jobs GROUP BY queue",
    )?;
    let mut rows = stmt.query([now])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let d = queues.entry(name.clone()).or_insert_with(|| QueueDepth {
            queue: name,
            ..QueueDepth::default()
        });
        d.pending = count(r.get(1)?);
        d.due = count(r.get(2)?);
        d.running = count(r.get(3)?);
        if let Some(at) = r.get::<_, Option<i64>>(4)? {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    let mut stmt =
        conn.prepare_cached("SELECT queue, count(*) FROM strata_dead_jobs GROUP BY queue")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let d = queues.entry(name.clone()).or_insert_with(|| QueueDepth {
            queue: name,
            ..QueueDepth::default()
        });
        d.dead = count(r.get(1)?);
    }
    let mut stmt = conn.prepare_cached("SELECT name, paused FROM strata_job_queues")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let d = queues.entry(name.clone()).or_insert_with(|| QueueDepth {
            queue: name,
            ..QueueDepth::default()
        });
        d.paused = r.get(1)?;
    }
    let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 * 1000.0);
    Ok((queues.into_values().collect(), age))
}
