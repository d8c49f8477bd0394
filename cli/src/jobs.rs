//! `strata jobs`: the job queue of a database file, seen and repaired from the command line.
//! Reading commands never create the queue's tables in a database that has none.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use strata::jobs::Queue;
use strata::{Db, Error, Result};

use crate::workload::admin::require_file;

/// What to do with the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsCommand {
    /// Depth per queue and state, and per kind.
    Stats,
    /// The dead letters.
    Failed,
    /// Enqueue dead letters again: one by id, or all of them.
    Retry(Option<i64>),
    /// Delete every dead letter.
    Purge,
}

/// Runs `command` on the queue of `db` (which must exist), writing to `out`.
pub fn run(db: &Path, command: &JobsCommand, out: &mut dyn Write) -> Result<()> {
    require_file(db)?;
    let path = db;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let db = Db::open(path)?;
    if !strata::jobs::exists(&db)? {
        writeln!(out, "no job queue in {}", path.display()).map_err(io)?;
        return Ok(());
    }
    let queue = db.jobs()?;
    match command {
        JobsCommand::Stats => stats(&db, &queue, out).map_err(io),
        JobsCommand::Failed => failed(&queue, out).map_err(io),
        JobsCommand::Retry(Some(id)) => match queue.retry_dead(*id)? {
            None => {
                return Err(Error::NotFound {
                    table: "strata_dead_jobs",
                    key: id.to_string(),
                })
            }
            Some(e) if e.deduplicated => writeln!(
                out,
                "dead letter {id} kept: job {} holds its unique key",
                e.id
            ),
            Some(e) => writeln!(out, "dead letter {id} enqueued again as job {}", e.id),
        }
        .map_err(io),
        JobsCommand::Retry(None) => {
            let n = queue.retry_all_dead()?;
            writeln!(out, "{n} dead letters enqueued again").map_err(io)
        }
        JobsCommand::Purge => {
            let n = queue.purge_dead(None)?;
            writeln!(out, "{n} dead letters purged").map_err(io)
        }
    }
}

fn stats(db: &Db, queue: &Queue, out: &mut dyn Write) -> std::io::Result<()> {
    let report = match queue.report() {
        Ok(r) => r,
        Err(err) => return writeln!(out, "error: {}", err.one_line()),
    };
    writeln!(
        out,
        "{:<20} {:>8} {:>8} {:>8} {:>8}  paused",
        "queue", "pending", "due", "running", "dead"
    )?;
    for q in &report.queues {
        writeln!(
            out,
            "{:<20} {:>8} {:>8} {:>8} {:>8}  {}",
            q.queue,
            q.pending,
            q.due,
            q.running,
            q.dead,
            if q.paused { "yes" } else { "no" }
        )?;
    }
    writeln!(
        out,
        "oldest pending: {:.1} s",
        report.oldest_pending_age_us / 1e6
    )?;
    let kinds: Vec<(String, i64, i64, i64)> = db
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT kind, sum(state = 0), sum(state = 1), sum(dead) FROM (
                     SELECT kind, state, 0 AS dead FROM strata_jobs
                     UNION ALL SELECT kind, -1, 1 FROM strata_dead_jobs)
                 GROUP BY kind ORDER BY kind",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
        })
        .unwrap_or_default();
    writeln!(
        out,
        "\n{:<20} {:>8} {:>8} {:>8}",
        "kind", "pending", "running", "dead"
    )?;
    for (kind, pending, running, dead) in kinds {
        writeln!(out, "{kind:<20} {pending:>8} {running:>8} {dead:>8}")?;
    }
    Ok(())
}

fn failed(queue: &Queue, out: &mut dyn Write) -> std::io::Result<()> {
    let dead = match queue.dead_letters() {
        Ok(d) => d,
        Err(err) => return writeln!(out, "error: {}", err.one_line()),
    };
    if dead.is_empty() {
        return writeln!(out, "no dead letters");
    }
    let ago = |t: SystemTime| {
        SystemTime::now()
            .duration_since(t)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    for d in dead {
        writeln!(
            out,
            "{} {} queue={} attempts={}/{} failed {:.0} s ago: {}\n    payload: {}",
            d.id,
            d.kind,
            d.queue,
            d.attempts,
            d.max_attempts,
            ago(d.failed_at),
            d.last_error,
            d.payload
        )?;
    }
    Ok(())
}
