//! What an [`Error`] is about: the file it names, its kind (busy, constraint, disk full, ...)
//! and the context added to it on its way up. Kept apart from the enum so that error.rs holds
//! the variants and their messages.

use rusqlite::ErrorCode;

use std::sync::Arc;

use super::{sources, ConstraintKind, Error};

impl Error {
    /// The file the error is about, for the errors that name one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::IsDirectory { path }
            | Error::MissingDirectory { path }
            | Error::NotADatabase { path }
            | Error::Corrupt { path, .. }
            | Error::ReadOnly { path }
            | Error::DiskFull { path }
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
            Error::GroupFailed { source } => source.is_busy(),
            _ => false,
        }
    }

    /// True when the write failed because the disk is full (or the process reached its
    /// file-size limit): this call's own statement, the COMMIT of its group, or a batch chunk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::GroupFailed { source } => source.is_disk_full(),
            Error::Batch { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }

    /// True when a constraint refused the write (this call's own statement, or the COMMIT of
    /// its group, e.g. a deferred foreign key).
    pub fn is_constraint(&self) -> bool {
        self.constraint_kind().is_some()
    }

    /// Which kind of constraint refused the write, if one did.
    pub fn constraint_kind(&self) -> Option<ConstraintKind> {
        match self {
            Error::Constraint { kind, .. } => Some(*kind),
            Error::GroupFailed { source } => source.constraint_kind(),
            Error::Batch { source, .. } => source.constraint_kind(),
            _ => None,
        }
    }

    /// True when a UNIQUE or PRIMARY KEY constraint refused the write (a duplicate key).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self.constraint_kind(),
            Some(ConstraintKind::Unique | ConstraintKind::PrimaryKey)
        )
    }

    /// True when a FOREIGN KEY constraint refused the write.
    pub fn is_foreign_key_violation(&self) -> bool {
        self.constraint_kind() == Some(ConstraintKind::ForeignKey)
    }

    /// True when a NOT NULL constraint refused the write.
    pub fn is_not_null_violation(&self) -> bool {
        self.constraint_kind() == Some(ConstraintKind::NotNull)
    }

    /// True when a CHECK constraint refused the write.
    pub fn is_check_violation(&self) -> bool {
        self.constraint_kind() == Some(ConstraintKind::Check)
    }

    /// Wraps any error of the caller's own code, for returning from a closure.
    pub fn closure(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Closure(err.into())
    }

    /// A copy of this error for another caller: `Error` is not `Clone` (its sources are not).
    /// SQLite's errors are copied whole (code, extended code, message); a group failure shares
    /// its source; other errors are carried over as far as they can be.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Busy { sql, source } => Error::Busy {
                sql: sql.clone(),
                source: source.as_ref().map(sources::copy_sqlite),
            },
            Error::Sqlite { source, sql } => Error::Sqlite {
                source: sources::copy_sqlite(source),
                sql: sql.clone(),
            },
            Error::Constraint {
                table,
                kind,
                message,
                source,
            } => Error::Constraint {
                table: table.clone(),
                kind: *kind,
                message: message.clone(),
                source: sources::copy_sqlite(source),
            },
            Error::Panic { message } => Error::Panic {
                message: message.clone(),
            },
            Error::GroupFailed { source } => Error::GroupFailed {
                source: Arc::clone(source),
            },
            Error::TransactionControl { statement } => Error::TransactionControl {
                statement: statement.clone(),
            },
            Error::HookTampered { hook } => Error::HookTampered { hook },
            Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
            Error::ReadOnly { path } => Error::ReadOnly { path: path.clone() },
            Error::Corrupt { path, detail } => Error::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
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
            Error::Busy { sql: None, source } => Error::Busy {
                sql: Some(statement.to_owned()),
                source,
            },
            other => other,
        }
    }
}
