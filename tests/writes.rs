//! Group commit and change capture on a real WAL database file.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use strata::events::ChangeKind;
use strata::rusqlite::types::Value;
use strata::{Db, Error, Result};

fn open(dir: &tempfile::TempDir) -> Result<Db> {
    let db = Db::builder().path(dir.path().join("w.db")).build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, n INT)")?))?;
    Ok(db)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn count(db: &Db, sql: &str) -> Result<i64> {
    db.read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
}

/// The `who` column of every row, in order.
fn names(db: &Db) -> Result<Vec<String>> {
    db.read(|c| {
        let mut stmt = c.prepare("SELECT who FROM t ORDER BY who")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

#[test]
fn concurrent_writers_lose_nothing_and_group() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    const THREADS: i64 = 16;
    const PER_THREAD: i64 = 1000;
    let acknowledged: Vec<Vec<i64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let db = db.clone();
                s.spawn(move || -> Result<Vec<i64>> {
                    let mut ids = Vec::new();
                    for i in 0..PER_THREAD {
                        let id = t * PER_THREAD + i + 1;
                        db.write(|c| {
                            c.prepare_cached("INSERT INTO t (id, who, n) VALUES (?1, ?2, ?3)")?
                                .execute((id, format!("thread-{t}"), i))?;
                            Ok(())
                        })?;
                        ids.push(id);
                    }
                    Ok(ids)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect::<Result<_>>()
    })?;
    let acked: usize = acknowledged.iter().map(Vec::len).sum();
    assert_eq!(acked as i64, THREADS * PER_THREAD);
    assert_eq!(count(&db, "SELECT count(*) FROM t")?, THREADS * PER_THREAD);
    let missing = db.read(|c| {
        let mut stmt = c.prepare_cached("SELECT count(*) FROM t WHERE id = ?1")?;
        let mut missing = 0;
        for id in acknowledged.iter().flatten() {
            missing += stmt.query_row([id], |r| r.get::<_, i64>(0))? ^ 1;
        }
        Ok(missing)
    })?;
    assert_eq!(missing, 0, "every acknowledged write is present");
    let stats = db.write_stats();
    println!(
        "{} writes in {} commits (mean group {:.2}, max {})",
        stats.writes,
        stats.commits,
        stats.mean_group(),
        stats.max_group
    );
    assert_eq!(stats.writes as i64, THREADS * PER_THREAD + 1);
    assert!(stats.max_group > 1, "16 contending writers never grouped");
    assert!(stats.commits < stats.writes);
    Ok(())
}

/// Holds the writer with one closure until `n` other writes have queued behind it, so that they
/// run as one group.
fn in_one_group<R: Send>(db: &Db, queued: impl FnOnce(&Db) -> R + Send) -> Result<R> {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let holder = s.spawn(|| {
            db.write(move |_| {
                started_tx.send(()).expect("test alive");
                release_rx.recv().expect("test alive");
                Ok(())
            })
        });
        started_rx.recv().expect("holder started");
        let releaser = s.spawn(move || {
            // Time for the queued writers to reach the queue; this wait only shapes the groups,
            // the assertions do not depend on timing.
            thread::sleep(Duration::from_millis(300));
            release_tx.send(()).expect("holder alive");
        });
        let out = queued(db);
        releaser.join().expect("releaser");
        holder.join().expect("holder")?;
        Ok(out)
    })
}

#[test]
fn failing_and_panicking_closures_roll_back_alone() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    let changes = db.subscribe();
    let results = in_one_group(&db, |db| {
        thread::scope(|s| {
            let insert = |who: &'static str, outcome: u8| {
                let db = db.clone();
                s.spawn(move || {
                    db.write(move |c| {
                        c.execute("INSERT INTO t (who) VALUES (?1)", [who])?;
                        match outcome {
                            0 => Ok(who),
                            1 => Err(Error::closure(format!("{who} refused"))),
                            _ => panic!("{who} panicked"),
                        }
                    })
                })
            };
            let handles = vec![
                insert("good-1", 0),
                insert("fails", 1),
                insert("panics", 2),
                insert("good-2", 0),
            ];
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic escapes write"))
                .collect::<Vec<_>>()
        })
    })?;
    assert!(matches!(results[0], Ok("good-1")));
    assert!(matches!(&results[1], Err(Error::Closure(e)) if e.to_string() == "fails refused"));
    assert!(matches!(&results[2], Err(Error::Panic { message }) if message == "panics panicked"));
    assert!(matches!(results[3], Ok("good-2")));
    assert_eq!(names(&db)?, ["good-1", "good-2"]);
    assert!(
        db.write_stats().max_group >= 4,
        "the four writes were one group"
    );

    // The holder's transaction changed nothing; the group's ChangeSet has just the good rows.
    let set = changes
        .recv_timeout(Duration::from_secs(5))
        .expect("a ChangeSet");
    assert_eq!(set.changes.len(), 2);
    assert!(set.changes.iter().all(|c| c.kind == ChangeKind::Insert));
    assert!(changes.try_recv().is_err(), "nothing for rolled-back work");
    Ok(())
}

/// Runs a holder write that inserts `holder` and ends with `outcome` once three other writes
/// have queued behind it; the holder's result and the three others'.
fn holder_then_three_queued(db: &Db, outcome: fn() -> Result<()>) -> (Result<()>, Vec<Result<()>>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let holder = s.spawn(|| {
            db.write(move |c| {
                c.execute("INSERT INTO t (who) VALUES ('holder')", [])?;
                started_tx.send(()).expect("test alive");
                release_rx.recv().expect("test alive");
                outcome()
            })
        });
        started_rx.recv().expect("holder started");
        let queued: Vec<_> = ["q-1", "q-2", "q-3"]
            .into_iter()
            .map(|who| {
                let db = db.clone();
                s.spawn(move || {
                    db.write(move |c| {
                        Ok(c.execute("INSERT INTO t (who) VALUES (?1)", [who])
                            .map(drop)?)
                    })
                })
            })
            .collect();
        // Time for the three to reach the queue; it only shapes the group.
        thread::sleep(Duration::from_millis(300));
        release_tx.send(()).expect("holder alive");
        let holder = holder.join().expect("no panic escapes write");
        let queued = queued
            .into_iter()
            .map(|h| h.join().expect("no panic escapes write"))
            .collect();
        (holder, queued)
    })
}

#[test]
fn calls_queued_while_a_transaction_runs_join_it() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    let before = db.write_stats();
    let (holder, queued) = holder_then_three_queued(&db, || Ok(()));
    holder?;
    for result in queued {
        result?;
    }
    let after = db.write_stats();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one transaction for all four"
    );
    assert_eq!(after.max_group, 4);
    assert_eq!(names(&db)?, ["holder", "q-1", "q-2", "q-3"]);
    Ok(())
}

#[test]
fn a_failing_first_call_rolls_back_alone_and_the_queued_calls_commit() -> Result<()> {
    // The first call of a transaction runs without a savepoint: its failure must roll back the
    // transaction before any queued call runs in it.
    let dir = tempdir();
    let db = open(&dir)?;
    let changes = db.subscribe();
    let (holder, queued) = holder_then_three_queued(&db, || Err(Error::closure("holder refused")));
    assert!(matches!(&holder, Err(Error::Closure(e)) if e.to_string() == "holder refused"));
    for result in queued {
        result?;
    }
    assert_eq!(names(&db)?, ["q-1", "q-2", "q-3"]);
    let set = changes
        .recv_timeout(Duration::from_secs(5))
        .expect("a ChangeSet");
    assert_eq!(set.changes.len(), 3, "nothing of the holder: {set:?}");
    assert!(changes.try_recv().is_err(), "one transaction for the three");

    // A panicking first call as well.
    let (holder, queued) = holder_then_three_queued(&db, || panic!("holder panicked"));
    assert!(matches!(&holder, Err(Error::Panic { message }) if message == "holder panicked"));
    for result in queued {
        result?;
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM t WHERE who = 'holder'")?,
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM t")?, 6);
    Ok(())
}

#[test]
fn a_changeset_per_committed_transaction() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    db.watch("t", &["who"])?;
    let changes = db.subscribe();
    db.write(|c| {
        c.execute("INSERT INTO t (id, who) VALUES (1, 'a'), (2, 'b')", [])?;
        Ok(())
    })?;
    db.write(|c| {
        c.execute("UPDATE t SET who = 'c' WHERE id = 1", [])?;
        c.execute("DELETE FROM t WHERE id = 2", [])?;
        Ok(())
    })?;
    let _ = db.write(|c| -> Result<()> {
        c.execute("INSERT INTO t (id, who) VALUES (3, 'x')", [])?;
        Err(Error::closure("rolled back"))
    });
    db.write(|_| Ok(()))?; // commits nothing: no ChangeSet

    let first = changes.try_recv().expect("first ChangeSet");
    let second = changes.try_recv().expect("second ChangeSet");
    assert!(
        changes.try_recv().is_err(),
        "rolled back and empty transactions publish nothing"
    );
    assert_eq!(second.seq, first.seq + 1);
    assert_eq!(
        first
            .changes
            .iter()
            .map(|c| (c.kind, c.rowid))
            .collect::<Vec<_>>(),
        [(ChangeKind::Insert, 1), (ChangeKind::Insert, 2)]
    );
    let update = &second.changes[0];
    assert_eq!((update.kind, update.rowid), (ChangeKind::Update, 1));
    assert_eq!(
        update.old.as_ref().and_then(|v| v.get("who")),
        Some(&Value::Text("a".into()))
    );
    assert_eq!(
        update.new.as_ref().and_then(|v| v.get("who")),
        Some(&Value::Text("c".into()))
    );
    let delete = &second.changes[1];
    assert_eq!((delete.kind, delete.rowid), (ChangeKind::Delete, 2));
    assert_eq!(delete.value("who"), Some(&Value::Text("b".into())));
    Ok(())
}

#[test]
fn constraint_violation_fails_only_its_write() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    db.write(|c| Ok(c.execute_batch("CREATE UNIQUE INDEX t_who ON t (who)")?))?;
    db.write(|c| {
        Ok(c.execute("INSERT INTO t (who) VALUES ('dup')", [])
            .map(drop)?)
    })?;
    let err = db
        .write(|c| {
            Ok(c.execute("INSERT INTO t (who) VALUES ('dup')", [])
                .map(drop)?)
        })
        .unwrap_err();
    assert!(err.is_constraint(), "{err:?}");
    assert!(matches!(&err, Error::Constraint { table: Some(t), .. } if t == "t"));
    db.write(|c| {
        Ok(c.execute("INSERT INTO t (who) VALUES ('next')", [])
            .map(drop)?)
    })?;
    assert_eq!(count(&db, "SELECT count(*) FROM t")?, 2);
    Ok(())
}

#[test]
fn writers_barrier_started_together_all_commit() -> Result<()> {
    // Many writers released at once by a barrier: a different interleaving from the queued test.
    let dir = tempdir();
    let db = open(&dir)?;
    let barrier = Arc::new(Barrier::new(8));
    thread::scope(|s| {
        for t in 0..8 {
            let (db, barrier) = (db.clone(), Arc::clone(&barrier));
            s.spawn(move || {
                barrier.wait();
                for _ in 0..50 {
                    db.write(|c| Ok(c.execute("INSERT INTO t (n) VALUES (?1)", [t]).map(drop)?))
                        .expect("write");
                }
            });
        }
    });
    assert_eq!(count(&db, "SELECT count(*) FROM t")?, 400);
    Ok(())
}

#[test]
fn a_write_inside_a_write_is_refused_not_deadlocked() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    let inner = db.write(|c| {
        c.execute("INSERT INTO t (who) VALUES ('outer')", [])?;
        Ok(db.write(|c| {
            Ok(c.execute("INSERT INTO t (who) VALUES ('inner')", [])
                .map(drop)?)
        }))
    })?;
    assert!(matches!(inner, Err(Error::NestedWrite)), "{inner:?}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM t")?,
        1,
        "the outer write committed alone"
    );
    // The writer is usable afterwards.
    db.write(|c| {
        Ok(c.execute("INSERT INTO t (who) VALUES ('after')", [])
            .map(drop)?)
    })?;
    Ok(())
}
