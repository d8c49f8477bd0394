//! The report sections that come from monitoring and the index advisor.
//!
//! SEAM: monitoring (`db.report()`) and the advisor (`db.advise()`) are built on other
//! branches. Until they are merged, these functions say "not available in this build"; at
//! merge, fill them from those APIs and leave the callers (the demo and load reports, their
//! JSON) as they are.

use crate::db::Db;
use crate::error::Result;

/// A titled block of report lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// The lines under it, without indentation.
    pub lines: Vec<String>,
}

/// The sections that need monitoring and the advisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraSections {
    /// Statement cache hits, misses, hit rate (from `db.report()`).
    pub statement_cache: Section,
    /// The statements that took the most total time: calls, mean, p99, full scans (from
    /// `db.report()`).
    pub top_statements: Section,
    /// Indexes the advisor would add, as `CREATE INDEX` (from `db.advise()`).
    pub index_advice: Section,
}

/// The line the sections carry until their features are merged.
pub const UNAVAILABLE: &str = "not available in this build";

/// Builds the monitoring and advisor sections for `db` after a workload ran.
///
/// SEAM (lead, at merge): `statement_cache` from `db.report()`'s statement-cache hits/misses
/// (one line per connection kind or a total, with the hit rate); `top_statements` from
/// `db.report()`'s queries sorted by total time, top 5: calls, mean and p99 in µs, full-scan
/// steps, SQL shortened to ~80 characters; `index_advice` from `db.advise()`: each
/// `IndexAdvice::create_sql` and the queries it serves, or "no index advice: every observed
/// statement uses an index".
pub fn report_sections(db: &Db) -> Result<ExtraSections> {
    let _ = db;
    let unavailable = |title, feature: &str| Section {
        title,
        lines: vec![format!("{UNAVAILABLE} (needs {feature})")],
    };
    Ok(ExtraSections {
        statement_cache: unavailable("Statement cache", "monitoring: db.report()"),
        top_statements: unavailable("Top statements", "monitoring: db.report()"),
        index_advice: unavailable("Index advice", "the advisor: db.advise()"),
    })
}

/// The monitoring report as JSON, for the `report` field of `--json`.
///
/// SEAM (lead, at merge): `Ok(Some(serde_json::to_value(db.report())?))`
/// (map a serde error with `Error::closure`).
pub fn monitor_report(db: &Db) -> Result<Option<serde_json::Value>> {
    let _ = db;
    Ok(None)
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
        for section in [s.statement_cache, s.top_statements, s.index_advice] {
            assert!(!section.lines.is_empty());
        }
        Ok(())
    }
}
