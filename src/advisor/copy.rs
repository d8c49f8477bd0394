//! The private database the advisor plans on: the live schema's tables, indexes and views,
//! copied into an in-memory connection with the live `sqlite_stat1` (and `sqlite_stat4`) rows,
//! so that the planner there chooses as it would on the live file. Candidate indexes are
//! created only here; the live database is only ever read, on a reader.

use rusqlite::types::Value;
use rusqlite::Connection;

use super::catalog::Catalog;
use super::tokens::{self, SchemaKind};
use crate::db::Db;
use crate::error::Result;
use crate::sql::quote_ident;

/// What is read from the live database, in one read transaction.
#[derive(Debug, Default)]
pub(crate) struct LiveSchema {
    /// (type, name, sql) of tables, indexes and views, in creation order.
    objects: Vec<(String, String, String)>,
    /// Rows of `sqlite_stat1`: (tbl, idx, stat).
    stat1: Option<Vec<(Value, Value, Value)>>,
    /// Rows of `sqlite_stat4`: (tbl, idx, neq, nlt, ndlt, sample).
    stat4: Option<Vec<[Value; 6]>>,
}

impl LiveSchema {
    /// Reads the schema text and the statistics. Runs on a reader.
    pub(crate) fn read(conn: &Connection) -> Result<LiveSchema> {
        let mut stmt = conn.prepare(
            "SELECT type, name, sql FROM main.sqlite_schema \
             WHERE type IN ('table', 'index', 'view') AND sql IS NOT NULL \
             AND substr(name, 1, 7) <> 'sqlite_' COLLATE NOCASE ORDER BY rowid",
        )?;
        let objects = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let exists = |name: &str| -> Result<bool> {
            Ok(conn.query_row(
                "SELECT count(*) FROM main.sqlite_schema WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )? > 0)
        };
        let stat1 = if exists("sqlite_stat1")? {
            let mut stmt = conn.prepare("SELECT tbl, idx, stat FROM main.sqlite_stat1")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Some(rows)
        } else {
            None
        };
        let stat4 = if exists("sqlite_stat4")? {
            let mut stmt =
                conn.prepare("SELECT tbl, idx, neq, nlt, ndlt, sample FROM main.sqlite_stat4")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok([
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ])
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Some(rows)
        } else {
            None
        };
        Ok(LiveSchema {
            objects,
            stat1,
            stat4,
        })
    }
}

/// The in-memory copy and what it holds.
pub(crate) struct SchemaCopy {
    pub(crate) conn: Connection,
    pub(crate) catalog: Catalog,
    /// Schema objects not copied, with the reason (untrusted text refused, or it failed).
    pub(crate) skipped: Vec<(String, String)>,
    /// Rows copied per table when a sample was loaded.
    pub(crate) sample_rows: usize,
    /// True when the live statistics are in place (then candidates get estimated ones too).
    pub(crate) has_stats: bool,
}

impl SchemaCopy {
    /// Builds the copy: tables, then indexes, then views; then the statistics.
    pub(crate) fn build(live: &LiveSchema) -> Result<SchemaCopy> {
        let conn = Connection::open_in_memory()?;
        // Schema text is untrusted: functions in views, defaults or CHECKs run only if they
        // are innocuous, and nothing is ever loaded.
        conn.execute_batch("PRAGMA trusted_schema=OFF; PRAGMA foreign_keys=OFF;")?;
        let mut skipped = Vec::new();
        let mut pending: Vec<&(String, String, String)> = Vec::new();
        for kind in ["table", "index", "view"] {
            pending.extend(live.objects.iter().filter(|o| o.0 == kind));
        }
        // Views may name views created later; retry until no progress.
        loop {
            let before = pending.len();
            let mut failed = Vec::new();
            for object in pending {
                let (kind, name, sql) = object;
                let expected = match kind.as_str() {
                    "table" => SchemaKind::Table,
                    "index" => SchemaKind::Index,
                    _ => SchemaKind::View,
                };
                if tokens::schema_kind(sql) != Some(expected) {
                    skipped.push((
                        name.clone(),
                        format!("schema text is not a single CREATE {}", kind.to_uppercase()),
                    ));
                    continue;
                }
                // `prepare` compiles exactly one statement: a hidden second one is refused.
                let created = conn.prepare(sql).and_then(|mut s| s.execute([]));
                if let Err(e) = created {
                    failed.push((object, e.to_string()));
                }
            }
            if failed.is_empty() || failed.len() == before {
                skipped.extend(failed.into_iter().map(|(o, e)| (o.1.clone(), e)));
                break;
            }
            pending = failed.into_iter().map(|(o, _)| o).collect();
        }
        let mut copy = SchemaCopy {
            catalog: Catalog::load(&conn)?,
            conn,
            skipped,
            sample_rows: 0,
            has_stats: false,
        };
        // Without the statistics the copy still plans, on SQLite's defaults: say so rather
        // than fail the advice.
        match copy.copy_statistics(live) {
            Ok(copied) => copy.has_stats = copied,
            Err(e) => copy.skipped.push(("sqlite_stat1".into(), e.to_string())),
        }
        Ok(copy)
    }

    /// Puts the live statistics in place. Without live statistics the copy has none either,
    /// so that the planner falls back on the same defaults as on the live file.
    fn copy_statistics(&self, live: &LiveSchema) -> Result<bool> {
        if live.stat1.is_none() && live.stat4.is_none() {
            return Ok(false);
        }
        // ANALYZE on the empty copy creates the statistics tables; their rows are then
        // replaced by the live ones, and `ANALYZE sqlite_schema` makes the planner reload them.
        self.conn.execute_batch("ANALYZE")?;
        let tx = self.conn.unchecked_transaction()?;
        tx.execute_batch("DELETE FROM sqlite_stat1")?;
        for (tbl, idx, stat) in live.stat1.iter().flatten() {
            tx.execute(
                "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?1, ?2, ?3)",
                [tbl, idx, stat],
            )?;
        }
        let has_stat4: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_stat4'",
            [],
            |r| r.get(0),
        )?;
        if has_stat4 {
            tx.execute_batch("DELETE FROM sqlite_stat4")?;
            for row in live.stat4.iter().flatten() {
                tx.execute(
                    "INSERT INTO sqlite_stat4 (tbl, idx, neq, nlt, ndlt, sample) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params_from_iter(row.iter()),
                )?;
            }
        }
        tx.commit()?;
        self.conn.execute_batch("ANALYZE sqlite_schema")?;
        Ok(true)
    }

    /// The row count the live statistics give for `table` (the first number of its rows).
    pub(crate) fn table_rows(&self, table: &str) -> Option<i64> {
        self.conn
            .query_row(
                "SELECT CAST(stat AS INTEGER) FROM sqlite_stat1 WHERE tbl = ?1 COLLATE NOCASE \
                 ORDER BY idx IS NOT NULL LIMIT 1",
                [table],
                |r| r.get(0),
            )
            .ok()
    }

    /// Gives created candidate indexes their estimated `sqlite_stat1` rows (name, stat) and
    /// makes the planner reload the statistics.
    pub(crate) fn set_candidate_stats(&self, stats: &[(String, String, String)]) -> Result<()> {
        if stats.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction()?;
        for (table, index, stat) in stats {
            tx.execute(
                "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?1, ?2, ?3)",
                [table, index, stat],
            )?;
        }
        tx.commit()?;
        self.conn.execute_batch("ANALYZE sqlite_schema")?;
        Ok(())
    }

    /// Copies up to `rows` rows of every stored table from the live database (the first rows
    /// in storage order: reading them costs `rows` steps, never a scan of a large table).
    /// Runs in one read transaction on a reader; the writer is not involved.
    pub(crate) fn load_sample(&mut self, db: &Db, rows: usize) -> Result<()> {
        let limit = i64::try_from(rows).unwrap_or(i64::MAX);
        let tables: Vec<(String, Vec<String>)> = self
            .catalog
            .tables
            .iter()
            .filter(|t| t.indexable())
            .map(|t| {
                let cols = t
                    .columns
                    .iter()
                    .filter(|c| !c.generated)
                    .map(|c| c.name.clone())
                    .collect();
                (t.name.clone(), cols)
            })
            .collect();
        let copy = &self.conn;
        // The sample must satisfy the copy's CHECKs as it did the live ones; should one not
        // (a CHECK with a function this connection lacks), the row is skipped, not the table.
        copy.execute_batch("PRAGMA ignore_check_constraints=ON")?;
        let tx = copy.unchecked_transaction()?;
        db.read(|live| {
            for (table, cols) in &tables {
                if cols.is_empty() {
                    continue;
                }
                let list: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
                let list = list.join(", ");
                let select = format!("SELECT {list} FROM main.{} LIMIT ?1", quote_ident(table));
                let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let insert = format!(
                    "INSERT OR IGNORE INTO main.{} ({list}) VALUES ({})",
                    quote_ident(table),
                    marks.join(", ")
                );
                let mut read = live.prepare(&select)?;
                let mut write = tx.prepare(&insert)?;
                let mut found = read.query([limit])?;
                while let Some(row) = found.next()? {
                    let values: Vec<Value> = (0..cols.len())
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<rusqlite::Result<_>>()?;
                    write.execute(rusqlite::params_from_iter(values.iter()))?;
                }
            }
            Ok(())
        })?;
        tx.commit()?;
        self.sample_rows = rows;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::plan::explain_on;

    #[test]
    fn copies_schema_and_statistics_but_no_triggers() -> Result<()> {
        let live = Connection::open_in_memory()?;
        live.execute_batch(
            "CREATE TABLE t(a, b, c CHECK (c GLOB '[0-9]*'));
             CREATE INDEX t_a ON t(a);
             CREATE INDEX t_b ON t(b);
             CREATE VIEW v AS SELECT a FROM w;
             CREATE TABLE w(a);
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM w; END;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT i % 2, i, '1' FROM n;
             ANALYZE;",
        )?;
        let schema = LiveSchema::read(&live)?;
        let copy = SchemaCopy::build(&schema)?;
        assert!(copy.catalog.table("t").is_some());
        assert!(copy.catalog.table("v").is_some_and(|v| v.view));
        let triggers: i64 = copy.conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(triggers, 0);
        // With the live statistics, the planner prefers the selective index on the copy too.
        let live_plan = explain_on(&live, "SELECT * FROM t WHERE a = 1 AND b = 7")?;
        let copy_plan = explain_on(&copy.conn, "SELECT * FROM t WHERE a = 1 AND b = 7")?;
        assert!(live_plan.uses_index("t_b"), "{live_plan}");
        assert!(copy_plan.uses_index("t_b"), "{copy_plan}");
        let rows: i64 = copy
            .conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(rows, 0, "the schema copy holds no data");
        let stats = |c: &Connection| -> Result<Vec<(String, Option<String>, String)>> {
            let mut s = c.prepare("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        assert_eq!(stats(&copy.conn)?, stats(&live)?);
        assert!(copy.skipped.is_empty(), "{:?}", copy.skipped);
        Ok(())
    }

    #[test]
    fn refuses_smuggled_statements() -> Result<()> {
        let schema = LiveSchema {
            objects: vec![
                ("table".into(), "t".into(), "CREATE TABLE t(a)".into()),
                (
                    "table".into(),
                    "x".into(),
                    "CREATE TABLE x(a); CREATE TABLE evil(b)".into(),
                ),
                (
                    "index".into(),
                    "i".into(),
                    "CREATE TRIGGER i AFTER INSERT ON t BEGIN SELECT 1; END".into(),
                ),
            ],
            stat1: None,
            stat4: None,
        };
        let copy = SchemaCopy::build(&schema)?;
        assert!(copy.catalog.table("t").is_some());
        assert!(copy.catalog.table("x").is_none());
        assert!(copy.catalog.table("evil").is_none());
        assert_eq!(copy.skipped.len(), 2);
        Ok(())
    }
}
