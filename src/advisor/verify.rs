//! Verifying candidates on the copy: all of them are created at once (with estimated
//! statistics, like the existing indexes' live ones) so that the planner picks the best per
//! statement; those it does not pick go; then each kept index is tried away in turn, and goes
//! when the statements it served are served as well without it (merging).

use rusqlite::Connection;

use super::analyze::Analysis;
use super::candidates::Candidate;
use super::copy::SchemaCopy;
use super::plan::{explain_on, QueryPlan};
use crate::error::Result;
use crate::sql::quote_ident;

/// One statement under consideration.
pub(super) struct Work {
    pub(super) sql: String,
    /// What the statement asks of each table (parameters' roles, for measuring).
    pub(super) analysis: Option<Analysis>,
    /// Its plan with the existing indexes.
    pub(super) before: QueryPlan,
}

/// A candidate created on the copy.
pub(super) struct Tried {
    pub(super) candidate: Candidate,
    /// Its name, free in the schema.
    pub(super) name: String,
    /// Its `CREATE INDEX` statement.
    pub(super) sql: String,
}

/// Estimates `sqlite_stat1` rows for (index name, candidate, table rows).
pub(super) type Estimate<'a> =
    dyn Fn(&[(String, Candidate, i64)]) -> Result<Vec<(String, String, String)>> + 'a;

/// The verified candidates.
pub(super) struct Verified {
    /// The indexes kept, in a stable order (table, then columns); they exist on the copy.
    pub(super) kept: Vec<Tried>,
    /// Each statement's plan with them.
    pub(super) after: Vec<QueryPlan>,
    /// The estimated statistics rows (table, index, stat) of the candidates.
    pub(super) stats: Vec<(String, String, String)>,
}

/// Creates the candidates on the copy, keeps those the planner uses, merges them.
pub(super) fn verify(
    copy: &SchemaCopy,
    work: &[Work],
    all: Vec<Candidate>,
    estimate: &Estimate<'_>,
) -> Result<Verified> {
    let conn = &copy.conn;
    // Every candidate at once, so that the planner picks the best of them per statement.
    let mut tried: Vec<Tried> = Vec::new();
    for candidate in all {
        let taken: Vec<String> = tried.iter().map(|t| t.name.clone()).collect();
        let name = candidate.name(&copy.catalog, &taken);
        let sql = candidate.create_sql(&name);
        if conn.execute_batch(&sql).is_ok() {
            tried.push(Tried {
                candidate,
                name,
                sql,
            });
        }
    }
    let mut stats: Vec<(String, String, String)> = Vec::new();
    if copy.has_stats {
        // The planner compares the candidates with the existing indexes on equal terms:
        // statistics for both.
        let wanted: Vec<(String, Candidate, i64)> = tried
            .iter()
            .filter_map(|t| {
                let rows = copy.table_rows(&t.candidate.table)?;
                Some((t.name.clone(), t.candidate.clone(), rows))
            })
            .collect();
        stats = estimate(&wanted)?;
        copy.set_candidate_stats(&stats)?;
    }
    let plans = explain_all(conn, work)?;
    let used = |t: &Tried, plans: &[QueryPlan]| plans.iter().any(|p| p.uses_index(&t.name));
    let (kept, unused): (Vec<Tried>, Vec<Tried>) = tried.into_iter().partition(|t| used(t, &plans));
    for t in &unused {
        drop_index(conn, &t.name)?;
    }

    // Merge: try to do without each kept index, those serving fewest statements and, among
    // them, the longest first. It goes when every statement that used it is served as well
    // without it: no new scan or temp b-tree, and seeks on as many terms. So an index that
    // is a leading part of another goes when the longer one serves its statements, and of
    // two indexes serving the same seek, one remains.
    let mut current = plans;
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| {
        let served = current
            .iter()
            .filter(|p| p.uses_index(&kept[i].name))
            .count();
        (served, std::cmp::Reverse(kept[i].candidate.columns.len()))
    });
    let mut removed = vec![false; kept.len()];
    for i in order {
        let users: Vec<usize> = (0..work.len())
            .filter(|&w| current[w].uses_index(&kept[i].name))
            .collect();
        drop_index(conn, &kept[i].name)?;
        let mut replanned = Vec::with_capacity(users.len());
        for &w in &users {
            let plan = explain_on(conn, &work[w].sql)?;
            if badness(&plan) > badness(&current[w]) || seek_terms(&plan) < seek_terms(&current[w])
            {
                break;
            }
            replanned.push((w, plan));
        }
        if replanned.len() == users.len() {
            removed[i] = true;
            for (w, plan) in replanned {
                current[w] = plan;
            }
        } else {
            restore(copy, &kept[i], &stats)?;
        }
    }
    let kept: Vec<Tried> = kept
        .into_iter()
        .zip(removed)
        .filter(|(_, gone)| !gone)
        .map(|(t, _)| t)
        .collect();

    let after = explain_all(conn, work)?;
    // After merging, every kept index must still be chosen by some statement.
    let mut final_set: Vec<Tried> = Vec::new();
    for t in kept {
        if after.iter().any(|p| p.uses_index(&t.name)) {
            final_set.push(t);
        } else {
            drop_index(conn, &t.name)?;
        }
    }
    let after = explain_all(conn, work)?;
    // A stable order, whatever the order of the statements: the migration file reads the same.
    final_set.sort_by(|a, b| {
        (&a.candidate.table, &a.candidate.columns).cmp(&(&b.candidate.table, &b.candidate.columns))
    });

    Ok(Verified {
        kept: final_set,
        after,
        stats,
    })
}

fn explain_all(conn: &Connection, work: &[Work]) -> Result<Vec<QueryPlan>> {
    work.iter().map(|w| explain_on(conn, &w.sql)).collect()
}

/// The equality and range terms the plan's seeks use, all tables together (the `ANY(x)` of
/// a skip-scan is not one).
fn seek_terms(plan: &QueryPlan) -> usize {
    plan.accesses()
        .filter(|a| a.search)
        .filter_map(|a| a.constraint.as_deref())
        .map(|c| c.split(" AND ").filter(|t| !t.starts_with("ANY(")).count())
        .sum()
}

/// How much of a plan an index could still improve.
fn badness(plan: &QueryPlan) -> usize {
    plan.full_scans().len()
        + plan.temp_btrees().len()
        + plan.automatic_indexes().len()
        + plan.skip_scans().len()
}

/// Creates a dropped candidate again, with its statistics: `DROP INDEX` deleted its
/// `sqlite_stat1` row, and without it the planner would see a different index.
pub(super) fn restore(
    copy: &SchemaCopy,
    t: &Tried,
    stats: &[(String, String, String)],
) -> Result<()> {
    copy.conn.execute_batch(&t.sql)?;
    let mine: Vec<(String, String, String)> = stats
        .iter()
        .filter(|(_, name, _)| *name == t.name)
        .cloned()
        .collect();
    copy.set_candidate_stats(&mine)
}

pub(super) fn drop_index(conn: &Connection, name: &str) -> Result<()> {
    conn.execute_batch(&format!("DROP INDEX {}", quote_ident(name)))?;
    Ok(())
}
