//! Crash loop: a child process (this test binary re-run with `STRATA_CRASH_CHILD_DB` set) writes
//! through `db.write` and `Batch` and reports every acknowledged write to the parent over its
//! stdout pipe; the parent SIGKILLs it at a random moment (before open, during open and
//! migration, while writing, checkpointing and inside `db.optimize()`), reopens the file with strata and checks that every
//! acknowledged write is present, no batch is partly visible, no failed write is visible, the
//! migrations are recorded once and `PRAGMA integrity_check` is ok.
//!
//! 30 cycles by default; `STRATA_CRASH_CYCLES=1000` for the long run. A file lives for
//! `CYCLES_PER_FILE` cycles (so kills land on recovered files too) and then a fresh one starts
//! (so kills land during the first open and migration). Files alternate between
//! `synchronous=NORMAL` and `FULL`: a process kill must lose nothing acknowledged in either (in
//! WAL mode a committed transaction is in the WAL file; only a power loss can drop it under
//! NORMAL).

#![cfg(unix)]

mod common;

use common::Rng;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use strata::rusqlite::{Connection, OptionalExtension};
use strata::{Batch, Db, Error, Result, Synchronous};

const TEST_NAME: &str = "acknowledged_writes_survive_sigkill_at_any_moment";
const CHILD_DB: &str = "STRATA_CRASH_CHILD_DB";
const CHILD_BASE: &str = "STRATA_CRASH_CHILD_BASE";
const CHILD_SYNC: &str = "STRATA_CRASH_CHILD_SYNC";

/// Rows per batch; every row of a batch carries the batch's number.
const BATCH: i64 = 50;
/// Cycles (kills) per database file before a fresh file starts.
const CYCLES_PER_FILE: u64 = 5;
/// Ids of one cycle's child: `base + k` for single writes, `base + BATCH_IDS + ...` for batch rows.
const IDS_PER_CYCLE: i64 = 10_000_000;
const BATCH_IDS: i64 = 5_000_000;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS acked (
    id INTEGER PRIMARY KEY,
    batch INTEGER,
    payload TEXT NOT NULL
)";

// ---------------------------------------------------------------------------------------------
// The child: writes until it is killed.

/// One line to the parent, flushed at once: a line the parent has read is a write that was
/// acknowledged before the kill. The `@` marks where the message starts: the test harness
/// prints `test NAME ... ` without a newline just before the first one.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@{line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// Maintenance between writes, at random moments relative to them: mostly `db.optimize()`
/// (`PRAGMA optimize`, whose ANALYZE writes `sqlite_stat1`, then `wal_checkpoint(TRUNCATE)`
/// through the writer, between group commits), so that kills land inside an ANALYZE, a
/// checkpoint copying pages back and the WAL truncation; every fourth time a PASSIVE checkpoint
/// on a separate connection, which copies pages while the writer keeps committing. Each
/// optimize is reported as it starts (`m`) and once done (`M`, with 1 when readers kept
/// the checkpoint from completing), so that the parent knows which kills landed inside one.
fn maintenance(db: &Db, checkpointer: &Connection, rng: &mut Rng) {
    if rng.below(4) == 0 {
        let _: Option<(i64, i64, i64)> = checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .expect("checkpoint");
        return;
    }
    say("m");
    let report = db
        .optimize()
        .unwrap_or_else(|e| panic!("optimize failed: {e:?}"));
    say(&format!("M {}", u8::from(report.checkpoint.busy)));
}

fn child(path: &Path, base: i64, sync: Synchronous) -> Result<()> {
    say("S"); // opening
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(path)
        .synchronous(sync)
        .readers(1)
        .build()?;
    db.write(|c| Ok(c.execute_batch(SCHEMA)?))?;
    say("O"); // open, migrated, writing from now on
    let stop = AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        // Single writes, group-committed with the batches' transactions; every tenth write's
        // closure fails after inserting its row, which must then never be visible.
        let singles = s.spawn(|| -> Result<()> {
            for k in 0.. {
                let id = base + k;
                let fail = k % 10 == 9;
                let result = db.write(|c| {
                    c.prepare_cached(
                        "INSERT INTO acked (id, batch, payload) VALUES (?1, NULL, ?2)",
                    )?
                    .execute((id, format!("single {id}")))?;
                    if fail {
                        return Err(Error::closure("this write fails on purpose"));
                    }
                    Ok(())
                });
                match (fail, result) {
                    (false, Ok(())) => say(&format!("W {id}")),
                    (true, Err(Error::Closure(_))) => say(&format!("F {id}")),
                    (_, other) => panic!("write {id}: unexpected {other:?}"),
                }
            }
            Ok(())
        });
        let batches = s.spawn(|| -> Result<()> {
            for b in 0.. {
                let number = base + b;
                let mut batch = Batch::new().all_or_nothing(true);
                for j in 0..BATCH {
                    let id = base + BATCH_IDS + b * BATCH + j;
                    batch.insert(
                        "acked",
                        &["id", "batch", "payload"],
                        (id, number, format!("batch {number} row {j}")),
                    );
                }
                let report = db.apply(&batch)?;
                assert_eq!(report.applied as i64, BATCH, "{report:?}");
                say(&format!("B {number} {BATCH}"));
            }
            Ok(())
        });
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(Duration::from_secs(5))?;
        let mut rng = Rng::new(base as u64);
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5 + rng.below(20)));
            maintenance(&db, &checkpointer, &mut rng);
            if singles.is_finished() || batches.is_finished() {
                stop.store(true, Ordering::Relaxed);
            }
        }
        singles.join().expect("single writer")?;
        batches.join().expect("batch writer")?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Where the kill landed, from the lines the child had sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    BeforeOpen,
    DuringOpen,
    Writing,
}

/// What one child acknowledged before it died.
#[derive(Default)]
struct Acks {
    writes: Vec<i64>,
    failed: Vec<i64>,
    batches: Vec<(i64, i64)>,
    /// Optimizes completed, and how many of their checkpoints readers kept from completing.
    optimizes: u64,
    optimizes_busy: u64,
    /// An optimize had started and not finished when the child died.
    in_optimize: bool,
    phase: Option<Phase>,
}

/// Reads complete lines only (the last line may have been cut by the kill); tells `opening`
/// when the child starts to open the database.
fn read_acks(stdout: impl Read, opening: mpsc::Sender<()>) -> Acks {
    let mut reader = BufReader::new(stdout);
    let mut acks = Acks {
        phase: Some(Phase::BeforeOpen),
        ..Acks::default()
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.last() != Some(&b'\n') => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let Some((_, message)) = text.split_once('@') else {
            continue; // the test harness's own output
        };
        let words: Vec<&str> = message.split_whitespace().collect();
        let num = |i: usize| -> i64 { words[i].parse().expect("a number from the child") };
        match words.first().copied() {
            Some("S") => {
                acks.phase = Some(Phase::DuringOpen);
                let _ = opening.send(());
            }
            Some("O") => acks.phase = Some(Phase::Writing),
            Some("W") => acks.writes.push(num(1)),
            Some("F") => acks.failed.push(num(1)),
            Some("B") => acks.batches.push((num(1), num(2))),
            Some("m") => acks.in_optimize = true,
            Some("M") => {
                acks.in_optimize = false;
                acks.optimizes += 1;
                acks.optimizes_busy += num(1) as u64;
            }
            _ => panic!("unexpected line from the child: {text}"),
        }
    }
    acks
}

/// Everything acknowledged on one file so far, over all its cycles.
#[derive(Default)]
struct FileState {
    writes: Vec<i64>,
    failed: Vec<i64>,
    batches: Vec<(i64, i64)>,
}

#[derive(Default)]
struct Totals {
    cycles: u64,
    files: u64,
    phases: HashMap<Phase, u64>,
    writes: u64,
    failed: u64,
    batches: u64,
    batch_rows: u64,
    optimizes: u64,
    optimizes_busy: u64,
    /// Kills that landed inside `db.optimize()`.
    killed_in_optimize: u64,
    lost: u64,
    torn: u64,
    phantom: u64,
    /// Kills after which the file had no committed migration.
    unmigrated: u64,
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the spawn.
    AfterSpawn(Duration),
    /// This long after the child said it starts opening the database.
    AfterOpening(Duration),
}

/// Spawns a child on `path`, kills it at `kill` and returns what it acknowledged.
fn run_child(path: &Path, base: i64, sync: Synchronous, kill: Kill) -> Acks {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, path)
        .env(CHILD_BASE, base.to_string())
        .env(
            CHILD_SYNC,
            if sync == Synchronous::Full {
                "full"
            } else {
                "normal"
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (opening, opened) = mpsc::channel();
    let reader = thread::spawn(move || read_acks(stdout, opening));
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    match kill {
        Kill::AfterSpawn(delay) => thread::sleep(delay),
        Kill::AfterOpening(delay) => {
            // A child that dies before it opens drops the sender; try_wait below reports it.
            let _ = opened.recv_timeout(Duration::from_secs(30));
            thread::sleep(delay);
        }
    }
    let early = child.try_wait().expect("try_wait");
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    let acks = reader.join().expect("reader thread");
    let stderr = errors.join().expect("stderr thread");
    assert!(
        early.is_none(),
        "the child exited by itself ({status}) instead of being killed:\n{stderr}"
    );
    acks
}

/// Reopens the file with strata and checks it against everything acknowledged on it.
fn verify(path: &Path, state: &FileState, totals: &mut Totals) -> Result<()> {
    // First without migrating, to count the kills that left the migration uncommitted (the
    // open recovers the file as any open would); then as a service would open it.
    let version = Db::builder()
        .path(path)
        .readers(1)
        .build()?
        .schema_version()?;
    match version {
        None => totals.unmigrated += 1,
        Some(v) => assert_eq!(v, 2, "a grouped migration is all or nothing"),
    }
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(path)
        .readers(1)
        .build()?;
    let (integrity, versions, table) = db.read(|c| {
        let mut stmt = c.prepare("PRAGMA integrity_check")?;
        let integrity: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<strata::rusqlite::Result<_>>()?;
        let mut stmt = c.prepare("SELECT version FROM refinery_schema_history ORDER BY version")?;
        let versions: Vec<i32> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<strata::rusqlite::Result<_>>()?;
        let table: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'acked')",
            [],
            |r| r.get(0),
        )?;
        Ok((integrity, versions, table))
    })?;
    assert_eq!(integrity, ["ok"], "{}: integrity_check", path.display());
    assert_eq!(versions, [1, 2], "each migration recorded exactly once");
    if !table {
        assert!(
            state.writes.is_empty() && state.batches.is_empty(),
            "acknowledged writes but no table"
        );
        return Ok(());
    }
    let (ids, batches) = db.read(|c| {
        let mut stmt = c.prepare("SELECT id FROM acked")?;
        let ids: HashSet<i64> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<strata::rusqlite::Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT batch, count(*) FROM acked WHERE batch IS NOT NULL GROUP BY batch")?;
        let batches: HashMap<i64, i64> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<strata::rusqlite::Result<_>>()?;
        Ok((ids, batches))
    })?;
    for id in &state.writes {
        if !ids.contains(id) {
            totals.lost += 1;
            eprintln!("lost: acknowledged write {id}");
        }
    }
    for (number, n) in &state.batches {
        let present = batches.get(number).copied().unwrap_or(0);
        if present < *n {
            totals.lost += (n - present) as u64;
            eprintln!("lost: acknowledged batch {number} has {present} of {n} rows");
        }
    }
    for (number, n) in &batches {
        if *n != BATCH {
            totals.torn += 1;
            eprintln!("torn: batch {number} has {n} of {BATCH} rows");
        }
    }
    for id in &state.failed {
        if ids.contains(id) {
            totals.phantom += 1;
            eprintln!("phantom: failed write {id} is visible");
        }
    }
    Ok(())
}

#[test]
fn acknowledged_writes_survive_sigkill_at_any_moment() -> Result<()> {
    if let Some(path) = std::env::var_os(CHILD_DB) {
        let base: i64 = std::env::var(CHILD_BASE)
            .expect("base id")
            .parse()
            .expect("numeric base id");
        let sync = match std::env::var(CHILD_SYNC).as_deref() {
            Ok("full") => Synchronous::Full,
            _ => Synchronous::Normal,
        };
        return child(Path::new(&path), base, sync);
    }
    let cycles: u64 = std::env::var("STRATA_CRASH_CYCLES")
        .map(|v| v.parse().expect("STRATA_CRASH_CYCLES must be a number"))
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut path = PathBuf::new();
    let mut state = FileState::default();
    let mut sync = Synchronous::Normal;
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_FILE == 0 {
            totals.files += 1;
            path = dir.path().join(format!("crash-{}.db", totals.files));
            state = FileState::default();
            sync = if totals.files % 2 == 0 {
                Synchronous::Full
            } else {
                Synchronous::Normal
            };
        }
        let mut rng = Rng::new(cycle + 1);
        let ms = Duration::from_millis;
        // Opening a fresh file (WAL switch and both migrations) takes ~25 ms in a debug build,
        // reopening ~1 ms: half of the first kills on a file land within 30 ms of the child's
        // "opening" line, an eighth of the later ones within 2 ms of it (crash recovery of the
        // previous kill), a few before the child even got there; the rest anywhere in 300 ms.
        let fresh = cycle % CYCLES_PER_FILE == 0;
        let kill = match rng.below(16) {
            0..=7 if fresh => Kill::AfterOpening(ms(rng.below(30))),
            0..=1 => Kill::AfterOpening(ms(rng.below(3))),
            2 => Kill::AfterSpawn(ms(rng.below(3))),
            _ => Kill::AfterSpawn(ms(rng.below(300))),
        };
        let base = (cycle as i64 + 1) * IDS_PER_CYCLE;
        let acks = run_child(&path, base, sync, kill);
        *totals
            .phases
            .entry(acks.phase.expect("a phase"))
            .or_default() += 1;
        totals.cycles += 1;
        totals.writes += acks.writes.len() as u64;
        totals.failed += acks.failed.len() as u64;
        totals.batches += acks.batches.len() as u64;
        totals.batch_rows += acks.batches.iter().map(|(_, n)| *n as u64).sum::<u64>();
        totals.optimizes += acks.optimizes;
        totals.optimizes_busy += acks.optimizes_busy;
        totals.killed_in_optimize += u64::from(acks.in_optimize);
        state.writes.extend(acks.writes);
        state.failed.extend(acks.failed);
        state.batches.extend(acks.batches);
        verify(&path, &state, &mut totals)
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopening {}: {e}", path.display()));
    }
    let phase = |p| totals.phases.get(&p).copied().unwrap_or(0);
    println!(
        "crash loop: {} cycles on {} files (NORMAL and FULL) in {:.1?}; killed before open {}, \
         during open/migration {} ({} before the migration committed), while writing {} ({} inside \
         db.optimize()); acknowledged: {} writes, {} batches ({} rows), {} failed writes, {} \
         optimizes ({} with a busy checkpoint); lost {}, torn {}, phantom {}; integrity_check ok after every kill",
        totals.cycles,
        totals.files,
        started.elapsed(),
        phase(Phase::BeforeOpen),
        phase(Phase::DuringOpen),
        totals.unmigrated,
        phase(Phase::Writing),
        totals.killed_in_optimize,
        totals.writes,
        totals.batches,
        totals.batch_rows,
        totals.failed,
        totals.optimizes,
        totals.optimizes_busy,
        totals.lost,
        totals.torn,
        totals.phantom,
    );
    assert_eq!(totals.lost, 0, "acknowledged writes were lost");
    assert_eq!(totals.torn, 0, "a batch was partly visible");
    assert_eq!(totals.phantom, 0, "a failed write was visible");
    assert!(
        totals.writes > 0 && totals.batches > 0,
        "the children acknowledged nothing: the test proved nothing"
    );
    assert!(totals.optimizes > 0, "no optimize completed in any child");
    Ok(())
}
