//! Indexes carried for nothing: redundant ones (a leading part of another index on the same
//! table) and unused ones (in no observed plan). Each comes with its `DROP INDEX` text.

use std::collections::HashSet;

use rusqlite::Connection;

use super::catalog::{Catalog, IndexInfo, TableInfo};
use super::plan::explain_on;
use crate::db::Db;
use crate::error::Result;
use crate::sql::quote_ident;

/// An index whose key is a leading part of another index's key on the same table: every
/// lookup it serves, the other serves too, and each write pays for both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedundantIndex {
    /// The table.
    pub table: String,
    /// The redundant index.
    pub index: String,
    /// Its key columns.
    pub columns: Vec<String>,
    /// The index that makes it redundant.
    pub covered_by: String,
    /// That index's key columns.
    pub covered_by_columns: Vec<String>,
    /// `DROP INDEX "index"`.
    pub drop_sql: String,
}

/// An index no observed statement's plan reads through.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnusedIndex {
    /// The table.
    pub table: String,
    /// The index.
    pub index: String,
    /// Its key columns (`None` for an expression).
    pub columns: Vec<Option<String>>,
    /// `DROP INDEX "index"`.
    pub drop_sql: String,
}

fn drop_sql(index: &str) -> String {
    format!("DROP INDEX {}", quote_ident(index))
}

/// True for an index strata may suggest dropping: made by CREATE INDEX (not a UNIQUE or
/// PRIMARY KEY constraint) and not UNIQUE (dropping it would stop enforcing uniqueness).
fn droppable(index: &IndexInfo) -> bool {
    index.origin == "c" && !index.unique
}

/// The redundant indexes of one table.
fn redundant_in(table: &TableInfo) -> Vec<RedundantIndex> {
    let mut found = Vec::new();
    for a in table.indexes.iter().filter(|i| droppable(i) && !i.partial) {
        // A partial index covers only some rows; it makes no other index redundant.
        let cover = table
            .indexes
            .iter()
            .filter(|b| b.name != a.name && !b.partial)
            .find(|b| {
                let longer = b.key.len() > a.key.len();
                // Two identical indexes: report the one with the greater name, keep the other.
                let twin = b.key.len() == a.key.len() && (!droppable(b) || b.name < a.name);
                (longer || twin)
                    && a.key.iter().zip(&b.key).all(|(x, y)| {
                        x.name.is_some()
                            && x.name.as_deref().map(str::to_ascii_lowercase)
                                == y.name.as_deref().map(str::to_ascii_lowercase)
                            && x.desc == y.desc
                            && x.collation.eq_ignore_ascii_case(&y.collation)
                    })
            });
        if let Some(b) = cover {
            found.push(RedundantIndex {
                table: table.name.clone(),
                index: a.name.clone(),
                columns: a.key.iter().filter_map(|k| k.name.clone()).collect(),
                covered_by: b.name.clone(),
                covered_by_columns: b.key.iter().filter_map(|k| k.name.clone()).collect(),
                drop_sql: drop_sql(&a.name),
            });
        }
    }
    found
}

/// The foreign keys' child columns of a table: an index leading with them serves the checks
/// SQLite makes when a parent row is deleted or its key changes, which no query plan shows.
fn foreign_key_columns(conn: &Connection, table: &str) -> Result<Vec<Vec<String>>> {
    let mut stmt =
        conn.prepare("SELECT id, \"from\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut keys: Vec<(i64, Vec<String>)> = Vec::new();
    for (id, column) in rows {
        match keys.last_mut() {
            Some((last, cols)) if *last == id => cols.push(column.to_ascii_lowercase()),
            _ => keys.push((id, vec![column.to_ascii_lowercase()])),
        }
    }
    Ok(keys.into_iter().map(|(_, cols)| cols).collect())
}

impl Db {
    /// Indexes whose key columns are a leading part of another index's on the same table
    /// (same columns, order, direction and collation), such as `(a)` beside `(a, b)`, or an
    /// exact duplicate. UNIQUE indexes and constraint indexes are never reported: they enforce
    /// something. Read on a reader.
    pub fn redundant_indexes(&self) -> Result<Vec<RedundantIndex>> {
        let catalog = self.read(Catalog::load)?;
        Ok(catalog
            .tables
            .iter()
            .filter(|t| t.indexable())
            .flat_map(redundant_in)
            .collect())
    }

    /// Indexes that no observed statement's plan reads through (the plans are taken now, on
    /// a reader, with the current statistics). With no observed statements nothing is
    /// reported: no evidence is not evidence of no use.
    ///
    /// Not reported: UNIQUE and constraint indexes (they enforce something), and indexes that
    /// lead with a foreign key's child columns (SQLite uses them to check deletes of parent
    /// rows, which no query plan shows).
    pub fn unused_indexes(&self) -> Result<Vec<UnusedIndex>> {
        let observed = self.observed_statements();
        if observed.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|c| {
            let catalog = Catalog::load(c)?;
            let mut used: HashSet<String> = HashSet::new();
            for statement in &observed {
                // A statement that no longer compiles (a dropped table) uses nothing.
                if let Ok(plan) = explain_on(c, &statement.sql) {
                    used.extend(plan.indexes_used().iter().map(|n| n.to_ascii_lowercase()));
                }
            }
            let mut unused = Vec::new();
            for table in catalog.tables.iter().filter(|t| t.indexable()) {
                let fks = foreign_key_columns(c, &table.name)?;
                for index in table.indexes.iter().filter(|i| droppable(i)) {
                    if used.contains(&index.name.to_ascii_lowercase()) {
                        continue;
                    }
                    let lead: Vec<String> = index
                        .key
                        .iter()
                        .map(|k| k.name.as_deref().unwrap_or("").to_ascii_lowercase())
                        .collect();
                    let serves_fk = fks.iter().any(|fk| {
                        fk.len() <= lead.len()
                            && fk.iter().all(|col| lead[..fk.len()].contains(col))
                    });
                    if serves_fk {
                        continue;
                    }
                    unused.push(UnusedIndex {
                        table: table.name.clone(),
                        index: index.name.clone(),
                        columns: index.key.iter().map(|k| k.name.clone()).collect(),
                        drop_sql: drop_sql(&index.name),
                    });
                }
            }
            Ok(unused)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(schema: &str) -> Result<Db> {
        let db = Db::builder().build()?;
        db.write(|c| Ok(c.execute_batch(schema)?))?;
        Ok(db)
    }

    #[test]
    fn prefix_and_duplicate_are_redundant() -> Result<()> {
        let db = db("CREATE TABLE t(a, b, c);
             CREATE INDEX t_a ON t(a);
             CREATE INDEX t_ab ON t(a, b);
             CREATE INDEX t_b_desc ON t(b DESC);
             CREATE INDEX t_bc ON t(b, c);
             CREATE UNIQUE INDEX t_c ON t(c);
             CREATE INDEX t_c_too ON t(c);
             CREATE INDEX t_x1 ON t(c, a);
             CREATE INDEX t_x2 ON t(c, a);")?;
        let mut found: Vec<(String, String)> = db
            .redundant_indexes()?
            .into_iter()
            .map(|r| (r.index, r.covered_by))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("t_a".into(), "t_ab".into()),
                ("t_c_too".into(), "t_c".into()),
                ("t_x2".into(), "t_x1".into()),
            ]
        );
        Ok(())
    }

    #[test]
    fn unused_skips_used_unique_and_foreign_key_indexes() -> Result<()> {
        let db = db("CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT UNIQUE);
             CREATE TABLE c(id INTEGER PRIMARY KEY, p_id INT REFERENCES p(id), x INT, y INT);
             CREATE INDEX c_p ON c(p_id);
             CREATE INDEX c_x ON c(x);
             CREATE INDEX c_y ON c(y);")?;
        assert!(
            db.unused_indexes()?.is_empty(),
            "no observations, no verdict"
        );
        db.explain("SELECT * FROM c WHERE x = 1")?;
        let unused: Vec<String> = db.unused_indexes()?.into_iter().map(|u| u.index).collect();
        assert_eq!(unused, vec!["c_y"]);
        Ok(())
    }
}
