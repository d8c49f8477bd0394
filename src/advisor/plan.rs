//! `QueryPlan`: the rows of `EXPLAIN QUERY PLAN` as a tree, with the questions an index advisor
//! asks of it (full scans, temp b-trees, which indexes, covering or not).

use rusqlite::Connection;

use crate::db::Db;
use crate::error::{Error, Result};

/// The plan SQLite chose for one statement: the `EXPLAIN QUERY PLAN` rows as a tree.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// let tracker = strata::domain::ExpenseTracker::open_in_memory()?;
/// let plan = tracker.db().explain("SELECT * FROM expenses WHERE user_id = 1 ORDER BY created_at")?;
/// assert!(plan.full_scans().is_empty());
/// assert!(plan.uses_index("idx_expenses_user_recent"));
/// assert!(plan.temp_btrees().is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueryPlan {
    /// The statement explained.
    pub sql: String,
    /// The top-level steps, in SQLite's order; each may hold nested steps.
    pub nodes: Vec<PlanNode>,
}

/// One row of `EXPLAIN QUERY PLAN` and the rows nested under it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanNode {
    /// SQLite's id of the row.
    pub id: i64,
    /// The id of the row this one is nested under (0 at the top).
    pub parent: i64,
    /// SQLite's text, e.g. `SEARCH e USING INDEX idx (user_id=?)`.
    pub detail: String,
    /// What the text says, parsed.
    pub step: Step,
    /// The rows nested under this one.
    pub children: Vec<PlanNode>,
}

/// What one plan row does.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Step {
    /// `SCAN` or `SEARCH` of a table (or of a subquery, a CTE or a virtual table).
    Access(TableAccess),
    /// `USE TEMP B-TREE FOR ...`: rows are sorted or deduplicated after they are read.
    TempBTree {
        /// What the b-tree is for: `ORDER BY`, `GROUP BY`, `DISTINCT`, `RIGHT PART OF ORDER BY`...
        purpose: String,
    },
    /// Anything else: subquery headers, compound queries, `MULTI-INDEX OR`, bloom filters.
    Other,
}

/// How one table is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableAccess {
    /// The name the plan shows: the alias when the statement gave one, else the table name
    /// (or `(subquery-N)` for a subquery).
    pub name: String,
    /// True for `SEARCH` (a seek on a key or index), false for `SCAN` (every row).
    pub search: bool,
    /// The index used, if any (also set for automatic indexes, without a name).
    pub index: Option<IndexUse>,
    /// The constraint the seek uses, e.g. `user_id=? AND created_at<?`.
    pub constraint: Option<String>,
    /// True for a virtual table (`json_each`, FTS): indexes do not apply.
    pub virtual_table: bool,
}

/// An index a step reads through.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexUse {
    /// The index's name; `None` for an automatic index or a `WITHOUT ROWID` primary key.
    pub name: Option<String>,
    /// True when the index alone answers the step (no lookup of the table row).
    pub covering: bool,
    /// True for an index SQLite builds for this one statement and throws away: a missing index.
    pub automatic: bool,
    /// True for a lookup on the rowid or the primary key.
    pub primary_key: bool,
}

impl QueryPlan {
    /// Builds the tree from `(id, parent, detail)` rows in SQLite's order. A row whose parent
    /// is unknown is kept at the top rather than dropped.
    pub(crate) fn from_rows(sql: &str, rows: Vec<(i64, i64, String)>) -> QueryPlan {
        fn build(rows: &[(i64, i64, String)], parent: i64, depth: usize) -> Vec<PlanNode> {
            // SQLite never nests deeply; the bound only guards against a cycle in odd input.
            if depth > 64 {
                return Vec::new();
            }
            rows.iter()
                .filter(|r| r.1 == parent && r.0 != parent)
                .map(|(id, parent, detail)| PlanNode {
                    id: *id,
                    parent: *parent,
                    step: Step::parse(detail),
                    detail: detail.clone(),
                    children: build(rows, *id, depth + 1),
                })
                .collect()
        }
        let ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.0).collect();
        let nodes = rows
            .iter()
            .filter(|r| r.1 == 0 || !ids.contains(&r.1))
            .map(|(id, parent, detail)| PlanNode {
                id: *id,
                parent: *parent,
                step: Step::parse(detail),
                detail: detail.clone(),
                children: build(&rows, *id, 1),
            })
            .collect();
        QueryPlan {
            sql: sql.to_owned(),
            nodes,
        }
    }

    /// Every node, depth first.
    pub fn iter(&self) -> impl Iterator<Item = &PlanNode> {
        let mut stack: Vec<&PlanNode> = self.nodes.iter().rev().collect();
        std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.iter().rev());
            Some(node)
        })
    }

    /// Every table access, depth first.
    pub fn accesses(&self) -> impl Iterator<Item = &TableAccess> {
        self.iter().filter_map(|n| match &n.step {
            Step::Access(a) => Some(a),
            _ => None,
        })
    }

    /// The steps that read every row of a stored table, by its plan name (`SCAN t`, with or
    /// without an index giving the order). Scans of subqueries, CTEs, constant rows and
    /// virtual tables are not counted: no index on a stored table changes them.
    pub fn full_scans(&self) -> Vec<&TableAccess> {
        let derived = self.derived_names();
        self.accesses()
            .filter(|a| {
                !a.search
                    && !a.virtual_table
                    && !a.name.starts_with('(')
                    && a.name != "CONSTANT ROW"
                    && !a.name.contains("-ROW VALUES CLAUSE")
                    && !derived.iter().any(|d| d == &a.name)
            })
            .collect()
    }

    /// The purposes of the temp b-trees the plan builds (`ORDER BY`, `GROUP BY`, `DISTINCT`...).
    pub fn temp_btrees(&self) -> Vec<&str> {
        self.iter()
            .filter_map(|n| match &n.step {
                Step::TempBTree { purpose } => Some(purpose.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The automatic indexes SQLite builds for this statement alone: each is an index the
    /// schema lacks.
    pub fn automatic_indexes(&self) -> Vec<&TableAccess> {
        self.accesses()
            .filter(|a| a.index.as_ref().is_some_and(|i| i.automatic))
            .collect()
    }

    /// True when some step reads through the index `name` (case-insensitive, as SQLite).
    pub fn uses_index(&self, name: &str) -> bool {
        self.indexes_used()
            .iter()
            .any(|used| used.eq_ignore_ascii_case(name))
    }

    /// The names of the indexes the plan reads through, in plan order, without repeats.
    pub fn indexes_used(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for a in self.accesses() {
            if let Some(name) = a.index.as_ref().and_then(|i| i.name.as_deref()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The names of the indexes used as covering indexes: the step reads the index alone,
    /// never the table.
    pub fn covering(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for a in self.accesses() {
            if let Some(IndexUse {
                name: Some(name),
                covering: true,
                ..
            }) = &a.index
            {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The seeks that skip-scan an index (`ANY(a) AND b=?`): one seek per distinct value of
    /// the leading columns, because no index starts with the constrained column.
    pub fn skip_scans(&self) -> Vec<&TableAccess> {
        self.accesses()
            .filter(|a| {
                a.constraint
                    .as_deref()
                    .is_some_and(|c| c.starts_with("ANY("))
            })
            .collect()
    }

    /// True when an index could help: a full scan of a stored table, a temp b-tree, an
    /// automatic index or a skip-scan.
    pub fn needs_index(&self) -> bool {
        !self.full_scans().is_empty()
            || !self.temp_btrees().is_empty()
            || !self.automatic_indexes().is_empty()
            || !self.skip_scans().is_empty()
    }

    /// Names that stand for subqueries and CTEs in this plan (`MATERIALIZE x`, `CO-ROUTINE x`).
    fn derived_names(&self) -> Vec<String> {
        self.iter()
            .filter_map(|n| {
                n.detail
                    .strip_prefix("MATERIALIZE ")
                    .or_else(|| n.detail.strip_prefix("CO-ROUTINE "))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl std::fmt::Display for QueryPlan {
    /// The plan drawn as the sqlite3 shell does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn draw(
            f: &mut std::fmt::Formatter<'_>,
            nodes: &[PlanNode],
            prefix: &str,
        ) -> std::fmt::Result {
            for (i, n) in nodes.iter().enumerate() {
                let last = i + 1 == nodes.len();
                writeln!(
                    f,
                    "{prefix}{}{}",
                    if last { "`--" } else { "|--" },
                    n.detail
                )?;
                let deeper = format!("{prefix}{}", if last { "   " } else { "|  " });
                draw(f, &n.children, &deeper)?;
            }
            Ok(())
        }
        writeln!(f, "QUERY PLAN")?;
        draw(f, &self.nodes, "")
    }
}

impl Step {
    /// Parses one `detail` text. Unknown shapes become [`Step::Other`]: a newer SQLite may word
    /// things differently, and that must not fail a plan.
    pub(crate) fn parse(detail: &str) -> Step {
        if let Some(purpose) = detail.strip_prefix("USE TEMP B-TREE FOR ") {
            return Step::TempBTree {
                purpose: purpose.to_owned(),
            };
        }
        let (search, rest) = if let Some(rest) = detail.strip_prefix("SEARCH ") {
            (true, rest)
        } else if let Some(rest) = detail.strip_prefix("SCAN ") {
            (false, rest)
        } else {
            return Step::Other;
        };
        let rest = rest.strip_suffix(" LEFT-JOIN").unwrap_or(rest);
        if let Some((name, _)) = rest.split_once(" VIRTUAL TABLE INDEX ") {
            return Step::Access(TableAccess {
                name: name.to_owned(),
                search,
                index: None,
                constraint: None,
                virtual_table: true,
            });
        }
        let (name, using) = match rest.split_once(" USING ") {
            Some((name, using)) => (name, Some(using)),
            None => (rest, None),
        };
        let name = name.strip_suffix(" EXISTS").unwrap_or(name).to_owned();
        let (index, constraint) = match using {
            None => (None, None),
            Some(using) => parse_using(using),
        };
        Step::Access(TableAccess {
            name,
            search,
            index,
            constraint,
            virtual_table: false,
        })
    }
}

/// Parses what follows `USING`: the index kind and name, then the constraint in parentheses.
fn parse_using(using: &str) -> (Option<IndexUse>, Option<String>) {
    let (head, constraint) = match using.strip_suffix(')').and_then(|u| u.rsplit_once(" (")) {
        Some((head, c)) => (head, Some(c.to_owned())),
        None => (using, None),
    };
    let index = |name: Option<&str>, covering, automatic, primary_key| IndexUse {
        name: name.map(str::to_owned),
        covering,
        automatic,
        primary_key,
    };
    let found = if let Some(name) = head.strip_prefix("COVERING INDEX ") {
        index(Some(name), true, false, false)
    } else if let Some(name) = head.strip_prefix("INDEX ") {
        index(Some(name), false, false, false)
    } else if head.starts_with("AUTOMATIC") {
        index(None, true, true, false)
    } else if head == "INTEGER PRIMARY KEY" || head == "PRIMARY KEY" {
        index(None, false, false, true)
    } else {
        return (None, constraint);
    };
    (Some(found), constraint)
}

/// Runs `EXPLAIN QUERY PLAN` for `sql` on `conn`. The statement is compiled, never run.
pub(crate) fn explain_on(conn: &Connection, sql: &str) -> Result<QueryPlan> {
    let invalid = |reason: String| Error::InvalidSql {
        sql: sql.to_owned(),
        reason,
    };
    let trimmed = sql.trim().trim_end_matches(';').trim();
    if trimmed.is_empty() {
        return Err(invalid("empty statement".into()));
    }
    if trimmed
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("explain"))
    {
        return Err(invalid("already an EXPLAIN statement".into()));
    }
    let text = format!("EXPLAIN QUERY PLAN {trimmed}");
    let mut stmt = conn.prepare(&text).map_err(|e| invalid(e.to_string()))?;
    // Parameters stay unbound (NULL): the plan does not depend on their values.
    let mut rows = Vec::new();
    let mut found = stmt.raw_query();
    loop {
        match found.next() {
            Ok(Some(r)) => rows.push((r.get(0)?, r.get(1)?, r.get(3)?)),
            Ok(None) => break,
            Err(e) => return Err(invalid(e.to_string())),
        }
    }
    let mut plan = QueryPlan::from_rows(sql, rows);
    // Names holding ` USING ` or ` (` mislead the plain parse; read those lines again against
    // the schema's indexes.
    super::resolve::resolve_index_names(&mut plan, conn);
    Ok(plan)
}

impl Db {
    /// The plan SQLite chooses for `sql`, compiled on a reader and never run. Parameters may be
    /// left unbound. The statement is remembered as observed for [`Db::advise`] and
    /// [`Db::unused_indexes`] until the monitor provides the observed workload.
    ///
    /// Invalid SQL, several statements, or an `EXPLAIN` is [`Error::InvalidSql`] naming `sql`.
    pub fn explain(&self, sql: &str) -> Result<QueryPlan> {
        let plan = self.read(|c| explain_on(c, sql))?;
        self.inner.advisor.observed.record(sql);
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rows: &[(i64, i64, &str)]) -> QueryPlan {
        QueryPlan::from_rows(
            "q",
            rows.iter()
                .map(|(a, b, c)| (*a, *b, c.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_steps() -> Result<()> {
        let p = plan(&[
            (
                2,
                0,
                "SEARCH e USING INDEX idx_a (user_id=? AND created_at<?)",
            ),
            (5, 0, "SCAN u"),
            (7, 0, "SEARCH c USING COVERING INDEX idx_b (x=?) LEFT-JOIN"),
            (9, 0, "SEARCH k USING AUTOMATIC COVERING INDEX (y=?)"),
            (11, 0, "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"),
            (13, 0, "SCAN json_each VIRTUAL TABLE INDEX 1:"),
            (15, 0, "USE TEMP B-TREE FOR ORDER BY"),
            (17, 0, "SEARCH s USING INDEX s_ab (ANY(a) AND b=?)"),
        ]);
        assert_eq!(plan_names(&p.skip_scans()), vec!["s"]);
        assert_eq!(plan_names(&p.full_scans()), vec!["u"]);
        assert!(p.uses_index("IDX_A"));
        assert!(!p.uses_index("idx_c"));
        assert_eq!(p.covering(), vec!["idx_b"]);
        assert_eq!(p.temp_btrees(), vec!["ORDER BY"]);
        assert_eq!(plan_names(&p.automatic_indexes()), vec!["k"]);
        let first = p.accesses().next().expect("an access");
        assert_eq!(
            first.constraint.as_deref(),
            Some("user_id=? AND created_at<?")
        );
        assert!(p.needs_index());
        Ok(())
    }

    fn plan_names<'a>(a: &[&'a TableAccess]) -> Vec<&'a str> {
        a.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn nests_children_and_skips_derived_scans() -> Result<()> {
        let p = plan(&[
            (2, 0, "MATERIALIZE c"),
            (3, 2, "SCAN t"),
            (8, 0, "SCAN c"),
            (10, 0, "CORRELATED SCALAR SUBQUERY 1"),
            (12, 10, "SEARCH u USING INDEX ux (x=?)"),
            (20, 0, "SCAN (subquery-2)"),
        ]);
        assert_eq!(p.nodes.len(), 4);
        assert_eq!(p.nodes[0].children.len(), 1);
        assert_eq!(
            p.nodes[2].children[0].detail,
            "SEARCH u USING INDEX ux (x=?)"
        );
        assert_eq!(plan_names(&p.full_scans()), vec!["t"]);
        let drawn = p.to_string();
        assert!(drawn.contains("|  `--SCAN t"), "{drawn}");
        Ok(())
    }

    #[test]
    fn invalid_sql_names_the_statement() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        let err = explain_on(&conn, "SELEKT nothing").unwrap_err();
        assert!(matches!(err, Error::InvalidSql { ref sql, .. } if sql == "SELEKT nothing"));
        assert!(err.to_string().contains("SELEKT nothing"));
        let err = explain_on(&conn, "SELECT 1; SELECT 2").unwrap_err();
        assert!(matches!(err, Error::InvalidSql { .. }));
        assert!(explain_on(&conn, "   ").is_err());
        assert!(explain_on(&conn, "éééé").is_err());
        assert!(explain_on(&conn, "explain SELECT 1").is_err());
        Ok(())
    }
}
