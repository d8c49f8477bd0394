//! `ExpenseTracker`: the domain's repositories and caches on one `Db`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::categories::Category;
use super::expenses::Expense;
use super::keywords::Keyword;
use super::metrics::{self, DailyMetrics};
use super::users::User;
use crate::cache::{EntityCache, InvalidationRule};
use crate::config::Config;
use crate::db::Db;
use crate::error::Result;
use crate::repo::Repository;

/// The domain's list queries by name, as they run: for plan checks, the advisor's workload and
/// the load test.
pub const LIST_QUERIES: &[(&str, &str)] = &[
    ("expenses_of_user", super::expenses::EXPENSES_OF_USER),
    ("expenses_in_range", super::expenses::EXPENSES_IN_RANGE),
    ("categories_of_user", super::categories::CATEGORIES_OF_USER),
    ("keywords_by_word", super::keywords::KEYWORDS_BY_WORD),
    ("daily_metrics", super::metrics::DAILY_METRICS),
];

/// The expense tracker on one database: a repository per table plus its read-through caches
/// (`users`, `categories`, `user_categories`, `keywords`, `daily_metrics`), each with the
/// rules that drop its entries. Cheap to clone. With the `redis` feature and a
/// `Config::redis`, `daily_metrics` also goes through the shared tier.
#[derive(Debug, Clone)]
pub struct ExpenseTracker {
    pub(crate) db: Db,
    /// Users, cached by id (`users`: 1000 entries, 1 h).
    pub users: Repository<User>,
    /// Categories, cached by id (`categories`: 5000 entries, 30 min).
    pub categories: Repository<Category>,
    /// Expenses, cached by id (`expenses`: 10000 entries, 10 min).
    pub expenses: Repository<Expense>,
    /// Keywords, cached by id (`keywords_by_id`).
    pub keywords_by_id: Repository<Keyword>,
    pub(crate) user_categories: Arc<EntityCache<i64, Vec<Category>>>,
    pub(crate) keywords: Arc<EntityCache<String, Keyword>>,
    pub(crate) daily_metrics: Arc<EntityCache<(i64, String), DailyMetrics>>,
    /// Set by [`with_category_jobs`](ExpenseTracker::with_category_jobs).
    pub(crate) jobs: Option<crate::jobs::Queue>,
}

impl ExpenseTracker {
    /// Opens (creating if missing) the database file at `path` with every default, applies
    /// the tracker's [`migrations`](super::migrations) and sets the tracker up on it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::with_config(Config::new().path(path))
    }

    /// A tracker on a fresh private in-memory database, migrated.
    pub fn open_in_memory() -> Result<Self> {
        Self::with_config(Config::new().in_memory())
    }

    /// Opens the database `config` describes with the tracker's
    /// [`migrations`](super::migrations) (in place of any runner the config had) and sets the
    /// tracker up on it; [`db`](ExpenseTracker::db) is the handle.
    pub fn with_config(config: Config) -> Result<Self> {
        Self::new(&config.migrations(super::migrations()).build()?)
    }

    /// The tracker on `db`, whose schema must be the tracker's
    /// [`migrations`](super::migrations) (see [`with_config`](ExpenseTracker::with_config)).
    /// Registers the caches and rules once per `Db`; a second tracker shares them.
    pub fn new(db: &Db) -> Result<Self> {
        let caches = db.caches();
        let user_categories = match caches.get("user_categories") {
            Some(cache) => cache,
            None => {
                let cache = db.register_cache(
                    EntityCache::builder("user_categories")
                        .capacity(1000)
                        .ttl(Duration::from_secs(15 * 60)),
                )?;
                db.add_rule(InvalidationRule::column_key(
                    "categories",
                    "user_id",
                    "user_categories",
                ))?;
                cache
            }
        };
        let keywords = match caches.get("keywords") {
            Some(cache) => cache,
            None => {
                let cache = db.register_cache(
                    EntityCache::builder("keywords")
                        .capacity(10_000)
                        .ttl(Duration::from_secs(3600)),
                )?;
                db.add_rule(InvalidationRule::whole_cache("keywords", "keywords"))?;
                cache
            }
        };
        let daily_metrics = match caches.get(metrics::CACHE) {
            Some(cache) => cache,
            None => {
                let spec = EntityCache::builder(metrics::CACHE)
                    .capacity(365)
                    .ttl(Duration::from_secs(24 * 3600));
                // An aggregation: worth a shared tier's round trip when the `Db` has one.
                #[cfg(feature = "redis")]
                let spec = spec.shared_tier();
                let cache = db.register_cache(spec)?;
                db.add_rule(metrics::rule())?;
                cache
            }
        };
        Ok(ExpenseTracker {
            db: db.clone(),
            users: Repository::new(db)?,
            categories: Repository::new(db)?,
            expenses: Repository::new(db)?,
            keywords_by_id: Repository::new(db)?,
            user_categories,
            keywords,
            daily_metrics,
            jobs: None,
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}
