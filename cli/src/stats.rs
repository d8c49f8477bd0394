//! `strata stats`: what an operator wants to know about a database file without running the
//! service: table and index sizes, rows per table, the WAL, pages and free pages, the
//! migration version and the job queue's depths.
//!
//! The file is opened read-only by SQLite itself (not through a `Db`): nothing is migrated,
//! no `strata_` table is created, no checkpoint runs at close. Sizes come from the `dbstat`
//! virtual table (the bundled SQLite is built with `SQLITE_ENABLE_DBSTAT_VTAB`); with an
//! SQLite built without it they are left out and the report says so.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use strata::{Error, Result};

use crate::workload::admin::require_file;

/// Everything `strata stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DbStats {
    /// The database file.
    pub path: String,
    /// The main file's size.
    pub file_bytes: u64,
    /// The WAL file's size (0 without one).
    pub wal_bytes: u64,
    /// `PRAGMA page_size`.
    pub page_size: u64,
    /// `PRAGMA page_count`.
    pub page_count: u64,
    /// `PRAGMA freelist_count`: pages free for reuse (a VACUUM would return them).
    pub freelist_pages: u64,
    /// The highest applied migration (refinery's history), if any.
    pub schema_version: Option<i64>,
    /// Whether the sizes come from `dbstat` (false: this SQLite has no `dbstat`, sizes are
    /// `null`).
    pub sizes_from_dbstat: bool,
    /// Where the row counts come from: `exact` (counted), `sqlite_stat1` (the planner's
    /// statistics from the last ANALYZE or `PRAGMA optimize`), or `none` (no statistics;
    /// run with `--exact`).
    pub rows_from: &'static str,
    /// Tables, largest first.
    pub tables: Vec<TableStats>,
    /// Indexes, largest first.
    pub indexes: Vec<IndexStats>,
    /// The job queue's depths, if the database has one.
    pub jobs: Option<Vec<QueueStats>>,
}

/// One table in [`DbStats`].
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    /// The table's name.
    pub name: String,
    /// Its rows: counted, or the planner's estimate (`None` when unknown).
    pub rows: Option<u64>,
    /// Bytes of its pages (`None` without `dbstat`).
    pub bytes: Option<u64>,
}

/// One index in [`DbStats`].
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    /// The index's name.
    pub name: String,
    /// The table it indexes.
    pub table: String,
    /// Bytes of its pages (`None` without `dbstat`).
    pub bytes: Option<u64>,
}

/// One job queue's depth in [`DbStats`].
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Jobs waiting (due or not).
    pub pending: u64,
    /// Jobs a worker holds.
    pub running: u64,
    /// Dead letters.
    pub dead: u64,
    /// Whether the queue is paused.
    pub paused: bool,
}

/// Reads the figures of the database at `path` (which must exist); `exact` counts every
/// table's rows instead of taking the planner's estimates.
pub fn collect(path: &Path, exact: bool) -> Result<DbStats> {
    require_file(path)?;
    let stats = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| read(&conn, path, exact));
    stats.map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::NotADatabase {
            path: path.to_owned(),
        },
        _ => Error::from(e),
    })
}

/// What the reads here return: SQLite's errors, mapped to strata's once, with the path.
type Sql<T> = rusqlite::Result<T>;

fn pragma(conn: &Connection, name: &str) -> Sql<u64> {
    let n: i64 = conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn has_table(conn: &Connection, name: &str) -> Sql<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn read(conn: &Connection, path: &Path, exact: bool) -> Sql<DbStats> {
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());

    let sizes = sizes(conn)?;
    let bytes_of = |name: &str| {
        sizes
            .as_ref()
            .map(|s| s.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b))
    };
    let mut estimates = Vec::new();
    if !exact && has_table(conn, "sqlite_stat1")? {
        let mut stmt = conn.prepare("SELECT tbl, stat FROM sqlite_stat1")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (table, stat) = row?;
            if let Some(n) = stat.split_whitespace().next().and_then(|n| n.parse().ok()) {
                estimates.push((table, n));
            }
        }
    }
    let mut tables = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         ORDER BY name",
    )?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        let rows = if exact {
            let n: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {}", quoted(&name)),
                [],
                |r| r.get(0),
            )?;
            Some(u64::try_from(n).unwrap_or(0))
        } else {
            // Each of a table's entries starts with its row count; the largest is the latest.
            estimates
                .iter()
                .filter(|(t, _)| *t == name)
                .map(|(_, n)| *n)
                .max()
        };
        let bytes = bytes_of(&name);
        tables.push(TableStats { name, rows, bytes });
    }
    let mut stmt = conn
        .prepare("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index' ORDER BY name")?;
    let mut indexes: Vec<IndexStats> = stmt
        .query_map([], |r| {
            Ok(IndexStats {
                name: r.get(0)?,
                table: r.get(1)?,
                bytes: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for index in &mut indexes {
        index.bytes = bytes_of(&index.name);
    }
    tables.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    indexes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));

    let schema_version = if has_table(conn, "refinery_schema_history")? {
        conn.query_row(
            "SELECT max(version) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )?
    } else {
        None
    };
    let rows_from = if exact {
        "exact"
    } else if estimates.is_empty() {
        "none"
    } else {
        "sqlite_stat1"
    };
    Ok(DbStats {
        path: path.display().to_string(),
        file_bytes,
        wal_bytes,
        page_size: pragma(conn, "page_size")?,
        page_count: pragma(conn, "page_count")?,
        freelist_pages: pragma(conn, "freelist_count")?,
        schema_version,
        sizes_from_dbstat: sizes.is_some(),
        rows_from,
        tables,
        indexes,
        jobs: jobs(conn)?,
    })
}

/// Bytes per table and index from `dbstat`; `None` when this SQLite has no `dbstat`.
fn sizes(conn: &Connection) -> Sql<Option<Vec<(String, u64)>>> {
    let stmt = conn.prepare("SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE");
    let mut stmt = match stmt {
        Ok(stmt) => stmt,
        Err(e) if e.to_string().contains("no such table") => return Ok(None),
        Err(e) => return Err(e),
    };
    let sizes = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(sizes))
}

/// The job queue's depths per queue, read from its tables when they exist.
fn jobs(conn: &Connection) -> Sql<Option<Vec<QueueStats>>> {
    if !has_table(conn, "strata_jobs")? {
        return Ok(None);
    }
    let dead_table = has_table(conn, "strata_dead_jobs")?;
    let queues_table = has_table(conn, "strata_job_queues")?;
    let dead = if dead_table {
        "UNION ALL SELECT queue, 0, 0, count(*) FROM strata_dead_jobs GROUP BY queue"
    } else {
        ""
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT queue, sum(p), sum(r), sum(d) FROM (
             SELECT queue, sum(state = 0) AS p, sum(state = 1) AS r, 0 AS d
             FROM strata_jobs GROUP BY queue {dead})
         GROUP BY queue ORDER BY queue"
    ))?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut queues: Vec<QueueStats> = stmt
        .query_map([], |r| {
            Ok(QueueStats {
                queue: r.get(0)?,
                pending: count(r.get(1)?),
                running: count(r.get(2)?),
                dead: count(r.get(3)?),
                paused: false,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if queues_table {
        let mut stmt = conn.prepare("SELECT name, paused FROM strata_job_queues")?;
        let paused: Vec<(String, bool)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, p) in paused {
            match queues.iter_mut().find(|q| q.queue == name) {
                Some(q) => q.paused = p,
                None => queues.push(QueueStats {
                    queue: name,
                    pending: 0,
                    running: 0,
                    dead: 0,
                    paused: p,
                }),
            }
        }
    }
    Ok(Some(queues))
}

/// Bytes as B, KiB, MiB or GiB, one decimal.
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn opt(v: Option<u64>, f: impl Fn(u64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// Writes `stats` as text for a person.
pub fn write_text(stats: &DbStats, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{}", stats.path)?;
    writeln!(
        out,
        "  file {}: {} pages of {} B, {} free",
        size(stats.file_bytes),
        stats.page_count,
        stats.page_size,
        stats.freelist_pages
    )?;
    writeln!(out, "  WAL  {}", size(stats.wal_bytes))?;
    match stats.schema_version {
        Some(v) => writeln!(out, "  schema V{v}")?,
        None => writeln!(out, "  schema: no migration history")?,
    }
    if !stats.sizes_from_dbstat {
        writeln!(out, "  sizes: unknown (this SQLite has no dbstat table)")?;
    }
    let rows_from = match stats.rows_from {
        "exact" => "counted",
        "sqlite_stat1" => "estimates from sqlite_stat1 (--exact counts them)",
        _ => "unknown: no sqlite_stat1 (--exact counts them)",
    };
    writeln!(out, "  rows {rows_from}")?;
    writeln!(out)?;
    writeln!(out, "{:<32} {:>12} {:>12}", "table", "rows", "size")?;
    for t in &stats.tables {
        writeln!(
            out,
            "{:<32} {:>12} {:>12}",
            t.name,
            opt(t.rows, |n| n.to_string()),
            opt(t.bytes, size)
        )?;
    }
    if !stats.indexes.is_empty() {
        writeln!(out)?;
        writeln!(out, "{:<40} {:<24} {:>12}", "index", "table", "size")?;
        for i in &stats.indexes {
            writeln!(
                out,
                "{:<40} {:<24} {:>12}",
                i.name,
                i.table,
                opt(i.bytes, size)
            )?;
        }
    }
    writeln!(out)?;
    match &stats.jobs {
        None => writeln!(out, "job queue: none")?,
        Some(queues) => {
            writeln!(
                out,
                "{:<32} {:>9} {:>9} {:>9}  paused",
                "job queue", "pending", "running", "dead"
            )?;
            if queues.is_empty() {
                writeln!(out, "(empty)")?;
            }
            for q in queues {
                writeln!(
                    out,
                    "{:<32} {:>9} {:>9} {:>9}  {}",
                    q.queue,
                    q.pending,
                    q.running,
                    q.dead,
                    if q.paused { "yes" } else { "no" }
                )?;
            }
        }
    }
    Ok(())
}

/// `strata stats`: the figures of the database at `db`, as text or JSON.
pub fn run(db: &Path, exact: bool, json: bool, out: &mut dyn Write) -> Result<()> {
    let stats = collect(db, exact)?;
    let io = |source| Error::Io {
        path: db.to_owned(),
        source,
    };
    if json {
        let text = serde_json::to_string_pretty(&stats).map_err(Error::closure)?;
        writeln!(out, "{text}").map_err(io)
    } else {
        write_text(&stats, out).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MiB");
    }
}
