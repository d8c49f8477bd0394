//! The SQL of a batch's operations, built from names checked against the schema.

use rusqlite::Connection;

use super::{OpKind, Shape};
use crate::error::Result;
use crate::schema;
use crate::sql::quote_ident;

/// SQLite's limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER, 32766 since
/// 3.32 and in the bundled build); a multi-row statement must stay under it.
const MAX_VARIABLES: usize = 32766;

/// Rows per multi-row `VALUES` statement. Measured on 100k rows of 3 columns in transactions of
/// 1000 (file database, WAL, synchronous=NORMAL, median of 5): one row per statement 1.84M
/// rows/s; 8 rows 2.21M; 16 rows 2.32M; 64 rows 2.58M; 128 rows 2.34M; 500 rows 2.50M. Fewer
/// statement steps is what pays; past ~64 rows the gain is lost in noise, while a failing row
/// makes the whole statement run again row by row, which favours small statements.
const MULTI_ROWS: usize = 64;

/// The SQL of a shape, built from names checked against the schema.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) single: String,
    /// Statements inserting that many rows at once, for inserts and upserts, largest first:
    /// up to `MULTI_ROWS` rows, then each power of two below it down to 2. A run's rows that do
    /// not fill the largest (the last 40 of a default chunk of 1000) go through the smaller ones
    /// instead of one statement per row, which cost ~4k instructions a row against ~2.3k in a
    /// multi-row statement; powers of two keep a shape to at most 6 cached statements
    /// whatever its run lengths are.
    pub(super) multi: Vec<(String, usize)>,
}

/// A table of the `main` schema as the schema names it.
#[derive(Debug)]
pub(super) struct Table {
    name: String,
    columns: Vec<String>,
    /// The table has a rowid (an ordinary table, not WITHOUT ROWID).
    rowid: bool,
}

impl Table {
    /// The quoted schema spelling of a column; identifiers compare ASCII-case-insensitively in
    /// SQLite, so `Email` names the column `email`.
    fn column(&self, name: &str) -> std::result::Result<String, String> {
        self.columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .map(|c| quote_ident(c))
            .ok_or_else(|| format!("table {} has no column {name:?}", self.name))
    }

    /// A key column: a column, or the rowid under one of its names.
    fn key(&self, name: &str) -> std::result::Result<String, String> {
        self.column(name).or_else(|err| {
            let alias = ["rowid", "oid", "_rowid_"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name));
            if self.rowid && alias {
                Ok("rowid".to_owned())
            } else {
                Err(err)
            }
        })
    }
}

/// Looks a table up in the `main` schema; `None` if there is no table by that name.
pub(super) fn describe(conn: &Connection, name: &str) -> Result<Option<Table>> {
    let Some(found) = schema::table(conn, name)? else {
        return Ok(None);
    };
    // Views have no rows to write, shadow tables belong to their virtual table, and SQLite's
    // own tables are not the batch's business.
    let kind = found.kind.as_str();
    if !(kind == "table" || kind == "virtual")
        || found.name.to_ascii_lowercase().starts_with("sqlite_")
    {
        return Ok(None);
    }
    Ok(Some(Table {
        rowid: kind == "table" && !found.without_rowid,
        columns: schema::ordinary_columns(conn, &found.name)?,
        name: found.name,
    }))
}

/// The SQL of a shape. Every identifier in it is the schema's own spelling, quoted; values are
/// `?` parameters. An error is the reason every operation of the shape fails.
pub(super) fn build(
    shape: &Shape,
    table: Option<&Table>,
) -> std::result::Result<Statements, String> {
    let table =
        table.ok_or_else(|| format!("no table named {:?} in the main schema", shape.table))?;
    let target = format!("main.{}", quote_ident(&table.name));
    let columns = shape
        .columns
        .iter()
        .map(|c| table.column(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let key = || -> std::result::Result<String, String> {
        let name = shape.keys.first().ok_or("no key column")?;
        table.key(name)
    };
    match shape.kind {
        OpKind::Insert | OpKind::Upsert => {
            if columns.is_empty() {
                return if shape.kind == OpKind::Insert {
                    Ok(Statements {
                        single: format!("INSERT INTO {target} DEFAULT VALUES"),
                        multi: Vec::new(),
                    })
                } else {
                    Err("an upsert needs columns".to_owned())
                };
            }
            let head = format!("INSERT INTO {target} ({}) VALUES ", columns.join(", "));
            let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
            let tail = if shape.kind == OpKind::Upsert {
                upsert_clause(shape, table, &columns)?
            } else {
                String::new()
            };
            let mut rows = (MAX_VARIABLES / columns.len()).min(MULTI_ROWS);
            let mut multi = Vec::new();
            while rows > 1 {
                let tuples = vec![tuple.as_str(); rows].join(", ");
                multi.push((format!("{head}{tuples}{tail}"), rows));
                rows = (rows / 2).next_power_of_two();
            }
            Ok(Statements {
                single: format!("{head}{tuple}{tail}"),
                multi,
            })
        }
        OpKind::Update => {
            if columns.is_empty() {
                return Err("an update needs columns to set".to_owned());
            }
            let set: Vec<String> = columns.iter().map(|c| format!("{c} = ?")).collect();
            Ok(Statements {
                single: format!(
                    "UPDATE {target} SET {} WHERE {} = ?",
                    set.join(", "),
                    key()?
                ),
                multi: Vec::new(),
            })
        }
        OpKind::Delete => Ok(Statements {
            single: format!("DELETE FROM {target} WHERE {} = ?", key()?),
            multi: Vec::new(),
        }),
    }
}

/// `ON CONFLICT (keys) DO UPDATE SET c = excluded.c` for every inserted non-key column.
fn upsert_clause(
    shape: &Shape,
    table: &Table,
    columns: &[String],
) -> std::result::Result<String, String> {
    if shape.keys.is_empty() {
        return Err("an upsert needs conflict columns".to_owned());
    }
    let keys = shape
        .keys
        .iter()
        .map(|k| table.column(k))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    Ok(if set.is_empty() {
        format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
    } else {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            keys.join(", "),
            set.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: OpKind, table: &str, columns: &[&str], keys: &[&str]) -> Shape {
        Shape {
            kind,
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            keys: keys.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn conn() -> Result<Connection> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            r#"CREATE TABLE "we""ird" ("a""b" INTEGER, k TEXT UNIQUE, v TEXT);
               CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
               CREATE VIEW w AS SELECT 1 AS x;
               CREATE TEMP TABLE tmp (x);"#,
        )?;
        Ok(conn)
    }

    #[test]
    fn names_take_the_schema_spelling_and_are_quoted() -> Result<()> {
        let conn = conn()?;
        let table = describe(&conn, "WE\"IRD")?.expect("found case-insensitively");
        let insert = shape(OpKind::Upsert, "we\"ird", &["A\"B", "k", "v"], &["K"]);
        let sql = build(&insert, Some(&table)).unwrap();
        assert_eq!(
            sql.single,
            r#"INSERT INTO main."we""ird" ("a""b", "k", "v") VALUES (?, ?, ?) ON CONFLICT ("k") DO UPDATE SET "a""b" = excluded."a""b", "v" = excluded."v""#
        );
        conn.prepare(&sql.single)?;
        let sizes: Vec<usize> = sql.multi.iter().map(|(_, rows)| *rows).collect();
        assert_eq!(sizes, [MULTI_ROWS, 32, 16, 8, 4, 2]);
        for (multi, _) in &sql.multi {
            conn.prepare(multi)?;
        }

        let only_keys = shape(OpKind::Upsert, "we\"ird", &["k"], &["k"]);
        let sql = build(&only_keys, Some(&table)).unwrap();
        assert!(sql.single.ends_with(r#"ON CONFLICT ("k") DO NOTHING"#));
        let delete = shape(OpKind::Delete, "we\"ird", &[], &["ROWID"]);
        assert_eq!(
            build(&delete, Some(&table)).unwrap().single,
            r#"DELETE FROM main."we""ird" WHERE rowid = ?"#
        );
        Ok(())
    }

    #[test]
    fn unknown_names_are_refused_with_their_name() -> Result<()> {
        let conn = conn()?;
        for name in ["w", "tmp", "sqlite_schema", "nope", "kv; DROP TABLE kv"] {
            assert!(describe(&conn, name)?.is_none(), "{name}");
        }
        let kv = describe(&conn, "kv")?;
        let err = build(
            &shape(OpKind::Insert, "kv", &["k", "x\"y"], &[]),
            kv.as_ref(),
        );
        assert_eq!(err.unwrap_err(), r#"table kv has no column "x\"y""#);
        let err = build(&shape(OpKind::Delete, "kv", &[], &["rowid"]), kv.as_ref());
        assert!(err.is_err(), "a WITHOUT ROWID table has no rowid");
        let err = build(&shape(OpKind::Update, "kv", &[], &["k"]), kv.as_ref());
        assert!(err.is_err(), "an update sets something");
        let err = build(&shape(OpKind::Insert, "nope", &[], &[]), None);
        assert_eq!(
            err.unwrap_err(),
            r#"no table named "nope" in the main schema"#
        );
        Ok(())
    }

    #[test]
    fn multi_row_statements_stay_under_the_variable_limit() {
        let columns: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let table = Table {
            name: "wide".into(),
            columns: columns.clone(),
            rowid: true,
        };
        let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
        let sql = build(&shape(OpKind::Insert, "wide", &refs, &[]), Some(&table)).unwrap();
        let sizes: Vec<usize> = sql.multi.iter().map(|(_, rows)| *rows).collect();
        assert_eq!(sizes, [32, 16, 8, 4, 2]);
        assert!(sizes[0] * 1000 <= MAX_VARIABLES);
        let ragged = Table {
            name: "ragged".into(),
            columns: columns[..700].to_vec(),
            rowid: true,
        };
        let sql = build(
            &shape(OpKind::Insert, "ragged", &refs[..700], &[]),
            Some(&ragged),
        )
        .unwrap();
        let sizes: Vec<usize> = sql.multi.iter().map(|(_, rows)| *rows).collect();
        assert_eq!(
            sizes,
            [46, 32, 16, 8, 4, 2],
            "below the largest, powers of two"
        );
    }
}
