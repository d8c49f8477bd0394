//! What several instances cost a write: the change log's entry (appended before every COMMIT)
//! and the turn at the write lock, against the same `Db` without them, in the same run.
//!
//! Groups:
//! - `instances_single_write`: one uncontended one-row update of a table a cache rule watches,
//!   through `db.write`: without instances, with the log only (`fair_turns(false)`), with the
//!   log and the turn (the default of `Config::instances`).
//! - `instances_batch_100k`: a 100k-row `Batch` insert into a fresh database, without and with
//!   instances (the log holds every row: table, rowid, and the watched columns).
//!
//! Run with `cargo bench --bench instances`.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata::cache::{EntityCache, InvalidationRule};
use strata::instances::InstanceSettings;
use strata::{Batch, Db};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, \
                     amount INTEGER NOT NULL, note TEXT)";
const COLUMNS: &[&str] = &["kind", "amount", "note"];

fn open(path: &std::path::Path, instances: Option<InstanceSettings>) -> Db {
    let mut config = Db::builder()
        .path(path)
        .busy_timeout(Duration::from_secs(5));
    if let Some(settings) = instances {
        config = config.instances(settings);
    }
    let db = config.build().unwrap();
    db.write(|c| Ok(c.execute_batch(TABLE)?)).unwrap();
    db
}

fn modes() -> [(&'static str, Option<InstanceSettings>); 3] {
    [
        ("strata/no_instances", None),
        (
            "strata/log_only",
            Some(InstanceSettings::default().fair_turns(false)),
        ),
        ("strata/log_and_turns", Some(InstanceSettings::default())),
    ]
}

fn single_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("instances_single_write");
    group.throughput(Throughput::Elements(1));
    let dir = support::scratch();
    for (i, (name, settings)) in modes().into_iter().enumerate() {
        let db = open(&dir.path().join(format!("single{i}.db")), settings);
        db.register_cache(EntityCache::<i64, String>::builder("bulk"))
            .unwrap();
        db.add_rule(InvalidationRule::column_key("bulk", "amount", "bulk"))
            .unwrap();
        db.write(|c| Ok(c.execute("INSERT INTO bulk VALUES (1, 'k', 0, 'a note')", [])?))
            .unwrap();
        let mut n = 0i64;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                db.write(|c| {
                    Ok(
                        c.prepare_cached("UPDATE bulk SET amount = ?1 WHERE id = 1")?
                            .execute([n])?,
                    )
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

fn batch_100k(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    let mut group = c.benchmark_group("instances_batch_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    let data: Vec<(String, i64, String)> = (0..ROWS)
        .map(|i| (format!("k{}", i % 10), i as i64, format!("note {i}")))
        .collect();
    for (name, settings) in modes() {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = support::scratch();
                    let db = open(&dir.path().join("batch.db"), settings.clone());
                    db.watch("bulk", &["kind", "amount"]).unwrap();
                    let mut batch = Batch::new();
                    for (kind, amount, note) in &data {
                        batch.insert("bulk", COLUMNS, (kind, amount, note));
                    }
                    (dir, db, batch)
                },
                |(dir, db, batch)| {
                    let report = db.apply(&batch).unwrap();
                    assert_eq!(report.applied, ROWS);
                    (dir, db)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, single_write, batch_100k);
criterion_main!(benches);
