//! Change capture on a `Db`: subscribing to every transaction's changes, and watching a
//! table's columns.

use super::Db;
use crate::error::Result;
use crate::events::Subscription;

impl Db {
    /// A [`Subscription`] to the [`ChangeSet`](crate::events::ChangeSet) of every transaction that
    /// begins from now on, in commit order (a transaction already running when this is called
    /// is not sent). It holds up to
    /// [`Config::subscription_capacity`](crate::Config::subscription_capacity) sets; past that
    /// the oldest are dropped and the subscriber is told how many
    /// ([`RecvError::Lagged`](crate::events::RecvError::Lagged)).
    ///
    /// While no subscription is alive, only the rows of tables watched by [`Db::watch`] (and
    /// by cache rules) are captured, so writes to other tables pay nothing for change capture:
    /// every-row capture goes on at the first `subscribe` and off again once the last
    /// `Subscription` is dropped.
    pub fn subscribe(&self) -> Subscription {
        self.inner.writer.capture.subscribe()
    }

    /// Captures the old and new values of `columns` of `table` in every [`Change`](crate::events::Change) to its rows
    /// (through TEMP triggers on the writer connection). Names are checked against the schema.
    pub fn watch(&self, table: &str, columns: &[&str]) -> Result<()> {
        let writer = &self.inner.writer;
        writer.with_conn(|conn| writer.capture.watch(conn, table, columns))
    }
}
