//! Several instances on one file: real processes (this test binary, started again as children)
//! writing and reading the same keys through their caches, a writer that bypasses strata, the
//! foreign-write bound under back-to-back local writes, and a LiteFS replica.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Rng;
use strata::cache::{EntityCache, InvalidationRule};
use strata::instances::{InstanceSettings, Role};
use strata::monitor::Alert;
use strata::rusqlite::{Connection, OptionalExtension};
use strata::{Db, Error, Result};

/// Set in a child process: the database it works on.
const CHILD_DB: &str = "STRATA_INSTANCES_CHILD_DB";
/// Set in a child process: its number, which seeds its choices and names its log.
const CHILD_ID: &str = "STRATA_INSTANCES_CHILD_ID";
/// The keys every process reads and writes.
const KEYS: i64 = 8;
/// Operations per process.
const OPS: usize = 1500;
/// One operation in this many is a write.
const WRITE_EVERY: u64 = 3;
/// How long after a write was acknowledged in one process another may still read the old
/// value: generous against the measured propagation (a few milliseconds at p99 on an idle
/// machine), since the machine running the tests may be loaded.
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// `STRATA_INSTANCES_FAIR=0` turns the turns at the write lock off, to measure what they buy.
fn open(path: &Path) -> Result<Db> {
    let fair = std::env::var("STRATA_INSTANCES_FAIR").map_or(true, |v| v != "0");
    Db::builder()
        .path(path)
        .busy_timeout(Duration::from_secs(10))
        .connection_timeout(Duration::from_secs(20))
        .instances(InstanceSettings::default().fair_turns(fair))
        .build()
}

fn load(c: &Connection, id: &i64) -> Result<Option<i64>> {
    Ok(c.prepare_cached("SELECT v FROM t WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// What a child did: every write with the value it made and when it was acknowledged, every
/// read with the value it saw and when it started, and how long each write waited.
fn child_run(path: &Path, id: u64) -> Result<()> {
    let db = open(path)?;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("t"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t"))?;
    fs::write(path.with_extension(format!("ready{id}")), "").expect("ready file");
    let go = path.with_extension("go");
    while !go.exists() {
        thread::sleep(Duration::from_millis(1));
    }
    let mut rng = Rng::new(id);
    let mut out = String::new();
    // `STRATA_INSTANCES_WRITE_EVERY=1`: every operation a write, back to back.
    let write_every = std::env::var("STRATA_INSTANCES_WRITE_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITE_EVERY);
    for _ in 0..OPS {
        let key = 1 + rng.below(KEYS as u64) as i64;
        if rng.below(write_every) == 0 {
            let started = Instant::now();
            let v: i64 = db.write(|c| {
                Ok(
                    c.prepare_cached("UPDATE t SET v = v + 1 WHERE id = ?1 RETURNING v")?
                        .query_row([key], |r| r.get(0))?,
                )
            })?;
            let waited = started.elapsed().as_micros();
            out.push_str(&format!("w {key} {v} {} {waited}\n", now_us()));
        } else {
            let at = now_us();
            let v = db.cached(&cache, &key, load)?.expect("seeded key");
            out.push_str(&format!("r {key} {v} {at}\n"));
        }
    }
    let report = db.instances_report().expect("instances are on");
    out.push_str(&format!(
        "g {} {} {} {:?}\n",
        report.gaps, report.propagation_p99_us, report.applied, report.last_gap
    ));
    fs::write(path.with_extension(format!("child{id}")), out).expect("child log");
    Ok(())
}

struct Op {
    write: bool,
    key: i64,
    v: i64,
    at: i64,
    waited_us: u64,
}

fn parse(log: &str) -> (Vec<Op>, u64, String) {
    let mut ops = Vec::new();
    let mut gaps = 0;
    let mut summary = String::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "g" => {
                gaps = f[1].parse().expect("gaps");
                summary = line.to_owned();
            }
            kind => ops.push(Op {
                write: kind == "w",
                key: f[1].parse().expect("key"),
                v: f[2].parse().expect("value"),
                at: f[3].parse().expect("time"),
                waited_us: f.get(4).map_or(0, |w| w.parse().expect("wait")),
            }),
        }
    }
    (ops, gaps, summary)
}

fn spawn(test: &str, path: &Path, id: u64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, path)
        .env(CHILD_ID, id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a child process")
}

/// Runs `processes` children on one file and checks what they saw.
fn processes_share_keys(test: &str, processes: u64) -> Result<()> {
    if let (Ok(path), Ok(id)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ID)) {
        return child_run(Path::new(&path), id.parse().expect("child id"));
    }
    let dir = tempdir();
    let path = dir.path().join("shared.db");
    {
        let db = open(&path)?;
        db.write(|c| {
            c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")?;
            for id in 1..=KEYS {
                c.execute("INSERT INTO t VALUES (?1, 0)", [id])?;
            }
            Ok(())
        })?;
    }
    let children: Vec<Child> = (0..processes).map(|id| spawn(test, &path, id)).collect();
    // Every child registers its cache before the first operation; the go file lets them start
    // together, so that their writes overlap.
    let started = Instant::now();
    while (0..processes).any(|id| !path.with_extension(format!("ready{id}")).exists()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the children did not start"
        );
        thread::sleep(Duration::from_millis(5));
    }
    fs::write(path.with_extension("go"), "").expect("go file");
    for child in children {
        let out = child.wait_with_output().expect("child process");
        assert!(
            out.status.success(),
            "a child failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut all = Vec::new();
    for id in 0..processes {
        let log = fs::read_to_string(path.with_extension(format!("child{id}"))).expect("log");
        let (ops, gaps, summary) = parse(&log);
        println!("process {id}: gaps, propagation p99 µs, entries applied, last gap: {summary}");
        assert_eq!(gaps, 0, "process {id}: the log explained every commit");
        let mut waits: Vec<u64> = ops
            .iter()
            .filter(|o| o.write)
            .map(|o| o.waited_us)
            .collect();
        waits.sort_unstable();
        let p99 = waits[waits.len() * 99 / 100];
        println!(
            "process {id}: {} writes, wait p50 {} µs, p99 {p99} µs, max {} µs",
            waits.len(),
            waits[waits.len() / 2],
            waits[waits.len() - 1]
        );
        assert!(
            p99 <= 100_000,
            "process {id}: write wait p99 {p99} µs over 100 ms"
        );
        all.push((id, ops));
    }
    // Each key's values only grow: a read is stale if a write of a larger value had been
    // acknowledged (in any process) before the read began. How long before is its lag.
    let mut lags = Vec::new();
    let mut over = 0;
    for (_, ops) in &all {
        for read in ops.iter().filter(|o| !o.write) {
            let lag = all
                .iter()
                .flat_map(|(_, ops)| ops.iter())
                .filter(|w| w.write && w.key == read.key && w.v > read.v && w.at < read.at)
                .map(|w| read.at - w.at)
                .max();
            if let Some(lag) = lag {
                lags.push(lag);
                if lag > PROPAGATION_BOUND.as_micros() as i64 {
                    over += 1;
                }
            }
        }
    }
    lags.sort_unstable();
    let reads: usize = all
        .iter()
        .map(|(_, ops)| ops.iter().filter(|o| !o.write).count())
        .sum();
    println!(
        "{processes} processes: {reads} reads, {} read a value older than an acknowledged \
         write, by at most {} µs",
        lags.len(),
        lags.last().copied().unwrap_or(0)
    );
    assert_eq!(
        over, 0,
        "reads older than an acknowledged write by more than {PROPAGATION_BOUND:?}"
    );
    Ok(())
}

#[test]
fn two_processes_share_keys_without_stale_reads() -> Result<()> {
    processes_share_keys("two_processes_share_keys_without_stale_reads", 2)
}

#[test]
fn four_processes_share_keys_without_stale_reads() -> Result<()> {
    processes_share_keys("four_processes_share_keys_without_stale_reads", 4)
}

fn setup(path: &Path, db: &Db) -> Result<Arc<EntityCache<i64, i64>>> {
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             INSERT OR REPLACE INTO t VALUES (1, 1);",
        )?)
    })?;
    let _ = path;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("t"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t"))?;
    Ok(cache)
}

/// Reads key 1 through the cache until it is `want` or `within` has passed; how long it took.
fn until_seen(db: &Db, cache: &EntityCache<i64, i64>, want: i64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let v = db.cached(cache, &1, load).expect("read").expect("row 1");
        if *v == want || started.elapsed() > within {
            return started.elapsed();
        }
        thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_writer_that_bypasses_strata_drops_the_caches_and_is_reported() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("bypass.db");
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let seen = Arc::clone(&alerts);
    let db = Db::builder()
        .path(&path)
        .instances(InstanceSettings::default())
        .on_alert(move |a| seen.lock().expect("alerts").push(a.clone()))
        .build()?;
    let cache = setup(&path, &db)?;
    assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&1));
    let hits = cache.stats().hits;
    assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&1));
    assert_eq!(cache.stats().hits, hits + 1, "served from the cache");

    let plain = Connection::open(&path)?;
    plain.busy_timeout(Duration::from_secs(5))?;
    plain.execute("UPDATE t SET v = 2 WHERE id = 1", [])?;
    let took = until_seen(&db, &cache, 2, Duration::from_secs(5));
    println!("the bypassing write was seen after {took:?}");
    assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&2));
    let report = db.instances_report().expect("instances are on");
    assert_eq!(report.gaps, 1, "{report:?}");
    assert!(
        report
            .last_gap
            .as_deref()
            .is_some_and(|r| r.contains("bypasses strata")),
        "{report:?}"
    );
    assert!(alerts
        .lock()
        .expect("alerts")
        .iter()
        .any(|a| matches!(a, Alert::ChangeLogGap { .. })));
    // Strata's own writes, schema changes among them, are no gap.
    db.write(|c| Ok(c.execute_batch("CREATE TABLE u(x); UPDATE t SET v = 3 WHERE id = 1;")?))?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE w(x)")?))?;
    thread::sleep(Duration::from_millis(50));
    assert_eq!(db.instances_report().expect("on").gaps, 1);
    assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&3));
    Ok(())
}

#[test]
fn a_foreign_writer_gets_the_lock_while_strata_writes_back_to_back() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("fair.db");
    let db = open(&path)?;
    setup(&path, &db)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            thread::spawn(move || -> Result<u64> {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    db.write(|c| Ok(c.execute("UPDATE t SET v = v + 1 WHERE id = 1", [])?))?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    // SQLite's own busy handler, as the sqlite3 shell's `.timeout` uses it.
    let plain = Connection::open(&path)?;
    plain.busy_timeout(Duration::from_secs(10))?;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        plain.execute("INSERT INTO t VALUES (NULL, -1)", [])?;
        waits.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .sum::<Result<u64>>()?;
    println!("foreign writer waits {waits:?}; strata wrote {written} times meanwhile");
    assert!(written > 0);
    let report = db.instances_report().expect("on");
    println!("strata's writer paused {} times", report.pauses);
    Ok(())
}

#[test]
fn foreign_writes_are_seen_under_back_to_back_local_writes_and_cpu_load() -> Result<()> {
    const CHECK: Duration = Duration::from_millis(20);
    let dir = tempdir();
    let path = dir.path().join("bound.db");
    let db = Db::builder()
        .path(&path)
        .foreign_write_check(CHECK)
        .build()?;
    let cache = setup(&path, &db)?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE n(x)")?))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..4 {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            let mut spin = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if i < 2 {
                    db.write(|c| Ok(c.execute("INSERT INTO n VALUES (1)", [])?))
                        .expect("local write");
                } else {
                    spin = spin.wrapping_mul(31).wrapping_add(1);
                }
            }
            spin
        }));
    }
    let mut seen = Vec::new();
    for v in 2..6 {
        assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&(v - 1)));
        let plain = Connection::open(&path)?;
        plain.busy_timeout(Duration::from_secs(10))?;
        plain.execute("UPDATE t SET v = ?1 WHERE id = 1", [v])?;
        seen.push(until_seen(&db, &cache, v, Duration::from_secs(5)));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread");
    }
    println!("foreign writes seen after {seen:?} (check every {CHECK:?})");
    let worst = seen.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(1),
        "a foreign write took {worst:?} to be seen"
    );
    Ok(())
}

fn primary_file(path: &Path) -> PathBuf {
    path.parent().expect("directory").join(".primary")
}

#[test]
fn a_litefs_replica_refuses_writes_and_serves_reads() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("replica.db");
    {
        let db = Db::open(&path)?;
        setup(&path, &db)?;
        assert_eq!(db.role(), Role::Primary);
    }
    fs::write(primary_file(&path), "primary-host:20202\n").expect(".primary");
    let db = Db::open(&path)?;
    let err = db
        .write(|c| Ok(c.execute_batch("DELETE FROM t")?))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Replica { primary, .. } if primary == "primary-host:20202"),
        "{err:?}"
    );
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("t"))?;
    assert_eq!(db.cached(&cache, &1, load)?.as_deref(), Some(&1));
    assert_eq!(
        db.health().role,
        Some(Role::Replica {
            primary: "primary-host:20202".into()
        })
    );
    // Promoted: LiteFS removes the file; writes go through once the role is looked at again.
    fs::remove_file(primary_file(&path)).expect("remove .primary");
    thread::sleep(Duration::from_millis(150));
    db.write(|c| Ok(c.execute_batch("UPDATE t SET v = 2")?))?;
    assert_eq!(db.role(), Role::Primary);
    Ok(())
}

#[test]
fn another_instance_invalidates_exactly_what_it_changed() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("exact.db");
    let a = open(&path)?;
    let cache = setup(&path, &a)?;
    a.write(|c| Ok(c.execute_batch("INSERT INTO t VALUES (2, 20)")?))?;
    let b = open(&path)?;
    assert_eq!(a.cached(&cache, &1, load)?.as_deref(), Some(&1));
    assert_eq!(a.cached(&cache, &2, load)?.as_deref(), Some(&20));
    b.write(|c| Ok(c.execute_batch("UPDATE t SET v = 2 WHERE id = 1")?))?;
    let took = until_seen(&a, &cache, 2, Duration::from_secs(5));
    println!("another instance's write was seen after {took:?}");
    let hits = cache.stats().hits;
    assert_eq!(a.cached(&cache, &2, load)?.as_deref(), Some(&20));
    assert_eq!(cache.stats().hits, hits + 1, "key 2 stayed cached");
    let report = a.instances_report().expect("on");
    assert_eq!(report.gaps, 0, "{report:?}");
    assert!(report.applied >= 1, "{report:?}");
    Ok(())
}

#[test]
fn reads_take_the_followers_look_when_its_thread_is_late() -> Result<()> {
    // The follower thread looks once a minute here, far later than this test runs: another
    // instance's write can only be seen because a read takes the look once the last one is
    // older than `read_help_after`.
    let dir = tempdir();
    let path = dir.path().join("late.db");
    let lazy = |path: &Path| {
        Db::builder()
            .path(path)
            .instances(
                InstanceSettings::default()
                    .follow_interval(Duration::from_secs(60))
                    .read_help_after(Duration::from_millis(2)),
            )
            .build()
    };
    let a = lazy(&path)?;
    let cache = setup(&path, &a)?;
    let b = lazy(&path)?;
    assert_eq!(a.cached(&cache, &1, load)?.as_deref(), Some(&1));
    b.write(|c| Ok(c.execute_batch("UPDATE t SET v = 2 WHERE id = 1")?))?;
    let took = until_seen(&a, &cache, 2, Duration::from_secs(5));
    println!("seen through a read's look after {took:?}");
    assert_eq!(a.cached(&cache, &1, load)?.as_deref(), Some(&2));
    let report = a.instances_report().expect("on");
    assert_eq!(report.gaps, 0, "{report:?}");
    assert!(report.applied >= 1, "{report:?}");
    Ok(())
}

#[test]
fn the_log_is_pruned_by_count_and_keeps_the_newest_entry() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("prune.db");
    let db = Db::builder()
        .path(&path)
        .instances(InstanceSettings::default().log_max_rows(10))
        .build()?;
    setup(&path, &db)?;
    for _ in 0..600 {
        db.write(|c| Ok(c.execute("UPDATE t SET v = v + 1 WHERE id = 1", [])?))?;
    }
    let (rows, first, last): (i64, i64, i64) = db.read(|c| {
        Ok(c.query_row(
            "SELECT count(*), min(seq), max(seq) FROM strata_changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    })?;
    // Pruned every 256 entries down to 10: 512 entries in, 89 more since.
    assert_eq!(last, 601, "one entry per write transaction");
    assert_eq!(rows, last - first + 1, "the sequence stays dense");
    assert!(rows <= 10 + 255, "{rows} entries kept");
    Ok(())
}

#[test]
fn an_entry_without_the_values_a_rule_reads_drops_the_caches() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("values.db");
    let a = open(&path)?;
    let cache = setup(&path, &a)?;
    // A rule that reads a column: the entry of an instance without it carries no values.
    let by_v = a.register_cache(EntityCache::<i64, i64>::builder("by_v"))?;
    a.add_rule(InvalidationRule::column_key("t", "v", "by_v"))?;
    by_v.insert(1, 1);
    let b = open(&path)?;
    b.write(|c| Ok(c.execute_batch("UPDATE t SET v = 5 WHERE id = 1")?))?;
    let started = Instant::now();
    while a.instances_report().expect("on").gaps == 0 && started.elapsed().as_secs() < 5 {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(by_v.get(&1).is_none(), "dropped with every cache");
    assert_eq!(a.cached(&cache, &1, load)?.as_deref(), Some(&5));
    let report = a.instances_report().expect("on");
    assert_eq!(report.gaps, 1, "{report:?}");
    assert!(report
        .last_gap
        .is_some_and(|g| g.contains("lacks column values")));
    Ok(())
}
