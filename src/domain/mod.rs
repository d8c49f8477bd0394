//! The expense tracker: the application strata ships to exercise every part (repositories,
//! caches and their rules, list queries served by V2's indexes) and to give the benchmarks, the
//! demo and the load test something real to run.
//!
//! Money is integer cents (`i64`); `created_at` is Unix time in milliseconds; `expense_date` is
//! the calendar day an expense belongs to, as `YYYY-MM-DD`.

mod categories;
mod expenses;
mod keywords;
mod metrics;
mod tracker;
mod users;
mod values;

pub use categories::Category;
pub use expenses::{Cursor, Expense, ExpensePage};
pub use keywords::Keyword;
pub use metrics::DailyMetrics;
pub use tracker::{ExpenseTracker, LIST_QUERIES};
pub use users::User;
pub use values::{now_millis, parse_cents, validate_date};
