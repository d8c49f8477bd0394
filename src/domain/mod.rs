//! The expense tracker: the application strata ships to exercise every part (repositories,
//! caches and their rules, list queries served by V2's indexes) and to give the benchmarks, the
//! demo and the load test something real to run.
//!
//! Money is integer cents (`i64`); `created_at` is Unix time in milliseconds; `expense_date` is
//! the calendar day an expense belongs to, as `YYYY-MM-DD`.
//!
//! The tracker brings its own schema: open it with [`ExpenseTracker::open`] (or
//! [`ExpenseTracker::with_config`]), which applies [`migrations`]; a plain [`Db`](crate::Db)
//! applies none.
//!
//! ```
//! # fn main() -> strata::Result<()> {
//! use strata::domain::{ExpenseTracker, User};
//!
//! let tracker = ExpenseTracker::open_in_memory()?;
//! let id = tracker.users.insert(&User {
//!     id: 0,
//!     email: "ada@example.com".into(),
//!     name: "Ada".into(),
//!     created_at: strata::domain::now_millis(),
//! })?;
//! assert_eq!(tracker.users.get(id)?.map(|u| u.name.clone()), Some("Ada".into()));
//! # Ok(()) }
//! ```

mod categories;
mod expenses;
mod keywords;
mod metrics;
mod schema;
mod suggestions;
mod tracker;
mod users;
mod values;

pub use categories::Category;
pub use expenses::{expenses_of_user_sql, Cursor, Expense, ExpensePage};
pub use keywords::{description_words, Keyword};
pub use metrics::DailyMetrics;
pub use schema::migrations;
pub use suggestions::{SuggestCategory, SUGGEST_CATEGORY};
pub use tracker::{ExpenseTracker, LIST_QUERIES};
pub use users::User;
pub use values::{now_millis, parse_cents, validate_date};
