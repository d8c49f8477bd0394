//! The slow-query log: a bounded ring of the latest slow statements with their plans.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::Connection;
use serde::Serialize;

use super::alert::{Alert, Alerts};
use super::trace::Pending;

/// A statement that took at least `slow_query_threshold`, as kept in a [`Report`](crate::monitor::Report).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQuery {
    /// Increases by one per slow statement of this `Db`; tells which entries are new between
    /// two reports.
    pub seq: u64,
    /// The statement's SQL text (parameters are not kept: they may be personal data).
    pub sql: String,
    /// How long it ran, in microseconds.
    pub duration_us: f64,
    /// The number of parameters the statement takes (their values are not kept).
    pub params: usize,
    /// `EXPLAIN QUERY PLAN` of the statement, one line per plan step, indented by depth; taken
    /// on the same connection right after the caller's closure ended. `None` when the statement
    /// cannot be explained there any more (a DDL statement, or a temporary table since dropped).
    pub plan: Option<String>,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The ring and the count of every slow statement ever seen.
pub(crate) struct SlowLog {
    capacity: usize,
    ring: Mutex<VecDeque<SlowQuery>>,
    total: AtomicU64,
    seq: AtomicU64,
    /// The `Db` the metrics are published for.
    db: Arc<str>,
}

impl SlowLog {
    pub(crate) fn new(capacity: usize, db: Arc<str>) -> Self {
        SlowLog {
            capacity,
            // Grown on demand: most databases never fill a large log.
            ring: Mutex::new(VecDeque::new()),
            total: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            db,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counts a slow statement the moment it finishes, so the total is right even for those
    /// that the ring has no room for.
    pub(crate) fn note(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        super::metrics::slow_query(&self.db);
    }

    /// Slow statements seen so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The ring's entries, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<SlowQuery> {
        self.ring.lock().iter().cloned().collect()
    }

    /// Logs and keeps the slow statements of a scope that ended, with plans taken on `conn`
    /// (none while unwinding), and raises their alerts.
    pub(crate) fn record(&self, conn: Option<&Connection>, pending: Vec<Pending>, alerts: &Alerts) {
        let mut plans: HashMap<String, Option<String>> = HashMap::new();
        for slow in pending {
            let plan = match conn {
                Some(conn) => plans
                    .entry(slow.sql.clone())
                    .or_insert_with(|| explain(conn, &slow.sql))
                    .clone(),
                None => None,
            };
            let duration_us = slow.duration.as_nanos() as f64 / 1000.0;
            tracing::warn!(
                sql = %slow.sql,
                duration_us,
                plan = plan.as_deref().unwrap_or("(unavailable)"),
                "slow query"
            );
            let entry = SlowQuery {
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                sql: slow.sql.clone(),
                duration_us,
                params: slow.params,
                plan,
                at_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            {
                let mut ring = self.ring.lock();
                if ring.len() == self.capacity {
                    ring.pop_front();
                }
                ring.push_back(entry);
            }
            alerts.fire(Alert::SlowQuery {
                sql: slow.sql,
                duration: slow.duration,
            });
        }
    }
}

/// `EXPLAIN QUERY PLAN` of `sql` as indented text.
pub(crate) fn explain(conn: &Connection, sql: &str) -> Option<String> {
    // Prepared uncached: a plan is taken rarely and must not evict the caller's statements.
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).ok()?;
    let params = stmt.parameter_count();
    // Unbound parameters would plan as NULL anyway; rusqlite wants them bound explicitly.
    let nulls = std::iter::repeat_n(rusqlite::types::Null, params);
    let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(3)?,
        ))
    });
    let rows = rows
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .ok()?;
    // Each step names its parent step; depth is the length of that chain.
    let mut depth: HashMap<i64, usize> = HashMap::new();
    let mut text = String::new();
    for (id, parent, detail) in rows {
        let d = depth.get(&parent).map_or(0, |p| p + 1);
        depth.insert(id, d);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&"  ".repeat(d));
        text.push_str(&detail);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use std::time::Duration;

    #[test]
    fn explain_indents_plan_steps() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t(a, b); CREATE INDEX t_a ON t(a);")?;
        let plan = explain(&conn, "SELECT * FROM t WHERE a = ?1 ORDER BY b").expect("a plan");
        assert!(plan.contains("USING INDEX t_a"), "{plan}");
        assert!(plan.contains("TEMP B-TREE"), "{plan}");
        assert_eq!(explain(&conn, "CREATE TABLE t(x)"), None);
        Ok(())
    }

    #[test]
    fn ring_keeps_the_latest() -> Result<()> {
        let log = SlowLog::new(2, "test".into());
        let alerts = Alerts::new(Duration::from_secs(60), Vec::new(), "test".into());
        let pending = (0..5)
            .map(|i| Pending {
                sql: format!("SELECT {i}"),
                params: 0,
                duration: Duration::from_millis(20),
            })
            .collect();
        for _ in 0..5 {
            log.note();
        }
        log.record(None, pending, &alerts);
        let kept = log.snapshot();
        assert_eq!(kept.len(), 2);
        assert_eq!((kept[0].seq, kept[1].seq), (4, 5));
        assert_eq!(kept[1].sql, "SELECT 4");
        assert_eq!(log.total(), 5);
        Ok(())
    }
}
