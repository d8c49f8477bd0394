//! Change capture on a `Db`: subscribing to every transaction's changes, and watching a
//! table's columns.

use std::sync::mpsc;
use std::sync::Arc;

use super::Db;
use crate::error::Result;
use crate::events::ChangeSet;

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

    /// Captures the old and new values of `columns` of `table` in every [`Change`](crate::Change) to its rows
    /// (through TEMP triggers on the writer connection). Names are checked against the schema.
    pub fn watch(&self, table: &str, columns: &[&str]) -> Result<()> {
        let writer = &self.inner.writer;
        writer.with_conn(|conn| writer.capture.watch(conn, table, columns))
    }
}
