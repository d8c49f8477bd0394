//! Async benchmarks (feature `tokio`): `AsyncDb` against sync `Db` and the async SQLite crates
//! a tokio service would otherwise use, every peer in the same run and on the same file.
//!
//! - `async_pk_lookup_one_caller`: one primary-key lookup (no cache) at a time from one task:
//!   `AsyncDb::read`, sync `Db::read`, tokio-rusqlite `call`, deadpool-sqlite `interact`.
//!   Goal: AsyncDb ≤ 2x sync, ahead of every peer.
//! - `async_pk_lookup_64_tasks`: 64 tasks on a multi-thread runtime, 16 lookups each per
//!   iteration (throughput); sync `Db::read` from as many OS threads as AsyncDb has reader
//!   threads. Goal: ≥ 80% of sync, ≥ 3x deadpool-sqlite.
//! - `async_cache_hit`: `AsyncRepository::get` of a cached row (goal ≤ 150 ns) beside the sync
//!   `Repository::get`.
//! - `async_write_64_tasks`: 64 tasks × 8 one-row writes through `AsyncDb::write` against raw
//!   rusqlite, one commit per write with a connection per thread (8 threads × 64 writes, as in
//!   benches/write.rs). Goal ≥ 3x.
//!
//! sqlx's SQLite driver is not measured here: it links libsqlite3-sys < 0.38, and a build may
//! link only one libsqlite3-sys (`links = "sqlite3"`) while rusqlite 0.40 needs 0.38.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::asynch::AsyncRepository;
use strata::rusqlite::{self, Connection};
use strata::{AsyncDb, Db};
use support::{Ids, USERS};

const LOOKUP: &str = "SELECT id, email, name, created_at FROM users WHERE id = ?1";

/// Reader threads of AsyncDb, readers of every pool, OS threads of the sync baseline.
const READERS: usize = 4;
const TASKS: u64 = 64;
const PER_TASK: u64 = 16;

fn lookup(c: &Connection, id: i64) -> rusqlite::Result<(i64, String, String, i64)> {
    let mut stmt = c.prepare_cached(LOOKUP)?;
    stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
}

struct Setup {
    _dir: tempfile::TempDir,
    db: Db,
    adb: AsyncDb,
    tokio_rusqlite: Vec<tokio_rusqlite::Connection>,
    deadpool: deadpool_sqlite::Pool,
}

/// The multi-thread runtime of a group. Its context is entered for the whole group
/// (`enter`): deadpool's connections are closed on the runtime's blocking pool when the group's
/// setup drops, which must happen before the runtime's guard goes.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn setup(runtime: &tokio::runtime::Runtime) -> Setup {
    let dir = support::scratch();
    let path = dir.path().join("bench.db");
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .readers(READERS)
        .build()
        .expect("open strata db");
    support::seed_users(&db);
    db.write(|c| {
        Ok(c.execute_batch("CREATE TABLE writes (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")?)
    })
    .expect("writes table");
    let adb = AsyncDb::builder()
        .reader_threads(READERS)
        .build(db.clone())
        .expect("AsyncDb");
    let tokio_rusqlite = runtime.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..READERS {
            conns.push(open_tokio_rusqlite(&path).await);
        }
        conns
    });
    let mut config = deadpool_sqlite::Config::new(&path);
    config.pool = Some(deadpool_sqlite::PoolConfig::new(READERS));
    let deadpool = config
        .create_pool(deadpool_sqlite::Runtime::Tokio1)
        .expect("deadpool");
    Setup {
        _dir: dir,
        db,
        adb,
        tokio_rusqlite,
        deadpool,
    }
}

async fn open_tokio_rusqlite(path: &Path) -> tokio_rusqlite::Connection {
    let conn = tokio_rusqlite::Connection::open(path)
        .await
        .expect("tokio-rusqlite");
    conn.call(move |c| {
        // The pragmas of strata's readers that matter to a lookup.
        c.set_prepared_statement_cache_capacity(128);
        c.execute_batch("PRAGMA cache_size=-8192; PRAGMA mmap_size=0; PRAGMA temp_store=MEMORY;")
    })
    .await
    .expect("tokio-rusqlite pragmas");
    conn
}

fn one_caller(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let s = setup(&rt);
    let mut group = c.benchmark_group("async_pk_lookup_one_caller");

    let mut ids = Ids::new();
    group.bench_function("strata/async_read", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let id = ids.next_id();
                    black_box(s.adb.read(move |c| Ok(lookup(c, id)?)).await.expect("read"));
                }
                start.elapsed()
            })
        })
    });

    let mut ids = Ids::new();
    group.bench_function("strata/sync_db_read", |b| {
        b.iter(|| {
            let id = ids.next_id();
            black_box(s.db.read(|c| Ok(lookup(c, id)?)).expect("read"));
        })
    });

    let mut ids = Ids::new();
    group.bench_function("tokio_rusqlite/call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let id = ids.next_id();
                    let row = s.tokio_rusqlite[0].call(move |c| lookup(c, id)).await;
                    black_box(row.expect("call"));
                }
                start.elapsed()
            })
        })
    });

    let mut ids = Ids::new();
    group.bench_function("deadpool_sqlite/interact", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let id = ids.next_id();
                    let conn = s.deadpool.get().await.expect("pool");
                    let row = conn.interact(move |c| lookup(c, id)).await;
                    black_box(row.expect("interact").expect("lookup"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// A deterministic id for lookup `n` of task `t`.
fn id_of(t: u64, n: u64) -> i64 {
    ((t * 7919 + n * 104_729) % USERS as u64) as i64 + 1
}

/// Runs `iters` rounds of TASKS tasks × PER_TASK calls of `call`; the time they took.
fn on_tasks<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, call: F) -> Duration
where
    F: Fn(u64, i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let call = call.clone();
                    tokio::spawn(async move {
                        for n in 0..PER_TASK {
                            call(t, id_of(t, n)).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        }
        start.elapsed()
    })
}

fn many_tasks(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let s = setup(&rt);
    let mut group = c.benchmark_group("async_pk_lookup_64_tasks");
    group.throughput(Throughput::Elements(TASKS * PER_TASK));

    let adb = s.adb.clone();
    group.bench_function("strata/async_read", |b| {
        b.iter_custom(|iters| {
            let adb = adb.clone();
            on_tasks(&rt, iters, move |_, id| {
                let adb = adb.clone();
                async move {
                    black_box(adb.read(move |c| Ok(lookup(c, id)?)).await.expect("read"));
                }
            })
        })
    });

    // As many OS threads as AsyncDb has reader threads, the same lookups in total.
    group.bench_function("strata/sync_db_read_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let per_thread = TASKS / READERS as u64;
            std::thread::scope(|scope| {
                for r in 0..READERS as u64 {
                    let db = &s.db;
                    scope.spawn(move || {
                        for _ in 0..iters {
                            for t in r * per_thread..(r + 1) * per_thread {
                                for n in 0..PER_TASK {
                                    let id = id_of(t, n);
                                    black_box(db.read(|c| Ok(lookup(c, id)?)).expect("read"));
                                }
                            }
                        }
                    });
                }
            });
            start.elapsed()
        })
    });

    let conns = Arc::new(s.tokio_rusqlite.clone());
    group.bench_function("tokio_rusqlite/call", |b| {
        b.iter_custom(|iters| {
            let conns = Arc::clone(&conns);
            on_tasks(&rt, iters, move |t, id| {
                let conns = Arc::clone(&conns);
                async move {
                    let conn = &conns[t as usize % conns.len()];
                    black_box(conn.call(move |c| lookup(c, id)).await.expect("call"));
                }
            })
        })
    });

    let pool = s.deadpool.clone();
    group.bench_function("deadpool_sqlite/interact", |b| {
        b.iter_custom(|iters| {
            let pool = pool.clone();
            on_tasks(&rt, iters, move |_, id| {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("pool");
                    let row = conn.interact(move |c| lookup(c, id)).await;
                    black_box(row.expect("interact").expect("lookup"));
                }
            })
        })
    });
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let s = setup(&rt);
    let tracker = strata::domain::ExpenseTracker::new(&s.db).expect("tracker");
    let users = AsyncRepository::new(s.adb.clone(), tracker.users.clone());
    // 512 users, all cached.
    for id in 1..=512 {
        tracker.users.get(id).expect("warm");
    }
    let mut group = c.benchmark_group("async_cache_hit");
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    group.bench_function("strata/async_repository_get", |b| {
        b.iter_custom(|iters| {
            current.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let id = (i % 512) as i64 + 1;
                    black_box(users.get(id).await.expect("hit"));
                }
                start.elapsed()
            })
        })
    });
    let mut i = 0i64;
    group.bench_function("strata/sync_repository_get", |b| {
        b.iter(|| {
            i = i % 512 + 1;
            black_box(tracker.users.get(i).expect("hit"));
        })
    });
    group.finish();
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    let _context = rt.enter();
    let s = setup(&rt);
    let path = s.db.path().to_owned();
    let mut group = c.benchmark_group("async_write_64_tasks");
    const WRITES: u64 = 512;
    group.throughput(Throughput::Elements(WRITES));
    let next = Arc::new(AtomicI64::new(0));

    let adb = s.adb.clone();
    let counter = Arc::clone(&next);
    group.bench_function("strata/async_write", |b| {
        b.iter_custom(|iters| {
            let (adb, counter) = (adb.clone(), Arc::clone(&counter));
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let (adb, counter) = (adb.clone(), Arc::clone(&counter));
                            tokio::spawn(async move {
                                for _ in 0..WRITES / TASKS {
                                    let v = counter.fetch_add(1, Ordering::Relaxed);
                                    adb.write(move |c| {
                                        let mut stmt =
                                            c.prepare_cached("INSERT INTO writes (v) VALUES (?1)")?;
                                        Ok(stmt.execute([v])?)
                                    })
                                    .await
                                    .expect("write");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("task");
                    }
                }
                start.elapsed()
            })
        })
    });

    const THREADS: u64 = 8;
    let conns: Vec<_> = (0..THREADS)
        .map(|_| parking_lot::Mutex::new(support::open_raw(&path, "NORMAL")))
        .collect();
    let counter = Arc::clone(&next);
    group.bench_function("raw/commit_per_write_connection_per_thread", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for conn in &conns {
                    let counter = &counter;
                    scope.spawn(move || {
                        let conn = conn.lock();
                        for _ in 0..iters * (WRITES / THREADS) {
                            let v = counter.fetch_add(1, Ordering::Relaxed);
                            let mut stmt = conn
                                .prepare_cached("INSERT INTO writes (v) VALUES (?1)")
                                .expect("prepare");
                            // Lock waits go through busy_timeout; a rare SQLITE_BUSY is retried.
                            while stmt.execute([v]).is_err() {}
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = one_caller, many_tasks, cache_hit, writes
}
criterion_main!(benches);
