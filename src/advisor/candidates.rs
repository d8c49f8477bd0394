//! Candidate indexes for one statement, from what it asks of each table (as `.expert` does):
//! its equality columns; those plus the join columns; those plus each range column; those
//! plus the ORDER BY; those plus the GROUP BY. Every name comes from the schema catalog and is
//! quoted in the generated SQL.

use super::analyze::{Analysis, TableUse};
use super::catalog::{Catalog, TableInfo};
use crate::sql::quote_ident;

/// One index that may help: a table and its key columns (name, descending).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Candidate {
    pub(crate) table: String,
    pub(crate) columns: Vec<(String, bool)>,
}

impl Candidate {
    /// The `CREATE INDEX` statement for this candidate under `name`, every identifier quoted.
    pub(crate) fn create_sql(&self, name: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, desc)| {
                if *desc {
                    format!("{} DESC", quote_ident(c))
                } else {
                    quote_ident(c)
                }
            })
            .collect();
        format!(
            "CREATE INDEX {} ON {} ({})",
            quote_ident(name),
            quote_ident(&self.table),
            cols.join(", ")
        )
    }

    /// A name for the index: `idx_<table>_<columns>`, only ASCII letters, digits and `_`,
    /// kept short, and not taken by any schema object or by `taken`.
    pub(crate) fn name(&self, catalog: &Catalog, taken: &[String]) -> String {
        let mut base = format!("idx_{}", sanitize(&self.table));
        for (c, _) in &self.columns {
            base.push('_');
            base.push_str(&sanitize(c));
        }
        if base.len() > 48 {
            // Long names are cut and told apart by a hash of the full one.
            let hash = base.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            base.truncate(39);
            base.push_str(&format!("_{:08x}", hash as u32));
        }
        let free =
            |n: &str| !catalog.name_taken(n) && !taken.iter().any(|t| t.eq_ignore_ascii_case(n));
        if free(&base) {
            return base;
        }
        (2..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| free(n))
            .unwrap_or(base)
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

/// The candidates for one analyzed statement, without those an existing index already
/// provides.
pub(crate) fn candidates(analysis: &Analysis, catalog: &Catalog) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for usage in &analysis.uses {
        let Some(table) = catalog.table(&usage.table).filter(|t| t.indexable()) else {
            continue;
        };
        for columns in shapes(usage, table) {
            if columns.is_empty() || served_by_existing(table, &columns) {
                continue;
            }
            let candidate = Candidate {
                table: table.name.clone(),
                columns,
            };
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// The key shapes worth trying for one table reference.
fn shapes(usage: &TableUse, table: &TableInfo) -> Vec<Vec<(String, bool)>> {
    // Only real columns, never the rowid alias: it is the table's own key already, and the
    // rowid ends every index key implicitly.
    let keep = |c: &String| table.column(c).is_some_and(|col| !col.rowid_alias);
    let eq: Vec<String> = usage.eq.iter().filter(|c| keep(c)).cloned().collect();
    let has =
        |list: &[(String, bool)], c: &str| list.iter().any(|(x, _)| x.eq_ignore_ascii_case(c));
    let base: Vec<(String, bool)> = eq.iter().map(|c| (c.clone(), false)).collect();
    let extend = |tail: &mut dyn Iterator<Item = (String, bool)>| {
        let mut cols = base.clone();
        for (c, desc) in tail {
            if !has(&cols, &c) {
                cols.push((c, desc));
            }
        }
        cols
    };
    let mut shapes = vec![base.clone()];
    let joins: Vec<(String, bool)> = usage
        .join_eq
        .iter()
        .filter(|c| keep(c))
        .map(|c| (c.clone(), false))
        .collect();
    if !joins.is_empty() {
        shapes.push(extend(&mut joins.into_iter()));
    }
    for r in usage.range.iter().filter(|c| keep(c)) {
        shapes.push(extend(&mut std::iter::once((r.clone(), false))));
    }
    if !usage.order_by.is_empty() {
        // An ORDER BY that ends on the rowid is served by an index on the columns before it;
        // a rowid earlier in the list cannot be, so the list stops there.
        let terms: Vec<(String, bool)> = usage
            .order_by
            .iter()
            .take_while(|(c, _)| keep(c))
            .cloned()
            .collect();
        if !terms.is_empty() {
            shapes.push(extend(&mut terms.into_iter()));
        }
    }
    if !usage.group_by.is_empty() && usage.group_by.iter().all(keep) {
        shapes.push(extend(
            &mut usage.group_by.iter().map(|c| (c.clone(), false)),
        ));
    }
    shapes
}

/// True when an existing full (non-partial) index starts with these columns: with the
/// equality part in any order, as SQLite seeks on equalities in any order.
fn served_by_existing(table: &TableInfo, columns: &[(String, bool)]) -> bool {
    table.indexes.iter().filter(|i| !i.partial).any(|index| {
        let Some(key) = index.column_names() else {
            return false;
        };
        if key.len() < columns.len() {
            return false;
        }
        let wanted: Vec<String> = columns
            .iter()
            .map(|(c, _)| c.to_ascii_lowercase())
            .collect();
        let mut have: Vec<String> = key[..columns.len()]
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        // Same set and same last column (the range or order part): good enough a match; the
        // planner has the last word on the copy either way.
        let same_last = have.last() == wanted.last();
        have.sort();
        let mut sorted = wanted.clone();
        sorted.sort();
        have == sorted && same_last
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::analyze::analyze;
    use crate::error::{Error, Result};
    use rusqlite::Connection;

    fn catalog() -> Result<Catalog> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE e(id INTEGER PRIMARY KEY, user_id INT, day TEXT, at INT, \"odd name\" INT);
             CREATE INDEX e_day ON e(day);",
        )?;
        Catalog::load(&conn)
    }

    fn shapes_of(sql: &str) -> Result<Vec<Vec<(String, bool)>>> {
        let cat = catalog()?;
        let a = analyze(sql, &cat).map_err(Error::closure)?;
        Ok(candidates(&a, &cat)
            .into_iter()
            .map(|c| c.columns)
            .collect())
    }

    fn cols(list: &[&str]) -> Vec<(String, bool)> {
        list.iter().map(|c| (c.to_string(), false)).collect()
    }

    #[test]
    fn equality_then_range_then_order() -> Result<()> {
        let found =
            shapes_of("SELECT * FROM e WHERE user_id = ? AND at > ? ORDER BY at DESC, id DESC")?;
        assert_eq!(found, vec![cols(&["user_id"]), cols(&["user_id", "at"])]);
        let found = shapes_of("SELECT * FROM e WHERE \"odd name\" = 1 ORDER BY at, user_id DESC")?;
        assert_eq!(
            found,
            vec![
                cols(&["odd name"]),
                vec![
                    ("odd name".into(), false),
                    ("at".into(), false),
                    ("user_id".into(), true)
                ]
            ]
        );
        // (day) exists already.
        assert!(shapes_of("SELECT * FROM e WHERE day = ?")?.is_empty());
        assert!(shapes_of("SELECT * FROM e WHERE id = ?")?.is_empty());
        Ok(())
    }

    #[test]
    fn sql_and_names_are_quoted_and_free() -> Result<()> {
        let cat = catalog()?;
        let c = Candidate {
            table: "e".into(),
            columns: vec![("odd name".into(), false), ("at".into(), true)],
        };
        let name = c.name(&cat, &[]);
        assert_eq!(name, "idx_e_odd_name_at");
        assert_eq!(
            c.create_sql(&name),
            "CREATE INDEX \"idx_e_odd_name_at\" ON \"e\" (\"odd name\", \"at\" DESC)"
        );
        assert_eq!(
            c.name(&cat, std::slice::from_ref(&name)),
            "idx_e_odd_name_at_2"
        );
        let long = Candidate {
            table: "e".repeat(60),
            columns: vec![("x".into(), false)],
        };
        assert!(long.name(&cat, &[]).len() <= 48);
        Ok(())
    }
}
