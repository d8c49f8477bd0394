//! Seed data for the demo and the load test: users, their categories, shared keywords and
//! expenses, generated deterministically and inserted through `Batch` (`Repository::insert_many`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use rand::RngExt;

use super::zipf::{self, Rng};
use strata::batch::BatchReport;
use strata::domain::{Category, Expense, ExpenseTracker, Keyword, User};
use strata::{Batch, Db, Entity, Error, Repository, Result};

/// Users at scale 1.
pub const USERS_AT_SCALE_1: u64 = 10_000;
/// Expenses at scale 1.
pub const EXPENSES_AT_SCALE_1: u64 = 100_000;
/// Categories each seeded user has.
pub const CATEGORIES_PER_USER: u64 = CATEGORY_NAMES.len() as u64;
/// The largest scale accepted (100 M expenses).
pub const MAX_SCALE: f64 = 1000.0;

/// The category names every seeded user has, in id order.
pub const CATEGORY_NAMES: [&str; 5] = ["Groceries", "Transport", "Dining", "Housing", "Leisure"];

/// Keywords and the category they suggest (index into [`CATEGORY_NAMES`]).
const KEYWORDS: [(&str, usize); 30] = [
    ("market", 0),
    ("bread", 0),
    ("milk", 0),
    ("grocer", 0),
    ("fruit", 0),
    ("vegetables", 0),
    ("bus", 1),
    ("train", 1),
    ("taxi", 1),
    ("fuel", 1),
    ("parking", 1),
    ("metro", 1),
    ("coffee", 2),
    ("lunch", 2),
    ("dinner", 2),
    ("pizza", 2),
    ("restaurant", 2),
    ("sushi", 2),
    ("rent", 3),
    ("electricity", 3),
    ("water", 3),
    ("internet", 3),
    ("repair", 3),
    ("furniture", 3),
    ("cinema", 4),
    ("concert", 4),
    ("book", 4),
    ("museum", 4),
    ("game", 4),
    ("gym", 4),
];

/// Words of descriptions that are not keywords.
const FILLERS: [&str; 20] = [
    "at", "the", "with", "for", "weekly", "monthly", "big", "small", "morning", "evening",
    "downtown", "station", "corner", "friends", "family", "online", "store", "shop", "extra",
    "quick",
];

/// 2025-01-01T00:00:00Z in Unix milliseconds: seeded timestamps start here.
pub const EPOCH_MS: i64 = 1_735_689_600_000;
/// Seeded expenses fall on the days of 2025.
pub const DAYS: u32 = 365;

/// How much data to seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// Users, each with [`CATEGORIES_PER_USER`] categories.
    pub users: u64,
    /// Expenses, spread over the users and the days of 2025.
    pub expenses: u64,
}

impl Scale {
    /// `factor` times the default (10 000 users, 100 000 expenses); at least one user.
    /// The factor must be a number above 0 and at most [`MAX_SCALE`].
    pub fn new(factor: f64) -> Result<Scale> {
        if !factor.is_finite() || factor <= 0.0 || factor > MAX_SCALE {
            return Err(Error::InvalidValue {
                field: "scale",
                value: factor.to_string(),
                reason: format!("must be above 0 and at most {MAX_SCALE}"),
            });
        }
        Ok(Scale {
            users: ((USERS_AT_SCALE_1 as f64 * factor).round() as u64).max(1),
            expenses: (EXPENSES_AT_SCALE_1 as f64 * factor).round() as u64,
        })
    }
}

/// The key ranges of a seeded database, which the workload draws its keys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Users have ids `1..=users`.
    pub users: i64,
    /// Categories have ids `1..=categories`; user `u`'s seeded ones are
    /// `(u - 1) * CATEGORIES_PER_USER + 1 ..= u * CATEGORIES_PER_USER`.
    pub categories: i64,
    /// Expenses have ids `1..=expenses`.
    pub expenses: i64,
}

impl Dataset {
    /// The key ranges found in `db` (the largest id of each table).
    pub fn read(db: &Db) -> Result<Dataset> {
        db.read(|c| {
            let max = |table: &str| -> Result<i64> {
                let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
                Ok(c.query_row(&sql, [], |r| r.get(0))?)
            };
            Ok(Dataset {
                users: max("users")?,
                categories: max("categories")?,
                expenses: max("expenses")?,
            })
        })
    }

    /// True when there is nothing to run a workload on (no users).
    pub fn is_empty(&self) -> bool {
        self.users == 0
    }
}

/// What seeding did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedReport {
    /// Users inserted.
    pub users: u64,
    /// Categories inserted.
    pub categories: u64,
    /// Keywords inserted.
    pub keywords: u64,
    /// Expenses inserted.
    pub expenses: u64,
    /// Batch chunks (transactions) used.
    pub chunks: usize,
    /// Wall time of the whole seeding; serialized as `elapsed_ms`.
    #[serde(rename = "elapsed_ms", with = "super::phases::millis")]
    pub elapsed: Duration,
}

impl SeedReport {
    /// Rows inserted, all tables together.
    pub fn rows(&self) -> u64 {
        self.users + self.categories + self.keywords + self.expenses
    }

    /// Rows inserted per second.
    pub fn rows_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Rows generated and inserted per `insert_many` call: bounds memory at any scale.
const SLICE: u64 = 50_000;

/// Seeds `scale`'s data into the tracker's (empty) tables through `Repository::insert_many`.
/// The data depends only on the scale: two databases seeded at one scale are equal.
/// `progress` is called with the rows inserted so far and the rows to insert in all.
pub fn seed(
    tracker: &ExpenseTracker,
    scale: Scale,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SeedReport> {
    let start = Instant::now();
    let total = scale.users * (1 + CATEGORIES_PER_USER) + KEYWORDS.len() as u64 + scale.expenses;
    let mut done = 0;
    let mut chunks = 0;
    let mut step = |report: BatchReport, table: &str, done: &mut u64| -> Result<()> {
        if let Some(failure) = report.failed.first() {
            return Err(Error::closure(format!(
                "seeding {table}: {} rows failed, the first: {}",
                report.failed.len(),
                failure.reason
            )));
        }
        chunks += report.chunks;
        *done += report.applied as u64;
        progress(*done, total);
        Ok(())
    };

    let keywords: Vec<Keyword> = KEYWORDS
        .iter()
        .enumerate()
        .map(|(i, (word, category))| Keyword {
            id: i as i64 + 1,
            keyword: (*word).to_owned(),
            category_name: CATEGORY_NAMES[*category].to_owned(),
            weight: 1 + (i % 3) as i64,
            created_at: EPOCH_MS,
        })
        .collect();
    step(
        tracker.keywords_by_id.insert_many(&keywords)?,
        "keywords",
        &mut done,
    )?;

    for from in (1..=scale.users).step_by(SLICE as usize) {
        let to = (from + SLICE - 1).min(scale.users);
        let users: Vec<User> = (from..=to).map(user).collect();
        step(
            tracker
                .users
                .insert_many_with(Batch::new().max_batch(SLICE as usize), &users)?,
            "users",
            &mut done,
        )?;
        let categories: Vec<Category> = (from..=to).flat_map(categories_of).collect();
        step(
            tracker
                .categories
                .insert_many_with(Batch::new().max_batch(SLICE as usize), &categories)?,
            "categories",
            &mut done,
        )?;
    }

    let mut rng = zipf::rng(0x5EED);
    for from in (1..=scale.expenses).step_by(SLICE as usize) {
        let to = (from + SLICE - 1).min(scale.expenses);
        let expenses: Vec<Expense> = (from..=to)
            .map(|id| {
                let user_id = rng.random_range(1..=scale.users.max(1) as i64);
                let mut e = new_expense(&mut rng, user_id, user_id * CATEGORIES_PER_USER as i64);
                e.id = id as i64;
                e.created_at = EPOCH_MS + id as i64 * 60_000;
                e
            })
            .collect();
        step(
            tracker
                .expenses
                .insert_many_with(Batch::new().max_batch(SLICE as usize), &expenses)?,
            "expenses",
            &mut done,
        )?;
    }

    Ok(SeedReport {
        users: scale.users,
        categories: scale.users * CATEGORIES_PER_USER,
        keywords: KEYWORDS.len() as u64,
        expenses: scale.expenses,
        chunks,
        elapsed: start.elapsed(),
    })
}

/// True when `db` has no users yet.
pub fn is_empty(db: &Db) -> Result<bool> {
    Ok(Dataset::read(db)?.is_empty())
}

fn user(id: u64) -> User {
    User {
        id: id as i64,
        email: format!("user{id}@example.com"),
        name: format!("User {id}"),
        created_at: EPOCH_MS - (USERS_AT_SCALE_1 as i64 - id as i64) * 1000,
    }
}

fn categories_of(user_id: u64) -> impl Iterator<Item = Category> {
    CATEGORY_NAMES
        .iter()
        .enumerate()
        .map(move |(j, name)| Category {
            id: ((user_id - 1) * CATEGORIES_PER_USER + j as u64 + 1) as i64,
            user_id: user_id as i64,
            name: (*name).to_owned(),
            created_at: EPOCH_MS,
        })
}

/// A new expense of `user_id` (not inserted: `id` 0, `created_at` now), in one of the user's
/// seeded categories when `last_category` (the user's last seeded category id) exists, with a
/// description of keywords and filler words and a day of 2025.
pub fn new_expense(rng: &mut Rng, user_id: i64, last_category: i64) -> Expense {
    let category_id = match rng.random_range(0..20) {
        0 => None,
        _ => Some(last_category - rng.random_range(0..CATEGORIES_PER_USER as i64)),
    };
    Expense {
        id: 0,
        user_id,
        category_id: category_id.filter(|c| *c >= 1),
        amount_cents: rng.random_range(100..=20_000),
        description: description(rng),
        expense_date: date_of_day(rng.random_range(0..DAYS)),
        created_at: strata::domain::now_millis(),
    }
}

/// A description: one keyword and two or three filler words.
pub fn description(rng: &mut Rng) -> String {
    let keyword = KEYWORDS[rng.random_range(0..KEYWORDS.len())].0;
    let mut words = vec![keyword];
    for _ in 0..rng.random_range(2..=3) {
        words.push(FILLERS[rng.random_range(0..FILLERS.len())]);
    }
    let at = rng.random_range(0..words.len());
    words.swap(0, at);
    words.join(" ")
}

/// The day `day` (0-based) of 2025 as `YYYY-MM-DD`; days past the year's end are its last day.
pub fn date_of_day(day: u32) -> String {
    const MONTHS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut rest = day.min(DAYS - 1);
    for (m, len) in MONTHS.iter().enumerate() {
        if rest < *len {
            return format!("2025-{:02}-{:02}", m + 1, rest + 1);
        }
        rest -= len;
    }
    "2025-12-31".to_owned()
}

/// Rows of `E`'s table, for reports.
pub fn count<E: Entity>(repo: &Repository<E>) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM {}", E::TABLE);
    repo.db()
        .read(|c| Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::domain::validate_date;

    #[test]
    fn days_of_2025() -> Result<()> {
        assert_eq!(date_of_day(0), "2025-01-01");
        assert_eq!(date_of_day(31), "2025-02-01");
        assert_eq!(date_of_day(58), "2025-02-28");
        assert_eq!(date_of_day(59), "2025-03-01");
        assert_eq!(date_of_day(364), "2025-12-31");
        assert_eq!(date_of_day(9999), "2025-12-31");
        for day in 0..DAYS {
            validate_date(&date_of_day(day))?;
        }
        Ok(())
    }

    #[test]
    fn scales_are_checked() -> Result<()> {
        assert_eq!(
            Scale::new(1.0)?,
            Scale {
                users: 10_000,
                expenses: 100_000
            }
        );
        assert_eq!(Scale::new(0.00001)?.users, 1);
        for bad in [0.0, -1.0, f64::NAN, 1e9] {
            assert!(Scale::new(bad).is_err(), "{bad} accepted");
        }
        Ok(())
    }

    #[test]
    fn seeding_fills_every_table() -> Result<()> {
        let tracker = ExpenseTracker::open_in_memory()?;
        let db = tracker.db().clone();
        assert!(is_empty(&db)?);
        let mut calls = 0;
        let report = seed(&tracker, Scale::new(0.01)?, &mut |_, _| calls += 1)?;
        assert_eq!((report.users, report.expenses), (100, 1000));
        assert!(calls >= 4);
        assert_eq!(count(&tracker.expenses)?, 1000);
        assert_eq!(count(&tracker.categories)?, 500);
        let data = Dataset::read(&db)?;
        assert_eq!(
            (data.users, data.categories, data.expenses),
            (100, 500, 1000)
        );
        // Categories belong to the users the id formula says.
        let c = tracker.categories.require(5 * CATEGORIES_PER_USER as i64)?;
        assert_eq!(c.user_id, 5);
        // Descriptions carry a keyword the tracker can suggest from.
        assert!(tracker
            .suggest_category(&description(&mut zipf::rng(1)))?
            .is_some());
        Ok(())
    }
}
