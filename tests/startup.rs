//! Startup under concurrency and crashes: several processes opening one fresh file at once, and
//! a process killed while it opens and migrates. The children are this test binary re-run with
//! `STRATA_STARTUP_CHILD_DB` set.

#![cfg(unix)]

mod common;

use common::Rng;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata::rusqlite::Connection;
use strata::{Db, Result};

const CHILD_DB: &str = "STRATA_STARTUP_CHILD_DB";
const CHILD_START: &str = "STRATA_STARTUP_CHILD_START_MS";
const PROCESSES: usize = 4;
const ROUNDS: u64 = 20;

/// The schema as SQLite stores it (type, name, table, SQL), sorted, and refinery's history
/// without its timestamps: what a fresh build must equal. The planner's statistics tables are
/// left out: `PRAGMA optimize` (run when a `Db` closes) creates them when it first analyzes.
#[derive(Debug, PartialEq, Eq)]
struct Schema {
    objects: Vec<(String, String, String, Option<String>)>,
    history: Vec<(i32, String, String)>,
}

fn schema(c: &Connection) -> Result<Schema> {
    let mut stmt = c.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite_stat%' ORDER BY type, name",
    )?;
    let objects = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<strata::rusqlite::Result<_>>()?;
    let mut stmt = c.prepare(
        "SELECT version, name, checksum FROM refinery_schema_history ORDER BY version, applied_on",
    )?;
    let history = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<strata::rusqlite::Result<_>>()?;
    Ok(Schema { objects, history })
}

/// The schema of a file built from scratch by one process alone.
fn fresh_schema(dir: &Path) -> Result<Schema> {
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(dir.join("reference.db"))
        .readers(1)
        .build()?;
    let schema = db.read(schema)?;
    assert_eq!(
        schema.history.iter().map(|h| h.0).collect::<Vec<_>>(),
        [1, 2]
    );
    Ok(schema)
}

/// Opens `path` without migrating and returns its schema and integrity_check.
fn inspect(path: &Path) -> Result<(Schema, Vec<String>)> {
    let db = Db::builder().path(path).readers(1).build()?;
    db.read(|c| {
        let mut stmt = c.prepare("PRAGMA integrity_check")?;
        let integrity = stmt
            .query_map([], |r| r.get(0))?
            .collect::<strata::rusqlite::Result<_>>()?;
        Ok((schema(c)?, integrity))
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@{line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// The child: waits for the common start time if there is one, then opens with strata's
/// migrations. `@S` just before the open, `@O` after it.
fn child(path: &Path) -> Result<()> {
    if let Ok(start) = std::env::var(CHILD_START) {
        let start = UNIX_EPOCH + Duration::from_millis(start.parse().expect("start ms"));
        if let Ok(wait) = start.duration_since(SystemTime::now()) {
            thread::sleep(wait);
        }
    }
    say("S");
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(path)
        .readers(1)
        .build()?;
    assert_eq!(db.schema_version()?, Some(2));
    say("O");
    Ok(())
}

fn spawn(test: &str, path: &Path, start: Option<SystemTime>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(start) = start {
        let ms = start.duration_since(UNIX_EPOCH).expect("clock").as_millis();
        cmd.env(CHILD_START, ms.to_string());
    }
    cmd.spawn().expect("spawn a child")
}

#[test]
fn processes_opening_one_fresh_file_at_once_all_succeed_with_one_schema() -> Result<()> {
    const TEST: &str = "processes_opening_one_fresh_file_at_once_all_succeed_with_one_schema";
    if let Some(path) = std::env::var_os(CHILD_DB) {
        return child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = fresh_schema(dir.path())?;
    let started = Instant::now();
    let mut opened = 0;
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("round-{round}.db"));
        // Every child opens at the same moment, not whenever its process happened to start.
        let start = SystemTime::now() + Duration::from_millis(250);
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| spawn(TEST, &path, Some(start)))
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().expect("wait for a child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("@O"),
                "round {round}, process {i}: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            opened += 1;
        }
        let (schema, integrity) = inspect(&path)?;
        assert_eq!(integrity, ["ok"], "round {round}");
        assert_eq!(
            schema, reference,
            "round {round}: each migration once, the schema of a fresh build"
        );
    }
    println!(
        "concurrent startup: {ROUNDS} rounds of {PROCESSES} processes opening one fresh file at \
         once in {:.1?}: {opened} of {} opens succeeded, each migration recorded once, schema \
         equal to a fresh build's in every round",
        started.elapsed(),
        ROUNDS as usize * PROCESSES
    );
    Ok(())
}

#[test]
fn a_process_killed_while_migrating_leaves_a_file_the_next_open_completes() -> Result<()> {
    const TEST: &str = "a_process_killed_while_migrating_leaves_a_file_the_next_open_completes";
    if let Some(path) = std::env::var_os(CHILD_DB) {
        child(Path::new(&path))?;
        // Opened: stay alive until killed, like a service would.
        loop {
            thread::sleep(Duration::from_secs(1));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = fresh_schema(dir.path())?;
    let started = Instant::now();
    let (mut during_open, mut uncommitted) = (0, 0);
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("killed-{round}.db"));
        let mut child = spawn(TEST, &path, None);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut opened = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.split_once('@').map(|(_, m)| m.trim()) {
                    Some("S") => {
                        let _ = tx.send(());
                    }
                    Some("O") => opened = true,
                    _ => {}
                }
            }
            opened
        });
        // A fresh open (WAL switch and both migrations) takes ~25 ms in a debug build here,
        // less on a fast disk: kill within 50 ms of the child's "opening" line, every other
        // round within 4 ms.
        let _ = rx.recv_timeout(Duration::from_secs(30));
        let window = if round % 2 == 0 { 50 } else { 4 };
        thread::sleep(Duration::from_millis(Rng::new(round + 1).below(window)));
        let early = child.try_wait().expect("try_wait");
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        assert!(early.is_none(), "round {round}: the child exited by itself");
        if !reader.join().expect("reader") {
            during_open += 1;
        }
        // Without migrating first: did the kill leave the migration uncommitted?
        let version = Db::builder()
            .path(&path)
            .readers(1)
            .build()?
            .schema_version()?;
        if version.is_none() {
            uncommitted += 1;
        }
        let db = Db::builder()
            .migrations(strata::domain::migrations())
            .path(&path)
            .readers(1)
            .build()?;
        assert_eq!(db.schema_version()?, Some(2), "round {round}");
        drop(db);
        let (schema, integrity) = inspect(&path)?;
        assert_eq!(integrity, ["ok"], "round {round}");
        assert_eq!(
            schema, reference,
            "round {round}: the schema of a fresh build"
        );
    }
    println!(
        "kill during migration: {ROUNDS} rounds in {:.1?}: {during_open} kills before the open \
         returned ({uncommitted} before the migration committed); every next open succeeded \
         with the schema of a fresh build",
        started.elapsed()
    );
    assert!(
        uncommitted > 0,
        "no kill landed before the migration committed: the test proved nothing"
    );
    Ok(())
}
