//! What watching a table means in SQL: the schema checks of a table and its columns, and the
//! TEMP capture triggers that call the capture function with the watched columns' values.

use std::sync::Arc;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::schema;
use crate::sql::quote_ident;

/// A watched table and its watched columns; its index in the capture's list is the id the
/// triggers pass.
pub(super) struct Watch {
    pub(super) table: Arc<str>,
    pub(super) columns: Arc<[Arc<str>]>,
}

/// The scalar function the capture triggers call.
pub(super) const CAPTURE_FN: &str = "strata_capture";

/// The columns of a `main` table; an error naming the table if there is none by that name.
pub(super) fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    // Changes name their table as the schema spells it, so a watch must spell it that way too.
    let found = schema::table(conn, table)?.filter(|t| t.name == table && t.kind == "table");
    match found {
        None => Err(Error::InvalidConfig {
            field: "watch",
            reason: format!("no table named {table}"),
        }),
        Some(t) if t.without_rowid => Err(Error::InvalidConfig {
            field: "watch",
            reason: format!("{table} is a WITHOUT ROWID table; changes are tracked by rowid"),
        }),
        Some(_) => schema::ordinary_columns(conn, table),
    }
}

pub(super) fn trigger_sql(id: usize, watch: &Watch) -> String {
    let table = quote_ident(&watch.table);
    let cols = |prefix: &str| -> String {
        watch
            .columns
            .iter()
            .map(|c| format!(", {prefix}.{}", quote_ident(c)))
            .collect()
    };
    let nulls: String = watch.columns.iter().map(|_| ", NULL").collect();
    let name = |op: &str| quote_ident(&format!("strata_capture_{id}_{op}"));
    format!(
        "DROP TRIGGER IF EXISTS temp.{ins};
         DROP TRIGGER IF EXISTS temp.{upd};
         DROP TRIGGER IF EXISTS temp.{del};
         CREATE TEMP TRIGGER {ins} AFTER INSERT ON main.{table} BEGIN
             SELECT {f}({id}, 1, NULL, NEW.rowid{nulls}{new}); END;
         CREATE TEMP TRIGGER {upd} AFTER UPDATE ON main.{table} BEGIN
             SELECT {f}({id}, 2, OLD.rowid, NEW.rowid{old}{new}); END;
         CREATE TEMP TRIGGER {del} AFTER DELETE ON main.{table} BEGIN
             SELECT {f}({id}, 3, OLD.rowid, NULL{old}{nulls}); END;",
        ins = name("ins"),
        upd = name("upd"),
        del = name("del"),
        f = CAPTURE_FN,
        old = cols("OLD"),
        new = cols("NEW"),
    )
}
