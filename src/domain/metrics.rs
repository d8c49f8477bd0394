//! Daily metrics: per user and day, derived from expenses and cached.

use rusqlite::types::Value;

use super::tracker::ExpenseTracker;
use super::values::validate_date;
use crate::cache::{Invalidation, InvalidationRule};
use crate::error::Result;

/// What one user spent on one day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DailyMetrics {
    /// The user.
    pub user_id: i64,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// Sum of the day's expenses, in cents.
    pub total_cents: i64,
    /// Number of the day's expenses.
    pub count: i64,
}

/// Served by `idx_expenses_user_date_range (user_id, expense_date)`.
pub(crate) const DAILY_METRICS: &str = "SELECT COALESCE(SUM(amount_cents), 0), COUNT(*) \
     FROM expenses WHERE user_id = ?1 AND expense_date = ?2";

/// The name of the cache of daily metrics, keyed by `(user_id, expense_date)`.
pub(crate) const CACHE: &str = "daily_metrics";

/// Drops the metrics of every (user, day) an expense change touches: an expense moved from one
/// day (or user) to another drops both.
pub(crate) fn rule() -> InvalidationRule {
    InvalidationRule::new("expenses", &["user_id", "expense_date"], |change, out| {
        let key = |values: Option<&crate::events::Values>| {
            let values = values?;
            match (values.get("user_id")?, values.get("expense_date")?) {
                (Value::Integer(user), Value::Text(date)) => Some((*user, date.clone())),
                _ => None,
            }
        };
        let before = key(change.old.as_ref());
        let after = key(change.new.as_ref());
        let moved = before != after;
        for k in before.into_iter().chain(after.filter(|_| moved)) {
            out.push(Invalidation::Key {
                cache: CACHE.into(),
                key: Box::new(k),
            });
        }
    })
}

impl ExpenseTracker {
    /// What `user_id` spent on `date`: derived from expenses, cached for a day, dropped when an
    /// expense of that user and day is created, changed or deleted.
    pub fn daily_metrics(&self, user_id: i64, date: &str) -> Result<DailyMetrics> {
        validate_date(date)?;
        let key = (user_id, date.to_owned());
        let found = self
            .db
            .cached(&self.daily_metrics, &key, |c, (user_id, date)| {
                let (total_cents, count) = c
                    .prepare_cached(DAILY_METRICS)?
                    .query_row((user_id, date), |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(Some(DailyMetrics {
                    user_id: *user_id,
                    date: date.clone(),
                    total_cents,
                    count,
                }))
            })?;
        let metrics = found.expect("the loader always returns a value");
        Ok(DailyMetrics::clone(&metrics))
    }
}
