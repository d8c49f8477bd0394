//! Naming the file behind SQLite's I/O and corruption errors.
//!
//! SQLite reports a full disk, a file it may no longer write and a damaged page as bare result
//! codes; only the `Db` that ran the statement knows the file. The writer, the readers and the
//! open pass their errors through [`Error::locate`] so that a service can act on the kind
//! (`is_disk_full`) and log the file.

use std::io::ErrorKind;
use std::path::Path;

use rusqlite::ErrorCode;

use super::Error;

/// SQLite's extended codes of a failed write, fsync or resize of a file: the operating system's
/// error number tells a full disk or a read-only file from a failing device.
const WRITE_ERRORS: [i32; 4] = [
    rusqlite::ffi::SQLITE_IOERR_WRITE,
    rusqlite::ffi::SQLITE_IOERR_FSYNC,
    rusqlite::ffi::SQLITE_IOERR_TRUNCATE,
    rusqlite::ffi::SQLITE_IOERR_SHMSIZE,
];

impl Error {
    /// This error with the database's `path` attached where SQLite's code says what happened
    /// to the file: `SQLITE_FULL`, or a failed write whose `errno` (from
    /// [`system_errno`](super::system_errno)) is `ENOSPC`, `EDQUOT` or `EFBIG`, is
    /// [`Error::DiskFull`]; a write refused with `EPERM`, `EACCES` or `EROFS` is
    /// [`Error::ReadOnly`]; `SQLITE_CORRUPT` is [`Error::Corrupt`]. A batch keeps its report
    /// around the located cause; other errors are returned as they are.
    pub(crate) fn locate(self, path: &Path, errno: i32) -> Error {
        match self {
            Error::Sqlite { source, sql } => match located(&source, path, errno) {
                Some(err) => err,
                None => Error::Sqlite { source, sql },
            },
            Error::Batch { source, report } => Error::Batch {
                source: Box::new(source.locate(path, errno)),
                report,
            },
            other => other,
        }
    }
}

/// True for SQLite's full disk and failed writes of a file (whatever the cause).
pub(super) fn is_write_failure(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => {
            failure.code == ErrorCode::DiskFull || WRITE_ERRORS.contains(&failure.extended_code)
        }
        _ => false,
    }
}

fn located(source: &rusqlite::Error, path: &Path, errno: i32) -> Option<Error> {
    let rusqlite::Error::SqliteFailure(failure, _) = source else {
        return None;
    };
    let path = path.to_owned();
    match failure.code {
        ErrorCode::DiskFull => Some(Error::DiskFull { path }),
        ErrorCode::DatabaseCorrupt => Some(Error::Corrupt {
            path,
            detail: source.to_string(),
        }),
        ErrorCode::SystemIoFailure if WRITE_ERRORS.contains(&failure.extended_code) => {
            match std::io::Error::from_raw_os_error(errno).kind() {
                ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded => {
                    Some(Error::DiskFull { path })
                }
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                    Some(Error::ReadOnly { path })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn sqlite(code: i32) -> Error {
        Error::Sqlite {
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
            sql: None,
        }
    }

    #[test]
    fn full_disk_file_size_limit_and_read_only_files_are_named() -> Result<()> {
        let path = Path::new("/data/x.db");
        let full = sqlite(rusqlite::ffi::SQLITE_FULL).locate(path, 0);
        assert!(full.is_disk_full() && full.path() == Some(path), "{full:?}");
        // EFBIG is 27 and EPERM 1 on Linux and the BSDs.
        let write = sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE).locate(path, 27);
        assert!(write.is_disk_full(), "{write:?}");
        let refused = sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE).locate(path, 1);
        assert!(matches!(refused, Error::ReadOnly { .. }), "{refused:?}");
        // EIO: a failing device is not a full disk.
        let device = sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE).locate(path, 5);
        assert!(matches!(device, Error::Sqlite { .. }), "{device:?}");
        let read = sqlite(rusqlite::ffi::SQLITE_IOERR_READ).locate(path, 27);
        assert!(matches!(read, Error::Sqlite { .. }), "{read:?}");
        let corrupt = sqlite(rusqlite::ffi::SQLITE_CORRUPT).locate(path, 0);
        assert!(
            matches!(&corrupt, Error::Corrupt { path: p, .. } if p == path),
            "{corrupt:?}"
        );
        Ok(())
    }
}
