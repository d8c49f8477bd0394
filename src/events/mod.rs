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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{Action, AuthAction, AuthContext, Authorization};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::db::Db;
use crate::error::{Error, Result};

mod watch;

pub(crate) use watch::quote_ident;
use watch::{table_columns, trigger_sql, Watch, CAPTURE_FN};

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
}

impl Capture {
    /// Installs the authorizer and the capture function on the writer connection; the update
    /// hook follows when it is first wanted (see [`Capture::arm`]).
    pub(crate) fn install(&self, conn: &Connection) -> Result<()> {
        self.install_authorizer(conn)?;
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

    fn install_hook(&self, conn: &Connection) -> Result<()> {
        let buffer = Arc::clone(&self.buffer);
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut last: Option<Arc<str>> = None;
        conn.update_hook(Some(move |action: Action, db: &str, table: &str, rowid| {
            let kind = match action {
                Action::SQLITE_INSERT => ChangeKind::Insert,
                Action::SQLITE_UPDATE => ChangeKind::Update,
                Action::SQLITE_DELETE => ChangeKind::Delete,
                _ => return,
            };
            if db != "main" {
                return;
            }
            // Bulk writes change one table row after row: compare with the last name before
            // hashing it.
            let table = match &last {
                Some(t) if &**t == table => Arc::clone(t),
                _ => {
                    let t = match names.get(table) {
                        Some(t) => Arc::clone(t),
                        None => {
                            let t: Arc<str> = Arc::from(table);
                            names.insert(table.to_owned(), Arc::clone(&t));
                            t
                        }
                    };
                    last = Some(Arc::clone(&t));
                    t
                }
            };
            buffer.lock().push(Change {
                table,
                kind,
                rowid,
                old: None,
                new: None,
            });
        }))?;
        Ok(())
    }

    fn install_authorizer(&self, conn: &Connection) -> Result<()> {
        // `DELETE FROM t` without WHERE would use the truncate optimization, which skips the
        // update hook; answering IGNORE for deletes keeps the delete but disables the shortcut.
        // Only user tables of `main`: schema tables are deleted from by DROP statements, and
        // DROP TABLE itself asks for a DELETE of the table it drops, right after asking for the
        // drop; an IGNORE there would silently turn the DROP into a no-op.
        let mut dropping = String::new();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match ctx.action {
            AuthAction::DropTable { table_name }
            | AuthAction::DropView {
                view_name: table_name,
            } => {
                table_name.clone_into(&mut dropping);
                Authorization::Allow
            }
            AuthAction::Delete { table_name }
                if ctx.database_name == Some("main") && !table_name.starts_with("sqlite_") =>
            {
                if table_name == dropping {
                    dropping.clear();
                    Authorization::Allow
                } else {
                    Authorization::Ignore
                }
            }
            _ => Authorization::Allow,
        }))?;
        Ok(())
    }

    fn install_function(&self, conn: &Connection) -> Result<()> {
        let buffer = Arc::clone(&self.buffer);
        let watches = Arc::clone(&self.watches);
        conn.create_scalar_function(
            CAPTURE_FN,
            -1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
            move |ctx| {
                let id: i64 = ctx.get(0)?;
                let op: i64 = ctx.get(1)?;
                let old_rowid: Option<i64> = ctx.get(2)?;
                let new_rowid: Option<i64> = ctx.get(3)?;
                let watches = watches.read();
                let watch = usize::try_from(id)
                    .ok()
                    .and_then(|id| watches.get(id))
                    .ok_or_else(|| {
                        rusqlite::Error::UserFunctionError("unknown capture id".into())
                    })?;
                let n = watch.columns.len();
                let values = |from: usize| -> rusqlite::Result<Values> {
                    let values = (from..from + n)
                        .map(|i| ctx.get::<Value>(i))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Values {
                        columns: Arc::clone(&watch.columns),
                        values,
                    })
                };
                let mut buffer = buffer.lock();
                let mut buffer = Recorder(&mut buffer);
                let change = |kind, rowid, old, new| Change {
                    table: Arc::clone(&watch.table),
                    kind,
                    rowid,
                    old,
                    new,
                };
                match (op, old_rowid, new_rowid) {
                    (1, _, Some(new)) => {
                        buffer.push(change(ChangeKind::Insert, new, None, Some(values(4 + n)?)))
                    }
                    (2, Some(old), Some(new)) => {
                        let (before, after) = (values(4)?, values(4 + n)?);
                        if old != new {
                            // A rowid change is a move: the old key is gone.
                            buffer.push(change(
                                ChangeKind::Delete,
                                old,
                                Some(before.clone()),
                                None,
                            ));
                        }
                        buffer.push(change(ChangeKind::Update, new, Some(before), Some(after)));
                    }
                    (3, Some(old), _) => {
                        buffer.push(change(ChangeKind::Delete, old, Some(values(4)?), None))
                    }
                    _ => {}
                }
                Ok(Value::Null)
            },
        )?;
        Ok(())
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

/// Pushes trigger-captured changes, replacing the update hook's entry for the same row: the hook
/// fires for the row first, then its AFTER trigger. The hook's entry is kept for rows a trigger
/// does not see (a watched table dropped and created again without its triggers).
struct Recorder<'a>(&'a mut Vec<Change>);

impl Recorder<'_> {
    /// How far back the hook's entry may be: cascaded changes of other tables can come between.
    const LOOK_BACK: usize = 16;

    fn push(&mut self, change: Change) {
        let from_hook = self.0.iter().rev().take(Self::LOOK_BACK).position(|c| {
            c.old.is_none()
                && c.new.is_none()
                && c.rowid == change.rowid
                && c.kind == change.kind
                && c.table == change.table
        });
        match from_hook {
            Some(back) => {
                let at = self.0.len() - 1 - back;
                self.0[at] = change;
            }
            None => self.0.push(change),
        }
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
