//! Change capture on the writer connection, and the `ChangeSet` published after each commit.
//!
//! Every changed row is seen through SQLite's `update_hook` (table, kind, rowid). For tables a
//! cache rule watches, TEMP triggers (created on the writer connection only, never in the schema
//! file) call a Rust scalar function with the rowid and the old and new values of just the
//! watched columns; rows of those tables are then reported by the triggers and skipped by the
//! hook. This costs per-row work only on watched tables, and needs neither bindgen nor libclang
//! (which rusqlite's `preupdate_hook` feature would impose on every service linking strata).
//!
//! The update hook itself goes on only once someone subscribes: cache rules watch their tables
//! through triggers, so until then nobody needs the rows of other tables, and a hook call per
//! row (a C-to-Rust hop, two UTF-8 checks and a buffer push) would be a third of the cost of a
//! bulk insert.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::db::Db;
use crate::error::{Error, Result};

mod guard;
mod hooks;
mod watch;

pub(crate) use watch::quote_ident;
use watch::{table_columns, trigger_sql, Watch};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ChangeKind {
    /// The row was inserted.
    Insert,
    /// The row was updated.
    Update,
    /// The row was deleted.
    Delete,
}

/// Values of a row's watched columns, as the capture trigger saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    columns: Arc<[Arc<str>]>,
    values: Vec<Value>,
}

impl Values {
    /// The value of a watched column, or `None` if the column is not watched.
    pub fn get(&self, column: &str) -> Option<&Value> {
        let i = self.columns.iter().position(|c| &**c == column)?;
        self.values.get(i)
    }

    /// The watched columns with their values, in the order they were declared.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns.iter().map(|c| &**c).zip(&self.values)
    }
}

/// One changed row of a committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The table (in the `main` schema).
    pub table: Arc<str>,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The row's rowid (after the change; for a delete, the deleted row's).
    pub rowid: i64,
    /// Watched columns before the change (updates and deletes of watched tables).
    pub old: Option<Values>,
    /// Watched columns after the change (inserts and updates of watched tables).
    pub new: Option<Values>,
}

impl Change {
    /// The value of `column` before the change, else after it (whichever the change has).
    pub fn value(&self, column: &str) -> Option<&Value> {
        self.old
            .as_ref()
            .and_then(|v| v.get(column))
            .or_else(|| self.new.as_ref().and_then(|v| v.get(column)))
    }

    /// The values of `column` before and after the change, without duplicates: an update that
    /// moved a row from one value to another touches both.
    pub fn values(&self, column: &str) -> Vec<&Value> {
        let old = self.old.as_ref().and_then(|v| v.get(column));
        let new = self.new.as_ref().and_then(|v| v.get(column));
        match (old, new) {
            (Some(a), Some(b)) if a == b => vec![a],
            (a, b) => a.into_iter().chain(b).collect(),
        }
    }
}

/// The changes of one committed transaction, in the order they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    /// Increases by one for every committed transaction that changed rows.
    pub seq: u64,
    /// The changed rows. Changes rolled back to a savepoint strata opened (a failed `write`
    /// closure in a group) are not here; changes undone by the closure's own nested savepoints
    /// may be, which errs on the side of invalidating.
    pub changes: Vec<Change>,
}

impl ChangeSet {
    /// True if any change touched `table`.
    pub fn touches(&self, table: &str) -> bool {
        self.changes.iter().any(|c| &*c.table == table)
    }
}

/// A consumer applied synchronously after COMMIT and before `write` returns (the caches).
pub(crate) type Sink = Arc<dyn Fn(&ChangeSet) + Send + Sync>;

/// The capture state shared by the writer's hooks and the `Db`.
#[derive(Default)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Vec<Change>>>,
    /// Tables with capture triggers, by trigger id (the index).
    watches: Arc<RwLock<Vec<Watch>>>,
    seq: Mutex<u64>,
    sinks: RwLock<Vec<Sink>>,
    subscribers: Mutex<Vec<mpsc::Sender<Arc<ChangeSet>>>>,
    /// Someone wants every changed row: the update hook goes on at the next BEGIN.
    hook_wanted: AtomicBool,
    /// The update hook is on (only the writer, holding its connection, sets it).
    hooked: AtomicBool,
    /// What the hooks saw write closures do to the connection.
    guard: guard::Guard,
}

impl Capture {
    /// Installs the authorizer, the commit hook and the capture function on the writer
    /// connection; the update
    /// hook follows when it is first wanted (see [`Capture::arm`]).
    pub(crate) fn install(&self, conn: &Connection) -> Result<()> {
        self.install_authorizer(conn)?;
        self.install_commit_hook(conn)?;
        self.install_function(conn)
    }

    /// Before a transaction begins on the writer connection `conn`: puts the update hook on if
    /// it is wanted and not on yet. Returns whether every changed row of this transaction will
    /// be captured.
    pub(crate) fn arm(&self, conn: &Connection) -> Result<bool> {
        if self.hooked.load(Ordering::Relaxed) {
            return Ok(true);
        }
        if !self.hook_wanted.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.install_hook(conn)?;
        self.hooked.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Asks for every changed row from the next transaction on.
    pub(crate) fn want_every_row(&self) {
        self.hook_wanted.store(true, Ordering::Release);
    }

    /// Watches `columns` of `table`: creates TEMP capture triggers on the writer connection.
    /// Watching a table again adds the new columns to the ones already watched.
    pub(crate) fn watch(&self, conn: &Connection, table: &str, columns: &[&str]) -> Result<()> {
        let known = table_columns(conn, table)?;
        let (existing, count, mut wanted) = {
            let watches = self.watches.read();
            let existing = watches.iter().position(|w| &*w.table == table);
            let wanted: Vec<Arc<str>> = existing
                .map(|i| watches[i].columns.to_vec())
                .unwrap_or_default();
            (existing, watches.len(), wanted)
        };
        for column in columns {
            if !known.iter().any(|k| k == column) {
                return Err(Error::InvalidConfig {
                    field: "watch",
                    reason: format!("table {table} has no column {column}"),
                });
            }
            if !wanted.iter().any(|w| &**w == *column) {
                wanted.push(Arc::from(*column));
            }
        }
        let id = existing.unwrap_or(count);
        let watch = Watch {
            table: Arc::from(table),
            columns: wanted.into(),
        };
        // The lock is not held while SQL runs (the hooks take it). Callers hold the writer, so
        // no row changes between the triggers' creation and their registration.
        conn.execute_batch(&trigger_sql(id, &watch))?;
        let mut watches = self.watches.write();
        if id == watches.len() {
            watches.push(watch);
        } else {
            watches[id] = watch;
        }
        Ok(())
    }

    /// The buffer position a savepoint starts at.
    pub(crate) fn mark(&self) -> usize {
        self.buffer.lock().len()
    }

    /// Drops the changes made since `mark` (the savepoint was rolled back).
    pub(crate) fn rollback_to(&self, mark: usize) {
        self.buffer.lock().truncate(mark);
    }

    /// Drops every buffered change (the transaction was rolled back).
    pub(crate) fn discard(&self) {
        self.buffer.lock().clear();
    }

    /// After COMMIT: turns the buffer into the next `ChangeSet`, applies it to the sinks and
    /// sends it to subscribers if `every_row` (the transaction ran with the update hook on;
    /// otherwise it holds only the rows of watched tables). Returns it, or `None` if nothing
    /// was captured.
    pub(crate) fn publish(&self, every_row: bool) -> Option<Arc<ChangeSet>> {
        let changes = std::mem::take(&mut *self.buffer.lock());
        if changes.is_empty() {
            return None;
        }
        let seq = {
            let mut seq = self.seq.lock();
            *seq += 1;
            *seq
        };
        let set = Arc::new(ChangeSet { seq, changes });
        for sink in self.sinks.read().iter() {
            sink(&set);
        }
        let mut subscribers = self.subscribers.lock();
        if every_row && !subscribers.is_empty() {
            subscribers.retain(|tx| tx.send(Arc::clone(&set)).is_ok());
        }
        Some(set)
    }

    /// Adds a consumer applied synchronously to every ChangeSet.
    pub(crate) fn add_sink(&self, sink: Sink) {
        self.sinks.write().push(sink);
    }

    /// A new receiver of the ChangeSet of every transaction that begins from now on.
    pub(crate) fn subscribe(&self) -> mpsc::Receiver<Arc<ChangeSet>> {
        let (tx, rx) = mpsc::channel();
        self.subscribers.lock().push(tx);
        self.want_every_row();
        rx
    }
}

impl Db {
    /// A receiver of the [`ChangeSet`] of every transaction that begins from now on, in commit
    /// order (a transaction already running when this is called is not sent). Receivers that
    /// are dropped are forgotten at the next commit.
    ///
    /// Until the first call, only the rows of tables watched by [`Db::watch`] (and by cache
    /// rules) are captured, so writes to other tables pay nothing for change capture.
    pub fn subscribe(&self) -> mpsc::Receiver<Arc<ChangeSet>> {
        self.inner.writer.capture.subscribe()
    }

    /// Captures the old and new values of `columns` of `table` in every [`Change`] to its rows
    /// (through TEMP triggers on the writer connection). Names are checked against the schema.
    pub fn watch(&self, table: &str, columns: &[&str]) -> Result<()> {
        let writer = &self.inner.writer;
        writer.with_conn(|conn| writer.capture.watch(conn, table, columns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Result<(Connection, Capture)> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INT); CREATE TABLE u(x);",
        )?;
        let capture = Capture::default();
        capture.install(&conn)?;
        capture.want_every_row();
        assert!(capture.arm(&conn)?);
        Ok((conn, capture))
    }

    #[test]
    fn unwatched_rows_come_from_the_hook() -> Result<()> {
        let (conn, capture) = setup()?;
        conn.execute_batch("INSERT INTO u VALUES (1), (2); DELETE FROM u;")?;
        let set = capture.publish(true).expect("changes");
        let kinds: Vec<_> = set.changes.iter().map(|c| c.kind).collect();
        // The plain DELETE is reported row by row (truncate optimization disabled).
        assert_eq!(
            kinds,
            [
                ChangeKind::Insert,
                ChangeKind::Insert,
                ChangeKind::Delete,
                ChangeKind::Delete
            ]
        );
        assert!(set.changes.iter().all(|c| c.old.is_none()));
        Ok(())
    }

    #[test]
    fn watched_rows_carry_old_and_new_values() -> Result<()> {
        let (conn, capture) = setup()?;
        capture.watch(&conn, "t", &["a"])?;
        conn.execute_batch(
            "INSERT INTO t VALUES (1, 'x', 0); UPDATE t SET a = 'y' WHERE id = 1; DELETE FROM t;",
        )?;
        let set = capture.publish(true).expect("changes");
        assert_eq!(
            set.changes.len(),
            3,
            "one change per row, no hook duplicates"
        );
        let update = &set.changes[1];
        assert_eq!(update.kind, ChangeKind::Update);
        assert_eq!(
            update.old.as_ref().unwrap().get("a"),
            Some(&Value::Text("x".into()))
        );
        assert_eq!(
            update.new.as_ref().unwrap().get("a"),
            Some(&Value::Text("y".into()))
        );
        assert_eq!(update.values("a").len(), 2);
        assert_eq!(set.changes[2].value("a"), Some(&Value::Text("y".into())));
        Ok(())
    }

    #[test]
    fn rolled_back_savepoint_drops_its_changes() -> Result<()> {
        let (conn, capture) = setup()?;
        conn.execute_batch("INSERT INTO u VALUES (1)")?;
        let mark = capture.mark();
        conn.execute_batch("INSERT INTO u VALUES (2)")?;
        capture.rollback_to(mark);
        let set = capture.publish(true).expect("changes");
        assert_eq!(set.changes.len(), 1);
        assert_eq!(set.seq, 1);
        assert!(capture.publish(true).is_none());
        Ok(())
    }

    #[test]
    fn without_subscribers_only_watched_tables_are_captured() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT); CREATE TABLE u(x);")?;
        let capture = Capture::default();
        capture.install(&conn)?;
        capture.watch(&conn, "t", &["a"])?;
        assert!(!capture.arm(&conn)?, "nobody asked for every row");
        conn.execute_batch("INSERT INTO u VALUES (1); INSERT INTO t VALUES (1, 'x');")?;
        let set = capture.publish(false).expect("the watched row");
        assert_eq!(set.changes.len(), 1);
        assert_eq!(&*set.changes[0].table, "t");
        Ok(())
    }

    #[test]
    fn watch_refuses_unknown_names() -> Result<()> {
        let (conn, capture) = setup()?;
        assert!(capture.watch(&conn, "nope", &["a"]).is_err());
        assert!(capture.watch(&conn, "t", &["nope"]).is_err());
        assert!(capture.watch(&conn, "t\"; DROP TABLE t; --", &[]).is_err());
        Ok(())
    }

    #[test]
    fn drop_statements_still_drop() -> Result<()> {
        let (conn, capture) = setup()?;
        capture.watch(&conn, "t", &["a"])?;
        conn.execute_batch(
            "CREATE VIEW v AS SELECT * FROM t; DROP VIEW v; DROP TABLE t; DROP TABLE u;",
        )?;
        let n: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        assert_eq!(n, 0);
        Ok(())
    }
}
