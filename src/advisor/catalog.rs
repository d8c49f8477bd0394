//! The schema as the advisor sees it: tables, their columns and indexes, read through pragma
//! table functions with names bound as parameters (never spliced into SQL text).

use rusqlite::Connection;

use crate::error::Result;
use crate::schema;

/// The tables and views of the `main` schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub(crate) tables: Vec<TableInfo>,
    /// Every name in `sqlite_schema` (tables, views, indexes, triggers), lower-cased: a new
    /// index must not take one of them.
    pub(crate) names: Vec<String>,
}

/// One table or view.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub(crate) name: String,
    pub(crate) view: bool,
    /// A virtual table: its module does the indexing, SQL indexes do not apply.
    pub(crate) virtual_table: bool,
    pub(crate) without_rowid: bool,
    pub(crate) columns: Vec<ColumnInfo>,
    pub(crate) indexes: Vec<IndexInfo>,
}

/// One column of a table.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub(crate) name: String,
    /// The `INTEGER PRIMARY KEY` of a rowid table: already the table's key, never indexed.
    pub(crate) rowid_alias: bool,
    /// A generated column (virtual or stored): cannot be inserted into.
    pub(crate) generated: bool,
}

/// One index of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexInfo {
    pub(crate) name: String,
    pub(crate) unique: bool,
    /// `c` for CREATE INDEX, `u` for a UNIQUE constraint, `pk` for a PRIMARY KEY.
    pub(crate) origin: String,
    pub(crate) partial: bool,
    pub(crate) key: Vec<KeyColumn>,
}

/// One key column of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    /// The column's name; `None` for an expression or the rowid.
    pub(crate) name: Option<String>,
    pub(crate) desc: bool,
    pub(crate) collation: String,
}

impl IndexInfo {
    /// The key columns' names when every key part is a plain column.
    pub(crate) fn column_names(&self) -> Option<Vec<&str>> {
        self.key.iter().map(|k| k.name.as_deref()).collect()
    }
}

impl Catalog {
    /// Reads the catalog of the `main` schema on `conn`. A table whose details cannot be read
    /// (a virtual table of a module this build lacks) is kept without columns.
    pub(crate) fn load(conn: &Connection) -> Result<Catalog> {
        let mut stmt = conn.prepare(
            "SELECT type, name, coalesce(sql, '') FROM main.sqlite_schema \
             WHERE type IN ('table', 'view') AND substr(name, 1, 7) <> 'sqlite_' COLLATE NOCASE \
             ORDER BY name",
        )?;
        let objects = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut tables = Vec::with_capacity(objects.len());
        for (kind, name, sql) in objects {
            let virtual_table = sql
                .trim_start()
                .get(..14)
                .is_some_and(|s| s.eq_ignore_ascii_case("create virtual"));
            let mut table = TableInfo {
                view: kind == "view",
                virtual_table,
                without_rowid: false,
                columns: Vec::new(),
                indexes: Vec::new(),
                name,
            };
            if !virtual_table {
                // Details are best effort: a table this build cannot describe is still named.
                let _ = table.load_details(conn);
            }
            tables.push(table);
        }
        let mut stmt = conn.prepare("SELECT lower(name) FROM main.sqlite_schema")?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Catalog { tables, names })
    }

    /// The table or view called `name` (case-insensitive, as SQLite).
    pub(crate) fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// True when some schema object already has this name.
    pub(crate) fn name_taken(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.names.contains(&lower)
    }
}

impl TableInfo {
    fn load_details(&mut self, conn: &Connection) -> Result<()> {
        self.without_rowid = schema::table(conn, &self.name)?.is_some_and(|t| t.without_rowid);
        let cols = schema::columns(conn, &self.name)?;
        let pk_count = cols.iter().filter(|c| c.pk > 0).count();
        let rowid_table = !self.view && !self.without_rowid;
        self.columns = cols
            .into_iter()
            .map(|c| ColumnInfo {
                rowid_alias: rowid_table
                    && c.pk == 1
                    && pk_count == 1
                    && c.decl_type.eq_ignore_ascii_case("INTEGER"),
                generated: c.generated(),
                name: c.name,
            })
            .collect();
        if self.view {
            return Ok(());
        }
        let mut list = conn.prepare(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY name",
        )?;
        let indexes = list
            .query_map([&self.name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut info = conn.prepare(
            "SELECT name, \"desc\", coll FROM pragma_index_xinfo(?1) WHERE key ORDER BY seqno",
        )?;
        for (name, unique, origin, partial) in indexes {
            let key = info
                .query_map([&name], |r| {
                    Ok(KeyColumn {
                        name: r.get(0)?,
                        desc: r.get(1)?,
                        collation: r
                            .get::<_, Option<String>>(2)?
                            .unwrap_or_else(|| "BINARY".into()),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            self.indexes.push(IndexInfo {
                name,
                unique,
                origin,
                partial,
                key,
            });
        }
        Ok(())
    }

    /// The column called `name` (case-insensitive, as SQLite).
    pub(crate) fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// True when an index can be built on this table.
    pub(crate) fn indexable(&self) -> bool {
        !self.view && !self.virtual_table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_columns_and_indexes() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT COLLATE NOCASE, b, g AS (b + 1));
             CREATE INDEX t_ab ON t(a, b DESC);
             CREATE UNIQUE INDEX t_b ON t(b) WHERE b > 0;
             CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             CREATE VIEW v AS SELECT a FROM t;",
        )?;
        let cat = Catalog::load(&conn)?;
        let t = cat.table("T").expect("t");
        assert!(t.column("ID").is_some_and(|c| c.rowid_alias));
        assert!(t.column("g").is_some_and(|c| c.generated));
        let ab = t.indexes.iter().find(|i| i.name == "t_ab").expect("t_ab");
        assert_eq!(ab.column_names(), Some(vec!["a", "b"]));
        assert_eq!(ab.key[0].collation, "NOCASE");
        assert!(ab.key[1].desc);
        assert!(t
            .indexes
            .iter()
            .any(|i| i.name == "t_b" && i.unique && i.partial));
        let w = cat.table("w").expect("w");
        assert!(w.without_rowid && !w.column("k").is_some_and(|c| c.rowid_alias));
        assert!(cat.table("v").is_some_and(|v| v.view && !v.indexable()));
        assert!(cat.name_taken("T_AB"));
        assert!(!cat.name_taken("nope"));
        Ok(())
    }
}
