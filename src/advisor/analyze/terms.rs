//! The terms of a WHERE or ON clause: which column each compares with what (a constant, a
//! parameter, another table's column), how column names resolve in nested scopes, and the
//! subqueries inside expressions.

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, Value,
};

use super::{push_unique, Analyzer, Cmp, Col, ParamRole, ParamUse, Resolved, Source};

impl Analyzer<'_> {
    pub(super) fn conjunct(&mut self, e: &Expr) {
        match e {
            Expr::Nested(inner) => self.conjunct(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Eq => self.compare(left, right, Cmp::Eq),
                BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq => self.compare(left, right, Cmp::Range),
                _ => self.walk(e),
            },
            Expr::IsNotDistinctFrom(left, right) => self.compare(left, right, Cmp::Eq),
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                if let Resolved::Local(col) = self.resolve(expr) {
                    if self.is_constant(low) && self.is_constant(high) {
                        self.add(&col, Cmp::Range);
                        self.pairs += 1;
                        let pair = self.pairs;
                        let target = Some(self.target(&col));
                        if let Some(i) = self.placeholder(low) {
                            self.param(i, target.clone(), ParamRole::Low(pair));
                        }
                        if let Some(i) = self.placeholder(high) {
                            self.param(i, target, ParamRole::High(pair));
                        }
                    }
                }
                self.walk(e);
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                if let Resolved::Local(col) = self.resolve(expr) {
                    if list.iter().all(|v| self.is_constant(v)) {
                        self.add(&col, Cmp::Eq);
                        let target = self.target(&col);
                        for v in list {
                            if let Some(i) = self.placeholder(v) {
                                self.param(i, Some(target.clone()), ParamRole::Eq);
                            }
                        }
                    }
                }
                self.walk(e);
            }
            Expr::InSubquery {
                expr,
                negated: false,
                ..
            } => {
                if let Resolved::Local(col) = self.resolve(expr) {
                    self.add(&col, Cmp::Eq);
                }
                self.walk(e);
            }
            Expr::IsNull(inner) => {
                if let Resolved::Local(col) = self.resolve(inner) {
                    self.add(&col, Cmp::Eq);
                }
            }
            _ => self.walk(e),
        }
    }

    fn compare(&mut self, left: &Expr, right: &Expr, cmp: Cmp) {
        if let (Expr::Tuple(l), Expr::Tuple(r)) = (strip(left), strip(right)) {
            if l.len() == r.len() {
                match cmp {
                    Cmp::Eq => {
                        for (a, b) in l.iter().zip(r) {
                            self.compare(a, b, Cmp::Eq);
                        }
                    }
                    // A row-value range bounds its first column; the others only break ties.
                    Cmp::Range => {
                        for (n, (a, b)) in l.iter().zip(r).enumerate() {
                            self.compare_one(a, b, Cmp::Range, n == 0);
                        }
                    }
                }
                return;
            }
        }
        self.compare_one(left, right, cmp, true);
    }

    fn compare_one(&mut self, left: &Expr, right: &Expr, cmp: Cmp, constrains: bool) {
        let l = self.resolve(left);
        let r = self.resolve(right);
        match (l, r) {
            (Resolved::Local(a), Resolved::Local(b))
                if a.usage != b.usage && matches!(cmp, Cmp::Eq) =>
            {
                push_unique(&mut self.out.uses[a.usage].join_eq, &a.column);
                push_unique(&mut self.out.uses[b.usage].join_eq, &b.column);
            }
            (Resolved::Local(col), _) if self.is_constant(right) => {
                self.constant_side(&col, right, cmp, constrains)
            }
            (_, Resolved::Local(col)) if self.is_constant(left) => {
                self.constant_side(&col, left, cmp, constrains)
            }
            _ => {}
        }
        self.walk(left);
        self.walk(right);
    }

    fn constant_side(&mut self, col: &Col, value: &Expr, cmp: Cmp, constrains: bool) {
        let role = match cmp {
            Cmp::Eq => ParamRole::Eq,
            Cmp::Range => ParamRole::Range,
        };
        if constrains {
            self.add(col, cmp);
        }
        if let Some(i) = self.placeholder(value) {
            let target = self.target(col);
            self.param(i, Some(target), role);
        }
    }

    fn add(&mut self, col: &Col, cmp: Cmp) {
        let usage = &mut self.out.uses[col.usage];
        match cmp {
            Cmp::Eq => push_unique(&mut usage.eq, &col.column),
            Cmp::Range => push_unique(&mut usage.range, &col.column),
        }
    }

    fn target(&self, col: &Col) -> (String, String) {
        (self.out.uses[col.usage].table.clone(), col.column.clone())
    }

    pub(super) fn param(
        &mut self,
        index: usize,
        column: Option<(String, String)>,
        role: ParamRole,
    ) {
        let p = ParamUse {
            index,
            column,
            role,
        };
        if !self.out.params.contains(&p) {
            self.out.params.push(p);
        }
    }

    pub(super) fn placeholder(&self, e: &Expr) -> Option<usize> {
        match strip(e) {
            Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => self
                .params
                .get(&(v.span.start.line, v.span.start.column))
                .copied(),
            Expr::Cast { expr, .. } => self.placeholder(expr),
            _ => None,
        }
    }

    /// The column a stored table of this scope has under `name`, if it has one.
    pub(super) fn column_of(&self, source: &Source, name: &str) -> Option<Col> {
        let usage = source.usage?;
        let table = self.catalog.table(&self.out.uses[usage].table)?;
        let column = table.column(name)?;
        Some(Col {
            usage,
            column: column.name.clone(),
        })
    }

    pub(super) fn resolve(&self, e: &Expr) -> Resolved {
        let (qualifier, name) = match strip(e) {
            Expr::Identifier(id) => (None, id.value.as_str()),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => (
                Some(parts[parts.len() - 2].value.as_str()),
                parts[parts.len() - 1].value.as_str(),
            ),
            Expr::Collate { expr, .. } => return self.resolve(expr),
            _ => return Resolved::Unknown,
        };
        for (depth, scope) in self.scopes.iter().rev().enumerate() {
            let local = depth == 0;
            match qualifier {
                Some(q) => {
                    if let Some(source) = scope.iter().find(|s| s.name.eq_ignore_ascii_case(q)) {
                        return match (local, self.column_of(source, name)) {
                            (false, _) => Resolved::Outer,
                            (true, Some(col)) => Resolved::Local(col),
                            (true, None) => Resolved::LocalOther,
                        };
                    }
                }
                None => {
                    let found: Vec<Col> = scope
                        .iter()
                        .filter_map(|s| self.column_of(s, name))
                        .collect();
                    if found.len() == 1 {
                        return if local {
                            Resolved::Local(found[0].clone())
                        } else {
                            Resolved::Outer
                        };
                    }
                    if found.len() > 1 {
                        return Resolved::Unknown;
                    }
                    // Sources of unknown shape (subqueries, CTEs, views, table functions) may
                    // have the column: the conservative answer is "a column of this scope".
                    if local && scope.iter().any(|s| s.usage.is_none()) {
                        return Resolved::LocalOther;
                    }
                }
            }
        }
        Resolved::Unknown
    }

    /// A column of the ORDER BY or GROUP BY: a column, an output alias of a column, or an
    /// output position.
    pub(super) fn output_column(&self, e: &Expr, projection: &[SelectItem]) -> Option<Col> {
        if let Resolved::Local(col) = self.resolve(e) {
            return Some(col);
        }
        let item = match strip(e) {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| projection.get(n.checked_sub(1)?)),
                _ => None,
            },
            Expr::Identifier(id) => projection.iter().find(|p| {
                matches!(p, SelectItem::ExprWithAlias { alias, .. }
                    if alias.value.eq_ignore_ascii_case(&id.value))
            }),
            _ => None,
        }?;
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                match self.resolve(e) {
                    Resolved::Local(col) => Some(col),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// True when `e` reads nothing of the current scope: it is fixed for one scan of it.
    fn is_constant(&self, e: &Expr) -> bool {
        match strip(e) {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                matches!(self.resolve(e), Resolved::Outer | Resolved::Unknown)
                    && !self.unresolved_local(e)
            }
            // A subquery is evaluated on its own; correlated ones are rare in seek positions.
            Expr::Subquery(_) | Expr::Exists { .. } => true,
            other => children(other).into_iter().all(|c| self.is_constant(c)),
        }
    }

    /// An unqualified name no table knows, while the scope has sources of unknown shape.
    fn unresolved_local(&self, e: &Expr) -> bool {
        matches!(strip(e), Expr::Identifier(_))
            && matches!(self.resolve(e), Resolved::Unknown)
            && self
                .scopes
                .last()
                .is_some_and(|s| s.iter().any(|s| s.usage.is_none()))
    }

    /// Visits the subqueries inside an expression.
    pub(super) fn walk(&mut self, e: &Expr) {
        match e {
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => self.query(q),
            Expr::InSubquery { expr, subquery, .. } => {
                self.walk(expr);
                self.query(subquery);
            }
            Expr::Function(f) => {
                if let FunctionArguments::Subquery(q) = &f.args {
                    self.query(q);
                }
                for c in children(e) {
                    self.walk(c);
                }
            }
            other => {
                for c in children(other) {
                    self.walk(c);
                }
            }
        }
    }
}

/// The operands of an expression (not descending into subqueries).
pub(super) fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::IsFalse(a)
        | Expr::IsNotFalse(a)
        | Expr::IsTrue(a)
        | Expr::IsNotTrue(a)
        | Expr::IsNull(a)
        | Expr::IsNotNull(a)
        | Expr::IsUnknown(a)
        | Expr::IsNotUnknown(a)
        | Expr::Nested(a)
        | Expr::UnaryOp { expr: a, .. }
        | Expr::Cast { expr: a, .. }
        | Expr::Collate { expr: a, .. } => vec![a],
        Expr::IsDistinctFrom(a, b)
        | Expr::IsNotDistinctFrom(a, b)
        | Expr::BinaryOp {
            left: a, right: b, ..
        }
        | Expr::Like {
            expr: a,
            pattern: b,
            ..
        }
        | Expr::ILike {
            expr: a,
            pattern: b,
            ..
        } => vec![a, b],
        Expr::Between {
            expr, low, high, ..
        } => vec![expr, low, high],
        Expr::InList { expr, list, .. } => {
            let mut v: Vec<&Expr> = vec![expr];
            v.extend(list);
            v
        }
        Expr::InSubquery { expr, .. } => vec![expr],
        Expr::Tuple(list) => list.iter().collect(),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let mut v: Vec<&Expr> = operand.iter().map(|b| b.as_ref()).collect();
            for w in conditions {
                v.push(&w.condition);
                v.push(&w.result);
            }
            v.extend(else_result.iter().map(|b| b.as_ref()));
            v
        }
        Expr::Function(f) => {
            let mut v: Vec<&Expr> = Vec::new();
            if let FunctionArguments::List(list) = &f.args {
                v.extend(list.args.iter().filter_map(arg_expr));
            }
            v.extend(f.filter.iter().map(|b| b.as_ref()));
            v
        }
        _ => Vec::new(),
    }
}

pub(super) fn arg_expr(arg: &FunctionArg) -> Option<&Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        }
        | FunctionArg::ExprNamed {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        _ => None,
    }
}

/// `e` without the parentheses around it.
pub(super) fn strip(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// The terms of an AND chain.
pub(super) fn split_and(e: &Expr) -> Vec<&Expr> {
    match strip(e) {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut v = split_and(left);
            v.extend(split_and(right));
            v
        }
        other => vec![other],
    }
}
#[cfg(test)]
mod tests {
    use super::super::tests::{catalog, one};
    use super::super::{analyze, ParamRole};
    use crate::error::Result;

    #[test]
    fn equality_range_and_order() -> Result<()> {
        let cat = catalog()?;
        let a = analyze(
            "SELECT * FROM expenses WHERE user_id = ?1 AND expense_date BETWEEN ?2 AND ?3 \
             ORDER BY expense_date DESC, id ASC LIMIT ?4",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        let e = one(&a, "expenses");
        assert_eq!(e.eq, vec!["user_id"]);
        assert_eq!(e.range, vec!["expense_date"]);
        assert_eq!(
            e.order_by,
            vec![("expense_date".to_owned(), false), ("id".to_owned(), true)]
        );
        let roles: Vec<(usize, ParamRole)> =
            a.params.iter().map(|p| (p.index, p.role.clone())).collect();
        assert!(roles.contains(&(1, ParamRole::Eq)));
        assert!(roles.contains(&(2, ParamRole::Low(1))));
        assert!(roles.contains(&(3, ParamRole::High(1))));
        assert!(roles.contains(&(4, ParamRole::Limit)));
        Ok(())
    }

    #[test]
    fn row_values_group_by_and_dml() -> Result<()> {
        let cat = catalog()?;
        let a = analyze(
            "SELECT id FROM expenses WHERE user_id = ?1 AND (created_at, id) < (?2, ?3) \
             ORDER BY created_at DESC, id DESC",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        let e = one(&a, "expenses");
        assert_eq!(e.range, vec!["created_at"]);
        assert_eq!(
            e.order_by,
            vec![("created_at".to_owned(), false), ("id".to_owned(), false)]
        );
        let a = analyze(
            "SELECT category_id, count(*) FROM expenses GROUP BY category_id",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        assert_eq!(one(&a, "expenses").group_by, vec!["category_id"]);
        let a = analyze(
            "UPDATE expenses SET amount_cents = 0 WHERE category_id = ?",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        assert_eq!(one(&a, "expenses").eq, vec!["category_id"]);
        let a = analyze(
            "DELETE FROM categories WHERE user_id = 3 AND name GLOB 'a*'",
            &cat,
        )
        .map_err(crate::Error::closure)?;
        assert_eq!(one(&a, "categories").eq, vec!["user_id"]);
        Ok(())
    }
}
