//! `AsyncTracker`: the expense tracker's operations for async callers.

use std::sync::Arc;

use super::{AsyncDb, AsyncRepository};
use crate::domain::{Category, Cursor, DailyMetrics, Expense, ExpensePage, ExpenseTracker, User};
use crate::error::Result;

/// The [`ExpenseTracker`] for async callers: its repositories as [`AsyncRepository`]s (cache
/// hits without a hop) and its operations run on the `AsyncDb`'s reader threads (writes go on
/// through the group-commit writer from there). Cheap to clone.
#[derive(Debug, Clone)]
pub struct AsyncTracker {
    tracker: ExpenseTracker,
    adb: AsyncDb,
    /// Users, cached by id.
    pub users: AsyncRepository<User>,
    /// Categories, cached by id.
    pub categories: AsyncRepository<Category>,
    /// Expenses, cached by id.
    pub expenses: AsyncRepository<Expense>,
}

impl AsyncTracker {
    /// The async face of `tracker`, running on `adb`'s threads (both on the same `Db`).
    pub fn new(adb: AsyncDb, tracker: ExpenseTracker) -> AsyncTracker {
        AsyncTracker {
            users: AsyncRepository::new(adb.clone(), tracker.users.clone()),
            categories: AsyncRepository::new(adb.clone(), tracker.categories.clone()),
            expenses: AsyncRepository::new(adb.clone(), tracker.expenses.clone()),
            tracker,
            adb,
        }
    }

    /// The synchronous tracker.
    pub fn sync(&self) -> &ExpenseTracker {
        &self.tracker
    }

    /// The `AsyncDb` it runs on.
    pub fn adb(&self) -> &AsyncDb {
        &self.adb
    }

    /// [`ExpenseTracker::create_expense`].
    pub async fn create_expense(&self, expense: Expense) -> Result<i64> {
        let tracker = self.tracker.clone();
        self.adb
            .run(move |_| tracker.create_expense(&expense))
            .await
    }

    /// [`ExpenseTracker::expenses_of`]: a user's expenses, newest first, page by page.
    pub async fn expenses_of(
        &self,
        user_id: i64,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<ExpensePage> {
        let tracker = self.tracker.clone();
        self.adb
            .run(move |_| tracker.expenses_of(user_id, limit, after))
            .await
    }

    /// [`ExpenseTracker::expenses_between`].
    pub async fn expenses_between(
        &self,
        user_id: i64,
        from: String,
        to: String,
    ) -> Result<Vec<Expense>> {
        let tracker = self.tracker.clone();
        self.adb
            .run(move |_| tracker.expenses_between(user_id, &from, &to))
            .await
    }

    /// [`ExpenseTracker::daily_metrics`].
    pub async fn daily_metrics(&self, user_id: i64, date: String) -> Result<DailyMetrics> {
        let tracker = self.tracker.clone();
        self.adb
            .run(move |_| tracker.daily_metrics(user_id, &date))
            .await
    }

    /// [`ExpenseTracker::categories_of`].
    pub async fn categories_of(&self, user_id: i64) -> Result<Arc<Vec<Category>>> {
        let tracker = self.tracker.clone();
        self.adb.run(move |_| tracker.categories_of(user_id)).await
    }

    /// [`ExpenseTracker::suggest_category`].
    pub async fn suggest_category(&self, description: String) -> Result<Option<String>> {
        let tracker = self.tracker.clone();
        self.adb
            .run(move |_| tracker.suggest_category(&description))
            .await
    }
}
