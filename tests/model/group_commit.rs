//! The group-commit writer against a model: rounds of threads started together, each running
//! its own random sequence of writes that succeed, fail, panic, call `write` inside a write
//! closure (`NestedWrite`), run transaction control (`TransactionControl`, whether the closure
//! returns SQLite's refusal or swallows it) or make their group's COMMIT fail (a deferred
//! foreign key), while another thread subscribes and unsubscribes. Threads own disjoint keys,
//! so each one's model is sequential whatever the grouping: after each call that returned Ok,
//! a read must see it (read-your-writes), and after each round the table, the ChangeSets and
//! the model must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use strata::rusqlite::Connection;
use strata::{Db, Error};

const PANIC_MESSAGE: &str = "write closure panics after writing";

/// Keys per thread: thread `t` owns `t * KEYS + 1 ..= t * KEYS + KEYS`.
const KEYS: i64 = 6;

#[derive(Debug, Clone)]
enum Call {
    Put(i64, u16),
    Delete(i64),
    /// Upserts, then returns an error of its own.
    Fail(i64, u16),
    /// Upserts, then panics.
    Panic(i64, u16),
    /// Upserts, then calls `db.write` from inside the closure and returns whether that was
    /// refused with `NestedWrite`.
    Nested(i64, u16),
    /// Upserts, then runs a statement that would end strata's transaction; `swallow` drops
    /// SQLite's refusal and returns Ok.
    Control(i64, u16, &'static str, bool),
    /// Inserts a child row whose parent does not exist, under a deferred foreign key: the
    /// group's COMMIT fails, and with it every call of the group.
    BreakGroup,
}

fn call() -> impl Strategy<Value = Call> {
    let key = 1..=KEYS;
    let value = any::<u16>();
    let statement = prop::sample::select(vec![
        "COMMIT",
        "ROLLBACK",
        "BEGIN",
        "END",
        "RELEASE strata_write",
        "ROLLBACK TO strata_write",
    ]);
    prop_oneof![
        6 => (key.clone(), value).prop_map(|(k, v)| Call::Put(k, v)),
        2 => key.clone().prop_map(Call::Delete),
        2 => (key.clone(), value).prop_map(|(k, v)| Call::Fail(k, v)),
        1 => (key.clone(), value).prop_map(|(k, v)| Call::Panic(k, v)),
        1 => (key.clone(), value).prop_map(|(k, v)| Call::Nested(k, v)),
        2 => (key, value, statement, any::<bool>())
            .prop_map(|(k, v, s, swallow)| Call::Control(k, v, s, swallow)),
        1 => Just(Call::BreakGroup),
    ]
}

/// A round: per thread, its calls, each with a pause (µs) before it to vary the grouping.
fn round() -> impl Strategy<Value = Vec<Vec<(Call, u8)>>> {
    prop::collection::vec(prop::collection::vec((call(), 0..40u8), 1..8), 1..6)
}

fn upsert(c: &Connection, key: i64, value: u16) -> strata::Result<()> {
    c.execute(
        "INSERT INTO kv(k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        (key, value),
    )?;
    Ok(())
}

fn read(db: &Db, key: i64) -> strata::Result<Option<u16>> {
    db.read(|c| {
        let mut stmt = c.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        let mut rows = stmt.query([key])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    })
}

/// What one thread saw: its model after the round, the keys of its calls that returned Ok.
struct Seen {
    model: BTreeMap<i64, u16>,
    committed: BTreeSet<i64>,
}

/// Runs one thread's calls against its part of the model; `may_fail_group`: a call of this
/// round breaks its group, so any call may get `GroupFailed` (and then changes nothing).
fn run_thread(
    db: &Db,
    base: i64,
    calls: &[(Call, u8)],
    mut model: BTreeMap<i64, u16>,
    may_fail_group: bool,
) -> Result<Seen, String> {
    let mut committed = BTreeSet::new();
    for (step, (call, pause)) in calls.iter().enumerate() {
        thread::sleep(Duration::from_micros(u64::from(*pause)));
        let here = |what: String| format!("thread {base} step {step} {call:?}: {what}");
        // The key written and the value it holds if the call commits.
        let (key, after, result) = match call {
            Call::Put(k, v) => (base + k, Some(*v), db.write(|c| upsert(c, base + k, *v))),
            Call::Delete(k) => (
                base + k,
                None,
                db.write(|c| {
                    c.execute("DELETE FROM kv WHERE k = ?1", [base + k])?;
                    Ok(())
                }),
            ),
            Call::Fail(k, v) => {
                let r = db.write(|c| {
                    upsert(c, base + k, *v)?;
                    Err::<(), _>(Error::closure("refused after writing"))
                });
                if !matches!(r, Err(Error::Closure(_))) {
                    return Err(here(format!("{r:?}")));
                }
                continue;
            }
            Call::Panic(k, v) => {
                let r = db.write(|c| -> strata::Result<()> {
                    upsert(c, base + k, *v)?;
                    panic!("{}", PANIC_MESSAGE);
                });
                if !matches!(r, Err(Error::Panic { .. })) {
                    return Err(here(format!("{r:?}")));
                }
                continue;
            }
            Call::Nested(k, v) => {
                let r = db.write(|c| {
                    upsert(c, base + k, *v)?;
                    Ok(matches!(db.write(|_| Ok(())), Err(Error::NestedWrite)))
                });
                match r {
                    Ok(false) => return Err(here("nested write not refused".into())),
                    Ok(true) => (base + k, Some(*v), Ok(())),
                    Err(err) => (base + k, Some(*v), Err(err)),
                }
            }
            Call::Control(k, v, statement, swallow) => {
                let r = db.write(|c| {
                    upsert(c, base + k, *v)?;
                    let refused = c.execute_batch(statement);
                    if !swallow {
                        refused?;
                    }
                    Ok(())
                });
                if !matches!(r, Err(Error::TransactionControl { .. })) {
                    return Err(here(format!("{r:?}")));
                }
                continue;
            }
            Call::BreakGroup => {
                let r = db.write(|c| {
                    c.execute("INSERT INTO child(parent) VALUES (-1)", [])?;
                    Ok(())
                });
                if !r.as_ref().is_err_and(Error::is_foreign_key_violation) {
                    return Err(here(format!("{r:?}")));
                }
                continue;
            }
        };
        match result {
            Ok(()) => {
                // A delete of an absent key changes no row and publishes nothing.
                let changed = match after {
                    Some(v) => {
                        model.insert(key, v);
                        true
                    }
                    None => model.remove(&key).is_some(),
                };
                if changed {
                    committed.insert(key);
                }
                // Read-your-writes after each commit.
                let got = read(db, key).map_err(|e| here(e.to_string()))?;
                if got != model.get(&key).copied() {
                    return Err(here(format!("read {got:?}, model {:?}", model.get(&key))));
                }
            }
            Err(Error::GroupFailed { source })
                if may_fail_group
                    && matches!(&*source, Error::Constraint { .. })
                    && source.is_foreign_key_violation() => {}
            Err(err) => return Err(here(format!("{err:?}"))),
        }
    }
    Ok(Seen { model, committed })
}

fn run(rounds: &[Vec<Vec<(Call, u8)>>]) -> Result<(), TestCaseError> {
    let fail = |what: String| TestCaseError::fail(what);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::builder()
        .path(dir.path().join("group.db"))
        .readers(2)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER
                 REFERENCES kv(k) DEFERRABLE INITIALLY DEFERRED);",
        )?)
    })
    .map_err(|e| fail(e.to_string()))?;
    let mut model: BTreeMap<i64, u16> = BTreeMap::new();
    for (r, threads) in rounds.iter().enumerate() {
        let may_fail_group = threads
            .iter()
            .flatten()
            .any(|(c, _)| matches!(c, Call::BreakGroup));
        let watcher = db.subscribe();
        let barrier = Barrier::new(threads.len() + 1);
        let done = AtomicBool::new(false);
        let (seen, churned) = thread::scope(|s| {
            let handles: Vec<_> = threads
                .iter()
                .enumerate()
                .map(|(t, calls)| {
                    let base = t as i64 * KEYS;
                    let mine: BTreeMap<i64, u16> = model
                        .range(base + 1..=base + KEYS)
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    let (db, barrier) = (&db, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        run_thread(db, base, calls, mine, may_fail_group)
                    })
                })
                .collect();
            // Subscribes and drops subscriptions while the writes run.
            let churn = s.spawn(|| {
                barrier.wait();
                let mut rowids = BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    let sub = db.subscribe();
                    thread::yield_now();
                    while let Ok(set) = sub.try_recv() {
                        rowids.extend(set.changes.iter().map(|c| c.rowid));
                    }
                }
                rowids
            });
            let seen: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("a model thread panicked"))
                .collect();
            done.store(true, Ordering::Relaxed);
            (seen, churn.join().expect("the subscriber panicked"))
        });
        let mut committed = BTreeSet::new();
        for (t, result) in seen.into_iter().enumerate() {
            let seen = result.map_err(|e| fail(format!("round {r}: {e}")))?;
            committed.extend(seen.committed);
            let base = t as i64 * KEYS;
            model.retain(|k, _| !(base + 1..=base + KEYS).contains(k));
            model.extend(seen.model);
        }
        let table: BTreeMap<i64, u16> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT k, v FROM kv")?;
                let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
            })
            .map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(&table, &model, "round {}", r);
        let changed: BTreeSet<i64> = watcher
            .try_iter()
            .flat_map(|set| {
                set.changes
                    .iter()
                    .filter(|c| &*c.table == "kv")
                    .map(|c| c.rowid)
                    .collect::<Vec<_>>()
            })
            .collect();
        prop_assert!(
            changed.is_subset(&committed) && churned.iter().all(|k| committed.contains(k)),
            "round {}: ChangeSets name writes that did not commit: {:?} / {:?} vs {:?}",
            r,
            changed,
            churned,
            committed
        );
        prop_assert_eq!(
            &changed,
            &committed,
            "round {}: a commit without its ChangeSet",
            r
        );
        let orphans: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM child", [], |row| row.get(0))?))
            .map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(orphans, 0, "round {}", r);
    }
    Ok(())
}

#[test]
fn group_commit_agrees_with_a_btreemap_under_concurrent_calls() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // The closures that panic on purpose would print a backtrace each.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message != Some(PANIC_MESSAGE) {
            previous(info);
        }
    }));
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&prop::collection::vec(round(), 1..5), |rounds| run(&rounds));
    if let Err(e) = outcome {
        panic!("the group-commit writer and the model diverged: {e}");
    }
}
