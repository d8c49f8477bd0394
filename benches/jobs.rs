//! Job queue benchmarks: strata's queue against the same `strata_jobs` table driven by
//! hand-written rusqlite, in the same run.
//!
//! - `jobs_end_to_end`: 1,000 jobs enqueued one per transaction from one thread and run by a
//!   worker pool with an empty handler (enqueue, claim, run, complete), timed until the last
//!   completes; vs raw rusqlite doing each job's enqueue, claim and completion as three
//!   transactions of its own on one connection.
//! - `jobs_end_to_end_producers`: the same 1,000 jobs enqueued by 4 producer threads at once,
//!   one job per `db.write` (what a service's request threads do: group commit merges their
//!   commits); vs 4 raw connections enqueueing one job per transaction while a fifth claims and
//!   completes them as `jobs_end_to_end`'s baseline does.
//! - `jobs_enqueue_in_write`: a one-row `db.write` with and without an enqueue in it, and the
//!   same row inserted by raw rusqlite in its own transaction.
//!
//! Before the groups, the enqueue→handler-start latency with an idle pool is printed
//! (p50/p99/max over 2,000 enqueues, each committed and waited for in turn).
//!
//! Run with `cargo bench --bench jobs`.

mod support;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use hdrhistogram::Histogram;
use rusqlite::Connection;
use strata::jobs::{Job, Queue, WorkerPool};
use strata::Db;

const JOBS: u64 = 1_000;

fn strata(path: &Path) -> (Db, Queue) {
    let db = Db::open(path).unwrap();
    db.write(|c| {
        Ok(c.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INT)")?)
    })
    .unwrap();
    let queue = db.jobs().unwrap();
    (db, queue)
}

fn empty_pool(queue: &Queue) -> WorkerPool {
    queue
        .workers()
        .threads(2)
        .handler("empty", |_, ()| Ok(()))
        .start()
        .unwrap()
}

/// One statement in a transaction of its own, returning its row's first column if any.
fn raw_tx(c: &Connection, sql: &str, now: i64) -> Option<i64> {
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = c
        .prepare_cached(sql)
        .unwrap()
        .query_row([now], |r| r.get::<_, i64>(0))
        .ok();
    c.execute_batch("COMMIT").unwrap();
    out
}

/// A job enqueued by hand, in a transaction of its own.
fn raw_enqueue(c: &Connection, now: i64) {
    raw_tx(
        c,
        "INSERT INTO strata_jobs (queue, kind, payload, priority, run_at, enqueued_at, max_attempts)
         VALUES ('default', 'empty', 'null', 1, ?1, ?1, 3) RETURNING id",
        now,
    )
    .unwrap();
}

/// The next due job claimed by hand, in a transaction of its own; `None` if none is due.
fn raw_claim(c: &Connection, now: i64) -> Option<i64> {
    raw_tx(
        c,
        "UPDATE strata_jobs SET state = 1, attempts = attempts + 1, lease_until = ?1 + 30000,
                 lease_token = 1
                 WHERE id = (SELECT id FROM strata_jobs WHERE state = 0 AND run_at <= ?1
                             ORDER BY priority, run_at, id LIMIT 1)
                 RETURNING id",
        now,
    )
}

/// A claimed job completed by hand, in a transaction of its own.
fn raw_complete(c: &Connection, id: i64) {
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    c.prepare_cached("DELETE FROM strata_jobs WHERE id = ?1 AND lease_token = 1")
        .unwrap()
        .execute([id])
        .unwrap();
    c.execute_batch("COMMIT").unwrap();
}

/// One job through the table by hand: enqueue, claim, complete, each its own transaction.
fn raw_job(c: &Connection, now: i64) {
    raw_enqueue(c, now);
    let id = raw_claim(c, now).unwrap();
    raw_complete(c, id);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn end_to_end(c: &mut Criterion) {
    let dir = support::scratch();
    let mut group = c.benchmark_group("jobs_end_to_end");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);

    let (_db, queue) = strata(&dir.path().join("strata.db"));
    let pool = empty_pool(&queue);
    let done = pool.completed();
    group.bench_function("strata_pool_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..JOBS {
                    queue.enqueue(Job::new("empty", &()).unwrap()).unwrap();
                }
                for _ in 0..JOBS {
                    done.recv_timeout(Duration::from_secs(30)).unwrap();
                }
            }
            start.elapsed()
        })
    });
    drop(pool);

    let path = dir.path().join("raw.db");
    strata(&path);
    let raw = support::open_raw(&path, "NORMAL");
    group.bench_function("raw_rusqlite_3_tx_per_job", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters * JOBS {
                raw_job(&raw, now_ms());
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// Producer threads of `jobs_end_to_end_producers`.
const PRODUCERS: u64 = 4;

/// `PRODUCERS` threads each enqueueing `JOBS / PRODUCERS` jobs, one per `db.write` (the
/// group-commit writer merges concurrent ones into one transaction), run by a 2-thread pool
/// with an empty handler, timed until the last completes; vs `PRODUCERS` threads each with its
/// own raw connection enqueueing one job per transaction, while one more raw connection claims
/// and completes them in two transactions a job (the loop of `jobs_end_to_end`'s baseline).
fn end_to_end_producers(c: &mut Criterion) {
    let dir = support::scratch();
    let mut group = c.benchmark_group("jobs_end_to_end_producers");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);

    let (db, queue) = strata(&dir.path().join("strata.db"));
    let pool = empty_pool(&queue);
    let done = pool.completed();
    group.bench_function("strata_4_producers_pool_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    for _ in 0..PRODUCERS {
                        s.spawn(|| {
                            for _ in 0..JOBS / PRODUCERS {
                                db.write(|c| queue.enqueue_in(c, Job::new("empty", &())?))
                                    .unwrap();
                            }
                        });
                    }
                    for _ in 0..JOBS {
                        done.recv_timeout(Duration::from_secs(30)).unwrap();
                    }
                });
            }
            start.elapsed()
        })
    });
    drop(pool);

    let path = dir.path().join("raw.db");
    strata(&path);
    let mut producers: Vec<Connection> = (0..PRODUCERS)
        .map(|_| support::open_raw(&path, "NORMAL"))
        .collect();
    let consumer = support::open_raw(&path, "NORMAL");
    group.bench_function("raw_rusqlite_4_producers_1_consumer", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|s| {
                    for conn in producers.iter_mut() {
                        s.spawn(move || {
                            for _ in 0..JOBS / PRODUCERS {
                                raw_enqueue(conn, now_ms());
                            }
                        });
                    }
                    let mut completed = 0;
                    while completed < JOBS {
                        match raw_claim(&consumer, now_ms()) {
                            Some(id) => {
                                raw_complete(&consumer, id);
                                completed += 1;
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                });
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn enqueue_in_write(c: &mut Criterion) {
    let dir = support::scratch();
    let mut group = c.benchmark_group("jobs_enqueue_in_write");
    let (db, queue) = strata(&dir.path().join("strata.db"));
    let mut i = 0_i64;
    group.bench_function("write_without_enqueue", |b| {
        b.iter(|| {
            i += 1;
            db.write(|c| {
                Ok(c.prepare_cached("INSERT INTO t (v) VALUES (?1)")?
                    .execute([i])?)
            })
            .unwrap()
        })
    });
    group.bench_function("write_with_enqueue", |b| {
        b.iter(|| {
            i += 1;
            db.write(|c| {
                c.prepare_cached("INSERT INTO t (v) VALUES (?1)")?
                    .execute([i])?;
                queue.enqueue_in(c, Job::new("later", &i)?)
            })
            .unwrap()
        })
    });
    let path = dir.path().join("raw.db");
    strata(&path);
    let raw = support::open_raw(&path, "NORMAL");
    group.bench_function("raw_rusqlite_write", |b| {
        b.iter(|| {
            i += 1;
            raw.execute_batch("BEGIN IMMEDIATE").unwrap();
            raw.prepare_cached("INSERT INTO t (v) VALUES (?1)")
                .unwrap()
                .execute([i])
                .unwrap();
            raw.execute_batch("COMMIT").unwrap();
        })
    });
    group.finish();
}

/// Enqueue→handler-start latency with an idle pool: each job is enqueued once the previous
/// one has started, so the pool is asleep every time.
fn start_latency() {
    let dir = support::scratch();
    let (db, queue) = strata(&dir.path().join("latency.db"));
    let (tx, rx) = mpsc::channel::<Instant>();
    let tx = std::sync::Mutex::new(tx);
    let pool = queue
        .workers()
        .threads(1)
        .handler("ping", move |_, ()| {
            let _ = tx.lock().unwrap().send(Instant::now());
            Ok(())
        })
        .start()
        .unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..2_000 {
        std::thread::sleep(Duration::from_micros(200));
        let enqueued = Instant::now();
        db.write(|c| queue.enqueue_in(c, Job::new("ping", &())?))
            .unwrap();
        let started = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if i >= 100 {
            h.record((started - enqueued).as_micros() as u64).unwrap();
        }
    }
    drop(pool);
    println!(
        "jobs enqueue->start latency (idle pool, {} samples): p50 {} us, p99 {} us, max {} us",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}

criterion_group!(benches, end_to_end, end_to_end_producers, enqueue_in_write);

fn main() {
    start_latency();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
