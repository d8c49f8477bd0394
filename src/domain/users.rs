//! Users.

use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Row;

use crate::cache::CacheSettings;
use crate::repo::Entity;

/// A user of the expense tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The key; 0 for a user not inserted yet.
    pub id: i64,
    /// Unique email address.
    pub email: String,
    /// Display name, stored as given.
    pub name: String,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

impl Entity for User {
    const TABLE: &'static str = "users";
    const COLUMNS: &'static [&'static str] = &["email", "name", "created_at"];

    fn cache() -> CacheSettings {
        CacheSettings::new(Self::TABLE)
            .capacity(1000)
            .ttl(Duration::from_secs(3600))
    }

    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(User {
            id: row.get(0)?,
            email: row.get(1)?,
            name: row.get(2)?,
            created_at: row.get(3)?,
        })
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.email, &self.name, &self.created_at]
    }
}
