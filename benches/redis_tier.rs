//! The shared cache tier (feature `redis`) on loopback: what an L2 hit costs next to an L1 hit
//! and a local SQLite primary-key read, and where it pays: the tracker's `daily_metrics` read
//! with an empty L1 in a second `Db`, from Redis against recomputed, for days of 10 to 10 000
//! expenses.
//!
//! Starts its own `redis-server` on a free loopback port (or uses `REDIS_URL`).

mod support;

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strata::cache::{EntityCache, SharedTierSettings};
use strata::domain::{DailyMetrics, Expense, ExpenseTracker, User};
use strata::rusqlite::Connection;
use strata::{Config, Db};

/// Expenses of user 1 on each measured day.
const DAYS: &[(i64, &str)] = &[
    (10, "2026-01-01"),
    (100, "2026-01-02"),
    (1000, "2026-01-03"),
    (10_000, "2026-01-04"),
];

struct Redis {
    url: String,
    child: Option<Child>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn redis() -> Redis {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Redis { url, child: None };
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the bench needs redis-server (apt-get install redis-server) or REDIS_URL");
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Redis {
        url,
        child: Some(child),
    }
}

fn tier(url: &str) -> SharedTierSettings {
    SharedTierSettings::new(url).prefix(format!("bench{}", std::process::id()))
}

fn load(c: &Connection, id: &i64) -> strata::Result<Option<String>> {
    let mut stmt = c.prepare_cached("SELECT v FROM t WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// One key: an L1 hit, an L2 hit (the L1 entry dropped first, locally only), and the SQLite
/// primary-key read the loader runs.
fn point(c: &mut Criterion) {
    let redis = redis();
    let dir = support::scratch();
    let path = dir.path().join("point.db");
    let open = || -> Db {
        Config::new()
            .path(&path)
            .shared_tier(tier(&redis.url))
            .build()
            .expect("open")
    };
    let a = open();
    a.write(|c| {
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")?;
        c.execute(
            "INSERT INTO t VALUES (1, 'a value of some thirty bytes..')",
            [],
        )?;
        Ok(())
    })
    .expect("schema");
    let register = |db: &Db| -> Arc<EntityCache<i64, String>> {
        db.register_cache(EntityCache::builder("vals").shared_tier())
            .expect("register")
    };
    let a_vals = register(&a);
    a.cached(&a_vals, &1, load).expect("fill");
    let b = open();
    let vals = register(&b);

    let mut group = c.benchmark_group("redis_tier/point");
    group.bench_function("l1_hit", |bench| {
        bench.iter(|| black_box(b.cached(&vals, &1, load).expect("hit")))
    });
    group.bench_function("l2_hit", |bench| {
        bench.iter(|| {
            vals.invalidate(&1);
            black_box(b.cached(&vals, &1, load).expect("l2"))
        })
    });
    group.bench_function("sqlite_pk_read", |bench| {
        bench.iter(|| black_box(b.read(|c| load(c, &1)).expect("read")))
    });
    group.finish();
    let stats = b.caches().shared_tier().expect("tier").stats();
    assert_eq!(stats.misses, 0, "every L2 read hit: {stats:?}");
}

fn seed(t: &ExpenseTracker) {
    let user_id = t
        .users
        .insert(&User {
            id: 0,
            email: "heavy@example.com".into(),
            name: "Heavy".into(),
            created_at: 0,
        })
        .expect("user");
    let mut expenses = Vec::new();
    for &(n, date) in DAYS {
        expenses.extend((0..n).map(|i| Expense {
            id: 0,
            user_id,
            category_id: None,
            amount_cents: 100 + i,
            description: format!("expense {i}"),
            expense_date: date.into(),
            created_at: i,
        }));
    }
    t.expenses.insert_many(&expenses).expect("expenses");
}

/// `daily_metrics` with nothing in L1: recomputed by a tracker without a tier, against read
/// from Redis by a second tracker with one (filled by a first).
fn daily_metrics(c: &mut Criterion) {
    let redis = redis();
    let dir = support::scratch();
    let path = dir.path().join("metrics.db");
    let shared = || {
        ExpenseTracker::with_config(Config::new().path(&path).shared_tier(tier(&redis.url)))
            .expect("open")
    };
    let first = shared();
    seed(&first);
    let second = shared();
    let local = ExpenseTracker::open(&path).expect("open");
    let l1 = |t: &ExpenseTracker| {
        t.db()
            .caches()
            .get::<(i64, String), DailyMetrics>("daily_metrics")
            .expect("the cache")
    };
    let (second_l1, local_l1) = (l1(&second), l1(&local));
    let mut group = c.benchmark_group("redis_tier/daily_metrics");
    for &(n, date) in DAYS {
        let key = (1_i64, date.to_owned());
        let want = first.daily_metrics(1, date).expect("fill");
        assert_eq!(want.count, n);
        group.bench_with_input(BenchmarkId::new("recompute", n), &n, |bench, _| {
            bench.iter(|| {
                local_l1.invalidate(&key);
                black_box(local.daily_metrics(1, date).expect("metrics"))
            })
        });
        group.bench_with_input(BenchmarkId::new("l2_hit", n), &n, |bench, _| {
            bench.iter(|| {
                second_l1.invalidate(&key);
                black_box(second.daily_metrics(1, date).expect("metrics"))
            })
        });
    }
    group.finish();
    let stats = second.db().caches().shared_tier().expect("tier").stats();
    assert_eq!(stats.misses, 0, "every L2 read hit: {stats:?}");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = point, daily_metrics
}
criterion_main!(benches);
