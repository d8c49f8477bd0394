//! The one error type of strata.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod constraint;
mod inspect;
mod located;
mod recv;
mod sources;

pub use constraint::ConstraintKind;
pub use recv::RecvError;
pub(crate) use sources::system_errno;

/// A `Result` whose error defaults to strata's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a service and its database.
///
/// Variants carry the context needed to act on them: the path of the database, the SQL that
/// failed, the migration version. New variants may be added in minor releases.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database path names a directory.
    #[error("{path}: is a directory, not a database file")]
    IsDirectory {
        /// The path that was given.
        path: PathBuf,
    },

    /// The directory that should hold the database does not exist.
    #[error("{path}: parent directory does not exist")]
    MissingDirectory {
        /// The path that was given.
        path: PathBuf,
    },

    /// The file exists but is not an SQLite database.
    #[error("{path}: file is not an SQLite database")]
    NotADatabase {
        /// The path that was given.
        path: PathBuf,
    },

    /// The file is an SQLite database but damaged (truncated, malformed pages), found at open
    /// or by a later read or write that met a damaged page.
    #[error("{path}: database is corrupt: {detail}")]
    Corrupt {
        /// The path of the database.
        path: PathBuf,
        /// What was found wrong.
        detail: String,
    },

    /// The database or the directory beside it cannot be written (strata needs the `-wal` and
    /// `-shm` files and a lock file next to the database); also a later write that the
    /// operating system refused (`EPERM`, `EACCES`, `EROFS`: files made immutable, a file
    /// system remounted read-only).
    #[error("{path}: location is read-only")]
    ReadOnly {
        /// The path of the database.
        path: PathBuf,
    },

    /// The database is a LiteFS replica (a `.primary` file beside it names the primary):
    /// writes go to the primary; reads and caches work here. Refused before anything runs.
    #[error("{path}: a read replica; writes go to the primary {primary}")]
    Replica {
        /// The path of the database.
        path: PathBuf,
        /// The primary, as the `.primary` file names it.
        primary: String,
    },

    /// The disk is full, or the process reached its file-size limit (`RLIMIT_FSIZE`): SQLite
    /// could not grow the database or its WAL. The write was rolled back (if it was a group's
    /// COMMIT, every call of the group gets this as the shared cause); reads go on, and writes
    /// succeed again once space is freed, without reopening.
    #[error("{path}: disk full (or file size limit reached)")]
    DiskFull {
        /// The path of the database.
        path: PathBuf,
    },

    /// The database stayed locked by another connection for longer than `busy_timeout`.
    #[error("database is locked (waited beyond busy_timeout){}", sql_suffix(.sql))]
    Busy {
        /// The statement that could not get its lock, when known.
        sql: Option<String>,
        /// SQLite's error (SQLITE_BUSY or SQLITE_LOCKED, with its extended code), when the lock
        /// was reported by SQLite rather than inferred from a wrapping error.
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// No reader connection became free within the pool's `connection_timeout`.
    #[error("no reader connection free within {waited:?}")]
    PoolTimeout {
        /// How long the caller waited, measured around the checkout.
        waited: Duration,
        /// The pool's error: a plain timeout, or the last failure to open a reader.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The configuration is invalid; nothing was opened.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting at fault.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// A PRAGMA read back a different value than the one applied.
    #[error("{path}: PRAGMA {name} is {actual}, expected {expected}")]
    Pragma {
        /// The path of the database.
        path: PathBuf,
        /// The pragma's name.
        name: &'static str,
        /// The value strata applied.
        expected: String,
        /// The value SQLite reported.
        actual: String,
    },

    /// A migration failed, diverged from the applied history, or is missing from the code.
    #[error("migration{}: {message}", version_suffix(*.version))]
    Migration {
        /// The version of the offending migration, when known.
        version: Option<i32>,
        /// What went wrong.
        message: String,
        /// Versions that were applied before the failure (progress made).
        applied: Vec<i32>,
    },

    /// A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) refused a write. `kind` tells
    /// which, from SQLite's extended result code.
    #[error("constraint violation{}: {message}", table_suffix(.table))]
    Constraint {
        /// The table involved, when SQLite names it.
        table: Option<String>,
        /// Which kind of constraint refused the write.
        kind: ConstraintKind,
        /// SQLite's message.
        message: String,
        /// SQLite's error, with its extended result code.
        #[source]
        source: rusqlite::Error,
    },

    /// A value handed to strata is out of its domain (an amount beyond i64 cents, a day that
    /// does not exist).
    #[error("invalid {field} `{value}`: {reason}")]
    InvalidValue {
        /// What the value is for.
        field: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// A row that was asked for by key does not exist.
    #[error("{table}: no row with key {key}")]
    NotFound {
        /// The table looked in.
        table: &'static str,
        /// The key, formatted.
        key: String,
    },

    /// `write` was called from inside a write closure, on the thread that holds the writer;
    /// use the connection the closure received instead.
    #[error("db.write called inside a write closure: use the closure's connection")]
    NestedWrite,

    /// The group transaction this `write` ran in failed as a whole, after this call's own
    /// closure had succeeded: COMMIT failed, SQLite rolled the transaction
    /// back, or another closure of the group ended it. Nothing of the transaction committed,
    /// unless `source` is [`Error::HookTampered`]: a closure that removed strata's hooks may
    /// have committed past them, and the outcome is unknown. Every call of the group holds the
    /// same shared `source`.
    #[error("the group transaction of this write failed: {source}")]
    GroupFailed {
        /// What made the transaction fail, shared by every call of the group.
        #[source]
        source: Arc<Error>,
    },

    /// A write closure ran a statement that would end or reshape strata's transaction:
    /// BEGIN, COMMIT, END, ROLLBACK, or SAVEPOINT, RELEASE or ROLLBACK TO of strata's own
    /// savepoint. SQLite was not let to run it, the closure's changes were rolled back and the
    /// other calls of its group went on. A closure may use savepoints of its own names.
    #[error("write closure ran `{statement}`: the transaction belongs to strata (use a savepoint of your own)")]
    TransactionControl {
        /// The refused operation, e.g. `COMMIT` or `RELEASE strata_write`.
        statement: String,
    },

    /// A write closure removed or replaced a hook strata keeps on the writer connection (the
    /// authorizer, the update hook, the commit hook or the change capture function), which
    /// would silently stop change capture. strata put its own back; the closure's changes were
    /// rolled back.
    #[error("write closure replaced strata's {hook} on the writer connection")]
    HookTampered {
        /// The hook that was replaced.
        hook: &'static str,
    },

    /// A closure passed to `read` or `write` panicked; its work was rolled back.
    #[error("closure panicked: {message}")]
    Panic {
        /// The panic payload, when it was a string.
        message: String,
    },

    /// A cache load this call was waiting for (another caller's, for the same key) failed or
    /// panicked; that caller got the original error. Nothing was cached, so retrying loads anew.
    #[error("cache {cache}: the shared load failed: {message}")]
    LoadFailed {
        /// The cache's name.
        cache: String,
        /// The failed load's error, as text.
        message: String,
    },

    /// An error raised by the caller's own closure code.
    #[error("{0}")]
    Closure(Box<dyn std::error::Error + Send + Sync + 'static>),

    /// Any other SQLite error, with the SQL when known.
    #[error("{source}{}", sql_suffix(.sql))]
    Sqlite {
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
        /// The statement involved, when known.
        sql: Option<String>,
    },

    /// SQL handed to strata (to explain or advise) is not one valid statement.
    #[error("invalid SQL `{sql}`: {reason}")]
    InvalidSql {
        /// The statement as given.
        sql: String,
        /// SQLite's (or the parser's) reason.
        reason: String,
    },

    /// A [`Batch`](crate::Batch) stopped part-way: a chunk could not be applied (the database
    /// stayed locked through every retry, or SQLite rolled the transaction back). The report
    /// tells what was applied before; `is_busy` tells a lock from other causes.
    #[error("batch stopped after {} applied operations: {source}", .report.applied)]
    Batch {
        /// Why the chunk could not be applied.
        source: Box<Error>,
        /// What the batch did before it stopped (progress made, operations skipped).
        report: Box<crate::batch::BatchReport>,
    },

    /// An I/O error on a file strata manages (lock file, database header).
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A job's completion or heartbeat found its lease gone: the lease expired and the job
    /// was put back (or claimed by another worker), completed, or moved to the dead letters.
    /// Inside a transactional completion this error rolls back the handler's changes, so the
    /// run that holds the lease is the only one whose effects commit.
    #[error("job {id}: the lease is no longer held by this run")]
    JobLeaseLost {
        /// The job's id.
        id: i64,
    },

    /// A file that was named as input (a database to inspect, a baseline, a workload) does not
    /// exist; nothing was created in its place.
    #[error("{path}: no such file")]
    MissingFile {
        /// The path that was given.
        path: PathBuf,
    },

    /// A file that was named as input exists but its content is not what was expected (a
    /// baseline that is not a `strata load --json` report, a workload with no statements).
    #[error("{path}: {reason}")]
    InvalidFile {
        /// The path that was given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A [`Subscription`](crate::events::Subscription) returned no ChangeSet: it lagged, nothing was
    /// waiting, the wait timed out, or the database was closed.
    #[error(transparent)]
    Subscription(#[from] RecvError),

    /// An `AsyncDb` call waited longer than `queue_wait` for a place in a
    /// full queue (its reader or writer threads are all busy and the queue holds as many
    /// calls as it may); nothing ran.
    #[error("the {queue} queue stayed full for {waited:?}")]
    QueueFull {
        /// Which queue: `"read"` or `"write"`.
        queue: &'static str,
        /// How long the call waited for a place.
        waited: Duration,
    },

    /// The `AsyncDb` was closed (or its threads are gone): the call was not
    /// run.
    #[error("the AsyncDb is closed")]
    Closed,
}

fn sql_suffix(sql: &Option<String>) -> String {
    sql.as_deref()
        .map(|s| format!(" in `{s}`"))
        .unwrap_or_default()
}

fn version_suffix(version: Option<i32>) -> String {
    version.map(|v| format!(" V{v}")).unwrap_or_default()
}

fn table_suffix(table: &Option<String>) -> String {
    table
        .as_deref()
        .map(|t| format!(" on {t}"))
        .unwrap_or_default()
}

/// Turns a caught panic payload into [`Error::Panic`].
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    Error::Panic { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_busy() {
        assert!(Error::Busy {
            sql: None,
            source: None
        }
        .is_busy());
        assert!(!Error::Panic {
            message: "x".into()
        }
        .is_busy());
    }

    #[test]
    fn one_line_puts_the_path_last() -> Result<()> {
        let err = Error::MissingDirectory {
            path: PathBuf::from("/no/such/x.db"),
        };
        assert_eq!(
            err.one_line(),
            "parent directory does not exist: /no/such/x.db"
        );
        let err = Error::InvalidFile {
            path: PathBuf::from("b.json"),
            reason: "not JSON:\n line 1".into(),
        };
        assert_eq!(err.one_line(), "not JSON: line 1: b.json");
        Ok(())
    }

    #[test]
    fn with_sql_attaches_statement() {
        let err = Error::Busy {
            sql: None,
            source: None,
        }
        .with_sql("BEGIN IMMEDIATE");
        assert!(err.to_string().contains("BEGIN IMMEDIATE"));
    }
}
