//! `Health`: is the database fine, and if not, why. For an open `Db` ([`Db::health`]) and for
//! a file that strata would refuse to open ([`health_check`]).
//!
//! Each check says what it found, and `ok` is decided from all of them: `quick_check`, the WAL
//! size against its limit, the migration version against the one expected, the reader pool,
//! and what a crash left behind. A crash's leftovers that an open recovers (a hot journal to
//! roll back, a WAL to read) are reported as such, not as damage: a file with a hot journal is
//! checked on a private copy, rolled back there, since a read-only connection cannot roll it
//! back and the check never writes the file it inspects.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::checkpoint::CheckpointResult;
use crate::config::Location;
use crate::db::Db;
use crate::location::{self, sibling, Target};
use crate::migrate;

/// How many problems `quick_check` reports at most.
const QUICK_CHECK_LIMIT: u32 = 100;

/// The state of a database: integrity, pool, WAL, migration version, crash leftovers.
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
    /// The WAL size past which the WAL is a problem (checkpoints are not keeping up): the
    /// `journal_size_limit` of an open `Db`; `None` when not known (a file checked alone).
    pub wal_limit: Option<u64>,
    /// The highest applied migration version, when there is a refinery history.
    pub schema_version: Option<i32>,
    /// The highest version of the migrations the `Db` was opened with; `None` when not known
    /// (opened without migrations, or a file checked alone). A different `schema_version` is a
    /// problem.
    pub expected_schema_version: Option<i32>,
    /// The last checkpoint run by [`Db::optimize`] on this `Db`, if any.
    pub last_checkpoint: Option<CheckpointResult>,
    /// What a process that did not close the database left beside it, for a file checked
    /// alone; `None` when nothing was.
    pub leftover: Option<Leftover>,
    /// Primary, or a LiteFS replica and its primary, for an open `Db`; `None` for a file
    /// checked alone.
    pub role: Option<crate::instances::Role>,
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
    /// Whether the check got a reader within the pool's connection timeout; when it did not,
    /// every reader was in use for that long, and that is a problem.
    pub available: bool,
}

/// A journal or WAL left beside a database file by a process that did not close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Leftover {
    /// Which file.
    pub kind: LeftoverKind,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether opening the database recovers it (rolls the journal back, reads the WAL); when
    /// it does, the leftover is no problem and the other checks ran on the recovered state.
    pub recoverable: bool,
}

/// The kinds of [`Leftover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LeftoverKind {
    /// A hot rollback journal: a transaction was under way when its process died, and the
    /// database file may hold part of it until the journal is rolled back (which the next
    /// read-write open does).
    HotJournal,
    /// A WAL holding frames not yet copied into the database: a process has the database open,
    /// or one ended without its closing checkpoint (a crash). Every open reads them.
    Wal,
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
            wal_limit: None,
            schema_version: None,
            expected_schema_version: None,
            last_checkpoint: None,
            leftover: None,
            role: None,
        }
    }

    /// Turns what each check found into problems, and decides `ok` from all of them.
    fn finish(mut self) -> Health {
        if self.quick_check.iter().any(|line| line != "ok") {
            self.problems.extend(
                self.quick_check
                    .iter()
                    .map(|line| format!("quick_check: {line}")),
            );
        }
        if let (Some(bytes), Some(limit)) = (self.wal_bytes, self.wal_limit) {
            if bytes > limit {
                self.problems.push(format!(
                    "WAL is {bytes} bytes, over its limit of {limit}: checkpoints are not keeping \
                     up (a long read holds an old snapshot, or checkpoints fail)"
                ));
            }
        }
        if let Some(expected) = self.expected_schema_version {
            match self.schema_version {
                Some(found) if found == expected => {}
                Some(found) => self.problems.push(format!(
                    "schema is at migration V{found}, this program's migrations end at V{expected}"
                )),
                None => self.problems.push(format!(
                    "no migration history, this program's migrations end at V{expected}"
                )),
            }
        }
        if let Some(pool) = self.pool.filter(|p| !p.available) {
            self.problems.push(format!(
                "no reader free within the connection timeout: {} of {} readers open, {} idle",
                pool.connections, pool.max_size, pool.idle
            ));
        }
        if let Some(leftover) = self.leftover.filter(|l| !l.recoverable) {
            self.problems.push(format!(
                "{:?} of {} bytes left by a crash cannot be recovered",
                leftover.kind, leftover.bytes
            ));
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

/// `PRAGMA quick_check`'s lines.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(&format!("PRAGMA quick_check({QUICK_CHECK_LIMIT})"))?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect()
}

/// Runs quick_check and reads the migration version on `conn`, noting what fails.
fn inspect(conn: &Connection, health: &mut Health) {
    match quick_check(conn) {
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

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Checks the database file at `path` without opening a `Db` (which refuses a corrupt file):
/// the header, then `PRAGMA quick_check` on a read-only connection, the migration version and
/// the WAL size. Nothing is created or written; a missing file is a problem, not created. A
/// hot journal left by a crash is rolled back on a private copy of the file (in the system's
/// temporary directory), which is then checked.
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
    health.wal_bytes = Some(location::wal_bytes(path));
    let journal = file_len(&sibling(path, "-journal"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match open_for_check(path, flags) {
        Ok(c) => c,
        Err(e) => {
            health.problems.push(format!("cannot open: {e}"));
            return health.finish();
        }
    };
    match quick_check(&conn) {
        // A journal SQLite finds hot must be rolled back before anything is read, and a
        // read-only connection cannot: this says so (SQLITE_READONLY_ROLLBACK).
        Err(e) if journal > 0 && e.sqlite_error_code() == Some(ErrorCode::ReadOnly) => {
            drop(conn);
            let recovered = check_recovered_copy(path, &mut health);
            health.leftover = Some(Leftover {
                kind: LeftoverKind::HotJournal,
                bytes: journal,
                recoverable: recovered,
            });
            return health.finish();
        }
        _ => inspect(&conn, &mut health),
    }
    if let Some(bytes) = health.wal_bytes.filter(|b| *b > 0) {
        health.leftover = Some(Leftover {
            kind: LeftoverKind::Wal,
            bytes,
            // The read-only connection read through it: the checks above saw its frames.
            recoverable: !health.quick_check.is_empty(),
        });
    }
    health.finish()
}

fn open_for_check(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA trusted_schema=OFF")?;
    Ok(conn)
}

/// Copies the database and its hot journal to a private directory, lets SQLite roll the
/// journal back there, and checks the copy. Returns whether the rollback succeeded.
fn check_recovered_copy(path: &Path, health: &mut Health) -> bool {
    let copied = (|| -> std::io::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join("recovering.db");
        std::fs::copy(path, &copy)?;
        std::fs::copy(sibling(path, "-journal"), sibling(&copy, "-journal"))?;
        Ok((dir, copy))
    })();
    let (_dir, copy) = match copied {
        Ok(c) => c,
        Err(e) => {
            health.problems.push(format!(
                "hot journal: cannot copy the file to check it: {e}"
            ));
            return true;
        }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match open_for_check(&copy, flags) {
        Ok(c) => c,
        Err(e) => {
            health.problems.push(format!("cannot open a copy: {e}"));
            return false;
        }
    };
    // The first read rolls the journal back.
    match quick_check(&conn) {
        Ok(lines) => health.quick_check = lines,
        Err(e) => {
            health
                .problems
                .push(format!("hot journal could not be rolled back: {e}"));
            return false;
        }
    }
    match migrate::schema_version(&conn) {
        Ok(v) => health.schema_version = v,
        Err(e) => health
            .problems
            .push(format!("migration history unreadable: {e}")),
    }
    true
}

impl Db {
    /// The state of this database: `quick_check` on a reader (reads every page: seconds on a
    /// large file), the reader pool (a reader must be free within the connection timeout), the
    /// WAL size against `journal_size_limit`, the migration version against the highest of the
    /// migrations applied at open, and the last checkpoint. Never fails: what cannot be checked
    /// is a problem in the report.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let mut health = Health::new(inner.target.path.clone());
        if !inner.target.memory {
            health.wal_bytes = inner.target.wal_bytes();
            health.wal_limit = Some(inner.advisor.wal_limit);
        }
        health.expected_schema_version = inner.advisor.expected_schema_version;
        health.role = Some(self.role());
        health.last_checkpoint = *inner.advisor.last_checkpoint.lock();
        let checked = self.read(|c| {
            inspect(c, &mut health);
            Ok(())
        });
        let state = inner.readers.state();
        health.pool = Some(PoolHealth {
            max_size: inner.readers.max_size(),
            connections: state.connections,
            idle: state.idle,
            available: !matches!(checked, Err(crate::Error::PoolTimeout { .. })),
        });
        match checked {
            Ok(()) | Err(crate::Error::PoolTimeout { .. }) => {}
            Err(e) => health.problems.push(format!("no reader: {e}")),
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
