//! The one error type of strata.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::ErrorCode;

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

    /// The file is an SQLite database but damaged (truncated, malformed pages).
    #[error("{path}: database is corrupt: {detail}")]
    Corrupt {
        /// The path of the database.
        path: PathBuf,
        /// What was found wrong.
        detail: String,
    },

    /// The database or the directory beside it cannot be written (strata needs the `-wal` and
    /// `-shm` files and a lock file next to the database).
    #[error("{path}: location is read-only")]
    ReadOnly {
        /// The path of the database.
        path: PathBuf,
    },

    /// The database stayed locked by another connection for longer than `busy_timeout`.
    #[error("database is locked (waited beyond busy_timeout){}", sql_suffix(.sql))]
    Busy {
        /// The statement that could not get its lock, when known.
        sql: Option<String>,
    },

    /// No reader connection became free within the pool's `connection_timeout`.
    #[error("no reader connection free within {waited:?}")]
    PoolTimeout {
        /// How long the caller waited.
        waited: Duration,
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

    /// A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) refused a write.
    #[error("constraint violation{}: {message}", table_suffix(.table))]
    Constraint {
        /// The table involved, when SQLite names it.
        table: Option<String>,
        /// SQLite's message.
        message: String,
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
    Subscription(#[from] crate::events::RecvError),
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

impl Error {
    /// The file the error is about, for the errors that name one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::IsDirectory { path }
            | Error::MissingDirectory { path }
            | Error::NotADatabase { path }
            | Error::Corrupt { path, .. }
            | Error::ReadOnly { path }
            | Error::Pragma { path, .. }
            | Error::Io { path, .. }
            | Error::MissingFile { path }
            | Error::InvalidFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The error as one line `problem: path` (the path last, where the error names one), for
    /// command-line output.
    pub fn one_line(&self) -> String {
        let text = self.to_string();
        let line = match self.path() {
            Some(path) => {
                let prefix = format!("{}: ", path.display());
                match text.strip_prefix(&prefix) {
                    Some(problem) => format!("{problem}: {}", path.display()),
                    None => text,
                }
            }
            None => text,
        };
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// True when the error means "the database was locked": SQLITE_BUSY or SQLITE_LOCKED.
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Busy { .. } => true,
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            Error::Batch { source, .. } => source.is_busy(),
            _ => false,
        }
    }

    /// True when a constraint refused the write.
    pub fn is_constraint(&self) -> bool {
        matches!(self, Error::Constraint { .. })
    }

    /// Wraps any error of the caller's own code, for returning from a closure.
    pub fn closure(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Closure(err.into())
    }

    /// A copy of this error for the other callers of a failed group commit: `Error` is not
    /// `Clone` (its sources are not), so sources are carried over as far as they can be.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Busy { sql } => Error::Busy { sql: sql.clone() },
            Error::Sqlite { source, sql } => Error::Sqlite {
                source: match source {
                    rusqlite::Error::SqliteFailure(code, msg) => {
                        rusqlite::Error::SqliteFailure(*code, msg.clone())
                    }
                    other => rusqlite::Error::UserFunctionError(other.to_string().into()),
                },
                sql: sql.clone(),
            },
            Error::Constraint { table, message } => Error::Constraint {
                table: table.clone(),
                message: message.clone(),
            },
            Error::Panic { message } => Error::Panic {
                message: message.clone(),
            },
            other => Error::Closure(other.to_string().into()),
        }
    }

    /// Attaches the SQL that failed, for errors that come straight from SQLite.
    pub fn with_sql(self, statement: &str) -> Self {
        match self {
            Error::Sqlite { source, sql: None } => Error::Sqlite {
                source,
                sql: Some(statement.to_owned()),
            },
            Error::Busy { sql: None } => Error::Busy {
                sql: Some(statement.to_owned()),
            },
            other => other,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(source: rusqlite::Error) -> Self {
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy { sql: None },
            Some(ErrorCode::ConstraintViolation) => {
                let message = source.to_string();
                let names_columns = matches!(
                    source,
                    rusqlite::Error::SqliteFailure(e, _) if matches!(
                        e.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                            | rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL
                    )
                );
                Error::Constraint {
                    table: names_columns.then(|| constraint_table(&message)).flatten(),
                    message,
                }
            }
            _ => Error::Sqlite { source, sql: None },
        }
    }
}

/// SQLite names the table in UNIQUE, PRIMARY KEY and NOT NULL messages ("UNIQUE constraint
/// failed: users.email"). Only those: a CHECK message names the constraint or its expression
/// ("CHECK constraint failed: amount > 0.5") and a trigger's RAISE any text, where a dot is not a
/// table's; the caller checks the extended code before asking.
fn constraint_table(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("failed: ")?;
    let (table, _) = rest.split_once('.')?;
    Some(table.trim().to_owned())
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Self {
        // r2d2 reports only a timeout from `get`; the wait is the pool's connection_timeout,
        // which the caller knows better than this message does.
        let _ = err;
        Error::PoolTimeout {
            waited: Duration::ZERO,
        }
    }
}

impl From<refinery::Error> for Error {
    fn from(err: refinery::Error) -> Self {
        use refinery::error::Kind;
        // A migration that could not get the write lock within busy_timeout is a locked
        // database, like any other write that waited too long: callers tell it by `is_busy`.
        if caused_by_busy(&err) {
            return Error::Busy { sql: None };
        }
        let applied = err
            .report()
            .map(|r| r.applied_migrations().iter().map(|m| m.version()).collect())
            .unwrap_or_default();
        let version = match err.kind() {
            Kind::DivergentVersion(applied, _) => Some(applied.version()),
            Kind::MissingVersion(m) | Kind::RepeatedVersion(m) => Some(m.version()),
            _ => None,
        };
        Error::Migration {
            version,
            message: err.to_string(),
            applied,
        }
    }
}

/// True if SQLite's BUSY or LOCKED is anywhere in the error's source chain.
fn caused_by_busy(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
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
    fn constraint_names_its_table() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t(a UNIQUE); INSERT INTO t VALUES (1);")?;
        let err: Error = conn
            .execute("INSERT INTO t VALUES (1)", [])
            .unwrap_err()
            .into();
        match err {
            Error::Constraint { table, .. } => assert_eq!(table.as_deref(), Some("t")),
            other => panic!("expected Constraint, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn check_and_trigger_messages_name_no_table() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE p(a REAL CHECK (a > 0.5)); CREATE TABLE g(x);
             CREATE TRIGGER t BEFORE INSERT ON g BEGIN SELECT RAISE(ABORT, 'no: g.x'); END;",
        )?;
        for sql in ["INSERT INTO p VALUES (0.1)", "INSERT INTO g VALUES (1)"] {
            let err: Error = conn.execute(sql, []).unwrap_err().into();
            assert!(
                matches!(err, Error::Constraint { table: None, .. }),
                "{sql}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn busy_is_busy() {
        assert!(Error::Busy { sql: None }.is_busy());
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
        let err = Error::Busy { sql: None }.with_sql("BEGIN IMMEDIATE");
        assert!(err.to_string().contains("BEGIN IMMEDIATE"));
    }
}
