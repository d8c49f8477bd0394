//! The job queue under SIGKILL, with two processes working one file: each cycle starts two
//! child processes (this test binary re-run with `STRATA_JOBS_CHILD_DB` set) that enqueue jobs
//! and work the queue with a transactional handler, and kills both with SIGKILL at random
//! moments. The parent then works what is left (expired leases included) and checks that
//! every acknowledged enqueue ran, that every job's effect was applied exactly once (two
//! processes never both committed a run of one job), and that nothing went to the dead
//! letters.
//!
//! 10 cycles by default; `STRATA_JOBS_CRASH_CYCLES=1000` for the long run.

#![cfg(unix)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Rng;
use strata::jobs::{Job, Queue, WorkerPool};
use strata::{Db, Result};

const TEST_NAME: &str = "jobs_survive_sigkill_of_two_working_processes";
const CHILD_DB: &str = "STRATA_JOBS_CHILD_DB";
const CHILD_BASE: &str = "STRATA_JOBS_CHILD_BASE";
/// Keys per child: child `n` enqueues `n × KEYS + k`.
const KEYS: i64 = 1_000_000;
/// Short, so the jobs a killed child held run again soon.
const LEASE: Duration = Duration::from_millis(300);

fn open(path: &Path) -> Result<(Db, Queue)> {
    let db = Db::open(path)?;
    db.write(
        |c| Ok(c.execute_batch("CREATE TABLE IF NOT EXISTS effects (key INTEGER NOT NULL)")?),
    )?;
    let queue = db.jobs()?;
    Ok((db, queue))
}

/// Applies a job's effect and completes it in one transaction.
fn pool(queue: &Queue) -> Result<WorkerPool> {
    queue
        .workers()
        .threads(2)
        .lease(LEASE)
        .poll_interval(Duration::from_millis(20))
        .handler("effect", |ctx, key: i64| {
            ctx.db().write(|c| {
                c.execute("INSERT INTO effects (key) VALUES (?1)", [key])?;
                ctx.complete_in(c)
            })
        })
        .start()
}

/// The child: works the queue and enqueues until killed; each line on stdout is an
/// acknowledged (committed) enqueue.
fn child(path: &Path, base: i64) -> Result<()> {
    let (db, queue) = open(path)?;
    let _pool = pool(&queue)?;
    let mut out = std::io::stdout().lock();
    for k in 0.. {
        let key = base + k;
        db.write(|c| queue.enqueue_in(c, Job::new("effect", &key)?.max_attempts(1000)))?;
        writeln!(out, "@{key}").expect("write to the parent");
        out.flush().expect("flush to the parent");
        if k % 8 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn spawn(path: &Path, base: i64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, path)
        .env(CHILD_BASE, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child")
}

#[test]
fn jobs_survive_sigkill_of_two_working_processes() -> Result<()> {
    if let Some(path) = std::env::var_os(CHILD_DB) {
        let base = std::env::var(CHILD_BASE).unwrap().parse().unwrap();
        return child(Path::new(&path), base);
    }
    let cycles: u64 = std::env::var("STRATA_JOBS_CRASH_CYCLES")
        .map(|v| {
            v.parse()
                .expect("STRATA_JOBS_CRASH_CYCLES must be a number")
        })
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    open(&path)?;
    let mut rng = Rng::new(cycles);
    let mut acked: HashSet<i64> = HashSet::new();
    let mut next_child = 1;
    for _ in 0..cycles {
        let mut children: Vec<Child> = (0..2)
            .map(|_| {
                next_child += 1;
                spawn(&path, next_child * KEYS)
            })
            .collect();
        let readers: Vec<_> = children
            .iter_mut()
            .map(|c| {
                let out = c.stdout.take().unwrap();
                std::thread::spawn(move || {
                    BufReader::new(out)
                        .lines()
                        .map_while(std::result::Result::ok)
                        .filter_map(|l| l.split('@').nth(1).and_then(|k| k.parse::<i64>().ok()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for child in &mut children {
            std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
        for reader in readers {
            acked.extend(reader.join().unwrap());
        }
    }
    // Whatever the children left (waiting, or leased to a dead process) runs now.
    let (db, queue) = open(&path)?;
    let parent = pool(&queue)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !queue.is_empty()? {
        assert!(Instant::now() < deadline, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(20));
    }
    parent.shutdown(Duration::from_secs(5));
    let effects: Vec<i64> = db.read(|c| {
        let mut stmt = c.prepare("SELECT key FROM effects")?;
        let keys = stmt.query_map([], |r| r.get(0))?;
        Ok(keys.collect::<strata::rusqlite::Result<_>>()?)
    })?;
    let mut times: HashMap<i64, u32> = HashMap::new();
    for key in &effects {
        *times.entry(*key).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "effects applied more than once: {twice:?}"
    );
    let lost: Vec<_> = acked.iter().filter(|k| !times.contains_key(k)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged jobs that never ran: {lost:?}"
    );
    assert!(queue.dead_letters()?.is_empty());
    assert!(
        acked.len() > cycles as usize,
        "the children enqueued ({})",
        acked.len()
    );
    eprintln!(
        "{cycles} cycles: {} acknowledged enqueues, {} effects, each once",
        acked.len(),
        effects.len()
    );
    Ok(())
}
