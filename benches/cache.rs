//! Hit-path cost of `EntityCache` against a bare `Mutex<LruCache>`, and how hits scale to two
//! threads.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use parking_lot::Mutex;
use strata::EntityCache;

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

/// Runs `iters` hits on each of `threads` threads and returns the time per hit of the whole
/// group, so the two lines compare aggregate throughput directly.
fn hit_on_threads(entity: &EntityCache<u64, u64>, threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                // Each thread walks its own keys so that the threads meet on shards only by hash.
                let mut k = t * (KEYS / 2);
                for _ in 0..iters {
                    k = (k + 1) % KEYS;
                    black_box(entity.get(black_box(&k)));
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
    for threads in [1, 2] {
        group.bench_function(format!("{threads}_thread_hits"), |b| {
            b.iter_custom(|iters| hit_on_threads(&entity, threads, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, get_hit, get_or_load_hit, two_threads);
criterion_main!(benches);
