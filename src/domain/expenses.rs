//! Expenses and their list queries.

use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Row;

use super::tracker::ExpenseTracker;
use super::values::validate_date;
use crate::cache::CacheSettings;
use crate::error::{Error, Result};
use crate::repo::Entity;

/// One expense of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expense {
    /// The key; 0 for an expense not inserted yet.
    pub id: i64,
    /// Who spent.
    pub user_id: i64,
    /// The category, if any (deleting the category sets this to `None`).
    pub category_id: Option<i64>,
    /// Integer cents.
    pub amount_cents: i64,
    /// Free text, stored as given.
    pub description: String,
    /// The day the expense belongs to, `YYYY-MM-DD`.
    pub expense_date: String,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

impl Entity for Expense {
    const TABLE: &'static str = "expenses";
    const COLUMNS: &'static [&'static str] = &[
        "user_id",
        "category_id",
        "amount_cents",
        "description",
        "expense_date",
        "created_at",
    ];

    fn cache() -> CacheSettings {
        CacheSettings::new(Self::TABLE)
            .capacity(10_000)
            .ttl(Duration::from_secs(10 * 60))
    }

    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Expense {
            id: row.get(0)?,
            user_id: row.get(1)?,
            category_id: row.get(2)?,
            amount_cents: row.get(3)?,
            description: row.get(4)?,
            expense_date: row.get(5)?,
            created_at: row.get(6)?,
        })
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![
            &self.user_id,
            &self.category_id,
            &self.amount_cents,
            &self.description,
            &self.expense_date,
            &self.created_at,
        ]
    }
}

/// Where a page of a user's expenses ended: the next page starts strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cursor {
    /// `created_at` of the last expense returned.
    pub created_at: i64,
    /// `id` of the last expense returned (breaks ties of `created_at`).
    pub id: i64,
}

/// One page of a user's expenses, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpensePage {
    /// The expenses.
    pub items: Vec<Expense>,
    /// The cursor for the next page, or `None` if this page is the last.
    pub next: Option<Cursor>,
}

/// Served by `idx_expenses_user_recent (user_id, created_at)`: a range seek on the row value,
/// in index order (the rowid completes the index, so `id` breaks ties without a sort).
pub(crate) const EXPENSES_OF_USER: &str =
    "SELECT id, user_id, category_id, amount_cents, description, expense_date, created_at \
     FROM expenses WHERE user_id = ?1 AND (created_at, id) < (?2, ?3) \
     ORDER BY created_at DESC, id DESC LIMIT ?4";

/// The `expenses_of_user` list query (see [`LIST_QUERIES`](super::LIST_QUERIES)) as
/// [`ExpenseTracker::expenses_of`] runs it: with its limit written into the text. SQLite
/// re-prepares a statement whose LIMIT is a bound parameter on every execution (the planner
/// reads the value), which was over a third of this query's CPU under `strata load`; one
/// statement per page size is kept in the statement cache instead.
pub fn expenses_of_user_sql(limit: i64) -> String {
    EXPENSES_OF_USER.replace("LIMIT ?4", &format!("LIMIT {limit}"))
}

/// Served by `idx_expenses_user_date_range (user_id, expense_date)`.
pub(crate) const EXPENSES_IN_RANGE: &str =
    "SELECT id, user_id, category_id, amount_cents, description, expense_date, created_at \
     FROM expenses WHERE user_id = ?1 AND expense_date BETWEEN ?2 AND ?3 \
     ORDER BY expense_date, id";

impl ExpenseTracker {
    /// Records an expense after checking its date; returns its id. A missing user or category
    /// is [`Error::Constraint`] on `expenses`. With
    /// [`with_category_jobs`](ExpenseTracker::with_category_jobs), an expense without a
    /// category also enqueues its category suggestion, in the same transaction.
    pub fn create_expense(&self, expense: &Expense) -> Result<i64> {
        validate_date(&expense.expense_date)?;
        match &self.jobs {
            Some(queue) if expense.category_id.is_none() && expense.id == 0 => {
                self.create_uncategorized(queue, expense)
            }
            _ => self.expenses.insert(expense),
        }
    }

    /// A user's expenses, newest first, `limit` at a time: pass the previous page's `next` to
    /// continue. Expenses created after the first page are not mixed into later pages.
    pub fn expenses_of(
        &self,
        user_id: i64,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<ExpensePage> {
        if limit == 0 {
            return Err(Error::InvalidValue {
                field: "limit",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let start = after.unwrap_or(Cursor {
            created_at: i64::MAX,
            id: i64::MAX,
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let items = self.expenses.query_entities(
            &expenses_of_user_sql(limit),
            (user_id, start.created_at, start.id),
        )?;
        let next = match items.last() {
            Some(last) if items.len() as i64 == limit => Some(Cursor {
                created_at: last.created_at,
                id: last.id,
            }),
            _ => None,
        };
        Ok(ExpensePage { items, next })
    }

    /// A user's expenses from `from` to `to` (inclusive days, `YYYY-MM-DD`), oldest first.
    pub fn expenses_between(&self, user_id: i64, from: &str, to: &str) -> Result<Vec<Expense>> {
        validate_date(from)?;
        validate_date(to)?;
        self.expenses
            .query_entities(EXPENSES_IN_RANGE, (user_id, from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_prepared_once() -> Result<()> {
        let tracker = ExpenseTracker::open_in_memory()?;
        let reprepared = tracker.db().read(|c| {
            let mut stmt = c.prepare(&expenses_of_user_sql(20))?;
            for user in 1..=5i64 {
                stmt.query([user, i64::MAX - user, i64::MAX])?.next()?;
            }
            Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
        })?;
        assert_eq!(reprepared, 0);
        // The bound form is what this avoids.
        let bound = tracker.db().read(|c| {
            let mut stmt = c.prepare(EXPENSES_OF_USER)?;
            for user in 1..=5i64 {
                stmt.query([user, i64::MAX, i64::MAX, 20 + user])?.next()?;
            }
            Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
        })?;
        assert!(bound > 0, "{bound}");
        Ok(())
    }
}
