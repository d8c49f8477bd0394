//! The FROM clause: the tables and subqueries a query reads, the constraints its joins add,
//! and the names its columns can be qualified with.

use sqlparser::ast::{
    Expr, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, TableFactor, TableWithJoins,
};

use super::terms::{arg_expr, split_and};
use super::{push_unique, Analyzer, Col, Source, TableUse};

impl Analyzer<'_> {
    pub(super) fn table_with_joins<'q>(
        &mut self,
        t: &'q TableWithJoins,
        sources: &mut Vec<Source>,
        conjuncts: &mut Vec<&'q Expr>,
        using: &mut Vec<(usize, Vec<String>)>,
    ) {
        self.factor(&t.relation, sources, conjuncts, using);
        for join in &t.joins {
            self.factor(&join.relation, sources, conjuncts, using);
            let constraint = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => Some(c),
                _ => None,
            };
            match constraint {
                Some(JoinConstraint::On(e)) => conjuncts.extend(split_and(e)),
                Some(JoinConstraint::Using(cols)) => {
                    let names = cols.iter().filter_map(last_ident).collect();
                    using.push((sources.len().saturating_sub(1), names));
                }
                _ => {}
            }
        }
    }

    fn factor<'q>(
        &mut self,
        f: &'q TableFactor,
        sources: &mut Vec<Source>,
        conjuncts: &mut Vec<&'q Expr>,
        using: &mut Vec<(usize, Vec<String>)>,
    ) {
        match f {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let table = table_name(name);
                let shown = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .or_else(|| table.clone())
                    .unwrap_or_default();
                let mut usage = None;
                if let Some(args) = args {
                    for arg in &args.args {
                        if let Some(e) = arg_expr(arg) {
                            self.walk(e);
                        }
                    }
                } else if let Some(table) = &table {
                    let shadowed = self.ctes.iter().any(|c| c.eq_ignore_ascii_case(table));
                    if let Some(info) = self.catalog.table(table) {
                        if !shadowed && info.indexable() {
                            self.out.uses.push(TableUse {
                                table: info.name.clone(),
                                ..TableUse::default()
                            });
                            usage = Some(self.out.uses.len() - 1);
                        }
                    }
                }
                sources.push(Source { name: shown, usage });
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.query(subquery);
                sources.push(Source {
                    name: alias
                        .as_ref()
                        .map(|a| a.name.value.clone())
                        .unwrap_or_default(),
                    usage: None,
                });
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.table_with_joins(table_with_joins, sources, conjuncts, using),
            _ => sources.push(Source {
                name: String::new(),
                usage: None,
            }),
        }
    }

    /// `JOIN ... USING (c)`: the right table's `c` equals the same column of an earlier table.
    pub(super) fn using(&mut self, using: &[(usize, Vec<String>)]) {
        for (right, columns) in using {
            for column in columns {
                let mut found: Vec<Col> = Vec::new();
                let Some(scope) = self.scopes.last() else {
                    return;
                };
                for (i, source) in scope.iter().enumerate().take(right + 1) {
                    if let Some(col) = self.column_of(source, column) {
                        if i == *right || found.is_empty() {
                            found.push(col);
                        }
                    }
                }
                if found.len() == 2 {
                    for col in found {
                        push_unique(&mut self.out.uses[col.usage].join_eq, &col.column);
                    }
                }
            }
        }
    }
}

/// The table a FROM name refers to; `None` for another schema than `main` (attached
/// databases and `temp` are outside the advisor's copy).
fn table_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => Some(id.value.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [table] => Some((*table).to_owned()),
        [schema, table] if schema.eq_ignore_ascii_case("main") => Some((*table).to_owned()),
        _ => None,
    }
}

fn last_ident(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(id) => Some(id.value.clone()),
        _ => None,
    }
}
