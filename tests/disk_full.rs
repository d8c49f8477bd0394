//! A full disk, met by a child process (this test binary re-run with `STRATA_DISK_FULL_CHILD`
//! set) whose file-size limit (`RLIMIT_FSIZE`, the soft limit only, SIGXFSZ ignored) is lowered
//! while it writes: a write past the limit fails with `EFBIG`, the way a full disk fails with
//! `ENOSPC`, and raising the soft limit again is space coming back. The limit is per process,
//! so a child keeps it away from the other tests.
//!
//! The child reports over its stdout every write that returned Ok (`@ack ID`), every error
//! (`@err` if typed as a full disk, `@bad` otherwise), and figures (`@fig NAME VALUE`); the
//! parent checks that nothing acknowledged is missing from the file afterwards and that every
//! failure was a typed [`Error::DiskFull`]. A panic in the child fails its exit status.

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread;
use std::time::Duration;

use strata::cache::{EntityCache, InvalidationRule};
use strata::jobs::Job;
use strata::refinery::{Migration, Runner};
use strata::rusqlite::Connection;
use strata::{Batch, Db, Error, Result};

const CHILD: &str = "STRATA_DISK_FULL_CHILD";
const CHILD_DB: &str = "STRATA_DISK_FULL_DB";

/// Bytes per row: 4 KiB pages, so each row takes a page or two of the WAL.
const PAYLOAD: usize = 3000;
/// Threads writing single rows through group commit.
const WRITERS: i64 = 6;
/// Rows per batch, applied in chunks of `CHUNK`.
const BATCH_ROWS: i64 = 40;
const CHUNK: usize = 10;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n@{line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

fn set_soft_limit(bytes: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a stack value.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

fn unlimited() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0) };
    limit.rlim_max
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn file_len(path: &Path, suffix: &str) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(name).map(|m| m.len()).unwrap_or(0)
}

/// Reports an error: typed as a full disk, or anything else (which fails the test).
fn report_error(what: &str, err: &Error) {
    if err.is_disk_full() {
        say(&format!("err {what}"));
    } else {
        say(&format!("bad {what}: {err:?}"));
    }
}

fn insert(c: &Connection, id: i64) -> Result<()> {
    c.execute(
        "INSERT INTO acked(id, payload) VALUES (?1, randomblob(?2))",
        (id, PAYLOAD as i64),
    )?;
    Ok(())
}

fn open(path: &Path) -> Result<Db> {
    Db::builder()
        .path(path)
        .readers(2)
        .checkpoint_pages(64)
        .build()
}

// ---------------------------------------------------------------------------------------------
// The children.

/// Writes from several threads (group commits), batches and checkpoints into a limit
/// `limit_of(db size, WAL size)`; checks reads and cache hits meanwhile, that nothing spins
/// while the disk stays full, and that raising the limit lets writes succeed again.
fn child_writes(path: &Path, limit_of: fn(u64, u64) -> u64) -> Result<()> {
    let db = open(path)?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE IF NOT EXISTS acked(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
        )?)
    })?;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("rows"))?;
    db.add_rule(InvalidationRule::rowid_key("acked", "rows"))?;
    for id in 1..=300 {
        db.write(|c| insert(c, id))?;
        say(&format!("ack {id}"));
    }
    let load = |c: &Connection, id: &i64| -> Result<Option<i64>> {
        Ok(Some(c.query_row(
            "SELECT length(payload) FROM acked WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?))
    };
    assert_eq!(
        db.cached(&cache, &1, load)?.as_deref(),
        Some(&(PAYLOAD as i64))
    );
    let limit = limit_of(file_len(path, ""), file_len(path, "-wal"));
    say(&format!("fig limit {limit}"));
    set_soft_limit(limit);

    let full = AtomicBool::new(false);
    let next_batch = AtomicI64::new(0);
    thread::scope(|s| {
        for t in 0..WRITERS {
            let (db, full) = (&db, &full);
            s.spawn(move || {
                let mut failures = 0;
                for k in 0..2_000 {
                    let id = 1_000_000 * (t + 1) + k;
                    match db.write(|c| insert(c, id)) {
                        Ok(()) => say(&format!("ack {id}")),
                        Err(err) => {
                            report_error("write", &err);
                            full.store(true, Ordering::Relaxed);
                            failures += 1;
                            if failures == 20 {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let (db, full, next_batch) = (&db, &full, &next_batch);
        s.spawn(move || {
            let mut failures = 0;
            while failures < 5 {
                let first = 10_000_000 + next_batch.fetch_add(1, Ordering::Relaxed) * BATCH_ROWS;
                let mut batch = Batch::new().max_batch(CHUNK);
                for id in first..first + BATCH_ROWS {
                    batch.insert("acked", &["id", "payload"], (id, vec![7u8; PAYLOAD]));
                }
                match db.apply(&batch) {
                    Ok(report) => {
                        assert_eq!(report.applied, BATCH_ROWS as usize, "{report:?}");
                        for id in first..first + BATCH_ROWS {
                            say(&format!("ack {id}"));
                        }
                    }
                    Err(err) => {
                        report_error("batch", &err);
                        if let Error::Batch { report, .. } = &err {
                            // Chunks are applied in order, each committed on its own.
                            for id in first..first + report.applied as i64 {
                                say(&format!("ack {id}"));
                            }
                        }
                        failures += 1;
                    }
                }
            }
        });
        // Reads and cache hits go on while the writes fail.
        s.spawn(move || {
            let mut reads = 0;
            while !full.load(Ordering::Relaxed) || reads < 200 {
                let n: i64 = db
                    .read(|c| Ok(c.query_row("SELECT count(*) FROM acked", [], |r| r.get(0))?))
                    .expect("a read while the disk is full");
                assert!(n >= 300);
                let hit = db.cached(&cache, &1, load).expect("a cache hit");
                assert_eq!(hit.as_deref(), Some(&(PAYLOAD as i64)));
                reads += 1;
                thread::sleep(Duration::from_micros(200));
            }
            say(&format!("fig reads {reads}"));
        });
    });
    if !full.load(Ordering::Relaxed) {
        say("bad the limit was never reached");
    }
    // A checkpoint that needs to grow the database file, through `optimize`.
    match db.optimize() {
        Ok(_) => say("fig optimize ok"),
        Err(err) => report_error("optimize", &err),
    }
    // Nothing is retried in the background while the disk stays full: the process is idle.
    let (cpu, runs) = (cpu_seconds(), db.checkpoints().runs);
    thread::sleep(Duration::from_secs(1));
    say(&format!("fig idle_cpu {}", cpu_seconds() - cpu));
    say(&format!(
        "fig idle_checkpoints {}",
        db.checkpoints().runs - runs
    ));
    // One write still fails: the limit still holds.
    if let Err(err) = db.write(|c| insert(c, 20_000_000)) {
        report_error("write", &err);
    } else {
        say("ack 20000000");
    }
    // Space comes back: the same `Db` writes again.
    set_soft_limit(unlimited());
    for id in 30_000_000..30_000_100 {
        match db.write(|c| insert(c, id)) {
            Ok(()) => say(&format!("ack {id}")),
            Err(err) => say(&format!("bad after raising the limit: {err:?}")),
        }
    }
    let mut batch = Batch::new().max_batch(CHUNK);
    for id in 31_000_000..31_000_000 + BATCH_ROWS {
        batch.insert("acked", &["id", "payload"], (id, vec![1u8; PAYLOAD]));
    }
    match db.apply(&batch) {
        Ok(_) => (31_000_000..31_000_000 + BATCH_ROWS).for_each(|id| say(&format!("ack {id}"))),
        Err(err) => say(&format!("bad batch after raising the limit: {err:?}")),
    }
    let report = db.optimize()?;
    say(&format!(
        "fig recovered_wal {}",
        report.checkpoint.log_frames
    ));
    say("done");
    Ok(())
}

/// Opens a fresh database whose migrations need more than the limit allows, then again with
/// the limit raised.
fn child_migrations(path: &Path) -> Result<()> {
    let runner = || -> Result<Runner> {
        Ok(Runner::new(&[
            Migration::unapplied("V1__t", "CREATE TABLE t(x BLOB);")?,
            Migration::unapplied(
                "V2__fill",
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
                 INSERT INTO t SELECT randomblob(3000) FROM n;",
            )?,
        ]))
    };
    set_soft_limit(256 << 10);
    match Db::builder().path(path).migrations(runner()?).build() {
        Ok(_) => say("bad the migrations fit under the limit"),
        Err(err) => {
            report_error("open", &err);
            if err.path() != Some(path) {
                say(&format!("bad the error names {:?}", err.path()));
            }
        }
    }
    set_soft_limit(unlimited());
    let db = Db::builder().path(path).migrations(runner()?).build()?;
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    say(&format!("fig migrated_rows {rows}"));
    say("done");
    Ok(())
}

/// Job-queue writes at a full disk: standalone enqueues, enqueues inside a write, and a worker
/// pool claiming and completing (each completion in the handler's own write); then space comes
/// back and every acknowledged job runs exactly once.
fn child_jobs(path: &Path) -> Result<()> {
    let db = open(path)?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE done(id INTEGER NOT NULL); CREATE TABLE side(id INTEGER PRIMARY KEY);",
        )?)
    })?;
    let queue = db.jobs()?;
    // Slow handlers until space comes back, so the jobs pile up and fill the disk.
    let space_back = std::sync::Arc::new(AtomicBool::new(false));
    let slow = std::sync::Arc::clone(&space_back);
    let job = |id: i64| Ok::<_, Error>(Job::new("mark", &id)?.max_attempts(1_000));
    let pool = queue
        .workers()
        .threads(2)
        // A retry that cannot be written at a full disk waits for its lease to expire.
        .lease(Duration::from_secs(1))
        .backoff(Duration::from_millis(5), Duration::from_millis(100))
        .handler("mark", move |ctx, id: i64| {
            if !slow.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
            ctx.db().write(|c| {
                c.execute("INSERT INTO done(id) VALUES (?1)", [id])?;
                ctx.complete_in(c)
            })
        })
        .start()?;
    for id in 1..=100 {
        queue.enqueue(job(id)?)?;
        say(&format!("ack {id}"));
    }
    // A truncated WAL, so the limit bites as soon as the WAL grows past a few pages.
    db.optimize()?;
    set_soft_limit(file_len(path, "").max(file_len(path, "-wal")) + (64 << 10));
    let mut failures = 0;
    for id in 1_000.. {
        let enqueued = if id % 2 == 0 {
            queue.enqueue(job(id)?).map(drop)
        } else {
            db.write(|c| {
                c.execute("INSERT INTO side(id) VALUES (?1)", [id])?;
                queue.enqueue_in(c, job(id)?).map(drop)
            })
        };
        match enqueued {
            Ok(()) => say(&format!("ack {id}")),
            Err(err) => {
                report_error("job", &err);
                failures += 1;
                if failures == 20 {
                    break;
                }
            }
        }
    }
    // The pool fails its writes meanwhile; it must wait, not spin.
    thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds();
    thread::sleep(Duration::from_secs(1));
    say(&format!("fig idle_cpu {}", cpu_seconds() - cpu));
    set_soft_limit(unlimited());
    space_back.store(true, Ordering::Relaxed);
    for id in 50_000_000..50_000_010 {
        queue.enqueue(job(id)?)?;
        say(&format!("ack {id}"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !queue.is_empty()? && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    say(&format!("fig pending {}", queue.len()?));
    say(&format!("fig dead {}", queue.dead_letters()?.len()));
    pool.shutdown(Duration::from_secs(5));
    say("done");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[derive(Debug, Default)]
struct Outcome {
    acked: BTreeSet<i64>,
    errors: BTreeMap<String, usize>,
    bad: Vec<String>,
    figures: BTreeMap<String, String>,
    done: bool,
}

impl Outcome {
    fn figure(&self, name: &str) -> f64 {
        self.figures[name].parse().expect("a number")
    }
}

fn run_child(test: &str, scenario: &str, path: &Path) -> Outcome {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .env(CHILD_DB, path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut outcome = Outcome::default();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("child output");
        let Some(message) = line.strip_prefix('@') else {
            continue;
        };
        let (kind, rest) = message.split_once(' ').unwrap_or((message, ""));
        match kind {
            "ack" => {
                outcome.acked.insert(rest.parse().expect("an id"));
            }
            "err" => *outcome.errors.entry(rest.to_owned()).or_default() += 1,
            "bad" => outcome.bad.push(rest.to_owned()),
            "fig" => {
                let (name, value) = rest.split_once(' ').expect("name value");
                outcome.figures.insert(name.to_owned(), value.to_owned());
            }
            "done" => outcome.done = true,
            other => panic!("unknown message {other}"),
        }
    }
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "the child failed ({status}): {outcome:?}");
    assert!(outcome.done, "the child did not finish: {outcome:?}");
    assert!(
        outcome.bad.is_empty(),
        "untyped failures: {:?}",
        outcome.bad
    );
    outcome
}

/// Every acknowledged id is in the file, which is intact.
fn verify(path: &Path, acked: &BTreeSet<i64>) -> Result<()> {
    let conn = Connection::open(path)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT id FROM acked")?;
    let present = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<std::result::Result<BTreeSet<i64>, _>>()?;
    let lost: Vec<_> = acked.difference(&present).take(10).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        acked.len()
    );
    Ok(())
}

fn writes_at_full_disk(test: &str, scenario: &str) -> Result<Outcome> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.db");
    let outcome = run_child(test, scenario, &path);
    eprintln!(
        "{scenario}: {} acked, errors {:?}, {:?}",
        outcome.acked.len(),
        outcome.errors,
        outcome.figures
    );
    assert!(
        outcome.errors.get("write").is_some_and(|&n| n > 0),
        "{outcome:?}"
    );
    assert!(
        outcome.errors.get("batch").is_some_and(|&n| n > 0),
        "{outcome:?}"
    );
    // Idle at a full disk: no checkpoint retried in a loop, well under a core.
    assert!(outcome.figure("idle_cpu") < 0.3, "{outcome:?}");
    assert!(outcome.figure("idle_checkpoints") <= 1.0, "{outcome:?}");
    assert!(outcome.acked.contains(&30_000_099) && outcome.acked.contains(&31_000_000));
    verify(&path, &outcome.acked)?;
    Ok(outcome)
}

fn child_main() -> Option<Result<()>> {
    let scenario = std::env::var(CHILD).ok()?;
    let path = PathBuf::from(std::env::var_os(CHILD_DB).expect("database path"));
    // A write past the limit then fails with EFBIG instead of killing the process.
    // SAFETY: setting a signal's disposition to ignore.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    Some(match scenario.as_str() {
        // Room for a few hundred KiB more than the files hold.
        "above" => child_writes(&path, |db, wal| db.max(wal) + (384 << 10)),
        // Below the WAL already written: frames appended past the limit fail.
        "below_wal" => child_writes(&path, |db, wal| db.max(wal / 2).max(128 << 10)),
        "migrations" => child_migrations(&path),
        "jobs" => child_jobs(&path),
        other => panic!("unknown scenario {other}"),
    })
}

#[test]
fn group_commits_batches_and_checkpoints_fail_typed_and_recover_at_a_full_disk() -> Result<()> {
    if let Some(result) = child_main() {
        return result;
    }
    writes_at_full_disk(
        "group_commits_batches_and_checkpoints_fail_typed_and_recover_at_a_full_disk",
        "above",
    )?;
    Ok(())
}

#[test]
fn a_wal_that_cannot_grow_fails_writes_typed_and_recovers() -> Result<()> {
    if let Some(result) = child_main() {
        return result;
    }
    writes_at_full_disk(
        "a_wal_that_cannot_grow_fails_writes_typed_and_recovers",
        "below_wal",
    )?;
    Ok(())
}

#[test]
fn migrations_at_open_fail_with_disk_full_and_succeed_once_there_is_room() -> Result<()> {
    if let Some(result) = child_main() {
        return result;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("migrate.db");
    let outcome = run_child(
        "migrations_at_open_fail_with_disk_full_and_succeed_once_there_is_room",
        "migrations",
        &path,
    );
    assert_eq!(outcome.errors.get("open"), Some(&1), "{outcome:?}");
    assert_eq!(outcome.figure("migrated_rows"), 500.0);
    Ok(())
}

#[test]
fn job_queue_writes_fail_typed_at_a_full_disk_and_every_acknowledged_job_runs_once() -> Result<()> {
    if let Some(result) = child_main() {
        return result;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.db");
    let outcome = run_child(
        "job_queue_writes_fail_typed_at_a_full_disk_and_every_acknowledged_job_runs_once",
        "jobs",
        &path,
    );
    eprintln!(
        "jobs: {} acked, errors {:?}, {:?}",
        outcome.acked.len(),
        outcome.errors,
        outcome.figures
    );
    assert!(
        outcome.errors.get("job").is_some_and(|&n| n > 0),
        "{outcome:?}"
    );
    assert!(outcome.figure("idle_cpu") < 0.3, "{outcome:?}");
    assert_eq!(outcome.figure("pending"), 0.0, "{outcome:?}");
    assert_eq!(outcome.figure("dead"), 0.0, "{outcome:?}");
    let conn = Connection::open(&path)?;
    let mut stmt = conn.prepare("SELECT id, count(*) FROM done GROUP BY id")?;
    let runs = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<std::result::Result<BTreeMap<i64, i64>, _>>()?;
    let missing: Vec<_> = outcome
        .acked
        .iter()
        .filter(|id| !runs.contains_key(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged jobs that never ran: {missing:?}"
    );
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "jobs whose effects were applied twice: {twice:?}"
    );
    Ok(())
}
