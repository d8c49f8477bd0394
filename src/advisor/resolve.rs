//! Plan lines whose names mislead the plain parse.
//!
//! `EXPLAIN QUERY PLAN` prints names unquoted: `SEARCH <table> USING INDEX <index> (<constraint>)`.
//! A table, alias or column name holding ` USING ` or ` (` moves the split (the line
//! `SEARCH w USING COVERING INDEX z USING INDEX wi (a (b=?)` is table `w USING COVERING INDEX z`,
//! index `wi`, column `a (b`), and the plan then names an index the schema does not have. Read
//! that way, a used index looked unused (`unused_indexes` advised dropping it) and the advisor
//! missed its own candidates. Such lines are read again against the schema's index names.

use rusqlite::Connection;

use super::plan::{IndexUse, PlanNode, QueryPlan, Step, TableAccess};

/// Re-reads the access steps of `plan` whose index is not one of `conn`'s indexes. Plans
/// naming only known indexes (all plans whose names hold no ` USING ` or ` (`) are left
/// as they are, and pay one read of the schema's index names.
pub(super) fn resolve_index_names(plan: &mut QueryPlan, conn: &Connection) {
    let named = |n: &PlanNode| match &n.step {
        Step::Access(a) => a.index.as_ref().and_then(|i| i.name.as_deref()).is_some(),
        _ => false,
    };
    if !plan.iter().any(named) {
        return;
    }
    let Ok(known) = index_names(conn) else {
        return;
    };
    let mut stack: Vec<&mut PlanNode> = plan.nodes.iter_mut().collect();
    while let Some(node) = stack.pop() {
        if let Step::Access(access) = &node.step {
            let unknown = access
                .index
                .as_ref()
                .and_then(|i| i.name.as_deref())
                .is_some_and(|name| !known.iter().any(|k| k.eq_ignore_ascii_case(name)));
            if unknown {
                if let Some(access) = resolve(&node.detail, &known) {
                    node.step = Step::Access(access);
                }
            }
        }
        stack.extend(node.children.iter_mut());
    }
}

/// The index names of the main and temp schemas.
fn index_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM main.sqlite_schema WHERE type = 'index' \
         UNION ALL SELECT name FROM temp.sqlite_schema WHERE type = 'index'",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect();
    names
}

/// Reads `detail` as `SCAN|SEARCH <name> USING [COVERING ]INDEX <known index>[ (<constraint>)]`,
/// trying each ` USING ` from the left and, after it, the longest known index name that the
/// line goes on with. `None` when no split names a known index.
fn resolve(detail: &str, known: &[String]) -> Option<TableAccess> {
    let (search, rest) = match detail.strip_prefix("SEARCH ") {
        Some(rest) => (true, rest),
        None => (false, detail.strip_prefix("SCAN ")?),
    };
    let rest = rest.strip_suffix(" LEFT-JOIN").unwrap_or(rest);
    for (at, using) in rest.match_indices(" USING ") {
        let name = &rest[..at];
        let after = &rest[at + using.len()..];
        let (covering, after) = match after.strip_prefix("COVERING INDEX ") {
            Some(after) => (true, after),
            None => match after.strip_prefix("INDEX ") {
                Some(after) => (false, after),
                None => continue,
            },
        };
        let found = known
            .iter()
            .filter_map(|k| {
                let index = after.get(..k.len())?;
                if !index.eq_ignore_ascii_case(k) {
                    return None;
                }
                let tail = &after[k.len()..];
                let constraint = if tail.is_empty() {
                    None
                } else {
                    Some(tail.strip_prefix(" (")?.strip_suffix(')')?.to_owned())
                };
                Some((index, constraint))
            })
            .max_by_key(|(index, _)| index.len());
        if let Some((index, constraint)) = found {
            return Some(TableAccess {
                name: name.strip_suffix(" EXISTS").unwrap_or(name).to_owned(),
                search,
                index: Some(IndexUse {
                    name: Some(index.to_owned()),
                    covering,
                    automatic: false,
                    primary_key: false,
                }),
                constraint,
                virtual_table: false,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_holding_plan_words_are_split_at_a_known_index() {
        let known = vec!["wi".to_owned(), "zx".to_owned()];
        let a = resolve(
            "SEARCH w USING COVERING INDEX z USING INDEX wi (a (b=?)",
            &known,
        )
        .expect("a known index");
        assert_eq!(a.name, "w USING COVERING INDEX z");
        let index = a.index.expect("an index");
        assert_eq!(index.name.as_deref(), Some("wi"));
        assert!(!index.covering);
        assert_eq!(a.constraint.as_deref(), Some("a (b=?"));
        let a = resolve("SCAN t (x USING COVERING INDEX wi LEFT-JOIN", &known).expect("known");
        assert_eq!((a.name.as_str(), a.constraint), ("t (x", None));
        assert!(resolve("SCAN t USING INDEX nope (a=?)", &known).is_none());
        assert!(resolve("USE TEMP B-TREE FOR ORDER BY", &known).is_none());
    }

    #[test]
    fn explain_resolves_against_the_schema() -> crate::Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE \"w USING COVERING INDEX z\" (id INTEGER PRIMARY KEY, \"a (b\", c);
             CREATE INDEX \"wi (a\" ON \"w USING COVERING INDEX z\" (\"a (b\");",
        )?;
        let plan = super::super::plan::explain_on(
            &conn,
            "SELECT c FROM \"w USING COVERING INDEX z\" WHERE \"a (b\" = 1",
        )?;
        assert!(plan.uses_index("wi (a"), "{plan:#?}");
        assert!(plan.full_scans().is_empty(), "{plan:#?}");
        let access = plan.accesses().next().expect("an access");
        assert_eq!(access.name, "w USING COVERING INDEX z");
        assert_eq!(access.constraint.as_deref(), Some("a (b=?"));
        Ok(())
    }
}
