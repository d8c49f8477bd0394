//! Where a database lives: the checks made before SQLite touches a path, and the mapping of
//! SQLite's open errors to errors that name the path.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{ErrorCode, OpenFlags};

use crate::error::{Error, Result};

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A database file.
    File(PathBuf),
    /// A private in-memory database shared by all connections of one `Db`.
    Memory,
}

/// A resolved database location: what connections open, and what errors name.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The name connections open: a path, or a `memdb` URI for in-memory databases.
    pub(crate) name: String,
    /// The path errors and reports show.
    pub(crate) path: PathBuf,
    /// True for a private in-memory database.
    pub(crate) memory: bool,
}

static MEMORY_DBS: AtomicU64 = AtomicU64::new(0);

impl Target {
    /// Checks the location without modifying anything and resolves it.
    pub(crate) fn resolve(location: &Location) -> Result<Target> {
        match location {
            Location::Memory => {
                // The memdb VFS shares one database between all connections that open the same
                // name starting with '/', and frees it when the last one closes. Each Db gets its
                // own name, so two Dbs never share one.
                let n = MEMORY_DBS.fetch_add(1, Ordering::Relaxed);
                let name = format!("file:/strata-{}-{n}?vfs=memdb", std::process::id());
                Ok(Target {
                    path: PathBuf::from(format!(":memory:{n}")),
                    name,
                    memory: true,
                })
            }
            Location::File(path) => {
                check_name(path)?;
                check_file(path)?;
                let mut name = path
                    .to_str()
                    .ok_or_else(|| Error::InvalidConfig {
                        field: "path",
                        reason: format!("{}: path is not valid UTF-8", path.display()),
                    })?
                    .to_owned();
                // The bundled SQLite is built with SQLITE_USE_URI: it would read a name starting
                // with `file:` as a URI and open some other file (or memory) than the one checked
                // and locked above. `./` keeps it the plain relative file name it is.
                if name.starts_with("file:") {
                    name.insert_str(0, "./");
                }
                Ok(Target {
                    name,
                    path: path.clone(),
                    memory: false,
                })
            }
        }
    }

    /// The size of the WAL file; `None` for an in-memory database, which has none.
    pub(crate) fn wal_bytes(&self) -> Option<u64> {
        (!self.memory).then(|| wal_bytes(&self.path))
    }

    /// Flags for the writer connection.
    pub(crate) fn writer_flags(&self) -> OpenFlags {
        self.base_flags() | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    }

    /// Flags for reader connections.
    pub(crate) fn reader_flags(&self) -> OpenFlags {
        self.base_flags() | OpenFlags::SQLITE_OPEN_READ_ONLY
    }

    fn base_flags(&self) -> OpenFlags {
        // Each connection is used by one thread at a time (behind a mutex or the pool), so
        // SQLite's own per-connection mutex is pure overhead.
        let flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.memory {
            flags | OpenFlags::SQLITE_OPEN_URI
        } else {
            flags
        }
    }

    /// Turns an error met while opening into one that names the path.
    pub(crate) fn open_error(&self, err: rusqlite::Error) -> Error {
        let path = self.path.clone();
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::NotADatabase { path },
            Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt {
                path,
                detail: err.to_string(),
            },
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                Error::ReadOnly { path }
            }
            _ => Error::from(err),
        }
    }
}

/// Refuses the names SQLite gives another meaning than a file: the empty name (a private
/// temporary database per connection, so readers would never see the writer's data) and
/// `:memory:` (a private in-memory database per connection). Without this, the open failed with a
/// puzzling journal_mode mismatch after creating a lock file in the working directory.
fn check_name(path: &Path) -> Result<()> {
    let reason = match path.as_os_str().to_str() {
        Some("") => "is empty",
        Some(":memory:") => "`:memory:` is not a file; use Config::in_memory()",
        _ => return Ok(()),
    };
    Err(Error::InvalidConfig {
        field: "path",
        reason: reason.to_owned(),
    })
}

/// Refuses, before SQLite opens anything, the paths that SQLite would either reject with a vague
/// error or silently damage.
fn check_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::IsDirectory {
            path: path.to_owned(),
        });
    }
    if !path.exists() {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(Error::MissingDirectory {
                path: path.to_owned(),
            });
        }
        return Ok(());
    }
    check_header(path)
}

/// Reads the 100-byte database header: the magic string, and whether the file holds as many
/// pages as the header says (a truncated copy does not, and SQLite would only notice when it
/// reads a missing page).
fn check_header(path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(());
    }
    let mut header = [0u8; 100];
    if len < 100 || file.read_exact(&mut header).is_err() || &header[..16] != b"SQLite format 3\0" {
        return Err(Error::NotADatabase {
            path: path.to_owned(),
        });
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                detail: format!("invalid page size {n}"),
            })
        }
    };
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let page_count = u64::from(be32(28));
    // The in-header size is only trusted when its version-valid-for matches the change counter,
    // and only without a WAL: a checkpoint in another process may write page 1 before the pages
    // that grow the file, and a reader of that moment must not call the file corrupt.
    let size_valid = be32(24) == be32(92) && !has_wal(path);
    if size_valid && page_count > 0 && len < page_count * page_size {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "file holds {len} bytes but its header declares {page_count} pages of {page_size} bytes"
            ),
        });
    }
    Ok(())
}

/// The WAL file SQLite keeps beside the database file at `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    sibling(db, "-wal")
}

/// A file SQLite keeps beside the database file at `db`: its name is the database's with
/// `suffix` (`-wal`, `-shm`, `-journal`) appended.
pub(crate) fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The size of the WAL beside the database file at `db`; 0 when there is none.
pub(crate) fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(wal_path(db)).map_or(0, |m| m.len())
}

fn has_wal(path: &Path) -> bool {
    wal_bytes(path) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_directory_and_missing_parent() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: "tempdir".into(),
            source: e,
        })?;
        let err = Target::resolve(&Location::File(dir.path().to_owned())).unwrap_err();
        assert!(matches!(err, Error::IsDirectory { .. }));
        let missing = dir.path().join("no/such/dir/app.db");
        let err = Target::resolve(&Location::File(missing)).unwrap_err();
        assert!(matches!(err, Error::MissingDirectory { .. }));
        Ok(())
    }

    #[test]
    fn wal_size_is_read_beside_the_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: "tempdir".into(),
            source: e,
        })?;
        let path = dir.path().join("app.db");
        assert_eq!(wal_path(&path), dir.path().join("app.db-wal"));
        let target = Target::resolve(&Location::File(path.clone()))?;
        assert_eq!(target.wal_bytes(), Some(0));
        std::fs::write(wal_path(&path), [0u8; 10]).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        assert_eq!(target.wal_bytes(), Some(10));
        assert_eq!(Target::resolve(&Location::Memory)?.wal_bytes(), None);
        Ok(())
    }

    #[test]
    fn memory_targets_are_distinct() -> Result<()> {
        let a = Target::resolve(&Location::Memory)?;
        let b = Target::resolve(&Location::Memory)?;
        assert_ne!(a.name, b.name);
        Ok(())
    }
}
