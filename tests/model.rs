//! Model-based property test: random sequences of writes (repository put/insert/update/delete,
//! raw SQL, batches, failing writes), reads through the repository's cache (get, get_many),
//! cache invalidations and reopens of the file, checked step by step against a `BTreeMap`.
//!
//! 64 cases of up to 40 operations by default; `PROPTEST_CASES` raises the number of cases.

#[path = "model/group_commit.rs"]
mod group_commit;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use strata::rusqlite::types::ToSql;
use strata::rusqlite::Row;
use strata::{Batch, Db, Entity, Error, Repository};

#[derive(Debug, Clone, PartialEq)]
struct Item {
    id: i64,
    value: String,
}

impl Entity for Item {
    const TABLE: &'static str = "items";
    const COLUMNS: &'static [&'static str] = &["value"];
    fn key(&self) -> Option<i64> {
        Some(self.id)
    }
    fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(Item {
            id: row.get(0)?,
            value: row.get(1)?,
        })
    }
    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.value]
    }
}

#[derive(Debug, Clone)]
enum BatchOp {
    Upsert(i64, String),
    /// A plain insert: fails on an existing key.
    Insert(i64, String),
    Delete(i64),
}

#[derive(Debug, Clone)]
enum Op {
    /// `Repository::upsert`.
    Put(i64, String),
    /// `Repository::insert`: a constraint error if the key exists.
    Insert(i64, String),
    /// `Repository::update`: `NotFound` if the key does not exist.
    Update(i64, String),
    /// An upsert in raw SQL through `db.write`.
    RawPut(i64, String),
    /// A delete in raw SQL through `db.write`.
    RawDelete(i64),
    /// A write that upserts and then fails: nothing of it may show.
    FailedPut(i64, String),
    /// `Repository::delete`.
    Delete(i64),
    Batch {
        ops: Vec<BatchOp>,
        all_or_nothing: bool,
    },
    Get(i64),
    GetMany(Vec<i64>),
    Invalidate(i64),
    InvalidateAll,
    Reopen,
}

fn key() -> impl Strategy<Value = i64> {
    1..=12i64
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        "\\PC{0,8}", // any printable text, unicode included
    ]
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(k, v)| BatchOp::Upsert(k, v)),
        1 => (key(), value()).prop_map(|(k, v)| BatchOp::Insert(k, v)),
        2 => key().prop_map(BatchOp::Delete),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (key(), value()).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => (key(), value()).prop_map(|(k, v)| Op::Update(k, v)),
        2 => (key(), value()).prop_map(|(k, v)| Op::RawPut(k, v)),
        1 => key().prop_map(Op::RawDelete),
        1 => (key(), value()).prop_map(|(k, v)| Op::FailedPut(k, v)),
        2 => key().prop_map(Op::Delete),
        2 => (proptest::collection::vec(batch_op(), 0..12), any::<bool>())
            .prop_map(|(ops, all_or_nothing)| Op::Batch { ops, all_or_nothing }),
        6 => key().prop_map(Op::Get),
        3 => proptest::collection::vec(key(), 0..8).prop_map(Op::GetMany),
        2 => key().prop_map(Op::Invalidate),
        1 => Just(Op::InvalidateAll),
        1 => Just(Op::Reopen),
    ]
}

fn open(path: &Path) -> strata::Result<(Db, Repository<Item>)> {
    let db = Db::builder().path(path).readers(2).build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, value TEXT NOT NULL)",
        )?)
    })?;
    let repo = Repository::new(&db)?;
    Ok((db, repo))
}

fn fail(step: usize, op: &Op, what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("step {step} {op:?}: {what}"))
}

/// Applies a batch to the model the way the batch should apply it: in order; a plain insert
/// of an existing key fails alone, or rolls everything back in all-or-nothing mode.
fn model_batch(
    model: &BTreeMap<i64, String>,
    ops: &[BatchOp],
    all: bool,
) -> (BTreeMap<i64, String>, usize) {
    let mut next = model.clone();
    let mut failed = 0;
    for op in ops {
        match op {
            BatchOp::Upsert(k, v) => {
                next.insert(*k, v.clone());
            }
            BatchOp::Insert(k, v) => {
                if next.contains_key(k) {
                    failed += 1;
                } else {
                    next.insert(*k, v.clone());
                }
            }
            BatchOp::Delete(k) => {
                next.remove(k);
            }
        }
    }
    if all && failed > 0 {
        (model.clone(), failed)
    } else {
        (next, failed)
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.db");
    let (mut db, mut repo) = open(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model: BTreeMap<i64, String> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let err = |what: &dyn std::fmt::Display| fail(step, op, what);
        match op {
            Op::Put(k, v) => {
                let id = repo
                    .upsert(&Item {
                        id: *k,
                        value: v.clone(),
                    })
                    .map_err(|e| err(&e))?;
                prop_assert_eq!(id, *k);
                model.insert(*k, v.clone());
            }
            Op::Insert(k, v) => {
                let result = repo.insert(&Item {
                    id: *k,
                    value: v.clone(),
                });
                match (model.contains_key(k), result) {
                    (false, Ok(id)) => {
                        prop_assert_eq!(id, *k);
                        model.insert(*k, v.clone());
                    }
                    (true, Err(Error::Constraint { table, .. })) => {
                        prop_assert_eq!(table.as_deref(), Some("items"));
                    }
                    (exists, other) => {
                        return Err(err(&format!("key exists: {exists}, got {other:?}")))
                    }
                }
            }
            Op::Update(k, v) => {
                let result = repo.update(&Item {
                    id: *k,
                    value: v.clone(),
                });
                match (model.contains_key(k), result) {
                    (true, Ok(())) => {
                        model.insert(*k, v.clone());
                    }
                    (false, Err(Error::NotFound { .. })) => {}
                    (exists, other) => {
                        return Err(err(&format!("key exists: {exists}, got {other:?}")))
                    }
                }
            }
            Op::RawPut(k, v) => {
                db.write(|c| {
                    c.execute(
                        "INSERT INTO items (id, value) VALUES (?1, ?2) \
                         ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                        (k, v),
                    )?;
                    Ok(())
                })
                .map_err(|e| err(&e))?;
                model.insert(*k, v.clone());
            }
            Op::RawDelete(k) => {
                let n = db
                    .write(|c| Ok(c.execute("DELETE FROM items WHERE id = ?1", [k])?))
                    .map_err(|e| err(&e))?;
                prop_assert_eq!(n == 1, model.remove(k).is_some(), "step {}", step);
            }
            Op::FailedPut(k, v) => {
                let result = db.write(|c| {
                    c.execute(
                        "INSERT INTO items (id, value) VALUES (?1, ?2) \
                         ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                        (k, v),
                    )?;
                    Err::<(), _>(Error::closure("fails after writing"))
                });
                prop_assert!(
                    matches!(result, Err(Error::Closure(_))),
                    "step {}: {:?}",
                    step,
                    result
                );
            }
            Op::Delete(k) => {
                let deleted = repo.delete(*k).map_err(|e| err(&e))?;
                prop_assert_eq!(deleted, model.remove(k).is_some(), "step {}", step);
            }
            Op::Batch {
                ops: batch_ops,
                all_or_nothing,
            } => {
                let mut batch = Batch::new()
                    .all_or_nothing(*all_or_nothing)
                    .max_batch(4)
                    .max_failure_rate(1.0);
                for b in batch_ops {
                    match b {
                        BatchOp::Upsert(k, v) => {
                            batch.upsert("items", &["id", "value"], (k, v), &["id"])
                        }
                        BatchOp::Insert(k, v) => batch.insert("items", &["id", "value"], (k, v)),
                        BatchOp::Delete(k) => batch.delete("items", "id", k),
                    };
                }
                let report = db.apply(&batch).map_err(|e| err(&e))?;
                let (next, failed) = model_batch(&model, batch_ops, *all_or_nothing);
                prop_assert_eq!(report.failed.len(), failed, "step {}: {:?}", step, report);
                model = next;
            }
            Op::Get(k) => {
                let got = repo.get(*k).map_err(|e| err(&e))?;
                prop_assert_eq!(
                    got.as_deref().map(|i| i.value.as_str()),
                    model.get(k).map(String::as_str),
                    "step {}: get({})",
                    step,
                    k
                );
            }
            Op::GetMany(keys) => {
                let got = repo.get_many(keys).map_err(|e| err(&e))?;
                let got: Vec<Option<&str>> = got
                    .iter()
                    .map(|i| i.as_deref().map(|i| i.value.as_str()))
                    .collect();
                let want: Vec<Option<&str>> = keys
                    .iter()
                    .map(|k| model.get(k).map(String::as_str))
                    .collect();
                prop_assert_eq!(got, want, "step {}: get_many({:?})", step, keys);
            }
            Op::Invalidate(k) => {
                repo.cache().invalidate(k);
            }
            Op::InvalidateAll => {
                repo.cache().invalidate_all();
            }
            Op::Reopen => {
                drop(repo);
                drop(db);
                (db, repo) = open(&path).map_err(|e| err(&e))?;
            }
        }
    }
    // The whole table, straight from a reader, and every key through the cache.
    let table: BTreeMap<i64, String> = db
        .read(|c| {
            let mut stmt = c.prepare("SELECT id, value FROM items")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&table, &model, "final table");
    for k in 1..=12 {
        let got = repo
            .get(k)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            got.as_deref().map(|i| i.value.as_str()),
            model.get(&k).map(String::as_str),
            "final get({})",
            k
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

static OPS: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static REOPENS: AtomicU64 = AtomicU64::new(0);

#[test]
fn repository_cache_and_file_agree_with_a_btreemap() {
    let config = ProptestConfig {
        cases: cases(),
        // The minimal failing sequence is in the panic message; no regression files are
        // written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(op(), 1..40);
    let outcome = runner.run(&strategy, |ops| {
        OPS.fetch_add(ops.len() as u64, Ordering::Relaxed);
        for op in &ops {
            match op {
                Op::Get(_) => READS.fetch_add(1, Ordering::Relaxed),
                Op::GetMany(keys) => READS.fetch_add(keys.len() as u64, Ordering::Relaxed),
                Op::Reopen => REOPENS.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        run(&ops)
    });
    if let Err(e) = outcome {
        panic!("the model and strata diverged: {e}");
    }
    println!(
        "model: {} cases, {} operations of put, insert, update, raw \
         put/delete, failing write, delete, batch, get, get_many, invalidate, invalidate_all, \
         reopen; {} cached reads checked, {} reopens; 0 divergences",
        cases(),
        OPS.load(Ordering::Relaxed),
        READS.load(Ordering::Relaxed),
        REOPENS.load(Ordering::Relaxed),
    );
}
