//! What a statement asks of each table it reads, found by parsing it with sqlparser's SQLite
//! dialect: the columns it compares for equality (with constants, or with another table's
//! columns in a join), the columns it bounds by a range, the columns it sorts or groups by,
//! and which parameter feeds which column (to bind realistic values when measuring).

use std::collections::HashMap;

use sqlparser::ast::{
    Expr, FromTable, GroupByExpr, LimitClause, OrderBy, OrderByKind, Query, Select, SelectItem,
    SetExpr, Statement,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use super::catalog::Catalog;
use super::tokens;
use terms::split_and;

mod from;
mod terms;

/// What one statement asks of the tables it reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Analysis {
    /// One entry per reference to a stored table (a self-join gives two).
    pub(crate) uses: Vec<TableUse>,
    /// The statement's parameters whose role is known.
    pub(crate) params: Vec<ParamUse>,
}

/// One reference to a stored table and the constraints on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableUse {
    /// The table's name as the schema spells it.
    pub(crate) table: String,
    /// Columns compared for equality with a constant, a parameter or an outer query's column.
    pub(crate) eq: Vec<String>,
    /// Columns compared for equality with another table's column of the same query.
    pub(crate) join_eq: Vec<String>,
    /// Columns bounded by `<`, `<=`, `>`, `>=` or `BETWEEN`.
    pub(crate) range: Vec<String>,
    /// The ORDER BY, when every term is a column of this table: (column, descending), the
    /// directions normalized so that the first term is ascending (an index serves an order
    /// and its reverse alike).
    pub(crate) order_by: Vec<(String, bool)>,
    /// The GROUP BY, when every term is a column of this table.
    pub(crate) group_by: Vec<String>,
}

/// What a parameter is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamRole {
    /// `column = ?`, `column IN (?, ...)`.
    Eq,
    /// `column < ?` and the like.
    Range,
    /// The lower bound of `BETWEEN`; the number pairs it with its upper bound.
    Low(usize),
    /// The upper bound of `BETWEEN`.
    High(usize),
    /// `LIMIT ?`.
    Limit,
    /// `OFFSET ?`.
    Offset,
}

/// One parameter of the statement and what it feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamUse {
    /// SQLite's 1-based parameter index.
    pub(crate) index: usize,
    /// The (table, column) it is compared with, when it is.
    pub(crate) column: Option<(String, String)>,
    pub(crate) role: ParamRole,
}

/// Parses `sql` (one statement) and finds what it asks of each table. The error is the reason
/// the statement cannot be analyzed.
pub(crate) fn analyze(sql: &str, catalog: &Catalog) -> Result<Analysis, String> {
    let text = tokens::normalize(sql);
    let statements =
        Parser::parse_sql(&SQLiteDialect {}, &text).map_err(|e| format!("sql parser: {e}"))?;
    let [statement] = statements.as_slice() else {
        return Err(format!(
            "expected one statement, found {}",
            statements.len()
        ));
    };
    let mut a = Analyzer {
        catalog,
        params: tokens::parameter_indexes(&text),
        out: Analysis::default(),
        scopes: Vec::new(),
        ctes: Vec::new(),
        pairs: 0,
    };
    a.statement(statement)?;
    Ok(a.out)
}

/// A name a column can be qualified with, in one query scope.
struct Source {
    /// The alias, or the table's name when it has none.
    name: String,
    /// The entry in `Analysis::uses` when this is a stored table.
    usage: Option<usize>,
}

/// A column of a stored table in the current scope.
#[derive(Clone)]
struct Col {
    usage: usize,
    column: String,
}

/// What a column reference resolves to.
enum Resolved {
    /// A stored table's column in the current scope.
    Local(Col),
    /// Some other source of the current scope (subquery, CTE, view, table function).
    LocalOther,
    /// A column of an enclosing query: a constant for this scope.
    Outer,
    /// Not a column at all (or unknown).
    Unknown,
}

enum Cmp {
    Eq,
    Range,
}

struct Analyzer<'a> {
    catalog: &'a Catalog,
    params: HashMap<(u64, u64), usize>,
    out: Analysis,
    /// The sources of each enclosing query, innermost last.
    scopes: Vec<Vec<Source>>,
    /// CTE names in scope: they shadow stored tables.
    ctes: Vec<String>,
    /// BETWEEN pairs numbered so far.
    pairs: usize,
}

impl Analyzer<'_> {
    fn statement(&mut self, statement: &Statement) -> Result<(), String> {
        match statement {
            Statement::Query(q) => self.query(q),
            Statement::Insert(insert) => {
                if let Some(source) = &insert.source {
                    self.query(source);
                }
            }
            Statement::Update {
                table,
                from,
                selection,
                assignments,
                ..
            } => {
                let mut sources = Vec::new();
                let mut conjuncts = Vec::new();
                let mut using = Vec::new();
                self.table_with_joins(table, &mut sources, &mut conjuncts, &mut using);
                if let Some(from) = from {
                    let (sqlparser::ast::UpdateTableFromKind::BeforeSet(list)
                    | sqlparser::ast::UpdateTableFromKind::AfterSet(list)) = from;
                    for t in list {
                        self.table_with_joins(t, &mut sources, &mut conjuncts, &mut using);
                    }
                }
                let values: Vec<&Expr> = assignments.iter().map(|a| &a.value).collect();
                self.scope(sources, conjuncts, using, selection.as_ref(), &values);
            }
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(list) | FromTable::WithoutKeyword(list)) =
                    &delete.from;
                let mut sources = Vec::new();
                let mut conjuncts = Vec::new();
                let mut using = Vec::new();
                for t in list {
                    self.table_with_joins(t, &mut sources, &mut conjuncts, &mut using);
                }
                self.scope(sources, conjuncts, using, delete.selection.as_ref(), &[]);
            }
            _ => return Err("not a query, INSERT, UPDATE or DELETE".into()),
        }
        Ok(())
    }

    fn query(&mut self, q: &Query) {
        let ctes_before = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                // Visible inside its own body too (recursive CTEs).
                self.ctes.push(cte.alias.name.value.clone());
                self.query(&cte.query);
            }
        }
        match q.body.as_ref() {
            SetExpr::Select(select) => self.select(select, q.order_by.as_ref()),
            other => self.set_expr(other),
        }
        if let Some(limit) = &q.limit_clause {
            let (limit, offset) = match limit {
                LimitClause::LimitOffset { limit, offset, .. } => {
                    (limit.as_ref(), offset.as_ref().map(|o| &o.value))
                }
                LimitClause::OffsetCommaLimit { offset, limit } => (Some(limit), Some(offset)),
            };
            if let Some(index) = limit.and_then(|e| self.placeholder(e)) {
                self.param(index, None, ParamRole::Limit);
            }
            if let Some(index) = offset.and_then(|e| self.placeholder(e)) {
                self.param(index, None, ParamRole::Offset);
            }
        }
        self.ctes.truncate(ctes_before);
    }

    fn set_expr(&mut self, e: &SetExpr) {
        match e {
            SetExpr::Select(select) => self.select(select, None),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            SetExpr::Values(values) => {
                for e in values.rows.iter().flatten() {
                    self.walk(e);
                }
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => {
                let _ = self.statement(s);
            }
            _ => {}
        }
    }

    fn select(&mut self, s: &Select, order_by: Option<&OrderBy>) {
        let mut sources = Vec::new();
        let mut conjuncts = Vec::new();
        let mut using = Vec::new();
        for t in &s.from {
            self.table_with_joins(t, &mut sources, &mut conjuncts, &mut using);
        }
        let mut others: Vec<&Expr> = Vec::new();
        for item in &s.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                others.push(e);
            }
        }
        others.extend(s.having.iter());
        self.scopes.push(sources);
        for c in conjuncts {
            self.conjunct(c);
        }
        if let Some(e) = &s.selection {
            for c in split_and(e) {
                self.conjunct(c);
            }
        }
        self.using(&using);
        if let Some(OrderBy {
            kind: OrderByKind::Expressions(terms),
            ..
        }) = order_by
        {
            let cols: Vec<Option<(Col, bool)>> = terms
                .iter()
                .map(|t| {
                    self.output_column(&t.expr, &s.projection)
                        .map(|c| (c, t.options.asc == Some(false)))
                })
                .collect();
            if let Some(cols) = same_table(cols) {
                let first_desc = cols.first().is_some_and(|(_, d)| *d);
                let usage = cols[0].0.usage;
                self.out.uses[usage].order_by = cols
                    .into_iter()
                    .map(|(c, desc)| (c.column, desc != first_desc))
                    .collect();
            }
            for t in terms {
                self.walk(&t.expr);
            }
        }
        if let GroupByExpr::Expressions(exprs, _) = &s.group_by {
            let cols: Vec<Option<(Col, bool)>> = exprs
                .iter()
                .map(|e| self.output_column(e, &s.projection).map(|c| (c, false)))
                .collect();
            if let Some(cols) = same_table(cols) {
                let usage = cols[0].0.usage;
                self.out.uses[usage].group_by = cols.into_iter().map(|(c, _)| c.column).collect();
            }
        }
        for e in others {
            self.walk(e);
        }
        self.scopes.pop();
    }

    /// Analyzes the sources, joins and WHERE of an UPDATE or DELETE as one scope.
    fn scope(
        &mut self,
        sources: Vec<Source>,
        conjuncts: Vec<&Expr>,
        using: Vec<(usize, Vec<String>)>,
        selection: Option<&Expr>,
        values: &[&Expr],
    ) {
        self.scopes.push(sources);
        for c in conjuncts
            .into_iter()
            .chain(selection.into_iter().flat_map(split_and))
        {
            self.conjunct(c);
        }
        self.using(&using);
        for v in values {
            self.walk(v);
        }
        self.scopes.pop();
    }
}

/// The columns when all are known and of one table.
fn same_table(cols: Vec<Option<(Col, bool)>>) -> Option<Vec<(Col, bool)>> {
    let cols: Vec<(Col, bool)> = cols.into_iter().collect::<Option<_>>()?;
    let first = cols.first()?.0.usage;
    cols.iter().all(|(c, _)| c.usage == first).then_some(cols)
}

fn push_unique(list: &mut Vec<String>, column: &str) {
    if !list.iter().any(|c| c.eq_ignore_ascii_case(column)) {
        list.push(column.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use rusqlite::Connection;

    pub(super) fn catalog() -> Result<Catalog> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, name TEXT, created_at INT);
             CREATE TABLE expenses(id INTEGER PRIMARY KEY, user_id INT, category_id INT,
                 amount_cents INT, description TEXT, expense_date TEXT, created_at INT);
             CREATE TABLE categories(id INTEGER PRIMARY KEY, user_id INT, name TEXT);",
        )?;
        Catalog::load(&conn)
    }

    pub(super) fn one(a: &Analysis, table: &str) -> TableUse {
        a.uses
            .iter()
            .find(|u| u.table == table)
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn joins_give_join_columns_to_both_sides() -> Result<()> {
        let cat = catalog()?;
        let a = analyze(
            "SELECT e.id, c.name FROM expenses AS e JOIN categories c ON c.id = e.category_id \
             WHERE e.user_id = ? AND c.name IS ?",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        let e = one(&a, "expenses");
        assert_eq!(e.eq, vec!["user_id"]);
        assert_eq!(e.join_eq, vec!["category_id"]);
        let c = one(&a, "categories");
        assert_eq!(c.eq, vec!["name"]);
        assert_eq!(c.join_eq, vec!["id"]);
        let a = analyze(
            "SELECT * FROM users JOIN expenses USING (created_at) WHERE email = 'x'",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        assert_eq!(one(&a, "expenses").join_eq, vec!["created_at"]);
        assert_eq!(one(&a, "users").eq, vec!["email"]);
        Ok(())
    }

    #[test]
    fn subqueries_and_correlation() -> Result<()> {
        let cat = catalog()?;
        let a = analyze(
            "SELECT u.name, (SELECT sum(amount_cents) FROM expenses e WHERE e.user_id = u.id) \
             FROM users u WHERE u.id IN (SELECT user_id FROM categories WHERE name = 'food') \
             AND EXISTS (SELECT 1 FROM expenses x WHERE x.user_id = u.id AND x.created_at > 5)",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        let expenses: Vec<&TableUse> = a.uses.iter().filter(|u| u.table == "expenses").collect();
        assert_eq!(expenses.len(), 2);
        assert!(expenses.iter().all(|u| u.eq == vec!["user_id"]));
        assert!(expenses.iter().any(|u| u.range == vec!["created_at"]));
        assert_eq!(one(&a, "categories").eq, vec!["name"]);
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_analyze() -> Result<()> {
        let cat = catalog()?;
        assert!(analyze("SELECT FROM WHERE", &cat).is_err());
        assert!(analyze("SELECT 1; SELECT 2", &cat).is_err());
        assert!(analyze("CREATE TABLE x(a)", &cat).is_err());
        // A CTE named like a table shadows it.
        let a = analyze(
            "WITH users AS (SELECT 1 AS id) SELECT * FROM users WHERE id = 1",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        assert!(a.uses.is_empty());
        Ok(())
    }
}
