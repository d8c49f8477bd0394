//! Write path benchmarks: strata against raw rusqlite with the same pragmas, in the same run.
//!
//! Files: every case of a group writes into its own fresh file, created the same way (an empty
//! WAL database with the `bulk` table) in one scratch directory beside the build output, so on
//! the same disk (not tmpfs: `synchronous=FULL` must pay its fsync). The cases never share a
//! file: a strata `Db` checkpoints its file from a background thread, which would checkpoint a
//! raw case's pages too.
//!
//! Every raw case runs twice (`support::RawCheckpoint`): `autocheckpoint`, SQLite's default,
//! where a COMMIT that leaves 1000 pages in the WAL checkpoints on the caller's thread (what a
//! user of plain rusqlite gets), and `no_autocheckpoint` (`wal_autocheckpoint=0`), where no
//! COMMIT checkpoints, like strata's, whose checkpoints run on a background thread.
//!
//! Groups:
//! - `single_write`: one uncontended one-row insert through `db.write` vs an autocommit insert.
//! - `concurrent_8_threads_{normal,full}`: 8 threads × 50 one-row writes per iteration through
//!   `db.write` (group commit) vs one commit per write, with 8 raw connections (one per thread,
//!   busy_timeout) and with one raw connection shared behind a mutex.
//! - `batch_insert_100k`: a 100k-row `Batch` vs one raw transaction with a prepared statement
//!   (the fair baseline: the batch is one transaction too), and vs one raw transaction per row
//!   (2k rows, the rate is comparable).
//!
//! Run with `cargo bench --bench write`.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rusqlite::Connection;
use strata::{Batch, Db, Synchronous};
use support::RawCheckpoint;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, \
                     amount INTEGER NOT NULL, note TEXT)";
const INSERT: &str = "INSERT INTO bulk (kind, amount, note) VALUES (?1, ?2, ?3)";
const COLUMNS: &[&str] = &["kind", "amount", "note"];
const THREADS: usize = 8;
const WRITES_PER_THREAD: u64 = 50;

/// The raw baseline connection at `sync`, checkpointing as `checkpoint` says, with the bench
/// table.
fn raw(path: &Path, sync: Synchronous, checkpoint: RawCheckpoint) -> Connection {
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    let conn = support::open_raw_with(path, sync, checkpoint);
    conn.execute_batch(TABLE).unwrap();
    conn
}

fn strata(path: &Path, sync: Synchronous) -> Db {
    let db = Db::builder()
        .path(path)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    db.write(|c| Ok(c.execute_batch(TABLE)?)).unwrap();
    db
}

fn insert(conn: &Connection, i: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(INSERT)?.execute((
        format!("k{}", i % 10),
        i as i64,
        "a note of some length",
    ))
}

fn single_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_write");
    group.throughput(Throughput::Elements(1));
    let dir = support::scratch();
    let db = strata(&dir.path().join("strata.db"), Synchronous::Normal);
    let mut i = 0;
    group.bench_function("strata/write", |b| {
        b.iter(|| {
            i += 1;
            db.write(|c| Ok(insert(c, i)?)).unwrap()
        })
    });
    for checkpoint in RawCheckpoint::BOTH {
        let file = format!("raw_{}.db", checkpoint.label());
        let conn = raw(&dir.path().join(file), Synchronous::Normal, checkpoint);
        let id = format!("raw/autocommit_insert/{}", checkpoint.label());
        group.bench_function(id, |b| {
            b.iter(|| {
                i += 1;
                insert(&conn, i).unwrap()
            })
        });
    }
    group.finish();
}

/// Runs `write` for `iters` × 50 writes on each of 8 threads; the time they all took.
fn on_threads(iters: u64, write: impl Fn(usize, u64) + Sync) -> Duration {
    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..THREADS {
            let write = &write;
            s.spawn(move || {
                for i in 0..iters * WRITES_PER_THREAD {
                    write(t, i);
                }
            });
        }
    });
    started.elapsed()
}

fn concurrent(c: &mut Criterion, name: &str, sync: Synchronous) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(THREADS as u64 * WRITES_PER_THREAD));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    let dir = support::scratch();

    let db = strata(&dir.path().join("strata.db"), sync);
    group.bench_function("strata/group_commit", |b| {
        b.iter_custom(|iters| {
            on_threads(iters, |_, i| {
                db.write(|c| Ok(insert(c, i)?)).unwrap();
            })
        })
    });
    let stats = db.write_stats();
    println!(
        "{name}: strata mean group {:.1} writes per commit (max {})",
        stats.mean_group(),
        stats.max_group
    );

    for checkpoint in RawCheckpoint::BOTH {
        raw_concurrent(&mut group, name, dir.path(), sync, checkpoint);
    }
    group.finish();
}

/// The raw cases of a concurrent group, checkpointing as `checkpoint` says.
fn raw_concurrent(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    dir: &Path,
    sync: Synchronous,
    checkpoint: RawCheckpoint,
) {
    let label = checkpoint.label();
    // One connection per thread, one commit per write; lock waits go through busy_timeout.
    let path = dir.join(format!("raw_{label}.db"));
    let conns: Vec<Mutex<Connection>> = (0..THREADS)
        .map(|_| Mutex::new(raw(&path, sync, checkpoint)))
        .collect();
    let busy = std::sync::atomic::AtomicU64::new(0);
    group.bench_function(format!("raw/connection_per_thread/{label}"), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, |t, i| {
                let conn = conns[t].lock().unwrap();
                // A busy error past busy_timeout is retried: the write must happen.
                while let Err(e) = insert(&conn, i) {
                    assert_eq!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::DatabaseBusy)
                    );
                    busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
    });
    println!("{name}: raw connection per thread ({label}): {busy:?} busy errors");

    // One connection shared behind a mutex, one commit per write: no lock waits in SQLite.
    let shared = Mutex::new(raw(
        &dir.join(format!("shared_{label}.db")),
        sync,
        checkpoint,
    ));
    group.bench_function(format!("raw/shared_connection/{label}"), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, |_, i| {
                insert(&shared.lock().unwrap(), i).unwrap();
            })
        })
    });
}

fn concurrent_normal(c: &mut Criterion) {
    concurrent(c, "concurrent_8_threads_normal", Synchronous::Normal);
}

fn concurrent_full(c: &mut Criterion) {
    concurrent(c, "concurrent_8_threads_full", Synchronous::Full);
}

/// One bench row: kind, amount, note.
type Row = (String, i64, String);

fn rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| (format!("k{}", i % 10), i as i64, format!("note {i}")))
        .collect()
}

fn batch_insert(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    const AUTOCOMMIT_ROWS: usize = 2_000;
    let mut group = c.benchmark_group("batch_insert_100k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let data = rows(ROWS);

    // Each iteration writes into a fresh database; the batch is built outside the timing.
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("strata/batch", |b| {
        b.iter_batched(
            || batch_on_fresh_db(&data, false),
            |(dir, db, batch)| {
                let report = db.apply(&batch).unwrap();
                assert_eq!(report.applied, ROWS);
                // Dropped after the timing, like the raw cases' rows (the batch's 300k
                // allocations took ~10 ms to free, which the raw cases never pay).
                (dir, db, batch)
            },
            BatchSize::PerIteration,
        )
    });
    for checkpoint in RawCheckpoint::BOTH {
        let label = checkpoint.label();
        group.throughput(Throughput::Elements(ROWS as u64));
        group.bench_function(format!("raw/one_transaction/{label}"), |b| {
            b.iter_batched(
                || raw_on_fresh_db(checkpoint),
                |(dir, conn)| {
                    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                    {
                        let mut stmt = conn.prepare_cached(INSERT).unwrap();
                        for row in &data {
                            stmt.execute((&row.0, row.1, &row.2)).unwrap();
                        }
                    }
                    conn.execute_batch("COMMIT").unwrap();
                    (dir, conn)
                },
                BatchSize::PerIteration,
            )
        });
        group.throughput(Throughput::Elements(AUTOCOMMIT_ROWS as u64));
        group.bench_function(format!("raw/transaction_per_row_2k/{label}"), |b| {
            b.iter_batched(
                || raw_on_fresh_db(checkpoint),
                |(dir, conn)| {
                    let mut stmt = conn.prepare_cached(INSERT).unwrap();
                    for row in &data[..AUTOCOMMIT_ROWS] {
                        black_box(stmt.execute((&row.0, row.1, &row.2)).unwrap());
                    }
                    drop(stmt);
                    (dir, conn)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// A fresh raw database with the bench table, in a scratch directory of its own.
fn raw_on_fresh_db(checkpoint: RawCheckpoint) -> (tempfile::TempDir, Connection) {
    let dir = support::scratch();
    let conn = raw(&dir.path().join("raw.db"), Synchronous::Normal, checkpoint);
    (dir, conn)
}

/// A fresh strata database (its `bulk` table watched or not) and a `Batch` inserting `data`,
/// built outside the timing.
fn batch_on_fresh_db(data: &[Row], watched: bool) -> (tempfile::TempDir, Db, Batch) {
    let dir = support::scratch();
    let db = strata(&dir.path().join("strata.db"), Synchronous::Normal);
    if watched {
        db.watch("bulk", &["kind", "amount"]).unwrap();
    }
    let mut batch = Batch::new();
    for (kind, amount, note) in data {
        batch.insert("bulk", COLUMNS, (kind, amount, note));
    }
    (dir, db, batch)
}

/// What change capture costs: the same `Batch` insert of 100k rows into a table no rule
/// watches (only the update hook sees its rows) and into one whose columns are watched (TEMP
/// triggers pass old and new values to a Rust function for every row).
fn capture_cost(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    let mut group = c.benchmark_group("capture_batch_100k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(ROWS as u64));
    let data = rows(ROWS);
    for watched in [false, true] {
        let name = if watched {
            "strata/watched"
        } else {
            "strata/unwatched"
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || batch_on_fresh_db(&data, watched),
                |(dir, db, batch)| {
                    let report = db.apply(&batch).unwrap();
                    assert_eq!(report.applied, ROWS);
                    // Dropped after the timing, like the raw cases' rows (the batch's 300k
                    // allocations took ~10 ms to free, which the raw cases never pay).
                    (dir, db, batch)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = single_write, concurrent_normal, concurrent_full, batch_insert, capture_cost
}
criterion_main!(benches);
