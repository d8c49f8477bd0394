//! Hit ratios of strata's `EntityCache` (TinyLFU admission on, and plain LRU) beside moka and
//! quick_cache, all of capacity 10 000, on the traces of the cache issue: Zipf s = 0.8, 1.0 and
//! 1.2 over 1M keys, and a loop over 50k keys mixed with Zipf 1.0 traffic (one request in
//! three is the loop's). Each cache sees the same trace: a `get`, and an `insert` on a miss.
//!
//! `cargo run --release --example hit_ratio` prints a Markdown table; `HIT_RATIO_REQUESTS`
//! sets the requests per trace (default 2 000 000).
//!
//! `hit_ratio hits CACHE N [KEYS]` (CACHE: strata, strata-lru, moka, quick_cache) instead runs
//! N hits on KEYS (default 1024) warm keys, for instruction counts per hit under `valgrind --tool=callgrind` (the
//! difference between two N, divided by their difference), which a loaded machine does not
//! skew the way it skews wall-clock times.

use std::sync::Arc;
use std::time::Duration;

use strata::cache::EntityCache;

const KEYS: usize = 1_000_000;
const CAPACITY: usize = 10_000;
const LOOP: u64 = 50_000;

/// splitmix64: a small, seedable generator, so that every cache sees the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf over ranks 0..KEYS by inverse CDF; a rank is scattered to a key so that popular keys
/// are not neighbours.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(s: f64) -> Self {
        let mut cdf = Vec::with_capacity(KEYS);
        let mut sum = 0.0;
        for rank in 1..=KEYS {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&p| p < u) as u64;
        rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8
    }
}

fn trace(s: f64, with_loop: bool, requests: usize) -> Vec<u64> {
    let zipf = Zipf::new(s);
    let mut rng = Rng(42);
    let mut next_in_loop = 0;
    (0..requests)
        .map(|_| {
            if with_loop && rng.next().is_multiple_of(3) {
                next_in_loop = (next_in_loop + 1) % LOOP;
                // Above every Zipf key (those are < 2^56).
                (1 << 60) + next_in_loop
            } else {
                zipf.sample(&mut rng)
            }
        })
        .collect()
}

fn ratio(trace: &[u64], mut get_or_insert: impl FnMut(u64) -> bool) -> f64 {
    let hits = trace.iter().filter(|&&k| get_or_insert(k)).count();
    hits as f64 / trace.len() as f64
}

fn strata(trace: &[u64], admission: bool) -> f64 {
    let cache: EntityCache<u64, u64> = EntityCache::builder("trace")
        .capacity(CAPACITY)
        .ttl(Duration::from_secs(3600))
        .admission(admission)
        .build()
        .expect("valid spec");
    ratio(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.insert(k, k);
        }
        hit
    })
}

fn moka(trace: &[u64]) -> f64 {
    let cache: moka::sync::Cache<u64, Arc<u64>> = moka::sync::Cache::new(CAPACITY as u64);
    ratio(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.insert(k, Arc::new(k));
        }
        hit
    })
}

fn quick_cache(trace: &[u64]) -> f64 {
    let cache: quick_cache::sync::Cache<u64, Arc<u64>> = quick_cache::sync::Cache::new(CAPACITY);
    ratio(trace, |k| {
        let hit = cache.get(&k).is_some();
        if !hit {
            cache.insert(k, Arc::new(k));
        }
        hit
    })
}

/// `n` hits on `warm` keys of one cache (more keys than a thread's front holds, 2048, make
/// strata's hits go to the shards).
fn hits(which: &str, n: u64, warm: u64) {
    let mut sum = 0u64;
    let key = |i: u64| (i.wrapping_mul(7919)) % warm;
    match which {
        "strata" | "strata-lru" => {
            let cache: EntityCache<u64, u64> = EntityCache::builder("hits")
                .capacity(4 * warm as usize)
                .admission(which == "strata")
                .build()
                .expect("valid spec");
            (0..warm).for_each(|k| drop(cache.insert(k, k)));
            for i in 0..n {
                sum += cache
                    .get(&key(i))
                    .and_then(|c| c.into_value())
                    .map_or(0, |v| *v);
            }
        }
        "moka" => {
            let cache: moka::sync::Cache<u64, Arc<u64>> = moka::sync::Cache::new(4 * warm);
            (0..warm).for_each(|k| cache.insert(k, Arc::new(k)));
            cache.run_pending_tasks();
            for i in 0..n {
                sum += cache.get(&key(i)).map_or(0, |v| *v);
            }
        }
        "quick_cache" => {
            let cache: quick_cache::sync::Cache<u64, Arc<u64>> =
                quick_cache::sync::Cache::new(4 * warm as usize);
            (0..warm).for_each(|k| cache.insert(k, Arc::new(k)));
            for i in 0..n {
                sum += cache.get(&key(i)).map_or(0, |v| *v);
            }
        }
        other => panic!("unknown cache {other}"),
    }
    println!("{which}: {n} hits (sum {sum})");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hits") {
        let n = args
            .get(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let warm = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(1024);
        hits(args.get(2).map_or("strata", String::as_str), n, warm);
        return;
    }
    let requests = std::env::var("HIT_RATIO_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("hit ratio, capacity {CAPACITY}, {requests} requests per trace, 1M keys");
    println!();
    println!("| trace | strata (TinyLFU) | strata (LRU) | moka | quick_cache |");
    println!("| --- | --- | --- | --- | --- |");
    let traces = [
        ("Zipf s=0.8", 0.8, false),
        ("Zipf s=1.0", 1.0, false),
        ("Zipf s=1.2", 1.2, false),
        ("50k loop + Zipf 1.0", 1.0, true),
    ];
    for (name, s, with_loop) in traces {
        let trace = trace(s, with_loop, requests);
        println!(
            "| {name} | {:.2}% | {:.2}% | {:.2}% | {:.2}% |",
            100.0 * strata(&trace, true),
            100.0 * strata(&trace, false),
            100.0 * moka(&trace),
            100.0 * quick_cache(&trace),
        );
    }
}
