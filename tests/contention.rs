//! Contention: group-committed writers, a Batch writer, readers, a second `Db` on the same file
//! (as a second service instance would be), a checkpointer, `optimize()` in a loop, the index
//! advisor and `health()`, all at once. No SQLITE_BUSY and no pool timeout may reach a caller.
//! Negative controls show that the same setup does produce SQLITE_BUSY for a deferred
//! transaction upgraded to write, so the test can fail.
//!
//! Runs for `STRATA_CONTENTION_SECS` seconds (default 10).

mod common;

use common::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use strata::advisor::AdviseOptions;
use strata::cache::{EntityCache, InvalidationRule};
use strata::rusqlite::{self, Connection, OptionalExtension};
use strata::{Batch, Db, Error, Result};

const KEYS: u64 = 500;

/// Errors seen by callers, by kind.
#[derive(Default)]
struct Errors {
    busy: AtomicU64,
    pool_timeout: AtomicU64,
    other: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Errors {
    fn record(&self, what: &str, err: &Error) {
        let counter = if err.is_busy() {
            &self.busy
        } else if matches!(err, Error::PoolTimeout { .. }) {
            &self.pool_timeout
        } else {
            &self.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 5 {
            examples.push(format!("{what}: {err}"));
        }
    }
}

/// Operations done, by kind, and the slowest of each.
#[derive(Default)]
struct Ops {
    counts: Mutex<BTreeMap<&'static str, (u64, Duration)>>,
}

impl Ops {
    fn add(&self, kind: &'static str, n: u64, took: Duration) {
        let mut counts = self.counts.lock().unwrap();
        let entry = counts.entry(kind).or_default();
        entry.0 += n;
        entry.1 = entry.1.max(took);
    }
}

fn open(path: &std::path::Path, readers: usize) -> Result<Db> {
    Db::builder().path(path).readers(readers).build()
}

fn contention_secs() -> u64 {
    std::env::var("STRATA_CONTENTION_SECS")
        .map(|v| v.parse().expect("STRATA_CONTENTION_SECS must be a number"))
        .unwrap_or(10)
}

#[test]
fn no_busy_and_no_pool_timeout_reach_callers_under_contention() -> Result<()> {
    let secs = contention_secs();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("contention.db");
    // Two handles on one file: two writer connections compete for SQLite's write lock, as two
    // processes would. `a` has fewer readers than reader threads, so reads wait for the pool.
    let a = open(&path, 2)?;
    a.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, n INTEGER NOT NULL);
             CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, writes INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX events_by_writer ON events (writer, n);",
        )?)
    })?;
    let b = open(&path, 4)?;
    let cache = a.register_cache(EntityCache::<i64, String>::builder("kv").capacity(256))?;
    a.add_rule(InvalidationRule::rowid_key("kv", "kv"))?;

    let errors = Errors::default();
    let ops = Ops::default();
    let control_busy = AtomicU64::new(0);
    let control_ok = AtomicU64::new(0);
    let busy_checkpoints = AtomicU64::new(0);
    let wal_reported = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();

    thread::scope(|s| {
        // 4 group-committed writers, two on each handle.
        for w in 0..4u64 {
            let (db, errors, ops, stop) = (if w % 2 == 0 { &a } else { &b }, &errors, &ops, &stop);
            s.spawn(move || {
                let mut rng = Rng::new(w + 1);
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.below(KEYS) as i64;
                    let t = Instant::now();
                    let result = db.write(|c| {
                        c.prepare_cached("INSERT INTO events (writer, n) VALUES (?1, ?2)")?
                            .execute((w as i64, n))?;
                        c.prepare_cached(
                            "INSERT INTO kv (k, v) VALUES (?1, ?2) \
                             ON CONFLICT (k) DO UPDATE SET v = excluded.v, writes = writes + 1",
                        )?
                        .execute((k, format!("w{w}-{n}")))?;
                        Ok(())
                    });
                    match result {
                        Ok(()) => ops.add("write", 1, t.elapsed()),
                        Err(e) => errors.record("write", &e),
                    }
                    n += 1;
                }
            });
        }
        // 1 Batch writer: upserts and inserts in chunks.
        {
            let (db, errors, ops, stop) = (&a, &errors, &ops, &stop);
            s.spawn(move || {
                let mut rng = Rng::new(99);
                let mut round = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = Batch::new().max_batch(100);
                    for i in 0..250 {
                        let k = rng.below(KEYS) as i64;
                        batch.upsert("kv", &["k", "v"], (k, format!("b{round}-{i}")), &["k"]);
                        batch.insert("events", &["writer", "n"], (100, round * 1000 + i));
                    }
                    let t = Instant::now();
                    match db.apply(&batch) {
                        Ok(report) if report.failed.is_empty() => {
                            ops.add("batch op", report.applied as u64, t.elapsed())
                        }
                        Ok(report) => {
                            let err =
                                Error::closure(format!("batch failures: {:?}", report.failed));
                            errors.record("batch", &err)
                        }
                        Err(e) => errors.record("batch", &e),
                    }
                    round += 1;
                }
            });
        }
        // 4 readers: snapshots of several queries, and cached reads through the rule.
        for r in 0..4u64 {
            let db = if r == 3 { &b } else { &a };
            let (cache, errors, ops, stop) = (&cache, &errors, &ops, &stop);
            s.spawn(move || {
                let mut rng = Rng::new(1000 + r);
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.below(KEYS) as i64;
                    let t = Instant::now();
                    let result = if r % 2 == 0 {
                        db.read(|c| {
                            let n: i64 =
                                c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
                            let last: Option<i64> = c
                                .prepare_cached("SELECT max(n) FROM events WHERE writer = ?1")?
                                .query_row([k % 4], |r| r.get(0))?;
                            let v: Option<String> = c
                                .prepare_cached("SELECT v FROM kv WHERE k = ?1")?
                                .query_row([k], |r| r.get(0))
                                .optional()?;
                            Ok((n, last, v))
                        })
                        .map(drop)
                    } else {
                        db.cached(cache, &k, |c, k| {
                            Ok(c.prepare_cached("SELECT v FROM kv WHERE k = ?1")?
                                .query_row([k], |r| r.get(0))
                                .optional()?)
                        })
                        .map(drop)
                    };
                    match result {
                        Ok(()) => ops.add("read", 1, t.elapsed()),
                        Err(e) => errors.record("read", &e),
                    }
                }
            });
        }
        // Maintenance on `a`'s writer: `PRAGMA optimize` + `wal_checkpoint(TRUNCATE)` every
        // ~100 ms. A checkpoint that readers or `b`'s writer keep from completing is reported
        // in `MaintenanceReport::checkpoint.busy`, not as an error; an `Err` that is BUSY is
        // one reaching a caller.
        {
            let (db, errors, ops, stop) = (&a, &errors, &ops, &stop);
            let busy_checkpoints = &busy_checkpoints;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                    let t = Instant::now();
                    match db.optimize() {
                        Ok(report) => {
                            if report.checkpoint.busy {
                                busy_checkpoints.fetch_add(1, Ordering::Relaxed);
                            }
                            ops.add("optimize", 1, t.elapsed())
                        }
                        Err(e) => errors.record("optimize", &e),
                    }
                }
            });
        }
        // The advisor on `a` (whose two readers the reader threads already outnumber): the
        // given statements and the observed workload in turn. Its schema copy and statistics
        // are read on a reader, never the writer.
        {
            let (db, errors, ops, stop) = (&a, &errors, &ops, &stop);
            s.spawn(move || {
                let statements = [
                    "SELECT v FROM kv WHERE writes > ?1 ORDER BY writes",
                    "SELECT writer, count(*) FROM events WHERE n > ?1 GROUP BY writer",
                    "SELECT max(n) FROM events WHERE writer = ?1",
                ];
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                    let t = Instant::now();
                    let given = round.is_multiple_of(2);
                    let advice = if given {
                        db.advise(AdviseOptions::new().queries(statements))
                    } else {
                        db.advise(AdviseOptions::new())
                    };
                    match advice {
                        Ok(advice) if given && advice.indexes.is_empty() => {
                            let err = Error::closure(format!("no advice: {advice:?}"));
                            errors.record("advise", &err)
                        }
                        Ok(_) => ops.add("advise", 1, t.elapsed()),
                        Err(e) => errors.record("advise", &e),
                    }
                    round += 1;
                }
            });
        }
        // `health()` on `b` (quick_check on a reader); a problem it reports (no reader free,
        // say) is an error reaching a caller. The WAL past its limit is not: this load holds
        // long snapshots on purpose, and health reporting it is health doing its job (counted).
        {
            let (db, errors, ops, stop, wal_reported) = (&b, &errors, &ops, &stop, &wal_reported);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    let t = Instant::now();
                    let health = db.health();
                    let wal_only = !health.problems.is_empty()
                        && health.problems.iter().all(|p| p.starts_with("WAL is"));
                    if wal_only {
                        wal_reported.fetch_add(1, Ordering::Relaxed);
                    }
                    if health.ok || wal_only {
                        ops.add("health", 1, t.elapsed());
                    } else {
                        let err = Error::closure(format!("unhealthy: {:?}", health.problems));
                        errors.record("health", &err)
                    }
                }
            });
        }
        // A checkpointer on its own connection, copying the WAL back while everything runs.
        {
            let (path, errors, ops, stop) = (&path, &errors, &ops, &stop);
            s.spawn(move || {
                let conn = Connection::open(path).expect("checkpointer connection");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy_timeout");
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    let t = Instant::now();
                    match conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        Ok(_) => ops.add("checkpoint", 1, t.elapsed()),
                        Err(e) => errors.record("checkpoint", &Error::from(e)),
                    }
                }
            });
        }
        // The control inside the run: a raw connection whose transactions are deferred (read,
        // then write) gets SQLITE_BUSY under this very load, busy_timeout notwithstanding.
        {
            let (path, stop) = (&path, &stop);
            let (control_busy, control_ok) = (&control_busy, &control_ok);
            s.spawn(move || {
                let conn = Connection::open(path).expect("control connection");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy_timeout");
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(5));
                    let attempt = (|| -> rusqlite::Result<()> {
                        conn.execute_batch("BEGIN")?;
                        let _: i64 = conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?;
                        thread::sleep(Duration::from_millis(2));
                        conn.execute("UPDATE kv SET writes = writes + 1 WHERE k = 0", [])?;
                        conn.execute_batch("COMMIT")
                    })();
                    match attempt.map_err(Error::from) {
                        Ok(()) => control_ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.is_busy() => control_busy.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("control: {e}"),
                    };
                    if !conn.is_autocommit() {
                        conn.execute_batch("ROLLBACK").expect("rollback");
                    }
                }
            });
        }
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let elapsed = started.elapsed();
    let (busy, pool_timeout, other) = (
        errors.busy.load(Ordering::Relaxed),
        errors.pool_timeout.load(Ordering::Relaxed),
        errors.other.load(Ordering::Relaxed),
    );
    let counts = ops.counts.lock().unwrap();
    let summary: Vec<String> = counts
        .iter()
        .map(|(kind, (n, max))| format!("{n} {kind}s (slowest {max:.1?})"))
        .collect();
    let (ws_a, ws_b) = (a.write_stats(), b.write_stats());
    println!(
        "contention: {elapsed:.1?}: {}; group commit: {} writes in {} commits on one handle, \
         {} in {} on the other; caller errors: {busy} SQLITE_BUSY, {pool_timeout} pool \
         timeouts, {other} other; optimize checkpoints kept from completing (reported, not \
         errors): {}; health reports of the WAL past its limit: {}; control (deferred read-then-write on a raw connection): {} SQLITE_BUSY, \
         {} committed",
        summary.join(", "),
        ws_a.writes,
        ws_a.commits,
        ws_b.writes,
        ws_b.commits,
        busy_checkpoints.load(Ordering::Relaxed),
        wal_reported.load(Ordering::Relaxed),
        control_busy.load(Ordering::Relaxed),
        control_ok.load(Ordering::Relaxed),
    );
    let examples = errors.examples.lock().unwrap();
    assert_eq!(busy, 0, "SQLITE_BUSY reached callers: {examples:?}");
    assert_eq!(
        pool_timeout, 0,
        "pool timeouts reached callers: {examples:?}"
    );
    assert_eq!(other, 0, "errors reached callers: {examples:?}");
    for kind in ["write", "batch op", "read", "optimize", "advise", "health"] {
        assert!(
            counts.get(kind).is_some_and(|(n, _)| *n > 0),
            "no {kind} completed"
        );
    }
    assert!(
        control_busy.load(Ordering::Relaxed) > 0,
        "the control never saw SQLITE_BUSY: this load would not have exposed a BUSY either"
    );
    // Nothing was lost on the way: every acknowledged write and batch row is there.
    let events: i64 =
        a.read(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))?;
    let acked =
        counts.get("write").map_or(0, |c| c.0) + counts.get("batch op").map_or(0, |c| c.0) / 2;
    assert!(
        events as u64 >= acked,
        "{events} events stored, {acked} acknowledged"
    );
    let integrity: String =
        a.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))?;
    assert_eq!(integrity, "ok");
    Ok(())
}

/// The negative control on its own: two connections in deferred transactions both read, then
/// both try to write. The second gets SQLITE_BUSY at once, although its busy_timeout is 5 s:
/// SQLite does not wait for a lock when a read transaction upgrades (waiting could deadlock).
/// This is what `BEGIN IMMEDIATE` on strata's writer avoids, and it shows that the error
/// classification the contention test relies on does see BUSY.
#[test]
fn negative_control_a_deferred_upgrade_gets_busy_at_once() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.db");
    {
        let db = open(&path, 1)?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))?;
    }
    let first = Connection::open(&path)?;
    let second = Connection::open(&path)?;
    for c in [&first, &second] {
        c.busy_timeout(Duration::from_secs(5))?;
        c.execute_batch("BEGIN")?;
        let _: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    }
    first.execute("INSERT INTO t VALUES (1)", [])?;
    let t = Instant::now();
    let err = second
        .execute("INSERT INTO t VALUES (2)", [])
        .expect_err("the second writer must not get the lock");
    let waited = t.elapsed();
    let err = Error::from(err);
    println!(
        "negative control: a deferred transaction upgraded to write got `{err}` after \
         {waited:.1?} (busy_timeout 5 s)"
    );
    assert!(err.is_busy(), "expected SQLITE_BUSY, got {err:?}");
    assert!(
        waited < Duration::from_secs(1),
        "BUSY on upgrade comes at once, not after busy_timeout"
    );
    second.execute_batch("ROLLBACK")?;
    first.execute_batch("COMMIT")?;

    // The same two steps through strata's writer wait instead: its transactions are IMMEDIATE.
    let db = open(&path, 1)?;
    second.execute_batch("BEGIN")?;
    let _: i64 = second.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    second.execute("INSERT INTO t VALUES (3)", [])?;
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        second.execute_batch("COMMIT").map(|()| second)
    });
    let t = Instant::now();
    db.write(|c| Ok(c.execute("INSERT INTO t VALUES (4)", []).map(drop)?))?;
    let waited = t.elapsed();
    release.join().expect("release thread")?;
    assert!(
        waited >= Duration::from_millis(150),
        "strata's write waited for the lock ({waited:.1?})"
    );
    let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(n, 3);
    Ok(())
}
