//! The bad input table: every input strata must refuse or survive, each with the typed error it
//! must give. For each case nothing may panic, and a database that existed before is either
//! byte-identical afterwards or still passes `PRAGMA integrity_check` with its rows unchanged.
//!
//! One test runs the whole table (each case in its own directory, under `catch_unwind`) and prints
//! it; a case that fails or panics is named in the failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use refinery::{Migration, Runner};
use strata::cache::CacheSettings;
use strata::rusqlite::{self, Connection, ErrorCode};
use strata::{Batch, Config, Db, Error, Result};

/// A database with the expense tracker's schema (a plain `Db::open` applies no migrations).
fn tracker_db(path: impl AsRef<std::path::Path>) -> strata::Result<strata::Db> {
    strata::Db::builder()
        .path(path)
        .migrations(strata::domain::migrations())
        .build()
}

type Outcome = std::result::Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The error of `result`, if it is one `check` accepts.
fn expect_err<T>(
    what: &str,
    result: Result<T>,
    check: impl FnOnce(&Error) -> bool,
) -> std::result::Result<Error, String> {
    match result {
        Ok(_) => Err(format!("{what}: succeeded, expected an error")),
        Err(e) if check(&e) => Ok(e),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
    }
}

/// An error's text, to end a case with.
fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

const USERS: i64 = 200;

/// A strata database with `USERS` users, checkpointed into its main file and closed, so that
/// the file alone is the database and its bytes can be compared.
fn make_db(path: &Path) -> Result<()> {
    {
        let db = Db::builder()
            .migrations(strata::domain::migrations())
            .path(path)
            .readers(1)
            .build()?;
        db.write(|c| {
            let mut stmt =
                c.prepare("INSERT INTO users (email, name, created_at) VALUES (?1, ?2, 0)")?;
            for i in 0..USERS {
                stmt.execute((format!("user{i}@example.com"), "x".repeat(200)))?;
            }
            Ok(())
        })?;
    }
    let raw = Connection::open(path)?;
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Opens `path` as a service would later and checks it: integrity_check ok, every user there.
fn intact(path: &Path) -> std::result::Result<(), String> {
    let db = Db::builder()
        .path(path)
        .readers(1)
        .build()
        .map_err(|e| format!("reopen: {e}"))?;
    let (integrity, users): (String, i64) = db
        .read(|c| {
            Ok((
                c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?,
            ))
        })
        .map_err(|e| format!("inspect: {e}"))?;
    ensure!(integrity == "ok", "integrity_check: {integrity}");
    ensure!(users == USERS, "{users} users, expected {USERS}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Locations and files.

fn directory(dir: &Path) -> Outcome {
    let before = files_in(dir);
    let err = expect_err(
        "open",
        tracker_db(dir),
        |e| matches!(e, Error::IsDirectory { path } if path == dir),
    )?;
    ensure!(files_in(dir) == before, "files created inside");
    Ok(format!("{err}"))
}

fn missing_parent(dir: &Path) -> Outcome {
    let path = dir.join("no/such/dir/app.db");
    let err = expect_err(
        "open",
        tracker_db(&path),
        |e| matches!(e, Error::MissingDirectory { path: p } if *p == path),
    )?;
    ensure!(files_in(dir).is_empty(), "something was created");
    Ok(format!("{err}"))
}

fn text_file(dir: &Path) -> Outcome {
    let mut errors = Vec::new();
    for (name, contents) in [
        ("long.txt", "not a database\n".repeat(500)),
        ("short.txt", "hi\n".to_owned()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &contents).expect("write");
        let err = expect_err(
            name,
            tracker_db(&path),
            |e| matches!(e, Error::NotADatabase { path: p } if *p == path),
        )?;
        ensure!(read(&path) == contents.as_bytes(), "{name} modified");
        errors.push(err.to_string());
    }
    ensure!(
        files_in(dir) == ["long.txt", "short.txt"],
        "files created: {:?}",
        files_in(dir)
    );
    Ok(errors.join("; "))
}

fn bad_page_size(dir: &Path) -> Outcome {
    let path = dir.join("bad.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let mut bytes = read(&path);
    bytes[16..18].copy_from_slice(&1000u16.to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let err = expect_err(
        "open",
        tracker_db(&path),
        |e| matches!(e, Error::Corrupt { path: p, .. } if *p == path),
    )?;
    ensure!(read(&path) == bytes, "modified");
    Ok(format!("{err}"))
}

fn truncated_db(dir: &Path) -> Outcome {
    let path = dir.join("t.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let full = read(&path);
    std::fs::write(&path, &full[..full.len() / 2]).expect("truncate");
    let before = read(&path);
    let err = expect_err(
        "open",
        tracker_db(&path),
        |e| matches!(e, Error::Corrupt { path: p, .. } if *p == path),
    )?;
    ensure!(read(&path) == before, "modified");
    Ok(format!("{err}"))
}

/// Garbage in the pages after the schema: the header is fine, so the open may succeed; every
/// statement that reads a damaged page must then fail with SQLite's corruption error, typed,
/// and nothing strata does (including `PRAGMA optimize` on close) may write to the file.
fn corrupt_pages(dir: &Path) -> Outcome {
    let path = dir.join("c.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let mut bytes = read(&path);
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    // Keep page 1 (header and schema) and the first few; overwrite the rest with a pattern.
    for (i, b) in bytes[8 * page..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, &bytes).expect("write");
    let outcome = match Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(1)
        .build()
    {
        Err(e) => {
            ensure!(
                matches!(
                    e,
                    Error::Corrupt { .. } | Error::Migration { .. } | Error::Sqlite { .. }
                ),
                "open: {e:?}"
            );
            format!("open refused: {e}")
        }
        Ok(db) => {
            let result = db.read(|c| {
                let mut stmt = c.prepare("SELECT email, name FROM users")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            });
            // A damaged page met by a read is `Corrupt`, naming the file.
            let read_err = expect_err(
                "read",
                result,
                |e| matches!(e, Error::Corrupt { path: p, .. } if p == &path),
            )?;
            let write = db.write(|c| {
                Ok(c.execute(
                    "INSERT INTO users (email, name, created_at) VALUES ('new@x', 'n', 0)",
                    [],
                )?)
            });
            let write = match write {
                Ok(_) => "write ok".to_owned(),
                Err(e) => format!("write: {e}"),
            };
            drop(db);
            format!("opened; read: {read_err}; {write}")
        }
    };
    ensure!(
        read(&path) == bytes,
        "the corrupt file was modified ({outcome})"
    );
    Ok(outcome)
}

#[cfg(unix)]
fn read_only_location(dir: &Path) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // root ignores directory permissions; /sys refuses new files even to root.
    let probe = locked.join("probe");
    let path = if std::fs::File::create(&probe).is_ok() {
        let _ = std::fs::remove_file(&probe);
        PathBuf::from("/sys/strata-bad-input-test.db")
    } else {
        locked.join("app.db")
    };
    let outcome = tracker_db(&path);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = expect_err(
        "open",
        outcome,
        |e| matches!(e, Error::ReadOnly { path: p } if *p == path),
    )?;
    ensure!(!path.exists(), "created");
    Ok(format!("{err}"))
}

/// Paths that are not plain file names to SQLite: empty, `:memory:`, a `file:` URI. Each is
/// refused or opened as the very file strata checked and locked, never something else.
fn special_names(dir: &Path) -> Outcome {
    let mut seen = Vec::new();
    // Relative names resolve against the working directory: work in `dir`.
    let cwd = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(dir).expect("chdir");
    let result = (|| -> Outcome {
        for name in ["", ":memory:"] {
            let err = expect_err(&format!("{name:?}"), tracker_db(name), |e| {
                matches!(e, Error::InvalidConfig { field: "path", .. })
            })?;
            seen.push(format!("{name:?}: {err}"));
        }
        ensure!(
            files_in(dir).is_empty(),
            "files created: {:?}",
            files_in(dir)
        );
        // A relative name that reads like a URI is a file name like any other.
        let name = "file:uri.db?mode=memory";
        let db = tracker_db(name).map_err(|e| format!("{name}: {e}"))?;
        db.write(|c| {
            Ok(c.execute(
                "INSERT INTO users (email, name, created_at) VALUES ('a@x', 'a', 0)",
                [],
            )?)
        })
        .map_err(|e| format!("{name}: write: {e}"))?;
        drop(db);
        ensure!(
            Path::new(name).is_file() && !Path::new("uri.db").exists(),
            "{name} did not open the file of that name: {:?}",
            files_in(dir)
        );
        seen.push(format!("{name:?}: opened as that file"));
        Ok(seen.join("; "))
    })();
    std::env::set_current_dir(cwd).expect("chdir back");
    result
}

fn nul_in_path(dir: &Path) -> Outcome {
    let path = dir.join("a\0b.db");
    let err = expect_err("open", tracker_db(&path), |e| {
        matches!(e, Error::Io { .. } | Error::InvalidConfig { .. })
    })?;
    ensure!(files_in(dir).is_empty(), "created {:?}", files_in(dir));
    Ok(format!("{err}"))
}

/// A file name that is not UTF-8 (Linux allows any bytes but `/` and NUL).
#[cfg(target_os = "linux")]
fn non_utf8_path(dir: &Path) -> Outcome {
    use std::os::unix::ffi::OsStrExt;
    let path = dir.join(std::ffi::OsStr::from_bytes(b"bad\xff.db"));
    match tracker_db(&path) {
        // Supported: it must be the file of that name, working as any other.
        Ok(db) => {
            db.write(|c| {
                Ok(c.execute(
                    "INSERT INTO users (email, name, created_at) VALUES ('a@x', 'a', 0)",
                    [],
                )?)
            })
            .map_err(|e| format!("write: {e}"))?;
            let n: i64 = db
                .read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))
                .map_err(|e| format!("read: {e}"))?;
            ensure!(n == 1, "{n} users");
            ensure!(path.is_file(), "not created under its own name");
            Ok("opened as that file".to_owned())
        }
        // Refused: typed, naming the setting, and nothing created.
        Err(e) => {
            ensure!(
                matches!(e, Error::InvalidConfig { field: "path", .. }),
                "unexpected {e:?}"
            );
            ensure!(files_in(dir).is_empty(), "created {:?}", files_in(dir));
            Ok(format!("{e}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings. Each is refused before anything is opened: the existing file stays byte-identical.

fn invalid_settings(dir: &Path) -> Outcome {
    let path = dir.join("app.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let before = read(&path);
    let listing = files_in(dir);
    let configs: Vec<(&str, Config)> = vec![
        ("readers", Config::new().readers(0)),
        (
            "statement_cache_capacity",
            Config::new().statement_cache_capacity(0),
        ),
        ("max_group", Config::new().max_group(0)),
        (
            "connection_timeout",
            Config::new()
                .busy_timeout(Duration::from_secs(10))
                .connection_timeout(Duration::from_secs(1)),
        ),
        (
            "cache.capacity",
            Config::new().cache(CacheSettings::new("users").capacity(0)),
        ),
        (
            "cache.ttl",
            Config::new().cache(CacheSettings::new("users").ttl(Duration::ZERO)),
        ),
    ];
    let mut seen = Vec::new();
    for (field, config) in configs {
        let err = expect_err(
            field,
            config.path(&path).build(),
            |e| matches!(e, Error::InvalidConfig { field: f, .. } if *f == field),
        )?;
        seen.push(err.to_string());
    }
    ensure!(read(&path) == before, "the database was modified");
    ensure!(
        files_in(dir) == listing,
        "files created: {:?}",
        files_in(dir)
    );

    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let mut batch = Batch::new();
    batch.insert("users", &["email"], ("z@x",));
    for (field, b) in [
        ("max_batch", batch.clone().max_batch(0)),
        ("max_failure_rate", batch.clone().max_failure_rate(f64::NAN)),
        ("max_failure_rate", batch.clone().max_failure_rate(1.5)),
    ] {
        let err = expect_err(
            field,
            db.apply(&b),
            |e| matches!(e, Error::InvalidConfig { field: f, .. } if *f == field),
        )?;
        seen.push(err.to_string());
    }
    drop(db);
    intact(&path)?;
    Ok(seen.join("; "))
}

// ---------------------------------------------------------------------------------------------
// A database locked by another process beyond busy_timeout.

const LOCK_DB: &str = "STRATA_BAD_INPUT_LOCK_DB";
const LOCK_TEST: &str = "lock_holder";

/// Not a test of its own: the child process of the locked-database cases. With
/// `STRATA_BAD_INPUT_LOCK_DB` set it opens that file, takes `BEGIN EXCLUSIVE`, says `@locked`,
/// and holds the lock until its stdin closes. Without it, it does nothing.
#[test]
fn lock_holder() -> rusqlite::Result<()> {
    let Some(path) = std::env::var_os(LOCK_DB) else {
        return Ok(());
    };
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("BEGIN EXCLUSIVE")?;
    // Take the lock for real: in WAL mode EXCLUSIVE locks like IMMEDIATE, on the first write.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS lock_holder_scratch (x); DELETE FROM lock_holder_scratch;",
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@locked").expect("stdout");
    out.flush().expect("stdout");
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
    conn.execute_batch("ROLLBACK")
}

/// A child process holding an exclusive transaction on `path` until it is released.
struct LockHolder {
    child: Child,
    /// Kept open (and drained at the end): the child's harness still prints after the lock.
    stdout: BufReader<ChildStdout>,
}

impl LockHolder {
    fn take(path: &Path) -> LockHolder {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", LOCK_TEST, "--nocapture", "--test-threads=1"])
            .env(LOCK_DB, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the lock holder");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("@locked") {
            line.clear();
            let n = stdout.read_line(&mut line).expect("read the lock holder");
            assert!(n > 0, "the lock holder did not take the lock");
        }
        LockHolder { child, stdout }
    }

    fn release(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.wait().expect("wait for the lock holder");
        assert!(status.success(), "the lock holder failed: {status}\n{rest}");
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if self.child.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const SHORT_BUSY: Duration = Duration::from_millis(200);

fn locked_config(path: &Path) -> Config {
    Db::builder()
        .migrations(strata::domain::migrations())
        .path(path)
        .readers(1)
        .busy_timeout(SHORT_BUSY)
        .connection_timeout(Duration::from_secs(2))
}

/// A migrated WAL database: opening needs no write and succeeds (readers never wait for a
/// writer in WAL mode); writes and batches wait busy_timeout and fail typed as busy.
fn locked_wal_database(dir: &Path) -> Outcome {
    let path = dir.join("locked.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let holder = LockHolder::take(&path);
    let db = locked_config(&path)
        .build()
        .map_err(|e| format!("open while locked: {e}"))?;
    let t = Instant::now();
    let write = expect_err(
        "write",
        db.write(|c| {
            Ok(c.execute(
                "INSERT INTO users (email, name, created_at) VALUES ('late@x', 'l', 0)",
                [],
            )?)
        }),
        Error::is_busy,
    )?;
    let waited = t.elapsed();
    ensure!(
        waited >= SHORT_BUSY,
        "gave up after {waited:?}, before busy_timeout"
    );
    let mut batch = Batch::new()
        .retry_attempts(1)
        .retry_backoff(Duration::from_millis(10));
    batch.insert("users", &["email", "name", "created_at"], ("b@x", "b", 0));
    let batch_err = expect_err("batch", db.apply(&batch), |e| {
        e.is_busy() && matches!(e, Error::Batch { .. })
    })?;
    let users: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))
        .map_err(|e| format!("read while locked: {e}"))?;
    ensure!(users == USERS, "{users} users");
    drop(db);
    holder.release();
    intact(&path)?;
    Ok(format!(
        "open ok, reads ok; write: {write} after {waited:.0?}; batch: {batch_err}"
    ))
}

/// A WAL database whose migrations are still pending: the open must migrate, cannot get the
/// write lock, and must say the database is locked.
fn locked_while_migrations_pending(dir: &Path) -> Outcome {
    let path = dir.join("pending.db");
    {
        let db = Db::builder()
            .path(&path)
            .readers(1)
            .build()
            .map_err(|e| e.to_string())?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE keep (x); INSERT INTO keep VALUES (1);")?))
            .map_err(|e| e.to_string())?;
    }
    let holder = LockHolder::take(&path);
    let err = expect_err("open", locked_config(&path).build(), Error::is_busy)?;
    holder.release();
    let db = Db::builder()
        .path(&path)
        .readers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let (version, keep) = db
        .read(|c| {
            let keep: i64 = c.query_row("SELECT count(*) FROM keep", [], |r| r.get(0))?;
            Ok((
                c.query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'refinery_schema_history'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?,
                keep,
            ))
        })
        .map_err(|e| e.to_string())?;
    ensure!(version == 0 && keep == 1, "history {version}, keep {keep}");
    Ok(format!("{err}"))
}

/// A database in rollback-journal mode (made by another program): switching it to WAL needs
/// the lock, so the open fails as busy, and the file is left as it was.
fn locked_rollback_journal_database(dir: &Path) -> Outcome {
    let path = dir.join("journal.db");
    {
        let c = Connection::open(&path).map_err(s)?;
        c.execute_batch("CREATE TABLE keep (x); INSERT INTO keep VALUES (1);")
            .map_err(s)?;
    }
    let holder = LockHolder::take(&path);
    let before = read(&path);
    let err = expect_err("open", locked_config(&path).build(), Error::is_busy)?;
    ensure!(read(&path) == before, "modified while locked");
    holder.release();
    let c = Connection::open(&path).map_err(s)?;
    let (mode, integrity): (String, String) = (
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(s)?,
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(s)?,
    );
    ensure!(mode == "delete" && integrity == "ok", "{mode}, {integrity}");
    Ok(format!("{err}"))
}

// ---------------------------------------------------------------------------------------------
// The pool and migrations.

fn pool_exhausted(dir: &Path) -> Outcome {
    let path = dir.join("pool.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(1)
        .busy_timeout(Duration::from_millis(50))
        .connection_timeout(Duration::from_millis(200))
        .build()
        .map_err(|e| e.to_string())?;
    let barrier = Barrier::new(2);
    let err = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            db.read(|_| {
                barrier.wait(); // holding the only reader
                barrier.wait();
                Ok(())
            })
        });
        barrier.wait();
        let result = db.read(|_| Ok(()));
        barrier.wait();
        holder.join().expect("holder").map_err(|e| e.to_string())?;
        expect_err("read", result, |e| matches!(e, Error::PoolTimeout { .. }))
    })?;
    drop(db);
    intact(&path)?;
    Ok(format!("{err}"))
}

fn divergent_migration(dir: &Path) -> Outcome {
    let path = dir.join("div.db");
    let runner = |sql: &str| -> Runner {
        Runner::new(&[Migration::unapplied("V1__a", sql).expect("migration")])
    };
    Db::builder()
        .path(&path)
        .readers(1)
        .migrations(runner("CREATE TABLE a (x);"))
        .build()
        .map_err(|e| e.to_string())?;
    let raw = Connection::open(&path).map_err(s)?;
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(s)?;
    drop(raw);
    let before = read(&path);
    let err = expect_err(
        "open",
        Db::builder()
            .path(&path)
            .readers(1)
            .migrations(runner("CREATE TABLE a (x, y);"))
            .build(),
        |e| {
            matches!(
                e,
                Error::Migration {
                    version: Some(1),
                    ..
                }
            )
        },
    )?;
    ensure!(read(&path) == before, "modified");
    Ok(format!("{err}"))
}

/// A history table another tool (or damage) left unreadable to refinery: the open fails with
/// a migration error naming it, and nothing is changed.
fn garbled_migration_history(dir: &Path) -> Outcome {
    let mut seen = Vec::new();
    for (i, garble) in [
        "UPDATE refinery_schema_history SET applied_on = 'yesterday' WHERE version = 1",
        "UPDATE refinery_schema_history SET checksum = 'not a number' WHERE version = 2",
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.join(format!("history-{i}.db"));
        make_db(&path).map_err(s)?;
        let raw = Connection::open(&path).map_err(s)?;
        raw.execute_batch(garble).map_err(s)?;
        raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(s)?;
        drop(raw);
        let before = read(&path);
        let err = expect_err("open", tracker_db(&path), |e| {
            matches!(e, Error::Migration { .. })
                && e.to_string().contains("refinery_schema_history")
        })?;
        ensure!(read(&path) == before, "modified");
        seen.push(err.to_string());
    }
    Ok(seen.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Errors inside closures.

fn open_fresh(dir: &Path) -> std::result::Result<(PathBuf, Db), String> {
    let path = dir.join("app.db");
    make_db(&path).map_err(|e| e.to_string())?;
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(2)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((path, db))
}

fn sql_errors_in_closures(dir: &Path) -> Outcome {
    let (path, db) = open_fresh(dir)?;
    let insert = "INSERT INTO users (email, name, created_at) VALUES ('ghost@x', 'g', 0)";
    // A statement that does not compile, after a row was written in the same closure.
    let syntax = expect_err(
        "syntax error in write",
        db.write(|c| {
            c.execute(insert, [])?;
            c.execute("SELEC name FROM users", [])?;
            Ok(())
        }),
        |e| matches!(e, Error::Sqlite { .. }) && e.to_string().contains("SELEC name FROM users"),
    )?;
    let missing = expect_err(
        "no such table in read",
        db.read(|c| Ok(c.query_row("SELECT count(*) FROM nope", [], |r| r.get::<_, i64>(0))?)),
        |e| matches!(e, Error::Sqlite { .. }) && e.to_string().contains("nope"),
    )?;
    let readonly = expect_err(
        "write on a reader",
        db.read(|c| Ok(c.execute(insert, [])?)),
        |e| matches!(e, Error::Sqlite { source, .. } if source.sqlite_error_code() == Some(ErrorCode::ReadOnly)),
    )?;
    let wrong_type = expect_err(
        "wrong column type",
        db.read(|c| {
            Ok(c.query_row("SELECT email FROM users LIMIT 1", [], |r| {
                r.get::<_, i64>(0)
            })?)
        }),
        |e| matches!(e, Error::Sqlite { .. }),
    )?;
    let closure = expect_err(
        "closure error",
        db.write(|c| {
            c.execute(insert, [])?;
            Err::<(), _>(Error::closure("the caller's own failure"))
        }),
        |e| matches!(e, Error::Closure(_)),
    )?;
    let panic = expect_err(
        "panic in write",
        db.write(|c| -> Result<()> {
            c.execute(insert, [])?;
            panic!("boom in a write closure")
        }),
        |e| matches!(e, Error::Panic { message } if message == "boom in a write closure"),
    )?;
    expect_err(
        "panic in read",
        db.read(|_| -> Result<()> { panic!("boom in a read closure") }),
        |e| matches!(e, Error::Panic { .. }),
    )?;
    // Still usable, and none of the rows written before the failures is there.
    let ghosts: i64 = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM users WHERE email = 'ghost@x'",
                [],
                |r| r.get(0),
            )?)
        })
        .map_err(|e| e.to_string())?;
    ensure!(ghosts == 0, "{ghosts} rows of failed writes visible");
    drop(db);
    intact(&path)?;
    Ok(format!(
        "{syntax}; {missing}; {readonly}; {wrong_type}; {closure}; {panic}"
    ))
}

fn constraint_violations(dir: &Path) -> Outcome {
    let (path, db) = open_fresh(dir)?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE prices (id INTEGER PRIMARY KEY, amount REAL CHECK (amount > 0.5));
             CREATE TABLE guarded (x);
             CREATE TRIGGER guard BEFORE INSERT ON guarded BEGIN
                 SELECT RAISE(ABORT, 'refused: guarded.x is read-only');
             END;",
        )?)
    })
    .map_err(|e| e.to_string())?;
    let table_of = |e: &Error| match e {
        Error::Constraint { table, .. } => Some(table.clone()),
        _ => None,
    };
    let mut seen = Vec::new();
    let cases: [(&str, &str, Option<&str>); 5] = [
        (
            "unique",
            "INSERT INTO users (email, name, created_at) VALUES ('user1@example.com', 'dup', 0)",
            Some("users"),
        ),
        (
            "not null",
            "INSERT INTO users (email, name, created_at) VALUES (NULL, 'n', 0)",
            Some("users"),
        ),
        // SQLite names the constraint's expression here, not a table: a dot in it must not be
        // taken for `table.column`.
        ("check", "INSERT INTO prices (amount) VALUES (0.25)", None),
        (
            "foreign key",
            "INSERT INTO categories (user_id, name, created_at) VALUES (99999, 'c', 0)",
            None,
        ),
        ("trigger", "INSERT INTO guarded VALUES (1)", None),
    ];
    for (what, sql, table) in cases {
        let err = expect_err(what, db.write(|c| Ok(c.execute(sql, [])?)), |e| {
            e.is_constraint()
        })?;
        let got = table_of(&err).expect("a constraint");
        ensure!(
            got.as_deref() == table,
            "{what}: table {got:?}, expected {table:?} ({err})"
        );
        seen.push(format!("{what}: {err}"));
    }
    // Through a repository, the foreign key names the repository's table.
    let users = strata::Repository::<strata::domain::User>::new(&db).map_err(|e| e.to_string())?;
    let err = expect_err(
        "repository unique",
        users.insert(&strata::domain::User {
            id: 0,
            email: "user2@example.com".into(),
            name: "dup".into(),
            created_at: 0,
        }),
        |e| matches!(e, Error::Constraint { table: Some(t), .. } if t == "users"),
    )?;
    seen.push(format!("repository: {err}"));
    // In a batch a constraint fails its operation only, reported, not raised.
    let mut batch = Batch::new();
    batch.insert(
        "users",
        &["email", "name", "created_at"],
        ("user3@example.com", "dup", 0),
    );
    batch.insert(
        "users",
        &["email", "name", "created_at"],
        ("fresh@example.com", "new", 0),
    );
    let report = db.apply(&batch).map_err(|e| e.to_string())?;
    ensure!(
        report.applied == 1 && report.failed.len() == 1,
        "batch: {report:?}"
    );
    db.write(|c| Ok(c.execute("DELETE FROM users WHERE email = 'fresh@example.com'", [])?))
        .map_err(|e| e.to_string())?;
    drop(users);
    drop(db);
    intact(&path)?;
    Ok(seen.join("; "))
}

// ---------------------------------------------------------------------------------------------

struct Case {
    input: &'static str,
    run: fn(&Path) -> Outcome,
}

fn table() -> Vec<Case> {
    let mut cases = vec![
        Case {
            input: "a directory",
            run: directory,
        },
        Case {
            input: "a missing parent directory",
            run: missing_parent,
        },
        Case {
            input: "a text file",
            run: text_file,
        },
        Case {
            input: "an invalid page size",
            run: bad_page_size,
        },
        Case {
            input: "a truncated database",
            run: truncated_db,
        },
        Case {
            input: "garbage pages after a good header",
            run: corrupt_pages,
        },
        Case {
            input: "empty, :memory: and file: URI paths",
            run: special_names,
        },
        Case {
            input: "a NUL byte in the path",
            run: nul_in_path,
        },
        Case {
            input:
                "zero readers, statement cache, max_group, cache capacity/ttl; bad batch options",
            run: invalid_settings,
        },
        Case {
            input: "locked beyond busy_timeout (WAL, migrated)",
            run: locked_wal_database,
        },
        Case {
            input: "locked beyond busy_timeout (migrations pending)",
            run: locked_while_migrations_pending,
        },
        Case {
            input: "locked beyond busy_timeout (rollback journal)",
            run: locked_rollback_journal_database,
        },
        Case {
            input: "an exhausted reader pool",
            run: pool_exhausted,
        },
        Case {
            input: "a divergent migration",
            run: divergent_migration,
        },
        Case {
            input: "an unreadable migration history",
            run: garbled_migration_history,
        },
        Case {
            input: "SQL errors, closure errors, panics in closures",
            run: sql_errors_in_closures,
        },
        Case {
            input: "constraint violations",
            run: constraint_violations,
        },
    ];
    #[cfg(unix)]
    cases.push(Case {
        input: "a read-only location",
        run: read_only_location,
    });
    #[cfg(target_os = "linux")]
    cases.push(Case {
        input: "a non-UTF-8 file name",
        run: non_utf8_path,
    });
    cases
}

#[test]
fn every_bad_input_gives_its_typed_error_and_leaves_the_database_intact() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let cases = table();
    for (i, case) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).expect("mkdir");
        let outcome = catch_unwind(AssertUnwindSafe(|| (case.run)(&dir)));
        match outcome {
            Ok(Ok(summary)) => println!("ok     {}: {summary}", case.input),
            Ok(Err(reason)) => {
                println!("FAILED {}: {reason}", case.input);
                failures.push(format!("{}: {reason}", case.input));
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                println!("PANIC  {}: {message}", case.input);
                failures.push(format!("{}: panicked: {message}", case.input));
            }
        }
    }
    println!(
        "bad input: {} cases, {} failed or panicked",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
