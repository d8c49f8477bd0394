//! The connection layer: pragmas on the writer and on every reader, read-only readers, IMMEDIATE
//! write transactions, pool exhaustion, shared in-memory databases, and bad input at open.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use strata::rusqlite::{self, Connection, ErrorCode};
use strata::{Db, Error, Result, Synchronous};

/// A database with the expense tracker's schema (a plain `Db::open` applies no migrations).
fn tracker_db(path: impl AsRef<std::path::Path>) -> strata::Result<strata::Db> {
    strata::Db::builder()
        .path(path)
        .migrations(strata::domain::migrations())
        .build()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Runs `f` on `n` readers that are all checked out at the same time: each closure first waits
/// at a barrier that only opens once `n` closures hold a reader. A reader that cannot be checked
/// out still joins the barrier (after its pool timeout), so a broken pool fails instead of hanging.
fn on_readers_at_once<T, F>(db: &Db, n: usize, f: F) -> Vec<Result<T>>
where
    T: Send,
    F: Fn(&Connection) -> Result<T> + Sync,
{
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut arrived = false;
                    let out = db.read(|c| {
                        barrier.wait();
                        arrived = true;
                        f(c)
                    });
                    if !arrived {
                        barrier.wait();
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .collect()
    })
}

/// The per-connection settings as SQLite reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pragmas {
    journal_mode: String,
    synchronous: i64,
    busy_timeout: i64,
    cache_size: i64,
    temp_store: i64,
    mmap_size: i64,
    foreign_keys: i64,
    journal_size_limit: i64,
    trusted_schema: i64,
    query_only: i64,
}

fn read_pragmas(c: &Connection) -> Result<Pragmas> {
    let int = |name: &str| -> Result<i64> {
        Ok(c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
    };
    Ok(Pragmas {
        journal_mode: c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
        synchronous: int("synchronous")?,
        busy_timeout: int("busy_timeout")?,
        cache_size: int("cache_size")?,
        temp_store: int("temp_store")?,
        mmap_size: int("mmap_size")?,
        foreign_keys: int("foreign_keys")?,
        journal_size_limit: int("journal_size_limit")?,
        trusted_schema: int("trusted_schema")?,
        query_only: int("query_only")?,
    })
}

/// Checks the writer and `readers` readers held at once against `expected` (query_only aside).
fn assert_pragmas_everywhere(db: &Db, readers: usize, expected: &Pragmas) -> Result<()> {
    let on_writer = db.write(read_pragmas)?;
    assert_eq!(
        on_writer,
        Pragmas {
            query_only: 0,
            ..expected.clone()
        },
        "writer pragmas"
    );
    let on_readers = on_readers_at_once(db, readers, read_pragmas);
    assert_eq!(on_readers.len(), readers);
    for (i, got) in on_readers.into_iter().enumerate() {
        assert_eq!(
            got?,
            Pragmas {
                query_only: 1,
                ..expected.clone()
            },
            "reader {i} pragmas"
        );
    }
    Ok(())
}

#[test]
fn custom_pragmas_apply_to_writer_and_every_reader() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(dir.path().join("p.db"))
        .readers(4)
        .busy_timeout(Duration::from_millis(1234))
        .connection_timeout(Duration::from_secs(5))
        .synchronous(Synchronous::Normal)
        .cache_size_kib(4096)
        .mmap_size(1 << 20)
        .journal_size_limit(2 << 20)
        .build()?;
    let expected = Pragmas {
        journal_mode: "wal".into(),
        synchronous: 1,
        busy_timeout: 1234,
        cache_size: -4096,
        temp_store: 2,
        mmap_size: 1 << 20,
        foreign_keys: 1,
        journal_size_limit: 2 << 20,
        trusted_schema: 0,
        query_only: 1,
    };
    assert_pragmas_everywhere(&db, 4, &expected)
}

#[test]
fn default_pragmas_with_full_sync_apply_to_writer_and_every_reader() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(dir.path().join("p.db"))
        .readers(4)
        .synchronous(Synchronous::Full)
        .build()?;
    let expected = Pragmas {
        journal_mode: "wal".into(),
        synchronous: 2,
        busy_timeout: 5000,
        cache_size: -8192,
        temp_store: 2,
        mmap_size: 0,
        foreign_keys: 1,
        journal_size_limit: 64 * 1024 * 1024,
        trusted_schema: 0,
        query_only: 1,
    };
    assert_pragmas_everywhere(&db, 4, &expected)
}

#[test]
fn readers_refuse_writes() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("ro.db"))
        .readers(2)
        .build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;

    for sql in [
        "INSERT INTO t VALUES (1)",
        "CREATE TABLE u(y)",
        "DELETE FROM t",
    ] {
        let err = db.read(|c| Ok(c.execute(sql, [])?)).unwrap_err();
        match &err {
            Error::Sqlite { source, .. } => assert_eq!(
                source.sqlite_error_code(),
                Some(ErrorCode::ReadOnly),
                "{sql}: {err}"
            ),
            other => panic!("{sql}: expected a read-only SQLite error, got {other:?}"),
        }
    }
    let (rows, tables): (i64, i64) = db.read(|c| {
        Ok((
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?,
            c.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'u'",
                [],
                |r| r.get(0),
            )?,
        ))
    })?;
    assert_eq!((rows, tables), (0, 0));
    Ok(())
}

fn db_with_table(path: &Path) -> Result<Db> {
    let db = Db::builder().path(path).readers(1).build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;
    Ok(db)
}

fn raw_connection(path: &Path) -> rusqlite::Result<Connection> {
    let raw = Connection::open(path)?;
    raw.busy_timeout(Duration::from_secs(5))?;
    Ok(raw)
}

/// While `db.write` holds its transaction open (before writing anything), another connection's
/// BEGIN IMMEDIATE waits for it: the lock is taken at BEGIN, not at the first write.
#[test]
fn open_write_transaction_makes_other_writers_wait() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("w.db");
    let db = db_with_table(&path)?;

    let (db, path) = (&db, &path);
    thread::scope(|s| -> Result<()> {
        // Declared inside the scope: if an assert fails, dropping release_tx frees the writer.
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (other_tx, other_rx) = mpsc::channel();
        let writer = s.spawn(move || {
            db.write(move |c| {
                entered_tx
                    .send(c.is_autocommit())
                    .expect("main thread alive");
                release_rx
                    .recv()
                    .map_err(|_| Error::closure("test gave up"))?;
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(())
            })
        });
        let autocommit = entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("db.write entered its closure");
        assert!(!autocommit, "db.write closure runs inside a transaction");

        let other = s.spawn(move || -> rusqlite::Result<i64> {
            let raw = raw_connection(path)?;
            let begun = raw.execute_batch("BEGIN IMMEDIATE");
            other_tx.send(begun.is_ok()).expect("main thread alive");
            begun?;
            let n = raw.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            raw.execute_batch("COMMIT")?;
            Ok(n)
        });
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            other_rx.try_recv(),
            Err(TryRecvError::Empty),
            "BEGIN IMMEDIATE on another connection must wait while db.write is open"
        );
        release_tx.send(()).expect("writer alive");
        writer.join().expect("writer thread")?;
        let seen = other.join().expect("raw thread")?;
        assert_eq!(
            other_rx.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "the waiting BEGIN IMMEDIATE succeeds after db.write commits"
        );
        assert_eq!(seen, 1, "the other connection sees the committed row");
        Ok(())
    })
}

/// A lock held by another connection for less than busy_timeout makes `db.write` wait at BEGIN
/// and then succeed, even when the closure reads before it writes (a deferred transaction would
/// fail with SQLITE_BUSY when upgrading, without waiting).
#[test]
fn write_waits_for_another_writer_within_busy_timeout() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("w.db");
    let db = db_with_table(&path)?;

    let raw = raw_connection(&path)?;
    raw.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (100);")?;
    thread::scope(|s| -> Result<()> {
        let write = s.spawn(|| {
            db.write(|c| {
                let before: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(before)
            })
        });
        thread::sleep(Duration::from_millis(300));
        let waiting = !write.is_finished();
        raw.execute_batch("COMMIT")?;
        let before = write.join().expect("write thread");
        assert!(
            waiting,
            "db.write must wait while another connection writes"
        );
        let before = before?;
        assert_eq!(
            before, 1,
            "db.write's transaction began after the other commit"
        );
        Ok(())
    })?;
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(n, 2);
    Ok(())
}

#[test]
fn write_locked_beyond_busy_timeout_is_busy() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("w.db");
    let db = Db::builder()
        .path(&path)
        .readers(1)
        .busy_timeout(Duration::from_millis(100))
        .build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;

    let (locked_tx, locked_rx) = mpsc::channel();
    thread::scope(|s| -> Result<()> {
        let holder = s.spawn(|| -> rusqlite::Result<()> {
            let raw = raw_connection(&path)?;
            raw.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (100);")?;
            locked_tx.send(()).expect("main thread alive");
            thread::sleep(Duration::from_secs(2));
            raw.execute_batch("COMMIT")
        });
        locked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the other connection took the write lock");
        let started = Instant::now();
        let err = db
            .write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?))
            .unwrap_err();
        let waited = started.elapsed();
        assert!(err.is_busy(), "expected a busy error, got {err:?}");
        assert!(matches!(err, Error::Busy { .. }), "got {err:?}");
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .and_then(rusqlite::Error::sqlite_error_code);
        assert_eq!(source, Some(rusqlite::ErrorCode::DatabaseBusy), "{err:?}");
        assert!(waited < Duration::from_secs(2), "gave up after {waited:?}");
        holder.join().expect("holder thread")?;
        Ok(())
    })?;
    // The failed write left nothing behind, and the writer is usable again.
    db.write(|c| Ok(c.execute("INSERT INTO t VALUES (2)", [])?))?;
    let rows: Vec<i64> = db.read(|c| {
        let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })?;
    assert_eq!(rows, vec![2, 100]);
    Ok(())
}

#[test]
fn exhausted_pool_times_out() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("x.db"))
        .readers(1)
        .connection_timeout(Duration::from_millis(300))
        .busy_timeout(Duration::from_millis(100))
        .build()?;

    let db = &db;
    thread::scope(|s| -> Result<()> {
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = s.spawn(move || {
            db.read(|_| {
                held_tx.send(()).expect("main thread alive");
                release_rx
                    .recv()
                    .map_err(|_| Error::closure("test gave up"))
            })
        });
        held_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the only reader is held");
        let started = Instant::now();
        let outcome = db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?));
        let elapsed = started.elapsed();
        release_tx.send(()).expect("holder alive");
        holder.join().expect("holder thread")?;
        match outcome {
            Err(err @ Error::PoolTimeout { .. }) => {
                let Error::PoolTimeout { waited, .. } = err else {
                    unreachable!()
                };
                // The time actually waited, not the setting.
                assert!(waited >= Duration::from_millis(300), "{waited:?}");
                assert!(waited <= elapsed, "{waited:?} > {elapsed:?}");
                assert!(std::error::Error::source(&err).is_some(), "{err:?}");
            }
            other => panic!("expected PoolTimeout, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(3),
            "pool timeout took {elapsed:?}"
        );
        Ok(())
    })?;
    // The reader is back in the pool.
    let one: i64 = db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get(0))?))?;
    assert_eq!(one, 1);
    Ok(())
}

fn table_exists(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

fn add_user(db: &Db, email: &str) -> Result<i64> {
    db.write(|c| {
        c.execute(
            "INSERT INTO users (email, name, created_at) VALUES (?1, 'x', 0)",
            [email],
        )?;
        Ok(c.last_insert_rowid())
    })
}

/// What one reader sees of an in-memory database: the strata tables, and the users' emails.
fn in_memory_view(c: &Connection) -> Result<(bool, bool, Vec<String>)> {
    let mut stmt = c.prepare("SELECT email FROM users ORDER BY id")?;
    let emails = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok((
        table_exists(c, "users")?,
        table_exists(c, "expenses")?,
        emails,
    ))
}

#[test]
fn open_in_memory_is_shared_by_every_connection() -> Result<()> {
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .build()?;
    add_user(&db, "a@example.com")?;
    // The default pool holds 2 x cores readers, so at least 2.
    for view in on_readers_at_once(&db, 2, in_memory_view) {
        assert_eq!(view?, (true, true, vec!["a@example.com".to_owned()]));
    }
    assert_eq!(db.schema_version()?, Some(2));
    Ok(())
}

#[test]
fn in_memory_writes_and_migrations_reach_four_readers_at_once() -> Result<()> {
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .in_memory()
        .readers(4)
        .build()?;
    // Migrations are visible on every reader before anything is written.
    for view in on_readers_at_once(&db, 4, in_memory_view) {
        assert_eq!(view?, (true, true, vec![]));
    }
    add_user(&db, "a@example.com")?;
    add_user(&db, "b@example.com")?;
    let expected = vec!["a@example.com".to_owned(), "b@example.com".to_owned()];
    for view in on_readers_at_once(&db, 4, in_memory_view) {
        assert_eq!(view?, (true, true, expected.clone()));
    }
    Ok(())
}

#[test]
fn two_in_memory_dbs_do_not_share() -> Result<()> {
    let a = Db::builder()
        .migrations(strata::domain::migrations())
        .build()?;
    let b = Db::builder()
        .migrations(strata::domain::migrations())
        .build()?;
    assert_ne!(a.path(), b.path());
    add_user(&a, "only-in-a@example.com")?;
    a.write(|c| Ok(c.execute_batch("CREATE TABLE only_a(x)")?))?;
    let (b_users, b_has_table) = b.read(|c| {
        Ok((
            c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))?,
            table_exists(c, "only_a")?,
        ))
    })?;
    assert_eq!((b_users, b_has_table), (0, false));
    let a_users: i64 =
        a.read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))?;
    assert_eq!(a_users, 1);
    Ok(())
}

#[test]
fn prepared_statements_are_reused() -> Result<()> {
    let db = Db::builder().statement_cache_capacity(1).build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")?))?;
    // Two statements alternating through a one-entry cache: every lookup evicts the other.
    let sums = db.read(|c| {
        let mut out: Vec<i64> = Vec::new();
        for _ in 0..3 {
            out.push(
                c.prepare_cached("SELECT sum(x) FROM t")?
                    .query_row([], |r| r.get(0))?,
            );
            out.push(
                c.prepare_cached("SELECT max(x) FROM t")?
                    .query_row([], |r| r.get(0))?,
            );
        }
        Ok(out)
    })?;
    assert_eq!(sums, vec![3i64, 2, 3, 2, 3, 2]);
    Ok(())
}

#[test]
fn zero_statement_cache_is_invalid_config() {
    let dir = tempdir();
    let path = dir.path().join("never.db");
    match Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .statement_cache_capacity(0)
        .build()
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "statement_cache_capacity"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(!path.exists(), "nothing is created for an invalid config");
}

#[test]
fn zero_readers_is_invalid_config() {
    let dir = tempdir();
    let path = dir.path().join("never.db");
    match Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(0)
        .build()
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "readers"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(!path.exists(), "nothing is created for an invalid config");
    match Db::builder()
        .migrations(strata::domain::migrations())
        .in_memory()
        .readers(0)
        .build()
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "readers"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn directory_is_refused() {
    let dir = tempdir();
    match tracker_db(dir.path()) {
        Err(Error::IsDirectory { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected IsDirectory, got {other:?}"),
    }
    assert!(files_in(dir.path()).is_empty(), "nothing created inside");
}

#[test]
fn missing_parent_directory_is_refused() {
    let dir = tempdir();
    let path = dir.path().join("no/such/dir/app.db");
    match tracker_db(&path) {
        Err(Error::MissingDirectory { path: p }) => assert_eq!(p, path),
        other => panic!("expected MissingDirectory, got {other:?}"),
    }
    assert!(files_in(dir.path()).is_empty(), "no directory was created");
}

#[test]
fn text_file_is_not_a_database_and_stays_untouched() {
    let dir = tempdir();
    for (name, contents) in [
        (
            "long.txt",
            "this is a text file, not a database\n".repeat(200),
        ),
        ("short.txt", "hello\n".to_owned()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &contents).expect("write text file");
        match tracker_db(&path) {
            Err(Error::NotADatabase { path: p }) => assert_eq!(p, path),
            other => panic!("{name}: expected NotADatabase, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).expect("read back"),
            contents.as_bytes(),
            "{name} is byte-identical"
        );
    }
    assert_eq!(files_in(dir.path()), vec!["long.txt", "short.txt"]);
}

#[test]
fn truncated_database_is_corrupt_and_stays_untouched() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("t.db");
    {
        let db = Db::builder()
            .migrations(strata::domain::migrations())
            .path(&path)
            .readers(1)
            .build()?;
        db.write(|c| {
            let mut stmt =
                c.prepare("INSERT INTO users (email, name, created_at) VALUES (?1, ?2, 0)")?;
            for i in 0..5000 {
                stmt.execute((format!("user{i}@example.com"), "x".repeat(100)))?;
            }
            Ok(())
        })?;
    }
    // Everything into the main file, so that the file alone is the database.
    {
        let raw = Connection::open(&path)?;
        raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        !wal.exists() || std::fs::metadata(&wal).expect("wal metadata").len() == 0,
        "the WAL is checkpointed"
    );
    let full = std::fs::read(&path).expect("read database");
    assert!(full.len() > 64 * 4096, "spans many pages: {}", full.len());
    std::fs::write(&path, &full[..full.len() / 2]).expect("truncate");
    let before = std::fs::read(&path).expect("read truncated");

    match tracker_db(&path) {
        Err(Error::Corrupt { path: p, detail }) => {
            assert_eq!(p, path);
            assert!(!detail.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read after"),
        before,
        "a corrupt file is not modified"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn read_only_location_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempdir();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // root ignores directory permissions; /sys refuses new files even to root.
    let probe = locked.join("probe");
    let path = if std::fs::File::create(&probe).is_ok() {
        let _ = std::fs::remove_file(&probe);
        PathBuf::from("/sys/strata-readonly-test.db")
    } else {
        locked.join("app.db")
    };
    let outcome = tracker_db(&path);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
    match outcome {
        Err(Error::ReadOnly { path: p }) => assert_eq!(p, path),
        other => panic!("{}: expected ReadOnly, got {other:?}", path.display()),
    }
    assert!(!path.exists());
}
