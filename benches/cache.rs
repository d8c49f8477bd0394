//! Hit-path cost of `EntityCache` against a bare `Mutex<LruCache>`, moka and quick_cache (same
//! capacity, same keys), how hits scale to two threads for the three caches, what the TinyLFU
//! admission sketch costs a hit that reaches a shard, and the read-through path of a `Db`
//! against uncached reads. Hit ratios are printed by `examples/hit_ratio.rs`.
//!
//! Targets: `read_through` strata/cached_hit at least 20x faster than strata/db_read_uncached;
//! `shard_hit` tinylfu at most 20 ns above lru.

mod support;

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use parking_lot::Mutex;
use strata::cache::{EntityCache, InvalidationRule};
use strata::rusqlite::{self, Connection, OptionalExtension};
use strata::Db;
use support::{Ids, USERS};

const KEYS: u64 = 1024;

fn cache() -> EntityCache<u64, u64> {
    let cache = EntityCache::builder("bench")
        .capacity(4096)
        .ttl(Duration::from_secs(3600))
        .build()
        .expect("valid spec");
    for k in 0..KEYS {
        cache.insert(k, k);
    }
    cache
}

fn moka_cache() -> moka::sync::Cache<u64, Arc<u64>> {
    let cache = moka::sync::Cache::new(4096);
    for k in 0..KEYS {
        cache.insert(k, Arc::new(k));
    }
    cache.run_pending_tasks();
    cache
}

fn quick() -> quick_cache::sync::Cache<u64, Arc<u64>> {
    let cache = quick_cache::sync::Cache::new(4096);
    for k in 0..KEYS {
        cache.insert(k, Arc::new(k));
    }
    cache
}

fn get_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_hit");
    group.measurement_time(Duration::from_secs(3));
    let entity = cache();
    let mut k = 0u64;
    group.bench_function("entity_cache", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(entity.get(black_box(&k)))
        })
    });
    let moka = moka_cache();
    group.bench_function("moka", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(moka.get(black_box(&k)))
        })
    });
    let quick = quick();
    group.bench_function("quick_cache", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(quick.get(black_box(&k)))
        })
    });
    let lru = Mutex::new(lru::LruCache::new(
        NonZeroUsize::new(4096).expect("non-zero"),
    ));
    for k in 0..KEYS {
        lru.lock().put(k, Arc::new(k));
    }
    group.bench_function("lru_mutex", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(lru.lock().get(black_box(&k)).cloned())
        })
    });
    group.finish();
}

/// Hits that reach a shard (a key set 16x larger than a thread's front), with the admission
/// sketch on and off: what TinyLFU costs a hit.
fn shard_hit(c: &mut Criterion) {
    const WIDE: u64 = 32_768;
    let mut group = c.benchmark_group("shard_hit");
    group.measurement_time(Duration::from_secs(3));
    for (name, admission) in [("tinylfu", true), ("lru", false)] {
        let entity: EntityCache<u64, u64> = EntityCache::builder("wide")
            .capacity(2 * WIDE as usize)
            .ttl(Duration::from_secs(3600))
            .admission(admission)
            .build()
            .expect("valid spec");
        for k in 0..WIDE {
            entity.insert(k, k);
        }
        let mut k = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                // A stride through the keys, so that the front never holds the next one.
                k = (k + 7919) % WIDE;
                black_box(entity.get(black_box(&k)))
            })
        });
    }
    group.finish();
}

fn get_or_load_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_or_load_hit");
    group.measurement_time(Duration::from_secs(3));
    let entity = cache();
    let mut k = 0u64;
    group.bench_function("entity_cache", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(entity.get_or_load(black_box(&k), |&k| Ok(Some(k))))
        })
    });
    group.finish();
}

/// Runs `iters` hits (`get` of a key) on each of `threads` threads and returns the time per
/// hit of the whole group, so the lines compare aggregate throughput directly.
fn hit_on_threads<R>(get: &(impl Fn(u64) -> R + Sync), threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                // Each thread walks its own keys (thread t the t-th 1/threads of them), so that
                // the threads meet on shards only by hash, as callers serving different users do.
                let own = KEYS / threads;
                let first = t * own;
                let mut k = 0;
                for _ in 0..iters {
                    k = (k + 1) % own;
                    black_box(get(black_box(first + k)));
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    group.measurement_time(Duration::from_secs(3));
    let entity = cache();
    let moka = moka_cache();
    let quick = quick();
    for threads in [1, 2] {
        group.bench_function(format!("strata/{threads}_thread_hits"), |b| {
            b.iter_custom(|iters| hit_on_threads(&|k| entity.get(&k), threads, iters))
        });
        group.bench_function(format!("moka/{threads}_thread_hits"), |b| {
            b.iter_custom(|iters| hit_on_threads(&|k| moka.get(&k), threads, iters))
        });
        group.bench_function(format!("quick_cache/{threads}_thread_hits"), |b| {
            b.iter_custom(|iters| hit_on_threads(&|k| quick.get(&k), threads, iters))
        });
    }
    group.finish();
}

const LOOKUP: &str = "SELECT id, email, name, created_at FROM users WHERE id = ?1";

/// One `users` row.
struct User {
    id: i64,
    email: String,
    name: String,
    created_at: i64,
}

fn lookup(c: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    c.prepare_cached(LOOKUP)?
        .query_row([id], |r| {
            Ok(User {
                id: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()
}

fn consume(u: &User) {
    black_box((u.id, &u.email, &u.name, u.created_at));
}

/// `db.cached` on warm keys of a 10k-row `users` table, against the same primary-key lookup
/// through `db.read` and on a raw connection.
fn read_through(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let db = Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .build()
        .expect("open strata db");
    support::seed_users(&db);
    let users = db
        .register_cache(
            EntityCache::<i64, User>::builder("users")
                .capacity(2 * USERS as usize)
                .ttl(Duration::from_secs(3600)),
        )
        .expect("register cache");
    db.add_rule(InvalidationRule::rowid_key("users", "users"))
        .expect("add rule");
    let load = |c: &Connection, id: &i64| Ok(lookup(c, *id)?);
    for id in 1..=USERS {
        db.cached(&users, &id, load).expect("warm");
    }
    assert_eq!(users.len(), USERS as usize);
    let raw = support::open_raw(&path, "NORMAL");

    let mut group = c.benchmark_group("read_through");
    group.measurement_time(Duration::from_secs(3));

    let mut ids = Ids::new();
    group.bench_function("strata/cached_hit", |b| {
        b.iter(|| {
            let id = ids.next_id();
            let user = db.cached(&users, &id, load).expect("cached lookup");
            consume(&user.expect("user exists"));
        })
    });

    let mut ids = Ids::new();
    group.bench_function("strata/db_read_uncached", |b| {
        b.iter(|| {
            let id = ids.next_id();
            let user = db.read(|c| Ok(lookup(c, id)?)).expect("strata lookup");
            consume(&user.expect("user exists"));
        })
    });

    let mut ids = Ids::new();
    group.bench_function("raw/rusqlite", |b| {
        b.iter(|| {
            let id = ids.next_id();
            let user = lookup(&raw, id).expect("raw lookup");
            consume(&user.expect("user exists"));
        })
    });
    group.finish();

    let stats = users.stats();
    assert_eq!(stats.loads, USERS as u64, "every timed lookup was a hit");
}

criterion_group!(
    benches,
    get_hit,
    shard_hit,
    get_or_load_hit,
    two_threads,
    read_through
);
criterion_main!(benches);
