//! The raw engine: the workload's operations written the way a careful service author would
//! without strata, for `strata load --engine raw|both`.
//!
//! Plain rusqlite on an r2d2 pool of read-write connections with the PRAGMAs strata applies,
//! `prepare_cached` everywhere, reads without an explicit transaction, one `BEGIN IMMEDIATE`
//! transaction per write operation, no caches, and SQLite's own auto-checkpoint inside COMMIT.
//! The SQL is the expense tracker's (the list queries are [`LIST_QUERIES`]), so both engines
//! run the same statements on the same data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, Row};

use super::raw_jobs::Wake;
use strata::domain::{
    description_words, Category, Expense, Keyword, User, LIST_QUERIES, SUGGEST_CATEGORY,
};
use strata::jobs::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};
use strata::{Entity, Error, Result};

/// How long a connection waits for a lock before SQLite reports busy, as strata's default.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The PRAGMAs strata applies to its connections by default (`Config`'s defaults), minus
/// `query_only` (these connections also write) and `recursive_triggers` (no change capture).
const PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
     PRAGMA synchronous = NORMAL;
     PRAGMA cache_size = -8192;
     PRAGMA temp_store = MEMORY;
     PRAGMA mmap_size = 0;
     PRAGMA foreign_keys = ON;
     PRAGMA journal_size_limit = 67108864;
     PRAGMA trusted_schema = OFF;";

/// Statements each connection keeps prepared, as strata's default.
const STATEMENT_CACHE: usize = 128;

const GET_USER: &str = "SELECT id, email, name, created_at FROM users WHERE id = ?1";
const GET_EXPENSE: &str = "SELECT id, user_id, category_id, amount_cents, description, \
     expense_date, created_at FROM expenses WHERE id = ?1";
const INSERT_EXPENSE: &str = "INSERT INTO expenses \
     (user_id, category_id, amount_cents, description, expense_date, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPDATE_EXPENSE: &str = "UPDATE expenses SET user_id = ?2, category_id = ?3, \
     amount_cents = ?4, description = ?5, expense_date = ?6, created_at = ?7 WHERE id = ?1";
const INSERT_CATEGORY: &str =
    "INSERT INTO categories (user_id, name, created_at) VALUES (?1, ?2, ?3)";
/// The job row strata's queue writes for an uncategorized expense: the raw service keeps its
/// background work in a table too, in the same transaction as the expense.
const INSERT_JOB: &str = "INSERT INTO strata_jobs \
     (queue, kind, payload, priority, run_at, enqueued_at, max_attempts) \
     VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)";

/// The raw engine on one database file. Cheap to clone.
#[derive(Clone)]
pub struct RawEngine {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
    counters: Arc<Counters>,
    wake: Arc<Wake>,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for RawEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEngine")
            .field("path", &self.path)
            .field("connections", &self.pool.max_size())
            .finish()
    }
}

/// The connections the raw pool holds by default: as many as strata opens by default (two
/// readers per core and the writer), so that neither engine has more connections.
pub fn default_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(2 * cores + 1).unwrap_or(u32::MAX)
}

impl RawEngine {
    /// Opens a pool of `connections` read-write connections on the existing database at
    /// `path` (WAL mode, the expense tracker's schema).
    pub fn open(path: &Path, connections: u32) -> Result<RawEngine> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_owned(),
            });
        }
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            c.execute_batch(PRAGMAS)?;
            // The file is in WAL mode already (strata set it); a connection asks for it anyway,
            // as a service opening its own database would.
            c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        });
        let pool = r2d2::Pool::builder()
            .max_size(connections.max(1))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(Error::closure)?;
        Ok(RawEngine {
            pool,
            path: path.to_owned(),
            counters: Arc::default(),
            wake: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed so far (one per write operation).
    pub fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Write operations that failed (their transaction rolled back).
    pub fn failed_writes(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// What wakes the engine's job worker.
    pub(super) fn wake(&self) -> &Wake {
        &self.wake
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>> {
        self.pool.get().map_err(Error::closure)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction of its own, committed when it succeeds.
    pub(super) fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn()?;
        let result = conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| f(&conn))
            .and_then(|value| conn.execute_batch("COMMIT").map(|()| value));
        match result {
            Ok(value) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            Err(err) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if !conn.is_autocommit() {
                    // The error is the caller's; a failed rollback leaves nothing to undo.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(err.into())
            }
        }
    }

    /// A user by id.
    pub fn get_user(&self, id: i64) -> Result<Option<User>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(GET_USER)?;
        Ok(stmt.query_row([id], User::from_row).optional()?)
    }

    /// An expense by id.
    pub fn get_expense(&self, id: i64) -> Result<Option<Expense>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(GET_EXPENSE)?;
        Ok(stmt.query_row([id], Expense::from_row).optional()?)
    }

    /// A user's categories by name.
    pub fn categories_of(&self, user_id: i64) -> Result<Vec<Category>> {
        self.list(
            list_query("categories_of_user"),
            [user_id],
            Category::from_row,
        )
    }

    /// The first `limit` of a user's expenses, newest first.
    pub fn expenses_of(&self, user_id: i64, limit: i64) -> Result<Vec<Expense>> {
        // The statement strata's tracker runs: the limit in the text, as SQLite re-prepares a
        // statement with a bound LIMIT on every execution.
        self.list(
            &strata::domain::expenses_of_user_sql(limit),
            (user_id, i64::MAX, i64::MAX),
            Expense::from_row,
        )
    }

    /// A user's expenses from `from` to `to` (inclusive days), oldest first.
    pub fn expenses_between(&self, user_id: i64, from: &str, to: &str) -> Result<Vec<Expense>> {
        strata::domain::validate_date(from)?;
        strata::domain::validate_date(to)?;
        self.list(
            list_query("expenses_in_range"),
            (user_id, from, to),
            Expense::from_row,
        )
    }

    /// What a user spent on a day: total cents and count.
    pub fn daily_metrics(&self, user_id: i64, date: &str) -> Result<(i64, i64)> {
        strata::domain::validate_date(date)?;
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(list_query("daily_metrics"))?;
        Ok(stmt.query_row((user_id, date), |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    /// The category name the keywords suggest for a description (the description's words,
    /// lowercased and once each, looked up in one statement; the heaviest keyword wins).
    pub fn suggest_category(&self, description: &str) -> Result<Option<String>> {
        // Tokenized exactly as the tracker does, so both engines look up the same keywords.
        let words = description_words(description);
        if words.is_empty() {
            return Ok(None);
        }
        let list = serde_json::to_string(&words).map_err(Error::closure)?;
        let found = self.list(list_query("keywords_by_word"), [list], Keyword::from_row)?;
        Ok(found
            .into_iter()
            .max_by_key(|k| k.weight)
            .map(|k| k.category_name))
    }

    /// Inserts an expense; one without a category also gets its suggestion job row, in the
    /// same transaction (as the strata engine's tracker does), and wakes the job worker
    /// ([`RawJobWorker`](super::raw_jobs::RawJobWorker)) once committed.
    pub fn create_expense(&self, e: &Expense) -> Result<i64> {
        strata::domain::validate_date(&e.expense_date)?;
        let id = self.write(|c| {
            c.prepare_cached(INSERT_EXPENSE)?.execute((
                e.user_id,
                e.category_id,
                e.amount_cents,
                &e.description,
                &e.expense_date,
                e.created_at,
            ))?;
            let id = c.last_insert_rowid();
            if e.category_id.is_none() {
                let payload = format!("{{\"expense_id\":{id}}}");
                c.prepare_cached(INSERT_JOB)?.execute((
                    DEFAULT_QUEUE,
                    SUGGEST_CATEGORY,
                    payload,
                    strata::domain::now_millis(),
                    DEFAULT_MAX_ATTEMPTS,
                ))?;
            }
            Ok(id)
        })?;
        if e.category_id.is_none() {
            self.wake.notify();
        }
        Ok(id)
    }

    /// Writes every column of an existing expense.
    pub fn update_expense(&self, e: &Expense) -> Result<()> {
        self.write(|c| {
            c.prepare_cached(UPDATE_EXPENSE)?.execute((
                e.id,
                e.user_id,
                e.category_id,
                e.amount_cents,
                &e.description,
                &e.expense_date,
                e.created_at,
            ))?;
            Ok(())
        })
    }

    /// Inserts a category; returns its id.
    pub fn create_category(&self, category: &Category) -> Result<i64> {
        self.write(|c| {
            c.prepare_cached(INSERT_CATEGORY)?.execute((
                category.user_id,
                &category.name,
                category.created_at,
            ))?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The count `sql` (one `count(*)` with one parameter) returns.
    pub(super) fn count(&self, sql: &str, param: &str) -> Result<u64> {
        let conn = self.conn()?;
        let n: i64 = conn.prepare_cached(sql)?.query_row([param], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn list<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// One of the tracker's list queries by name (the names are the tracker's, fixed at build).
fn list_query(name: &str) -> &'static str {
    LIST_QUERIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sql)| *sql)
        .unwrap_or_else(|| panic!("the expense tracker has no list query `{name}`"))
}

/// Copies the database at `from` to `to` (replacing it) in one consistent snapshot, WAL
/// included, with `VACUUM INTO`: the engines of `--engine both` each get an identical copy.
pub fn copy_database(from: &Path, to: &Path) -> Result<()> {
    super::commands::remove_database(to)?;
    let conn = Connection::open(from)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let target = to.to_str().ok_or_else(|| Error::InvalidValue {
        field: "path",
        value: to.display().to_string(),
        reason: "must be UTF-8 to be copied with VACUUM INTO".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    // VACUUM INTO writes a rollback-journal file; the engines expect WAL.
    let copy = Connection::open(to)?;
    copy.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::seed::{seed, Scale};
    use strata::domain::ExpenseTracker;

    #[test]
    fn raw_reads_what_strata_reads() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let path = dir.path().join("raw.db");
        let tracker = ExpenseTracker::open(&path)?.with_category_jobs()?;
        seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?;
        let copy = dir.path().join("copy.db");
        copy_database(&path, &copy)?;
        let raw = RawEngine::open(&copy, 3)?;
        assert_eq!(
            raw.get_user(7)?.map(|u| u.email),
            tracker.users.get(7)?.map(|u| u.email.clone())
        );
        assert_eq!(raw.categories_of(7)?, *tracker.categories_of(7)?);
        let page = tracker.expenses_of(7, 20, None)?.items;
        assert_eq!(raw.expenses_of(7, 20)?, page);
        let between = tracker.expenses_between(7, "2025-01-01", "2025-12-31")?;
        assert_eq!(
            raw.expenses_between(7, "2025-01-01", "2025-12-31")?,
            between
        );
        let m = tracker.daily_metrics(7, "2025-03-01")?;
        assert_eq!(
            raw.daily_metrics(7, "2025-03-01")?,
            (m.total_cents, m.count)
        );
        let text = "coffee at the station";
        assert_eq!(raw.suggest_category(text)?, tracker.suggest_category(text)?);

        let mut expense = raw
            .get_expense(1)?
            .ok_or_else(|| Error::closure("expense 1 is missing"))?;
        expense.amount_cents = 4242;
        raw.update_expense(&expense)?;
        let id = raw.create_expense(&Expense {
            id: 0,
            category_id: None,
            ..expense.clone()
        })?;
        raw.create_category(&Category {
            id: 0,
            user_id: 7,
            name: "Travel".into(),
            created_at: 1,
        })?;
        assert_eq!((raw.commits(), raw.failed_writes()), (3, 0));
        assert_eq!(raw.get_expense(1)?.map(|e| e.amount_cents), Some(4242));
        assert_eq!(raw.categories_of(7)?.len(), 6);
        let conn = raw.conn()?;
        let job: String = conn.query_row(
            "SELECT payload FROM strata_jobs WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
            [SUGGEST_CATEGORY],
            |r| r.get(0),
        )?;
        assert_eq!(job, format!("{{\"expense_id\":{id}}}"));
        // A failed write rolls back and counts.
        assert!(raw
            .create_category(&Category {
                id: 0,
                user_id: 1_000_000,
                name: "nobody's".into(),
                created_at: 1,
            })
            .is_err());
        assert_eq!(raw.failed_writes(), 1);
        assert!(conn.is_autocommit());
        // The strata copy saw none of it.
        assert_eq!(tracker.categories_of(7)?.len(), 5);
        Ok(())
    }
}
