//! The observed workload the advisor works from.
//!
//! The monitor's per-statement stats say what ran; the advisor adds its own record of the
//! statements planned through [`Db::explain`] and
//! [`AdviseOptions::queries`](super::AdviseOptions::queries), which a service may ask about
//! before they ever run. [`Db::observed_statements`] is the one place that answers.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::db::Db;

/// How many distinct statements the minimal record keeps; later ones are not recorded, so a
/// service generating SQL text per call cannot grow it without bound.
const MAX_STATEMENTS: usize = 1000;

/// A statement of the observed workload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObservedStatement {
    /// The SQL text, as run.
    pub sql: String,
    /// How many times it ran (or was planned, for the advisor's own record).
    pub calls: u64,
    /// Total time spent running it (zero when only planned).
    pub total: Duration,
}

/// The advisor's own record of statements, by SQL text.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    statements: Mutex<HashMap<String, (u64, Duration)>>,
}

impl Observed {
    /// Counts one call of `sql` that took `elapsed`.
    pub(crate) fn record_timed(&self, sql: &str, elapsed: Duration) {
        let mut map = self.statements.lock();
        if let Some(entry) = map.get_mut(sql) {
            entry.0 += 1;
            entry.1 += elapsed;
        } else if map.len() < MAX_STATEMENTS {
            map.insert(sql.to_owned(), (1, elapsed));
        }
    }

    /// Counts one planning of `sql`.
    pub(crate) fn record(&self, sql: &str) {
        self.record_timed(sql, Duration::ZERO);
    }

    /// Every recorded statement, by total time then calls, most first.
    pub(crate) fn all(&self) -> Vec<ObservedStatement> {
        let mut list: Vec<ObservedStatement> = self
            .statements
            .lock()
            .iter()
            .map(|(sql, (calls, total))| ObservedStatement {
                sql: sql.clone(),
                calls: *calls,
                total: *total,
            })
            .collect();
        list.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(b.calls.cmp(&a.calls))
                .then(a.sql.cmp(&b.sql))
        });
        list
    }
}

impl Db {
    /// The observed workload, by total time then calls, most first: what [`Db::advise`] and
    /// [`Db::unused_indexes`] work from. These are the statements the monitor counted in
    /// `read`, `write`, batches and repositories, plus those planned through [`Db::explain`]
    /// and [`AdviseOptions::queries`](super::AdviseOptions::queries) (with no time of their own).
    pub fn observed_statements(&self) -> Vec<ObservedStatement> {
        let mut list: Vec<ObservedStatement> = self
            .report()
            .queries
            .into_iter()
            .filter(|q| q.sql != crate::monitor::queries::OTHER && is_dml(&q.sql))
            .map(|q| ObservedStatement {
                sql: q.sql,
                calls: q.calls,
                total: Duration::from_secs_f64(q.total_us.max(0.0) / 1e6),
            })
            .collect();
        for planned in self.inner.advisor.observed.all() {
            if !list.iter().any(|s| s.sql == planned.sql) {
                list.push(planned);
            }
        }
        list.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(b.calls.cmp(&a.calls))
                .then(a.sql.cmp(&b.sql))
        });
        list
    }
}

/// Only queries and data changes have plans worth advising on; schema statements and pragmas
/// the monitor also counts do not.
fn is_dml(sql: &str) -> bool {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    [
        "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "REPLACE", "VALUES",
    ]
    .iter()
    .any(|k| first.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    #[test]
    fn orders_by_total_then_calls() -> Result<()> {
        let o = Observed::default();
        o.record("a");
        o.record("b");
        o.record("b");
        o.record_timed("c", Duration::from_millis(5));
        let order: Vec<String> = o.all().into_iter().map(|s| s.sql).collect();
        assert_eq!(order, vec!["c", "b", "a"]);
        Ok(())
    }

    #[test]
    fn only_queries_and_data_changes_are_workload() {
        assert!(is_dml("  select 1"));
        assert!(is_dml("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!is_dml("CREATE INDEX i ON t(a)"));
        assert!(!is_dml("PRAGMA optimize"));
    }

    #[test]
    fn record_is_bounded() -> Result<()> {
        let o = Observed::default();
        for i in 0..(MAX_STATEMENTS + 10) {
            o.record(&format!("SELECT {i}"));
        }
        assert_eq!(o.all().len(), MAX_STATEMENTS);
        Ok(())
    }
}
