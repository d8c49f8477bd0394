//! Change capture: the [`ChangeSet`] each commit publishes to the caches and to
//! [`Db::subscribe`](crate::Db::subscribe): a [`Change`] of a [`ChangeKind`] per row, with the
//! [`Values`] of the watched columns.
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
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::error::{Error, Result};

mod guard;

#[cfg(test)]
pub(crate) use guard::SAVEPOINT_NAME;
pub(crate) use guard::{in_write_closure, set_in_write_closure};
mod hooks;
mod subscription;
mod watch;

pub use crate::error::RecvError;
use subscription::Slot;
pub use subscription::Subscription;
pub(crate) use subscription::DEFAULT_CAPACITY as DEFAULT_SUBSCRIPTION_CAPACITY;

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
    pub(crate) columns: Arc<[Arc<str>]>,
    pub(crate) values: Vec<Value>,
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
pub(crate) struct Capture {
    buffer: Arc<Mutex<Vec<Change>>>,
    /// Tables with capture triggers, by trigger id (the index).
    watches: Arc<RwLock<Vec<Watch>>>,
    seq: Mutex<u64>,
    sinks: RwLock<Vec<Sink>>,
    /// The queues of the live subscriptions.
    subscribers: Mutex<Vec<Arc<Slot>>>,
    /// The capacity of each new subscription's queue.
    subscription_capacity: usize,
    /// Someone wants every changed row: the update hook goes on at the next BEGIN, and off at
    /// the next BEGIN after this goes false. Written only under the `subscribers` lock, so that
    /// it always says whether there are subscribers once that lock is released.
    hook_wanted: AtomicBool,
    /// The update hook is on (only the writer, holding its connection, sets it).
    hooked: AtomicBool,
    /// Every row is wanted for good (the change log of several instances), whatever the
    /// subscriptions do.
    pinned: AtomicBool,
    /// What the hooks saw write closures do to the connection.
    guard: guard::Guard,
}

impl Default for Capture {
    fn default() -> Self {
        Capture::new(DEFAULT_SUBSCRIPTION_CAPACITY)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Subscribers waiting in `recv` learn that nothing more will come.
        for slot in self.subscribers.get_mut().drain(..) {
            slot.close();
        }
    }
}

impl Capture {
    /// Capture state whose subscriptions hold up to `subscription_capacity` ChangeSets each.
    pub(crate) fn new(subscription_capacity: usize) -> Capture {
        Capture {
            buffer: Arc::default(),
            watches: Arc::default(),
            seq: Mutex::default(),
            sinks: RwLock::default(),
            subscribers: Mutex::default(),
            subscription_capacity,
            hook_wanted: AtomicBool::new(false),
            hooked: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            guard: guard::Guard::default(),
        }
    }

    /// Installs the authorizer, the commit hook and the capture function on the writer
    /// connection; the update
    /// hook follows when it is first wanted (see [`Capture::arm`]).
    pub(crate) fn install(&self, conn: &Connection) -> Result<()> {
        self.install_authorizer(conn)?;
        self.install_commit_hook(conn)?;
        self.install_function(conn)
    }

    /// Before a transaction begins on the writer connection `conn`: puts the update hook on if
    /// it is wanted and not on yet, and off if it is on and no longer wanted. Returns whether
    /// every changed row of this transaction will be captured.
    ///
    /// A subscribe or unsubscribe that races this call takes effect here or at the next BEGIN:
    /// only this call, holding the writer, changes the hook.
    pub(crate) fn arm(&self, conn: &Connection) -> Result<bool> {
        let wanted = self.hook_wanted.load(Ordering::Acquire);
        let hooked = self.hooked.load(Ordering::Relaxed);
        match (wanted, hooked) {
            (true, true) => Ok(true),
            (false, false) => Ok(false),
            (true, false) => {
                self.install_hook(conn)?;
                self.hooked.store(true, Ordering::Relaxed);
                Ok(true)
            }
            (false, true) => {
                conn.update_hook(None::<fn(rusqlite::hooks::Action, &str, &str, i64)>)?;
                self.guard.removed_by_strata(guard::Part::UpdateHook);
                self.hooked.store(false, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// Whether the update hook is on now (for tests).
    #[cfg(test)]
    pub(crate) fn hooked(&self) -> bool {
        self.hooked.load(Ordering::Relaxed)
    }

    /// The sequence number of the last published ChangeSet (for tests).
    #[cfg(test)]
    pub(crate) fn last_seq(&self) -> u64 {
        *self.seq.lock()
    }

    /// Asks for every changed row from the next transaction on.
    pub(crate) fn want_every_row(&self) {
        self.hook_wanted.store(true, Ordering::Release);
    }

    /// Asks for every changed row from the next transaction on, for the life of the capture:
    /// the change log must name rows of tables this instance has no rule for, since another
    /// instance may have one.
    pub(crate) fn pin_every_row(&self) {
        self.pinned.store(true, Ordering::Release);
        self.want_every_row();
    }

    /// Runs `f` on the changes captured so far in the open transaction.
    pub(crate) fn with_pending<T>(&self, f: impl FnOnce(&[Change]) -> T) -> T {
        f(&self.buffer.lock())
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
        if every_row {
            for slot in self.subscribers.lock().iter() {
                slot.push(&set);
            }
        }
        Some(set)
    }

    /// Adds a consumer applied synchronously to every ChangeSet.
    pub(crate) fn add_sink(&self, sink: Sink) {
        self.sinks.write().push(sink);
    }

    /// A new subscription to the ChangeSet of every transaction that begins from now on.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        let slot = Arc::new(Slot::new(self.subscription_capacity));
        let mut subscribers = self.subscribers.lock();
        subscribers.push(Arc::clone(&slot));
        self.want_every_row();
        drop(subscribers);
        Subscription::new(slot, Arc::downgrade(self))
    }

    /// Forgets a dropped subscription; the last one gone, every-row capture goes off at the
    /// next BEGIN.
    fn unsubscribe(&self, slot: &Arc<Slot>) {
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|s| !Arc::ptr_eq(s, slot));
        if subscribers.is_empty() && !self.pinned.load(Ordering::Acquire) {
            self.hook_wanted.store(false, Ordering::Release);
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
