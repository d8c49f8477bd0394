//! [`Batch`]: many inserts, upserts, updates and deletes applied in chunked transactions by
//! [`Db::apply`](crate::Db::apply), which returns a [`BatchReport`] (with a [`BatchFailure`] per
//! failed operation, each of an [`OpKind`]); row values are [`IntoValues`].
//!
//! Operations keep the order they were added in. Consecutive operations of the same shape (kind,
//! table, columns) share one prepared statement, and runs of same-shaped inserts and upserts are
//! sent as multi-row `VALUES` statements (measured faster than one row per statement; see
//! `exec`). Table and column names are checked against the schema inside the transaction and
//! quoted, values are always bound: no name or value can change the SQL that runs.

mod exec;
mod sql;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::ToSql;

use crate::db::Db;
use crate::error::{Error, Result};
use values::to_value;
pub use values::IntoValues;

/// What an operation of a [`Batch`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum OpKind {
    /// `INSERT INTO table (columns) VALUES (...)`.
    Insert,
    /// `INSERT ... ON CONFLICT (conflict columns) DO UPDATE SET` every other column.
    Upsert,
    /// `UPDATE table SET columns WHERE key column = key`.
    Update,
    /// `DELETE FROM table WHERE key column = key`.
    Delete,
}

/// The statement shape shared by consecutive operations: one prepared statement per shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    kind: OpKind,
    table: String,
    /// Inserted (insert, upsert) or assigned (update) columns; empty for a delete.
    columns: Vec<String>,
    /// The conflict target of an upsert, the key column of an update or delete.
    keys: Vec<String>,
}

impl Shape {
    fn is(&self, kind: OpKind, table: &str, columns: &[&str], keys: &[&str]) -> bool {
        self.kind == kind && self.table == table && self.columns == columns && self.keys == keys
    }
}

/// One operation: its shape and where its values are in [`Batch::values`] (row values, then
/// the key for update and delete).
#[derive(Debug, Clone)]
struct Op {
    shape: u32,
    /// The number of values; they start where the previous operation's end.
    len: u32,
    /// The index of the first value in [`Batch::values`].
    start: usize,
    /// Why the operation cannot run (a value that did not convert, a wrong number of values);
    /// it is reported as failed when the batch runs, like any other failure.
    invalid: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Options {
    max_batch: usize,
    retry_attempts: u32,
    retry_backoff: Duration,
    max_failure_rate: f64,
    all_or_nothing: bool,
    dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 1000,
            retry_attempts: 3,
            retry_backoff: Duration::from_millis(10),
            max_failure_rate: 0.3,
            all_or_nothing: false,
            dry_run: false,
        }
    }
}

/// A list of write operations on any tables, applied with [`Db::apply`] (or [`Batch::run`]).
///
/// By default the operations are applied in chunks of 1000 per transaction; a failing operation
/// (a constraint, an unknown column) fails alone and the others apply; a chunk that cannot get
/// the write lock is retried with backoff; the batch is aborted once more than 30% of the
/// operations attempted have failed. Every outcome is in the [`BatchReport`].
///
/// ```
/// # fn main() -> strata::Result<()> {
/// let db = strata::Db::builder()
///     .migrations(strata::domain::migrations()) // the expense tracker's `users` table
///     .build()?;
/// let mut batch = strata::Batch::new().max_batch(500);
/// for i in 0..1200 {
///     batch.insert("users", &["email", "name", "created_at"], (format!("u{i}@x"), "U", 0));
/// }
/// batch.update("users", &["name"], ("Ada",), "email", "u0@x");
/// batch.insert("users", &["email", "name", "created_at"], ("u1@x", "dup", 0)); // UNIQUE fails
/// let report = db.apply(&batch)?;
/// assert_eq!((report.applied, report.failed.len(), report.chunks), (1201, 1, 3));
/// assert_eq!(report.failed[0].index, 1201);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Batch {
    ops: Vec<Op>,
    /// Every operation's values, one after the other: one allocation for the batch instead of
    /// one per operation (freeing 100k operations' vectors cost as much as a third of applying
    /// them), and a multi-row statement binds one contiguous slice.
    values: Vec<Value>,
    shapes: Vec<Shape>,
    shape_ids: HashMap<Shape, u32>,
    options: Options,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("operations", &self.ops.len())
            .field("shapes", &self.shapes)
            .field("options", &self.options)
            .finish()
    }
}

impl Batch {
    /// An empty batch with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most operations applied per transaction. Must be at least 1.
    /// Defaults to 1000.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.options.max_batch = max_batch;
        self
    }

    /// How many times a chunk that found the database locked (beyond `busy_timeout`) is retried
    /// before the batch stops with [`Error::Batch`]. Defaults to 3.
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.options.retry_attempts = attempts;
        self
    }

    /// The wait before the first retry of a locked chunk, doubled before each further retry.
    /// Defaults to 10 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.options.retry_backoff = backoff;
        self
    }

    /// The failed share of attempted operations beyond which the rest of the batch is not
    /// attempted; checked after each chunk. Must be within 0.0..=1.0 (1.0 never aborts).
    /// Defaults to 0.3.
    pub fn max_failure_rate(mut self, rate: f64) -> Self {
        self.options.max_failure_rate = rate;
        self
    }

    /// Applies the whole batch in one transaction, whatever `max_batch` is, and rolls all of it
    /// back if any operation fails. Defaults to false.
    pub fn all_or_nothing(mut self, on: bool) -> Self {
        self.options.all_or_nothing = on;
        self
    }

    /// Executes the batch in one transaction, reports what would have happened (chunks and the
    /// failure-rate abort included) and rolls back: the database is left unchanged.
    /// Defaults to false.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.options.dry_run = on;
        self
    }

    /// Adds `INSERT INTO table (columns) VALUES (values)`. With no columns, inserts a row of
    /// defaults.
    pub fn insert(&mut self, table: &str, columns: &[&str], values: impl IntoValues) -> &mut Self {
        let values = values.into_values();
        self.push(
            OpKind::Insert,
            table,
            columns,
            &[],
            values,
            columns.len(),
            None,
        )
    }

    /// Adds an insert that, when a row with the same `conflict` columns exists (they must form
    /// a PRIMARY KEY or UNIQUE constraint), updates that row's other `columns` instead
    /// (`ON CONFLICT DO UPDATE`: the row keeps its rowid, unlike `INSERT OR REPLACE`).
    pub fn upsert(
        &mut self,
        table: &str,
        columns: &[&str],
        values: impl IntoValues,
        conflict: &[&str],
    ) -> &mut Self {
        let values = values.into_values();
        self.push(
            OpKind::Upsert,
            table,
            columns,
            conflict,
            values,
            columns.len(),
            None,
        )
    }

    /// Adds `UPDATE table SET columns = values WHERE key_column = key`. An update that matches
    /// no row is not a failure; it is counted in [`BatchReport::unmatched`].
    pub fn update(
        &mut self,
        table: &str,
        columns: &[&str],
        values: impl IntoValues,
        key_column: &str,
        key: impl ToSql,
    ) -> &mut Self {
        let values = values.into_values();
        let key = to_value(&key);
        self.push(
            OpKind::Update,
            table,
            columns,
            &[key_column],
            values,
            columns.len(),
            Some(key),
        )
    }

    /// Adds `DELETE FROM table WHERE key_column = key`. A delete that matches no row is not a
    /// failure; it is counted in [`BatchReport::unmatched`].
    pub fn delete(&mut self, table: &str, key_column: &str, key: impl ToSql) -> &mut Self {
        let key = to_value(&key);
        self.push(
            OpKind::Delete,
            table,
            &[],
            &[key_column],
            Ok(Vec::new()),
            0,
            Some(key),
        )
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Applies the batch to `db`; the same as [`Db::apply`].
    pub fn run(&self, db: &Db) -> Result<BatchReport> {
        db.apply(self)
    }

    #[allow(clippy::too_many_arguments)] // private: the four public adders funnel here
    fn push(
        &mut self,
        kind: OpKind,
        table: &str,
        columns: &[&str],
        keys: &[&str],
        values: Result<Vec<Value>>,
        expected: usize,
        key: Option<Result<Value>>,
    ) -> &mut Self {
        let shape = self.shape(kind, table, columns, keys);
        let start = self.values.len();
        let mut invalid = match values {
            Ok(v) if v.len() == expected => {
                self.values.extend(v);
                None
            }
            Ok(v) => Some(format!("{} values for {expected} columns", v.len())),
            Err(e) => Some(format!("value not convertible: {e}")),
        };
        match key {
            Some(Ok(k)) => self.values.push(k),
            Some(Err(e)) => invalid = Some(format!("key not convertible: {e}")),
            None => {}
        }
        if invalid.is_some() {
            // An operation that cannot run keeps no values.
            self.values.truncate(start);
        }
        let len = u32::try_from(self.values.len() - start).expect("fewer than 2^32 values");
        self.ops.push(Op {
            shape,
            len,
            start,
            invalid: invalid.map(Into::into),
        });
        self
    }

    /// The values of the operations in `range`, one after the other.
    fn values_of(&self, range: std::ops::Range<usize>) -> &[Value] {
        if range.is_empty() {
            return &[];
        }
        let (first, last) = (&self.ops[range.start], &self.ops[range.end - 1]);
        &self.values[first.start..last.start + last.len as usize]
    }

    /// The id of a shape, interned: the common case (the same shape as the previous operation)
    /// costs a comparison, not an allocation.
    fn shape(&mut self, kind: OpKind, table: &str, columns: &[&str], keys: &[&str]) -> u32 {
        if let Some(last) = self.ops.last() {
            if self.shapes[last.shape as usize].is(kind, table, columns, keys) {
                return last.shape;
            }
        }
        let shape = Shape {
            kind,
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            keys: keys.iter().map(|c| (*c).to_owned()).collect(),
        };
        if let Some(&id) = self.shape_ids.get(&shape) {
            return id;
        }
        let id = u32::try_from(self.shapes.len()).expect("fewer than 2^32 distinct shapes");
        self.shapes.push(shape.clone());
        self.shape_ids.insert(shape, id);
        id
    }

    fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.options.max_batch == 0 {
            return invalid("max_batch", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.options.max_failure_rate) {
            return invalid("max_failure_rate", "must be within 0.0..=1.0");
        }
        Ok(())
    }
}

/// One operation of a batch that did not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BatchFailure {
    /// The operation's position in the batch, from 0 in the order operations were added.
    pub index: usize,
    /// The table the operation was on, as given.
    pub table: String,
    /// What the operation was.
    pub kind: OpKind,
    /// Why it failed: SQLite's message, or the name that is not in the schema.
    pub reason: String,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct BatchReport {
    /// Operations whose statement succeeded and was committed (for a dry run: would have been).
    /// Zero when an all-or-nothing batch was rolled back.
    pub applied: usize,
    /// Updates and deletes (counted in `applied`) whose key matched no row.
    pub unmatched: usize,
    /// Operations that failed, in batch order.
    pub failed: Vec<BatchFailure>,
    /// Operations not attempted because the batch was aborted or stopped.
    pub skipped: usize,
    /// Chunks executed (transactions, or for a dry run the chunks a real run would use).
    pub chunks: usize,
    /// Chunks retried because the database was locked.
    pub retries: u32,
    /// Why the batch did not run to the end (failure rate, an all-or-nothing rollback, an
    /// error), if it did not.
    pub aborted: Option<String>,
    /// Every change was rolled back (a dry run, or an all-or-nothing batch with a failure).
    pub rolled_back: bool,
    /// The batch was a dry run.
    pub dry_run: bool,
    /// Wall time of the whole batch, retries included; serialized as `elapsed_us`.
    #[serde(rename = "elapsed_us", serialize_with = "micros")]
    pub elapsed: Duration,
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl BatchReport {
    fn new(dry_run: bool) -> Self {
        BatchReport {
            applied: 0,
            unmatched: 0,
            failed: Vec::new(),
            skipped: 0,
            chunks: 0,
            retries: 0,
            aborted: None,
            rolled_back: false,
            dry_run,
            elapsed: Duration::ZERO,
        }
    }
}

impl Db {
    /// Applies a [`Batch`] and reports what it did.
    ///
    /// Failed operations are in the report, not an error. An error means the batch could not
    /// run ([`Error::InvalidConfig`]) or stopped part-way ([`Error::Batch`], which carries the
    /// report of what was applied before: a chunk still locked after every retry, which
    /// [`Error::is_busy`] tells, or an I/O error).
    pub fn apply(&self, batch: &Batch) -> Result<BatchReport> {
        batch.validate()?;
        exec::run(self, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_operations_share_a_shape() {
        let mut batch = Batch::new();
        for i in 0..3 {
            batch.insert("t", &["a"], (i,));
            batch.insert("u", &["a"], (i,));
        }
        batch.insert("t", &["a", "b"], (1, 2));
        batch.delete("t", "a", 1);
        assert_eq!(batch.len(), 8);
        assert_eq!(batch.shapes.len(), 4);
        let ids: Vec<u32> = batch.ops.iter().map(|op| op.shape).collect();
        assert_eq!(ids, [0, 1, 0, 1, 0, 1, 2, 3]);
        assert_eq!(
            batch.values_of(7..8),
            [Value::Integer(1)],
            "the key is the last value"
        );
    }

    #[test]
    fn bad_values_are_kept_as_failures_to_report() {
        let mut batch = Batch::new();
        batch.insert("t", &["a", "b"], (1,));
        batch.update("t", &["a"], (1,), "id", values::tests::BadText);
        assert!(batch.ops[0]
            .invalid
            .as_deref()
            .unwrap()
            .contains("1 values for 2"));
        assert!(batch.ops[1].invalid.as_deref().unwrap().contains("key"));
        // An invalid operation keeps no values: its neighbours' stay contiguous.
        batch.insert("t", &["a", "b"], (3, 4));
        assert_eq!(batch.values_of(0..2), []);
        assert_eq!(
            batch.values_of(0..3),
            [Value::Integer(3), Value::Integer(4)]
        );
    }

    #[test]
    fn options_are_validated() -> Result<()> {
        Batch::new().validate()?;
        Batch::new().max_failure_rate(0.0).max_batch(1).validate()?;
        for batch in [
            Batch::new().max_batch(0),
            Batch::new().max_failure_rate(-0.1),
            Batch::new().max_failure_rate(f64::NAN),
        ] {
            assert!(matches!(batch.validate(), Err(Error::InvalidConfig { .. })));
        }
        Ok(())
    }

    #[test]
    fn debug_does_not_list_every_operation() {
        let mut batch = Batch::new();
        for i in 0..1000 {
            batch.insert("t", &["a"], (i,));
        }
        let debug = format!("{batch:?}");
        assert!(
            debug.contains("operations: 1000") && debug.len() < 500,
            "{debug}"
        );
    }
}
