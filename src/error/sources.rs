//! How the errors of the libraries under strata (SQLite through rusqlite, refinery) become
//! strata's, keeping the original as the source.

use rusqlite::ErrorCode;

use super::{constraint, ConstraintKind, Error};

impl From<rusqlite::Error> for Error {
    fn from(source: rusqlite::Error) -> Self {
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
                sql: None,
                source: Some(source),
            },
            Some(ErrorCode::ConstraintViolation) => {
                let message = source.to_string();
                let kind = match &source {
                    rusqlite::Error::SqliteFailure(e, _) => {
                        ConstraintKind::from_extended_code(e.extended_code)
                    }
                    _ => ConstraintKind::Other(rusqlite::ffi::SQLITE_CONSTRAINT),
                };
                Error::Constraint {
                    table: kind
                        .names_table()
                        .then(|| constraint::table_of(&message))
                        .flatten(),
                    kind,
                    message,
                    source,
                }
            }
            _ => Error::Sqlite { source, sql: None },
        }
    }
}

/// A copy of a rusqlite error: exact for SQLite's own errors (code, extended code, message),
/// which are all a group or a batch shares; others keep their text.
pub(super) fn copy_sqlite(err: &rusqlite::Error) -> rusqlite::Error {
    match err {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::UserFunctionError(other.to_string().into()),
    }
}

impl From<refinery::Error> for Error {
    fn from(err: refinery::Error) -> Self {
        use refinery::error::Kind;
        // A migration that could not get the write lock within busy_timeout is a locked
        // database, like any other write that waited too long: callers tell it by `is_busy`.
        if let Some(source) = busy_cause(&err) {
            return Error::Busy {
                sql: None,
                source: Some(copy_sqlite(source)),
            };
        }
        // A full disk is the disk's fault, not the migration's: the open's caller locates it
        // (`Error::locate`) as `DiskFull`, which a service handles like any other full disk.
        if let Some(source) = sqlite_cause(&err, super::located::is_write_failure) {
            return Error::Sqlite {
                source: copy_sqlite(source),
                sql: None,
            };
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

/// SQLite's BUSY or LOCKED, if it is anywhere in the error's source chain.
fn busy_cause<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rusqlite::Error> {
    sqlite_cause(err, |e| {
        matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    })
}

/// The first SQLite error in the error's source chain that `wanted` accepts.
fn sqlite_cause<'e>(
    err: &'e (dyn std::error::Error + 'static),
    wanted: impl Fn(&rusqlite::Error) -> bool,
) -> Option<&'e rusqlite::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
            if wanted(e) {
                return Some(e);
            }
        }
        source = e.source();
    }
    None
}

/// The operating system's error number of the last failed I/O on `conn` (0 if none), which
/// tells a full disk or a file-size limit (a write that returned `EFBIG`, reported by SQLite as
/// a plain `SQLITE_IOERR_WRITE`) from a failing device.
pub(crate) fn system_errno(conn: &rusqlite::Connection) -> i32 {
    // SAFETY: the handle is valid while `conn` is borrowed, and sqlite3_system_errno only
    // reads a field of it.
    unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) }
}
