//! Running a batch: names checked against the schema, statements built and reused, chunks,
//! retries on a locked database, the failure-rate abort, all-or-nothing and dry runs.

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection};

use super::sql::{self, Statements, Table};
use super::{Batch, BatchFailure, BatchReport, OpKind};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::Capture;

/// Returned by the transaction body to make the writer roll back (dry run, all-or-nothing).
const ROLLBACK: &str = "batch rolled back on purpose";

/// What one transaction did.
#[derive(Debug, Default)]
struct Outcome {
    applied: usize,
    unmatched: usize,
    failed: Vec<BatchFailure>,
    attempted: usize,
    chunks: usize,
    aborted: Option<String>,
    skipped: usize,
    rollback: bool,
}

impl Outcome {
    fn fail(&mut self, batch: &Batch, index: usize, reason: String) {
        let shape = &batch.shapes[batch.ops[index].shape as usize];
        self.failed.push(BatchFailure {
            index,
            table: shape.table.clone(),
            kind: shape.kind,
            reason,
        });
    }

    /// Checks the failure rate after a chunk ending at `end`; true if the rest is aborted.
    fn abort_if_failing(&mut self, max_rate: f64, end: usize, total: usize) -> bool {
        match failure_abort(self.failed.len(), self.attempted, max_rate, end, total) {
            Some(reason) => {
                self.skipped = total - end;
                self.aborted = Some(reason);
                true
            }
            None => false,
        }
    }

    fn add_to(self, report: &mut BatchReport) {
        report.applied += self.applied;
        report.unmatched += self.unmatched;
        report.failed.extend(self.failed);
        report.chunks += self.chunks;
        report.skipped += self.skipped;
        if self.aborted.is_some() {
            report.aborted = self.aborted;
        }
    }
}

/// Why the rest of a batch is aborted after a chunk ending at `end`, if it is: more than
/// `max_rate` of the operations attempted so far failed.
fn failure_abort(
    failed: usize,
    attempted: usize,
    max_rate: f64,
    end: usize,
    total: usize,
) -> Option<String> {
    if end >= total || failed as f64 <= max_rate * attempted as f64 {
        return None;
    }
    Some(format!(
        "{failed} of {attempted} operations failed, more than max_failure_rate {max_rate}; \
         {} operations not attempted",
        total - end
    ))
}

/// The state of one run: statements built so far, per shape, and tables looked up.
struct Executor<'a> {
    batch: &'a Batch,
    capture: &'a Capture,
    /// Per shape: its SQL, or why its names do not fit the schema (every operation of the
    /// shape then fails with that reason).
    statements: Vec<Option<std::result::Result<Statements, String>>>,
    tables: HashMap<String, Option<Table>>,
}

pub(super) fn run(db: &Db, batch: &Batch) -> Result<BatchReport> {
    let started = Instant::now();
    let opts = batch.options;
    let mut report = BatchReport::new(opts.dry_run);
    let total = batch.ops.len();
    if total == 0 {
        return Ok(report);
    }
    let mut exec = Executor {
        batch,
        capture: &db.inner.writer.capture,
        statements: (0..batch.shapes.len()).map(|_| None).collect(),
        tables: HashMap::new(),
    };
    let chunks = move || {
        (0..total)
            .step_by(opts.max_batch)
            .map(move |start| start..total.min(start + opts.max_batch))
    };

    if opts.all_or_nothing || opts.dry_run {
        let body = |exec: &mut Executor<'_>, conn: &Connection, out: &mut Outcome| {
            if opts.all_or_nothing {
                exec.chunk(conn, 0..total, out)?;
            } else {
                // A dry run goes through the chunks a real run would, failure-rate abort
                // included, only all in one transaction.
                for range in chunks() {
                    exec.chunk(conn, range.clone(), out)?;
                    if out.abort_if_failing(opts.max_failure_rate, range.end, total) {
                        break;
                    }
                }
            }
            out.rollback = opts.dry_run || (opts.all_or_nothing && !out.failed.is_empty());
            Ok(())
        };
        match exec.transaction(db, &mut report.retries, body) {
            Ok(mut out) => {
                if opts.all_or_nothing && !out.failed.is_empty() {
                    out.aborted = Some(format!(
                        "all-or-nothing: {} of {total} operations failed; every operation was \
                         rolled back",
                        out.failed.len()
                    ));
                    out.applied = 0;
                    out.unmatched = 0;
                }
                report.rolled_back = out.rollback;
                out.add_to(&mut report);
            }
            Err(err) => return Err(stopped(report, err, total, started)),
        }
    } else {
        let mut attempted = 0;
        for range in chunks() {
            let body = |exec: &mut Executor<'_>, conn: &Connection, out: &mut Outcome| {
                exec.chunk(conn, range.clone(), out)
            };
            match exec.transaction(db, &mut report.retries, body) {
                Ok(out) => {
                    attempted += out.attempted;
                    out.add_to(&mut report);
                }
                Err(err) => return Err(stopped(report, err, total - range.start, started)),
            }
            let failed = report.failed.len();
            let abort = failure_abort(failed, attempted, opts.max_failure_rate, range.end, total);
            if let Some(reason) = abort {
                report.skipped = total - range.end;
                report.aborted = Some(reason);
                break;
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The error of a batch stopped part-way, carrying the report of what was done before.
fn stopped(mut report: BatchReport, err: Error, skipped: usize, started: Instant) -> Error {
    report.skipped = skipped;
    report.aborted = Some(format!("stopped after {} chunks: {err}", report.chunks));
    report.elapsed = started.elapsed();
    Error::Batch {
        source: Box::new(err),
        report: Box::new(report),
    }
}

impl Executor<'_> {
    /// Runs `body` in one `db.write` transaction, retrying with backoff while the database is
    /// locked. Each attempt starts from a fresh outcome: a failed attempt left nothing behind.
    fn transaction<F>(&mut self, db: &Db, retries: &mut u32, body: F) -> Result<Outcome>
    where
        F: Fn(&mut Self, &Connection, &mut Outcome) -> Result<()> + Sync,
    {
        let opts = self.batch.options;
        let mut attempt = 0;
        loop {
            let mut out = Outcome::default();
            let result = db.write(|conn| {
                body(self, conn, &mut out)?;
                if out.rollback {
                    return Err(Error::closure(ROLLBACK));
                }
                Ok(())
            });
            match result {
                Ok(()) => return Ok(out),
                // The body asked for the rollback, which the writer did.
                Err(_) if out.rollback => return Ok(out),
                Err(err) if err.is_busy() && attempt < opts.retry_attempts => {
                    std::thread::sleep(backoff(opts.retry_backoff, attempt));
                    attempt += 1;
                    *retries += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Executes the operations in `range`, in order, in the open transaction. A failing
    /// operation is recorded and the next one runs (SQLite's default ABORT undoes the failing
    /// statement only). An error is returned only when the transaction cannot go on: it was
    /// rolled back by SQLite, or a statement found the database locked (the chunk is retried).
    fn chunk(&mut self, conn: &Connection, range: Range<usize>, out: &mut Outcome) -> Result<()> {
        let ops = &self.batch.ops;
        let mut start = range.start;
        while start < range.end {
            let shape = ops[start].shape;
            let end = (start + 1..range.end)
                .find(|&i| ops[i].shape != shape)
                .unwrap_or(range.end);
            self.prepare(conn, shape)?;
            match &self.statements[shape as usize] {
                Some(Ok(statements)) => self.run_shape(conn, shape, statements, start..end, out)?,
                Some(Err(reason)) => {
                    for index in start..end {
                        out.fail(self.batch, index, reason.clone());
                    }
                }
                None => unreachable!("prepare fills the shape's entry"),
            }
            start = end;
        }
        out.attempted += range.len();
        out.chunks += 1;
        Ok(())
    }

    /// Builds the shape's statements once per run, from the schema as this transaction sees it.
    fn prepare(&mut self, conn: &Connection, shape: u32) -> Result<()> {
        if self.statements[shape as usize].is_some() {
            return Ok(());
        }
        let spec = &self.batch.shapes[shape as usize];
        if !self.tables.contains_key(&spec.table) {
            let table = sql::describe(conn, &spec.table)?;
            self.tables.insert(spec.table.clone(), table);
        }
        let built = sql::build(spec, self.tables[&spec.table].as_ref()).and_then(|statements| {
            // Some mistakes show only when SQLite compiles the statement (an upsert's conflict
            // columns that match no unique index): they fail the shape's operations.
            match conn.prepare_cached(&statements.single) {
                Ok(_) => Ok(statements),
                Err(err) => Err(Error::from(err).to_string()),
            }
        });
        self.statements[shape as usize] = Some(built);
        Ok(())
    }

    /// Executes a run of same-shaped operations: inserts and upserts in multi-row statements
    /// (the largest that fits what is left of the run, see `Statements::multi`), the rest one
    /// statement each.
    fn run_shape(
        &self,
        conn: &Connection,
        shape: u32,
        statements: &Statements,
        range: Range<usize>,
        out: &mut Outcome,
    ) -> Result<()> {
        let ops = &self.batch.ops;
        let kind = self.batch.shapes[shape as usize].kind;
        let mut start = range.start;
        for (sql, rows) in &statements.multi {
            let rows = *rows;
            if range.end - start < rows {
                continue;
            }
            let mut stmt = conn.prepare_cached(sql)?;
            while range.end - start >= rows {
                let window = start..start + rows;
                start += rows;
                if ops[window.clone()].iter().any(|op| op.invalid.is_some()) {
                    self.single(conn, kind, statements, window, out)?;
                    continue;
                }
                let mark = self.capture.mark();
                match bind(&mut stmt, self.batch.values_of(window.clone()))
                    .and_then(|()| stmt.raw_execute())
                {
                    Ok(_) => out.applied += rows,
                    Err(err) => {
                        continue_after(conn, err.into())?;
                        // The statement was undone; the changes it reported are dropped,
                        // and its rows run one by one so that only the bad ones fail.
                        self.capture.rollback_to(mark);
                        self.single(conn, kind, statements, window, out)?;
                    }
                }
            }
        }
        self.single(conn, kind, statements, start..range.end, out)
    }

    /// Executes operations one statement each.
    fn single(
        &self,
        conn: &Connection,
        kind: OpKind,
        statements: &Statements,
        range: Range<usize>,
        out: &mut Outcome,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(&statements.single)?;
        for index in range {
            let op = &self.batch.ops[index];
            if let Some(reason) = &op.invalid {
                out.fail(self.batch, index, reason.to_string());
                continue;
            }
            let mark = self.capture.mark();
            let values = self.batch.values_of(index..index + 1);
            match bind(&mut stmt, values).and_then(|()| stmt.raw_execute()) {
                Ok(changed) => {
                    out.applied += 1;
                    if changed == 0 && matches!(kind, OpKind::Update | OpKind::Delete) {
                        out.unmatched += 1;
                    }
                }
                Err(err) => {
                    let err = Error::from(err);
                    continue_after(conn, err.duplicate())?;
                    // Changes made by triggers before the failure were undone with it.
                    self.capture.rollback_to(mark);
                    out.fail(self.batch, index, err.to_string());
                }
            }
        }
        Ok(())
    }
}

/// Whether the transaction survives a failed statement: not if SQLite rolled it back (I/O
/// error, disk full, an `ON CONFLICT ROLLBACK` constraint), nor if the database was locked.
fn continue_after(conn: &Connection, err: Error) -> Result<()> {
    if conn.is_autocommit() || err.is_busy() {
        Err(err)
    } else {
        Ok(())
    }
}

fn bind(stmt: &mut CachedStatement<'_>, values: &[Value]) -> rusqlite::Result<()> {
    for (i, value) in values.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)?;
    }
    Ok(())
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::Batch;

    fn file_db(dir: &tempfile::TempDir) -> Result<Db> {
        let db = Db::builder()
            .path(dir.path().join("t.db"))
            .busy_timeout(Duration::from_millis(30))
            .connection_timeout(Duration::from_secs(1))
            .build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")?))?;
        Ok(db)
    }

    fn count(db: &Db) -> Result<i64> {
        db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
    }

    #[test]
    fn a_lock_taken_between_chunks_stops_the_batch_with_its_progress() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir)?;
        // Right after the first chunk commits (sinks run before `write` returns), another
        // connection takes the write lock: the second chunk cannot begin.
        let other = Arc::new(Mutex::new(Some(rusqlite::Connection::open(db.path())?)));
        let holder = Arc::clone(&other);
        // Sinks see only what is captured: every row, once someone subscribes.
        let _changes = db.subscribe();
        db.inner.writer.capture.add_sink(Arc::new(move |_| {
            if let Some(conn) = holder.lock().as_ref() {
                let _ = conn.execute_batch("BEGIN IMMEDIATE");
            }
        }));
        let mut batch = Batch::new().max_batch(4).retry_attempts(0);
        for x in 0..10 {
            batch.insert("t", &["x"], (x,));
        }
        let err = db.apply(&batch).unwrap_err();
        other.lock().take().unwrap().execute_batch("COMMIT")?;
        assert!(err.is_busy(), "{err}");
        let Error::Batch { report, .. } = err else {
            panic!("expected Error::Batch")
        };
        assert_eq!((report.applied, report.chunks, report.skipped), (4, 1, 6));
        assert_eq!(count(&db)?, 4);
        Ok(())
    }

    #[test]
    fn a_transaction_rolled_back_by_sqlite_stops_the_batch() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir)?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE r (x UNIQUE ON CONFLICT ROLLBACK)")?))?;
        let mut batch = Batch::new().max_batch(2);
        for x in [1, 2, 3, 1, 5] {
            batch.insert("r", &["x"], (x,));
        }
        let err = db.apply(&batch).unwrap_err();
        assert!(!err.is_busy());
        let Error::Batch { source, report } = err else {
            panic!("expected Error::Batch")
        };
        assert!(source.is_constraint(), "{source}");
        assert_eq!((report.applied, report.chunks, report.skipped), (2, 1, 3));
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM r", [], |r| r.get(0))?))?;
        assert_eq!(n, 2);
        Ok(())
    }

    #[test]
    fn chunks_group_committed_with_other_writes_keep_their_failures_apart() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir)?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE other (y)")?))?;
        let mut batch = Batch::new().max_batch(10).max_failure_rate(1.0);
        for x in 0..400 {
            batch.insert("t", &["x"], (x % 300,)); // the last 100 repeat earlier values
        }
        let report = std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for y in 0..100 {
                        db.write(|c| Ok(c.execute("INSERT INTO other VALUES (?1)", [y])?))
                            .unwrap();
                    }
                });
            }
            db.apply(&batch)
        })?;
        assert_eq!((report.applied, report.failed.len()), (300, 100));
        assert_eq!(count(&db)?, 300);
        let n: i64 =
            db.read(|c| Ok(c.query_row("SELECT count(*) FROM other", [], |r| r.get(0))?))?;
        assert_eq!(n, 300);
        Ok(())
    }

    #[test]
    fn a_failure_in_a_short_multi_row_statement_fails_alone() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir)?;
        // 1000 rows: 15 statements of 64, then 32 and 8 for the last 40. Rows 970 and 995
        // repeat earlier values, one in the 32-row statement and one in the 8-row one.
        let mut batch = Batch::new().max_failure_rate(1.0);
        for x in 0..1000 {
            let value = match x {
                970 => 5,
                995 => 6,
                x => x,
            };
            batch.insert("t", &["x"], (value,));
        }
        let report = db.apply(&batch)?;
        let failed: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
        assert_eq!((report.applied, failed), (998, vec![970, 995]));
        assert_eq!(count(&db)?, 998);
        Ok(())
    }

    #[test]
    fn backoff_doubles() {
        let base = Duration::from_millis(10);
        let waits: Vec<u128> = (0..4).map(|a| backoff(base, a).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80]);
        assert!(backoff(base, u32::MAX) <= base * 65536);
    }
}
