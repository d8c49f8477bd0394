//! The index advisor: for each statement whose plan scans a table, sorts in a temp b-tree or
//! builds an automatic index, candidate indexes are made from what the statement asks of each
//! table, tried together on the schema copy (with the live statistics) and kept only when
//! the planner picks them; candidates that serve several statements are merged; the plans
//! before and after, and optionally the measured speedup on a sample, come with each advice.

use std::time::Duration;

use super::analyze::analyze;
use super::candidates::{candidates, Candidate};
use super::copy::{LiveSchema, SchemaCopy};
use super::estimate;
use super::measure::{self, Speedup};
use super::plan::{explain_on, QueryPlan};
use super::verify::{verify, Estimate, Verified, Work};
use crate::db::Db;
use crate::error::Result;

/// What to advise on, and how: the argument of [`Db::advise`].
///
/// ```
/// # fn main() -> strata::Result<()> {
/// use strata::advisor::AdviseOptions;
///
/// let db = strata::Db::open_in_memory()?;
/// db.write(|c| Ok(c.execute_batch("CREATE TABLE t(a INT, b INT)")?))?;
/// // Given statements (the observed workload is the default).
/// let advice = db.advise(AdviseOptions::new().queries(["SELECT * FROM t WHERE a = ?1"]))?;
/// assert_eq!(advice.indexes[0].columns, ["a"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdviseOptions {
    pub(crate) queries: Option<Vec<String>>,
    pub(crate) measure: bool,
    pub(crate) sample_rows: usize,
    pub(crate) top: usize,
    pub(crate) budget: Duration,
}

impl Default for AdviseOptions {
    fn default() -> Self {
        AdviseOptions {
            queries: None,
            measure: false,
            sample_rows: 20_000,
            top: 50,
            budget: Duration::from_millis(200),
        }
    }
}

impl AdviseOptions {
    /// The defaults: the observed workload's top 50 statements, no measuring, a 20 000-row
    /// sample when measuring, 200 ms of runs per statement and phase.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advises on these statements instead of the observed workload (they are recorded as
    /// observed too). Defaults to none: the observed workload (see [`top`](Self::top)).
    pub fn queries<S: AsRef<str>>(mut self, statements: impl IntoIterator<Item = S>) -> Self {
        self.queries = Some(
            statements
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
        );
        self
    }

    /// Measures each served statement on a sample copy, before and after the advised indexes
    /// ([`ServedStatement::speedup`]). Off by default: it reads `sample_rows` rows of every
    /// table and runs each statement for up to twice the budget.
    pub fn measure(mut self, measure: bool) -> Self {
        self.measure = measure;
        self
    }

    /// Rows per table copied into the sample when measuring. Defaults to 20 000.
    pub fn sample_rows(mut self, rows: usize) -> Self {
        self.sample_rows = rows;
        self
    }

    /// How many observed statements [`Db::advise`] considers, most total time first (unused
    /// with [`queries`](Self::queries)). Defaults to 50.
    pub fn top(mut self, top: usize) -> Self {
        self.top = top;
        self
    }

    /// Time spent running each statement per phase when measuring. Defaults to 200 ms.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }
}

/// What the advisor found for a workload.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Advice {
    /// The indexes to create, each with the statements it serves.
    pub indexes: Vec<IndexAdvice>,
    /// The statements no index is advised for, with the reason.
    pub skipped: Vec<SkippedStatement>,
    /// Schema objects left out of the planning copy, as `name: reason` (schema text that is
    /// not a single CREATE TABLE, INDEX or VIEW is refused; a virtual table whose module
    /// this build lacks fails). Statements reading them are skipped.
    pub schema_skipped: Vec<String>,
}

/// One index to create.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndexAdvice {
    /// The table to index.
    pub table: String,
    /// The key columns, in order.
    pub columns: Vec<String>,
    /// The key columns sorted descending (usually none).
    pub descending: Vec<String>,
    /// The index's name (free in the schema).
    pub name: String,
    /// `CREATE INDEX "name" ON "table" ("col", ...)`, every identifier quoted.
    pub create_sql: String,
    /// The statements whose plan uses it once all advised indexes exist.
    pub statements: Vec<ServedStatement>,
}

/// A statement an advised index serves.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServedStatement {
    /// The statement.
    pub sql: String,
    /// Its plan with the current indexes.
    pub before: QueryPlan,
    /// Its plan once all advised indexes exist.
    pub after: QueryPlan,
    /// Its measured time before and after, on the sample, when measuring was asked for.
    pub speedup: Option<Speedup>,
}

/// A statement the advisor has no index for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedStatement {
    /// The statement.
    pub sql: String,
    /// Why: already well served, not analyzable, or no candidate was chosen by the planner.
    pub reason: String,
}

impl Db {
    /// Advises indexes for the statements `options` names: by default the observed workload's
    /// top statements by total time (see [`Db::observed_statements`]), or the given
    /// [`queries`](AdviseOptions::queries).
    ///
    /// Nothing is changed on the live database: its schema and statistics are read on a
    /// reader and copied into a private in-memory database, where candidates are created and
    /// plans compared. The writer is not involved. A statement that does not compile is
    /// skipped with the reason, not an error.
    ///
    /// ```
    /// # fn main() -> strata::Result<()> {
    /// use strata::advisor::AdviseOptions;
    ///
    /// let db = strata::Db::open_in_memory()?;
    /// db.write(|c| Ok(c.execute_batch("CREATE TABLE t(a INT, b INT)")?))?;
    /// let query = "SELECT * FROM t WHERE a = ?1 ORDER BY b";
    /// let advice = db.advise(AdviseOptions::new().queries([query]))?;
    /// assert_eq!(advice.indexes[0].columns, ["a", "b"]);
    /// assert!(advice.indexes[0].statements[0].after.uses_index(&advice.indexes[0].name));
    /// // The statement counts as observed from now on (the default options' workload).
    /// assert!(db.observed_statements().iter().any(|s| s.sql == query));
    /// # Ok(()) }
    /// ```
    pub fn advise(&self, options: AdviseOptions) -> Result<Advice> {
        let statements = match &options.queries {
            Some(queries) => {
                for sql in queries {
                    self.inner.advisor.observed.record(sql);
                }
                queries.clone()
            }
            None => self
                .observed_statements()
                .into_iter()
                .take(options.top)
                .map(|s| s.sql)
                .collect(),
        };
        self.advise_statements(&statements, &options)
    }

    fn advise_statements(&self, statements: &[String], options: &AdviseOptions) -> Result<Advice> {
        let live = self.read(LiveSchema::read)?;
        let mut copy = SchemaCopy::build(&live)?;
        if options.measure {
            copy.load_sample(self, options.sample_rows)?;
        }
        // Candidate statistics are estimated from the live table, on a reader.
        let estimate =
            |wanted: &[(String, Candidate, i64)]| -> Result<Vec<(String, String, String)>> {
                self.read(|live| {
                    wanted
                        .iter()
                        .map(|(name, c, rows)| {
                            let stat = estimate::stat_for(live, c, *rows, options.sample_rows)?;
                            Ok((c.table.clone(), name.clone(), stat))
                        })
                        .collect()
                })
            };
        advise_on(&copy, statements, options, &estimate)
    }
}

/// The advisor proper, on a built copy.
fn advise_on(
    copy: &SchemaCopy,
    statements: &[String],
    options: &AdviseOptions,
    estimate: &Estimate<'_>,
) -> Result<Advice> {
    let conn = &copy.conn;
    let mut skipped = Vec::new();
    let mut work: Vec<Work> = Vec::new();
    let mut all: Vec<Candidate> = Vec::new();
    for sql in statements {
        if work.iter().any(|w| &w.sql == sql)
            || skipped.iter().any(|s: &SkippedStatement| &s.sql == sql)
        {
            continue;
        }
        let skip = |reason: String| SkippedStatement {
            sql: sql.clone(),
            reason,
        };
        let before = match explain_on(conn, sql) {
            Ok(plan) => plan,
            Err(e) => {
                skipped.push(skip(e.to_string()));
                continue;
            }
        };
        let analysis = analyze(sql, &copy.catalog);
        if !before.needs_index() {
            skipped.push(skip(
                "no full scan, temp b-tree, automatic index or skip-scan".into(),
            ));
            continue;
        }
        match &analysis {
            Ok(a) => {
                for c in candidates(a, &copy.catalog) {
                    if !all.contains(&c) {
                        all.push(c);
                    }
                }
            }
            Err(reason) => {
                skipped.push(skip(reason.clone()));
                continue;
            }
        }
        work.push(Work {
            sql: sql.clone(),
            analysis: analysis.ok(),
            before,
        });
    }

    let Verified {
        kept: final_set,
        after,
        stats,
    } = verify(copy, &work, all, estimate)?;

    let speedups: Vec<Option<Speedup>> = if options.measure && !final_set.is_empty() {
        measure::measure_served(copy, &work, &after, &final_set, options.budget, &stats)?
    } else {
        vec![None; work.len()]
    };

    for (w, plan) in work.iter().zip(&after) {
        if !final_set.iter().any(|t| plan.uses_index(&t.name)) {
            skipped.push(SkippedStatement {
                sql: w.sql.clone(),
                reason: "no candidate index was chosen by the planner".into(),
            });
        }
    }
    let indexes = final_set
        .into_iter()
        .map(|t| {
            let statements = work
                .iter()
                .zip(&after)
                .zip(&speedups)
                .filter(|((_, plan), _)| plan.uses_index(&t.name))
                .map(|((w, plan), speedup)| ServedStatement {
                    sql: w.sql.clone(),
                    before: w.before.clone(),
                    after: plan.clone(),
                    speedup: *speedup,
                })
                .collect();
            IndexAdvice {
                table: t.candidate.table.clone(),
                columns: t.candidate.columns.iter().map(|(c, _)| c.clone()).collect(),
                descending: t
                    .candidate
                    .columns
                    .iter()
                    .filter(|(_, d)| *d)
                    .map(|(c, _)| c.clone())
                    .collect(),
                name: t.name,
                create_sql: t.sql,
                statements,
            }
        })
        .collect();
    Ok(Advice {
        indexes,
        skipped,
        schema_skipped: copy
            .skipped
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(schema: &str) -> Result<Db> {
        let db = Db::builder().build()?;
        db.write(|c| Ok(c.execute_batch(schema)?))?;
        Ok(db)
    }

    fn columns(advice: &Advice) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = advice
            .indexes
            .iter()
            .map(|i| (i.table.clone(), i.columns.clone()))
            .collect();
        v.sort();
        v
    }

    fn owned(t: &str, cols: &[&str]) -> (String, Vec<String>) {
        (t.to_owned(), cols.iter().map(|c| c.to_string()).collect())
    }

    /// The cases sqlite3_expert handles: multi-column equality + range + ORDER BY, and the
    /// join column of the inner table (checked against `.expert` of the sqlite3 shell).
    #[test]
    fn finds_what_expert_finds() -> Result<()> {
        let db = db("CREATE TABLE t(a, b, c);
             CREATE TABLE u(id INTEGER PRIMARY KEY, x, y);
             CREATE INDEX ux ON u(x);")?;
        let advice = db.advise(AdviseOptions::new().queries([
            "SELECT * FROM t JOIN u ON u.y = t.a WHERE t.b = 1 AND t.c > 5 ORDER BY t.c",
        ]))?;
        assert_eq!(
            columns(&advice),
            vec![owned("t", &["b", "c"]), owned("u", &["y"])],
            "{advice:#?}"
        );
        let advice =
            db.advise(AdviseOptions::new().queries(["SELECT * FROM t WHERE a = ?1 AND b = ?2"]))?;
        let cols = &advice
            .indexes
            .first()
            .ok_or_else(|| crate::Error::closure(format!("{advice:#?}")))?
            .columns;
        assert_eq!(cols.len(), 2, "{advice:#?}");
        Ok(())
    }

    #[test]
    fn merges_prefix_candidates_across_statements() -> Result<()> {
        let db = db("CREATE TABLE e(id INTEGER PRIMARY KEY, user_id INT, at INT, note TEXT);")?;
        let advice = db.advise(AdviseOptions::new().queries([
            "SELECT * FROM e WHERE user_id = ?1",
            "SELECT * FROM e WHERE user_id = ?1 ORDER BY at DESC LIMIT 10",
        ]))?;
        assert_eq!(columns(&advice), vec![owned("e", &["user_id", "at"])]);
        assert_eq!(advice.indexes[0].statements.len(), 2);
        Ok(())
    }

    /// With the live statistics, an index on a column with two values is no better than a
    /// scan, and the planner says so: nothing is advised.
    #[test]
    fn statistics_reject_unselective_candidates() -> Result<()> {
        let db = db("CREATE TABLE t(id INTEGER PRIMARY KEY, flag INT, user INT);
             CREATE INDEX t_id_user ON t(user, id);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO t SELECT i, i % 2, i % 500 FROM n;
             ANALYZE;")?;
        let advice = db.advise(AdviseOptions::new().queries([
            "SELECT * FROM t WHERE flag = ?1",
            "SELECT * FROM t WHERE flag = ?1 AND user = ?2 ORDER BY id",
        ]))?;
        assert!(advice.indexes.is_empty(), "{advice:#?}");
        Ok(())
    }

    #[test]
    fn skips_served_and_broken_statements() -> Result<()> {
        let db = db("CREATE TABLE e(id INTEGER PRIMARY KEY, a INT); CREATE INDEX e_a ON e(a);")?;
        let advice = db.advise(AdviseOptions::new().queries([
            "SELECT * FROM e WHERE a = 1",
            "SELECT * FROM nope",
            "SELECT * FROM e WHERE a + 1 = 2",
        ]))?;
        assert!(advice.indexes.is_empty());
        assert_eq!(advice.skipped.len(), 3, "{advice:#?}");
        assert!(advice.skipped[1].reason.contains("no such table"));
        Ok(())
    }
}
