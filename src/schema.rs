//! What the `main` schema says about a table: the one reader of `pragma_table_list` and
//! `pragma_table_xinfo`, for change capture (the columns a watch may name), batches (the
//! columns an operation may write) and the advisor's catalog.

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

/// A table or view of the `main` schema, as `pragma_table_list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    /// The name as the schema spells it.
    pub(crate) name: String,
    /// `table`, `view`, `virtual` or `shadow`.
    pub(crate) kind: String,
    /// Declared `WITHOUT ROWID`.
    pub(crate) without_rowid: bool,
}

/// A column, as `pragma_table_xinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// The declared type, as written (`""` when none).
    pub(crate) decl_type: String,
    /// The column's position in the primary key, from 1; 0 outside it.
    pub(crate) pk: i64,
    /// 0 for an ordinary column; 1 for a virtual table's hidden column, 2 and 3 for a
    /// generated (virtual, stored) column.
    pub(crate) hidden: i64,
}

impl Column {
    /// A generated column: computed by SQLite, never written.
    pub(crate) fn generated(&self) -> bool {
        matches!(self.hidden, 2 | 3)
    }

    /// An ordinary column (`pragma_table_info` lists only these): neither hidden nor generated.
    pub(crate) fn ordinary(&self) -> bool {
        self.hidden == 0
    }
}

/// The table or view called `name` in `main`, matched as SQLite matches names (ignoring ASCII
/// case); `None` if there is none.
pub(crate) fn table(conn: &Connection, name: &str) -> Result<Option<Table>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, type, wr FROM pragma_table_list \
             WHERE schema = 'main' AND name = ?1 COLLATE NOCASE",
        )?
        .query_row([name], |r| {
            Ok(Table {
                name: r.get(0)?,
                kind: r.get(1)?,
                without_rowid: r.get(2)?,
            })
        })
        .optional()?)
}

/// The columns of `table` in `main`, in declaration order, hidden and generated ones included;
/// empty if there is no such table.
pub(crate) fn columns(conn: &Connection, table: &str) -> Result<Vec<Column>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, coalesce(type, ''), pk, hidden FROM pragma_table_xinfo(?1, 'main') \
         ORDER BY cid",
    )?;
    let columns = stmt
        .query_map([table], |r| {
            Ok(Column {
                name: r.get(0)?,
                decl_type: r.get(1)?,
                pk: r.get(2)?,
                hidden: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(columns)
}

/// The names of the ordinary columns of `table` (those a statement may write).
pub(crate) fn ordinary_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    Ok(columns(conn, table)?
        .into_iter()
        .filter(Column::ordinary)
        .map(|c| c.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_columns_are_read_as_the_schema_declares_them() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE Users(id INTEGER PRIMARY KEY, email TEXT NOT NULL, \
                 lower_email TEXT GENERATED ALWAYS AS (lower(email)) VIRTUAL);
             CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             CREATE VIEW v AS SELECT id FROM Users;",
        )?;
        let users = table(&conn, "users")?.expect("found ignoring case");
        assert_eq!(
            (users.name.as_str(), users.kind.as_str()),
            ("Users", "table")
        );
        assert!(!users.without_rowid);
        assert!(table(&conn, "kv")?.is_some_and(|t| t.without_rowid));
        assert_eq!(table(&conn, "v")?.map(|t| t.kind), Some("view".to_owned()));
        assert_eq!(table(&conn, "nope")?, None);

        let cols = columns(&conn, "Users")?;
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "email", "lower_email"]);
        assert_eq!((cols[0].decl_type.as_str(), cols[0].pk), ("INTEGER", 1));
        assert!(cols[2].generated() && !cols[2].ordinary());
        assert_eq!(ordinary_columns(&conn, "Users")?, ["id", "email"]);
        assert!(columns(&conn, "nope")?.is_empty());
        Ok(())
    }
}
