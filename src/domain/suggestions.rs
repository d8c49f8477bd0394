//! Category suggestions in the background: an expense created without a category enqueues a
//! `suggest_category` job in the same transaction, and the job's handler assigns the category
//! the keywords suggest (the slow part of a request, moved off it).

use serde::{Deserialize, Serialize};

use super::expenses::Expense;
use super::tracker::ExpenseTracker;
use super::values::now_millis;
use crate::error::Result;
use crate::jobs::{Job, JobContext, WorkerPoolBuilder};

/// The kind of the job that assigns a suggested category to an expense.
pub const SUGGEST_CATEGORY: &str = "suggest_category";

/// The payload of a [`SUGGEST_CATEGORY`] job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuggestCategory {
    /// The expense to categorize.
    pub expense_id: i64,
}

const INSERT_EXPENSE: &str = "INSERT INTO expenses \
     (user_id, category_id, amount_cents, description, expense_date, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

impl ExpenseTracker {
    /// This tracker with background category suggestions: from now on,
    /// [`create_expense`](ExpenseTracker::create_expense) of an expense without a category
    /// also enqueues a [`SUGGEST_CATEGORY`] job, in the same transaction. Run the jobs with
    /// a pool from [`category_workers`](ExpenseTracker::category_workers).
    pub fn with_category_jobs(mut self) -> Result<Self> {
        self.jobs = Some(self.db.jobs()?);
        Ok(self)
    }

    /// Inserts `expense` and, in the same transaction, enqueues its category suggestion.
    pub(crate) fn create_uncategorized(
        &self,
        queue: &crate::jobs::Queue,
        expense: &Expense,
    ) -> Result<i64> {
        self.db.write(|c| {
            c.prepare_cached(INSERT_EXPENSE)?.execute((
                expense.user_id,
                expense.category_id,
                expense.amount_cents,
                &expense.description,
                &expense.expense_date,
                expense.created_at,
            ))?;
            let id = c.last_insert_rowid();
            let payload = SuggestCategory { expense_id: id };
            queue.enqueue_in(c, Job::new(SUGGEST_CATEGORY, &payload)?)?;
            Ok(id)
        })
    }

    /// A worker pool builder with the [`SUGGEST_CATEGORY`] handler registered (set threads
    /// and the rest, then [`start`](WorkerPoolBuilder::start)). The handler gives the expense
    /// the user's category named as the keywords suggest, creating it if the user has none by
    /// that name, and completes the job in the same transaction. An expense that got a
    /// category meanwhile, was deleted, or matches no keyword is left as it is.
    pub fn category_workers(&self) -> Result<WorkerPoolBuilder> {
        let queue = match &self.jobs {
            Some(queue) => queue.clone(),
            None => self.db.jobs()?,
        };
        let tracker = self.clone();
        Ok(queue
            .workers()
            .handler(SUGGEST_CATEGORY, move |ctx, job: SuggestCategory| {
                tracker.assign_suggestion(ctx, job.expense_id)
            }))
    }

    fn assign_suggestion(&self, ctx: &JobContext, expense_id: i64) -> Result<()> {
        let suggestion = match self.expenses.get(expense_id)? {
            Some(e) if e.category_id.is_none() => self
                .suggest_category(&e.description)?
                .map(|name| (e.user_id, name)),
            _ => None,
        };
        self.db.write(|c| {
            if let Some((user_id, name)) = &suggestion {
                let existing: Option<i64> = c
                    .prepare_cached(
                        "SELECT id FROM categories WHERE user_id = ?1 AND name = ?2 LIMIT 1",
                    )?
                    .query_row((user_id, name), |r| r.get(0))
                    .ok();
                let category = match existing {
                    Some(id) => id,
                    None => {
                        c.prepare_cached(
                            "INSERT INTO categories (user_id, name, created_at) VALUES (?1, ?2, ?3)",
                        )?
                        .execute((user_id, name, now_millis()))?;
                        c.last_insert_rowid()
                    }
                };
                c.prepare_cached(
                    "UPDATE expenses SET category_id = ?2 WHERE id = ?1 AND category_id IS NULL",
                )?
                .execute((expense_id, category))?;
            }
            ctx.complete_in(c)
        })
    }
}
