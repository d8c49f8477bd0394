//! Read-path benchmarks: strata's `Db::read` against a raw rusqlite connection on the same file
//! with the same pragmas, measured in the same run (one criterion group per comparison).
//!
//! Targets: `pk_lookup` strata/db_read at most 1.3x raw; `monitoring` db_read/monitor_on at
//! most 1.1x db_read/monitor_off (per-statement monitoring costs at most 10% on a primary-key
//! lookup).
//!
//! `ten_lookups_transaction_value` measures what one read transaction saves over ten autocommit
//! lookups (each takes and drops the WAL read lock): the value of a transaction, which any
//! rusqlite user can have, not of strata. Its like-for-like case is `raw/one_transaction`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use strata::rusqlite::{self, Connection};
use support::{Ids, USERS};

const LOOKUP: &str = "SELECT id, email, name, created_at FROM users WHERE id = ?1";

/// One `users` row as the benches read it.
struct User {
    id: i64,
    email: String,
    name: String,
    created_at: i64,
}

fn lookup(c: &Connection, id: i64) -> rusqlite::Result<User> {
    let mut stmt = c.prepare_cached(LOOKUP)?;
    stmt.query_row([id], |r| {
        Ok(User {
            id: r.get(0)?,
            email: r.get(1)?,
            name: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
}

fn consume(u: User) {
    black_box((u.id, u.email, u.name, u.created_at));
}

fn setup() -> (tempfile::TempDir, strata::Db, Connection) {
    setup_with(true)
}

fn setup_with(monitoring: bool) -> (tempfile::TempDir, strata::Db, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let db = strata::Db::builder()
        .migrations(strata::domain::migrations())
        .path(&path)
        .monitoring(monitoring)
        .build()
        .expect("open strata db");
    support::seed_users(&db);
    let raw = support::open_raw(&path, "NORMAL");
    let n: i64 = raw
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count users");
    assert_eq!(n, USERS);
    (dir, db, raw)
}

fn pk_lookup(c: &mut Criterion) {
    let (_dir, db, raw) = setup();
    let mut group = c.benchmark_group("pk_lookup");

    let mut ids = Ids::new();
    group.bench_function("strata/db_read", |b| {
        b.iter(|| {
            let id = ids.next_id();
            consume(db.read(|c| Ok(lookup(c, id)?)).expect("strata lookup"));
        })
    });

    let mut ids = Ids::new();
    group.bench_function("raw/rusqlite", |b| {
        b.iter(|| {
            let id = ids.next_id();
            consume(lookup(&raw, id).expect("raw lookup"));
        })
    });

    group.finish();
}

fn ten_lookups(c: &mut Criterion) {
    let (_dir, db, raw) = setup();
    let mut group = c.benchmark_group("ten_lookups_transaction_value");

    let mut ids = Ids::new();
    group.bench_function("strata/one_read", |b| {
        b.iter(|| {
            db.read(|c| {
                for _ in 0..10 {
                    consume(lookup(c, ids.next_id())?);
                }
                Ok(())
            })
            .expect("strata lookups");
        })
    });

    let mut ids = Ids::new();
    group.bench_function("raw/one_transaction", |b| {
        b.iter(|| {
            raw.execute_batch("BEGIN").expect("raw begin");
            for _ in 0..10 {
                consume(lookup(&raw, ids.next_id()).expect("raw lookup"));
            }
            raw.execute_batch("COMMIT").expect("raw commit");
        })
    });

    let mut ids = Ids::new();
    group.bench_function("raw/ten_autocommit", |b| {
        b.iter(|| {
            for _ in 0..10 {
                consume(lookup(&raw, ids.next_id()).expect("raw lookup"));
            }
        })
    });

    group.finish();
}

fn monitoring(c: &mut Criterion) {
    let (_dir_on, on, raw) = setup_with(true);
    let (_dir_off, off, _) = setup_with(false);
    let mut group = c.benchmark_group("monitoring");

    for (name, db) in [("db_read/monitor_on", &on), ("db_read/monitor_off", &off)] {
        let mut ids = Ids::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let id = ids.next_id();
                consume(db.read(|c| Ok(lookup(c, id)?)).expect("strata lookup"));
            })
        });
    }

    let mut ids = Ids::new();
    group.bench_function("raw/rusqlite", |b| {
        b.iter(|| {
            let id = ids.next_id();
            consume(lookup(&raw, id).expect("raw lookup"));
        })
    });

    group.finish();
    // The monitor really saw the lookups it was timed with.
    let report = on.report();
    let calls = report
        .queries
        .iter()
        .find(|q| q.sql == LOOKUP)
        .map_or(0, |q| q.calls);
    assert!(calls > 0, "monitor_on counted no lookups");
    assert!(off.report().queries.is_empty());
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = pk_lookup, ten_lookups, monitoring
}
criterion_main!(benches);
