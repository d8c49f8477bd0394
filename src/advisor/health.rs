//! `Health`: is the database fine, and if not, why. For an open `Db` ([`Db::health`]) and for
//! a file that strata would refuse to open ([`health_check`]).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::maintenance::{wal_bytes, Checkpoint};
use crate::config::Location;
use crate::db::Db;
use crate::location::Target;
use crate::migrate;

/// How many problems `quick_check` reports at most.
const QUICK_CHECK_LIMIT: u32 = 100;

/// The state of a database: integrity, pool, WAL, migration version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// True when nothing is wrong: `problems` is empty.
    pub ok: bool,
    /// Why not, one line per problem.
    pub problems: Vec<String>,
    /// The database's path.
    pub path: PathBuf,
    /// What `PRAGMA quick_check` said (`["ok"]` when the file is intact); empty when it could
    /// not run.
    pub quick_check: Vec<String>,
    /// The reader pool, for an open `Db`.
    pub pool: Option<PoolHealth>,
    /// The WAL file's size in bytes; `None` without one (in-memory database).
    pub wal_bytes: Option<u64>,
    /// The highest applied migration version, when there is a refinery history.
    pub schema_version: Option<i32>,
    /// The last checkpoint run by [`Db::optimize`] on this `Db`, if any.
    pub last_checkpoint: Option<Checkpoint>,
}

/// The reader pool's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolHealth {
    /// The most readers the pool opens.
    pub max_size: u32,
    /// Readers open now.
    pub connections: u32,
    /// Readers open and free.
    pub idle: u32,
}

impl Health {
    fn new(path: PathBuf) -> Health {
        Health {
            ok: false,
            problems: Vec::new(),
            path,
            quick_check: Vec::new(),
            pool: None,
            wal_bytes: None,
            schema_version: None,
            last_checkpoint: None,
        }
    }

    fn finish(mut self) -> Health {
        if self.quick_check.iter().any(|line| line != "ok") {
            self.problems.extend(
                self.quick_check
                    .iter()
                    .map(|line| format!("quick_check: {line}")),
            );
        }
        self.ok = self.problems.is_empty();
        self
    }

    /// Checks the database file at `path` without opening a `Db`: no migrations, no WAL switch,
    /// nothing written. Same as [`health_check`].
    pub fn of_file(path: impl AsRef<Path>) -> Health {
        health_check(path)
    }
}

/// Runs quick_check and reads the migration version on `conn`, noting what fails.
fn inspect(conn: &Connection, health: &mut Health) {
    let sql = format!("PRAGMA quick_check({QUICK_CHECK_LIMIT})");
    match conn.prepare(&sql).and_then(|mut s| {
        s.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    }) {
        Ok(lines) => health.quick_check = lines,
        Err(e) => health.problems.push(format!("quick_check failed: {e}")),
    }
    match migrate::schema_version(conn) {
        Ok(v) => health.schema_version = v,
        Err(e) => health
            .problems
            .push(format!("migration history unreadable: {e}")),
    }
}

/// Checks the database file at `path` without opening a `Db` (which refuses a corrupt file):
/// the header, then `PRAGMA quick_check` on a read-only connection, the migration version and
/// the WAL size. Nothing is created or written; a missing file is a problem, not created.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("app.db");
/// assert!(!strata::advisor::health_check(&path).ok); // no such file
/// drop(strata::Db::open(&path).unwrap());
/// assert!(strata::advisor::health_check(&path).ok);
/// ```
pub fn health_check(path: impl AsRef<Path>) -> Health {
    let path = path.as_ref();
    let mut health = Health::new(path.to_owned());
    if !path.is_file() {
        health.problems.push(if path.exists() {
            "not a file".into()
        } else {
            "file does not exist".into()
        });
        return health.finish();
    }
    // The header checks strata makes before opening: magic string, page size, truncation.
    if let Err(e) = Target::resolve(&Location::File(path.to_owned())) {
        health.problems.push(e.to_string());
        return health.finish();
    }
    health.wal_bytes = wal_bytes(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(path, flags) {
        Ok(c) => c,
        Err(e) => {
            health.problems.push(format!("cannot open: {e}"));
            return health.finish();
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let _ = conn.execute_batch("PRAGMA trusted_schema=OFF");
    inspect(&conn, &mut health);
    health.finish()
}

impl Db {
    /// The state of this database: `quick_check` on a reader (reads every page: seconds on a
    /// large file), the reader pool, the WAL size, the migration version and the last
    /// checkpoint. Never fails: what cannot be checked is a problem in the report.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let mut health = Health::new(inner.target.path.clone());
        let state = inner.readers.state();
        health.pool = Some(PoolHealth {
            max_size: inner.readers.max_size(),
            connections: state.connections,
            idle: state.idle,
        });
        if !inner.target.memory {
            health.wal_bytes = wal_bytes(&inner.target.path);
        }
        health.last_checkpoint = *inner.advisor.last_checkpoint.lock();
        let checked = self.read(|c| {
            inspect(c, &mut health);
            Ok(())
        });
        if let Err(e) = checked {
            health.problems.push(format!("no reader: {e}"));
        }
        health.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    #[test]
    fn healthy_db_is_ok() -> Result<()> {
        let db = Db::builder()
            .migrations(crate::domain::migrations())
            .build()?;
        let h = db.health();
        assert!(h.ok, "{h:?}");
        assert_eq!(h.quick_check, vec!["ok"]);
        assert_eq!(h.schema_version, Some(2));
        assert!(h.pool.is_some_and(|p| p.max_size >= 1));
        Ok(())
    }

    #[test]
    fn missing_and_garbage_files_are_not_ok() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::Io {
            path: "tempdir".into(),
            source: e,
        })?;
        let missing = health_check(dir.path().join("none.db"));
        assert!(!missing.ok && missing.problems[0].contains("does not exist"));
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![7u8; 4096]).map_err(|e| crate::Error::Io {
            path: garbage.clone(),
            source: e,
        })?;
        let h = health_check(&garbage);
        assert!(!h.ok);
        assert!(h.problems[0].contains("not an SQLite database"), "{h:?}");
        Ok(())
    }
}
