//! The report sections that come from monitoring (`db.report()`) and the index advisor.

use strata::advisor::AdviseOptions;
use strata::{Db, Error, Result};

/// A titled block of report lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// The lines under it, without indentation.
    pub lines: Vec<String>,
}

/// The sections that need monitoring and the advisor.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraSections {
    /// Statement cache hits, misses, hit rate (from `db.report()`).
    pub statement_cache: Section,
    /// The statements that took the most total time: calls, mean, p99, full scans (from
    /// `db.report()`).
    pub top_statements: Section,
    /// Indexes the advisor would add, as `CREATE INDEX` (from `Db::advise`).
    pub index_advice: Section,
    /// The statements whose p95 moved the most between the last trend window and the earlier
    /// ones (from `db.report()`).
    pub trends: Section,
    /// The job queue's figures (from `db.report()`), when the database has used the queue.
    pub jobs: Option<strata::jobs::JobsReport>,
}

/// Builds the monitoring and advisor sections for `db` after a workload ran.
pub fn report_sections(db: &Db) -> Result<ExtraSections> {
    let report = db.report();
    let cache = &report.statement_cache;
    let statement_cache = Section {
        title: "Statement cache",
        lines: vec![format!(
            "{} executions reused a prepared statement, {} prepared anew: {:.1}% hits \
             (capacity {} per connection)",
            cache.hits,
            cache.misses,
            cache.hit_rate * 100.0,
            cache.capacity
        )],
    };
    let mut top: Vec<String> = report
        .queries
        .iter()
        .take(TOP_STATEMENTS)
        .map(|q| {
            format!(
                "{:>9} calls  mean {:>8.1} µs  p99 {:>8.1} µs  scans {:>7}  {}",
                q.calls,
                q.mean_us,
                q.p99_us,
                q.fullscan_steps,
                shorten(&q.sql, 80)
            )
        })
        .collect();
    if top.is_empty() {
        top.push("no statements observed (monitoring off?)".into());
    }
    Ok(ExtraSections {
        statement_cache,
        top_statements: Section {
            title: "Top statements",
            lines: top,
        },
        index_advice: index_advice(db)?,
        trends: movers(&report.trends),
        jobs: report.jobs.clone(),
    })
}

/// The top movers: p95 of the last window against the average of the earlier ones.
fn movers(trends: &strata::monitor::Trends) -> Section {
    let window = trends.window_us / 1e6;
    let mut lines = vec![format!(
        "{} windows of {window} s; p95 and calls/s of the last window against the earlier ones",
        trends.completed_windows
    )];
    let pct = |c: Option<f64>| c.map_or_else(|| "-".to_owned(), |c| format!("{:+.0}%", c * 100.0));
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for s in trends.top_movers(TOP_STATEMENTS) {
        lines.push(format!(
            "p95 {:>6} {:>9} µs (was {:>9} µs)  calls/s {:>6} {:>9}  {}",
            pct(s.p95_us.change),
            num(s.p95_us.last),
            num(s.p95_us.baseline),
            pct(s.calls_per_s.change),
            num(s.calls_per_s.last),
            shorten(&s.sql, 60)
        ));
    }
    if lines.len() == 1 {
        lines.push("no statement ran in the last window and an earlier one".into());
    }
    Section {
        title: "Trends",
        lines,
    }
}

/// What the advisor makes of the statements the workload ran.
fn index_advice(db: &Db) -> Result<Section> {
    let advice = db.advise(AdviseOptions::new())?;
    let mut lines: Vec<String> = advice
        .indexes
        .iter()
        .map(|index| {
            format!(
                "{}  -- serves {} statement(s)",
                index.create_sql,
                index.statements.len()
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("no index advice: every observed statement is served by an index".into());
    }
    Ok(Section {
        title: "Index advice",
        lines,
    })
}

/// How many statements the report lists.
const TOP_STATEMENTS: usize = 5;

/// One line of SQL, cut to `max` characters.
fn shorten(sql: &str, max: usize) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// The monitoring report as JSON, for `load --json`.
pub fn monitor_report(db: &Db) -> Result<Option<serde_json::Value>> {
    serde_json::to_value(db.report())
        .map(Some)
        .map_err(Error::closure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_have_their_titles() -> Result<()> {
        let db = Db::open_in_memory()?;
        let s = report_sections(&db)?;
        assert_eq!(s.statement_cache.title, "Statement cache");
        assert_eq!(s.top_statements.title, "Top statements");
        assert_eq!(s.index_advice.title, "Index advice");
        assert_eq!(s.trends.title, "Trends");
        for section in [
            s.statement_cache,
            s.top_statements,
            s.index_advice,
            s.trends,
        ] {
            assert!(!section.lines.is_empty());
        }
        Ok(())
    }
}
