//! Categories, each owned by one user.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Row;

use super::tracker::ExpenseTracker;
use crate::cache::CacheSettings;
use crate::error::Result;
use crate::repo::Entity;

/// A category of one user's expenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// The key; 0 for a category not inserted yet.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// Name, stored as given.
    pub name: String,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

impl Entity for Category {
    const TABLE: &'static str = "categories";
    const COLUMNS: &'static [&'static str] = &["user_id", "name", "created_at"];

    fn cache() -> CacheSettings {
        CacheSettings::new(Self::TABLE)
            .capacity(5000)
            .ttl(Duration::from_secs(30 * 60))
    }

    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Category {
            id: row.get(0)?,
            user_id: row.get(1)?,
            name: row.get(2)?,
            created_at: row.get(3)?,
        })
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.user_id, &self.name, &self.created_at]
    }
}

/// Served by `idx_categories_of_user (user_id, name)`.
pub(crate) const CATEGORIES_OF_USER: &str =
    "SELECT id, user_id, name, created_at FROM categories WHERE user_id = ?1 ORDER BY name";

impl ExpenseTracker {
    /// The categories of a user, by name; cached in `user_categories`, dropped when any
    /// category of that user is created, changed or deleted.
    pub fn categories_of(&self, user_id: i64) -> Result<Arc<Vec<Category>>> {
        let found = self
            .db
            .cached(&self.user_categories, &user_id, |c, user_id| {
                let mut stmt = c.prepare_cached(CATEGORIES_OF_USER)?;
                let rows = stmt.query_map([user_id], Category::from_row)?;
                Ok(Some(rows.collect::<rusqlite::Result<Vec<_>>>()?))
            })?;
        Ok(found.unwrap_or_default())
    }
}
