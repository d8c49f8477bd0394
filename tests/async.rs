//! AsyncDb: reads, writes, cache hits, cancellation at every stage, backpressure, shutdown, and
//! faults (panics, errors, pool timeouts, closed handles), on real WAL files.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use strata::asynch::AsyncRepository;
use strata::rusqlite::{types::ToSql, ErrorCode, Row};
use strata::{AsyncDb, Db, Entity, Error, Result};

#[derive(Debug, Clone, PartialEq)]
struct Item {
    id: i64,
    v: i64,
}

impl Entity for Item {
    const TABLE: &'static str = "items";
    const COLUMNS: &'static [&'static str] = &["v"];
    fn key(&self) -> Option<i64> {
        Some(self.id)
    }
    fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(Item {
            id: row.get(0)?,
            v: row.get(1)?,
        })
    }
    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.v]
    }
}

const ITEMS: i64 = 64;

/// A WAL file with `items` (ITEMS rows, v = 0) and an `acks` log; `readers` readers.
fn open(dir: &tempfile::TempDir, readers: usize) -> Result<Db> {
    let db = Db::builder()
        .path(dir.path().join("async.db"))
        .readers(readers)
        .build()?;
    db.write(|c| {
        c.execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE acks (seq INTEGER PRIMARY KEY);",
        )?;
        for id in 1..=ITEMS {
            c.execute("INSERT INTO items (id, v) VALUES (?1, 0)", [id])?;
        }
        Ok(())
    })?;
    Ok(db)
}

/// Polls `fut` once (so that it queues its call) and hands it back, still pending.
async fn queued<F: Future + Unpin>(mut fut: F) -> F {
    std::future::poll_fn(|cx| {
        assert!(Pin::new(&mut fut).poll(cx).is_pending(), "expected to wait");
        Poll::Ready(())
    })
    .await;
    fut
}

/// A closure's way to hold its thread until the test lets go.
fn gate() -> (mpsc::Sender<()>, Arc<Mutex<mpsc::Receiver<()>>>) {
    let (tx, rx) = mpsc::channel();
    (tx, Arc::new(Mutex::new(rx)))
}

fn count(c: &strata::rusqlite::Connection, sql: &str) -> Result<i64> {
    Ok(c.query_row(sql, [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_write_round_trip() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::from(open(&dir, 2)?);
    let id = adb
        .write(|c| {
            c.execute("INSERT INTO acks (seq) VALUES (7)", [])?;
            Ok(c.last_insert_rowid())
        })
        .await?;
    assert_eq!(id, 7);
    let n = adb.read(|c| count(c, "SELECT count(*) FROM acks")).await?;
    assert_eq!(n, 1);
    // The same Db, for sync code.
    assert_eq!(adb.db().read(|c| count(c, "SELECT count(*) FROM acks"))?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closures_leave_connections_and_caches_as_before() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::builder().reader_threads(1).build(open(&dir, 1)?)?;
    let items: AsyncRepository<Item> = adb.repository().await?;
    assert_eq!(items.get(1).await?.unwrap().v, 0); // cached now

    let err = adb.read(|_| -> Result<()> { panic!("read boom") }).await;
    assert!(matches!(err, Err(Error::Panic { ref message }) if message == "read boom"));
    let err = adb
        .read(|c| {
            c.execute_batch("SELECT 1")?;
            Err::<(), _>(Error::closure("no"))
        })
        .await;
    assert!(matches!(err, Err(Error::Closure(_))));
    // The only reader is out of any transaction again.
    assert!(adb.read(|c| Ok(!c.is_autocommit())).await?);

    let err = adb
        .write(|c| -> Result<()> {
            c.execute("UPDATE items SET v = 99 WHERE id = 1", [])?;
            panic!("write boom")
        })
        .await;
    assert!(matches!(err, Err(Error::Panic { .. })));
    let err = adb
        .write(|c| {
            c.execute("UPDATE items SET v = 98 WHERE id = 1", [])?;
            Err::<(), _>(Error::closure("no"))
        })
        .await;
    assert!(matches!(err, Err(Error::Closure(_))));
    let err = adb.write(|c| Ok(c.execute_batch("COMMIT")?)).await;
    assert!(
        matches!(err, Err(Error::TransactionControl { .. })),
        "{err:?}"
    );
    // Nothing of them committed, and the cache still holds the committed value.
    assert_eq!(items.get(1).await?.unwrap().v, 0);
    assert_eq!(
        adb.read(|c| count(c, "SELECT v FROM items WHERE id = 1"))
            .await?,
        0
    );
    // The next write works, and its change reaches the cache.
    adb.write(|c| Ok(c.execute("UPDATE items SET v = 5 WHERE id = 1", [])?))
        .await?;
    assert_eq!(items.get(1).await?.unwrap().v, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_write_in_a_batch_fails_alone() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 1)?);
    let (release, hold) = gate();
    // Holds the writer thread so that the next three queue up and run as one batch.
    let holder = adb.write(move |_| {
        let _ = hold.lock().recv();
        Ok(())
    });
    let holder = queued(Box::pin(holder)).await;
    let a =
        queued(Box::pin(adb.write(|c| {
            Ok(c.execute("INSERT INTO acks (seq) VALUES (1)", [])?)
        })))
        .await;
    let b = queued(Box::pin(adb.write(|c| {
        c.execute("INSERT INTO acks (seq) VALUES (2)", [])?;
        Err::<usize, _>(Error::closure("b fails"))
    })))
    .await;
    let c3 =
        queued(Box::pin(adb.write(|c| {
            Ok(c.execute("INSERT INTO acks (seq) VALUES (3)", [])?)
        })))
        .await;
    release.send(()).unwrap();
    holder.await?;
    assert_eq!(a.await?, 1);
    assert!(matches!(b.await, Err(Error::Closure(_))));
    assert_eq!(c3.await?, 1);
    let seqs = adb
        .read(|c| {
            let mut stmt = c.prepare("SELECT seq FROM acks ORDER BY seq")?;
            let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
            Ok(rows.collect::<strata::rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    assert_eq!(seqs, vec![1, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_dropped_before_it_starts_is_skipped() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::builder().reader_threads(1).build(open(&dir, 1)?)?;
    let (release, hold) = gate();
    let holder = queued(Box::pin(adb.read(move |_| {
        let _ = hold.lock().recv();
        Ok(())
    })))
    .await;
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let skipped = queued(Box::pin(adb.read(move |_| {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    })))
    .await;
    drop(skipped);
    release.send(()).unwrap();
    holder.await?;
    // A read queued after the dropped one has run once this returns: the queue is FIFO.
    adb.read(|_| Ok(())).await?;
    assert!(!ran.load(Ordering::SeqCst));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_before_it_joins_a_group_is_skipped() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 1)?);
    let (release, hold) = gate();
    let started = Arc::new(AtomicBool::new(false));
    let running = Arc::clone(&started);
    let holder = queued(Box::pin(adb.write(move |_| {
        running.store(true, Ordering::SeqCst);
        let _ = hold.lock().recv();
        Ok(())
    })))
    .await;
    // The writer thread takes every write queued when it wakes as one group: wait until it
    // runs the holder, so the next write is queued behind that group, not in it.
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let skipped =
        queued(Box::pin(adb.write(|c| {
            Ok(c.execute("INSERT INTO acks (seq) VALUES (1)", [])?)
        })))
        .await;
    drop(skipped);
    release.send(()).unwrap();
    holder.await?;
    adb.write(|_| Ok(())).await?;
    let n = adb.read(|c| count(c, "SELECT count(*) FROM acks")).await?;
    assert_eq!(n, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_after_it_joined_a_group_runs_to_its_end() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 1)?);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, hold) = gate();
    let writer = adb.clone();
    let task = tokio::spawn(async move {
        writer
            .write(move |c| {
                c.execute("INSERT INTO acks (seq) VALUES (1)", [])?;
                let _ = started_tx.send(());
                let _ = hold.lock().recv();
                Ok(c.execute("INSERT INTO acks (seq) VALUES (2)", [])?)
            })
            .await
    });
    started.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    release.send(()).unwrap();
    // Both statements committed: never half a write.
    adb.write(|_| Ok(())).await?;
    let n = adb.read(|c| count(c, "SELECT count(*) FROM acks")).await?;
    assert_eq!(n, 2);
    Ok(())
}

/// Aborts a read whose closure waits `pause` after it started, then runs a query that takes
/// minutes unless interrupted; checks it was interrupted and its reader came back clean.
async fn cancel_a_long_read(pause: Duration) -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::builder().reader_threads(1).build(open(&dir, 1)?)?;
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let seen = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&seen);
    let reader = adb.clone();
    let task = tokio::spawn(async move {
        reader
            .read(move |c| {
                let _ = started_tx.send(());
                std::thread::sleep(pause);
                let out = c.query_row(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                     WHERE x < 5000000000) SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                );
                *slot.lock() = Some(out.map_err(|e| e.sqlite_error_code()));
                Ok(())
            })
            .await
    });
    started.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The one reader thread and the one reader serve the next read, outside any transaction
    // before it.
    let clean = adb.read(|c| Ok(!c.is_autocommit())).await?;
    assert!(clean);
    assert_eq!(
        *seen.lock(),
        Some(Err(Some(ErrorCode::OperationInterrupted)))
    );
    let pool = adb.db().report().pool;
    assert_eq!(pool.idle, pool.size, "every reader is back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_read_dropped_is_interrupted_and_its_reader_comes_back_clean() -> Result<()> {
    cancel_a_long_read(Duration::ZERO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_between_two_statements_interrupts_the_next() -> Result<()> {
    // No statement runs while the cancel lands: `sqlite3_interrupt` alone would be lost, and
    // the query would run for minutes.
    cancel_a_long_read(Duration::from_millis(200)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_callers_wait_then_fail_with_queue_full() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::builder()
        .reader_threads(1)
        .read_queue(1)
        .queue_wait(Duration::from_millis(20))
        .build(open(&dir, 1)?)?;
    let (release, hold) = gate();
    let holder = queued(Box::pin(adb.read(move |_| {
        let _ = hold.lock().recv();
        Ok(1)
    })))
    .await;
    // The thread holds the first call; the second fills the queue's one place.
    let second = queued(Box::pin(adb.read(|_| Ok(2)))).await;
    let third = adb.read(|_| Ok(3)).await;
    assert!(
        matches!(third, Err(Error::QueueFull { queue: "read", .. })),
        "{third:?}"
    );
    release.send(()).unwrap();
    assert_eq!(holder.await?, 1);
    assert_eq!(second.await?, 2);
    // Room again.
    assert_eq!(adb.read(|_| Ok(4)).await?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_timeout_is_a_typed_error() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .path(dir.path().join("pool.db"))
        .readers(1)
        .busy_timeout(Duration::from_millis(10))
        .connection_timeout(Duration::from_millis(50))
        .build()?;
    let adb = AsyncDb::new(db.clone());
    let (release, hold) = gate();
    let (taken_tx, taken) = mpsc::channel();
    // A sync caller holds the pool's only reader.
    let holder = std::thread::spawn(move || {
        db.read(|_| {
            taken_tx.send(()).unwrap();
            let _ = hold.lock().recv();
            Ok(())
        })
    });
    taken.recv().unwrap();
    let err = adb.read(|_| Ok(())).await;
    assert!(matches!(err, Err(Error::PoolTimeout { .. })), "{err:?}");
    release.send(()).unwrap();
    holder.join().unwrap()?;
    adb.read(|_| Ok(())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_runs_what_was_queued_then_refuses() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 2)?);
    let queued_write =
        queued(Box::pin(adb.write(|c| {
            Ok(c.execute("INSERT INTO acks (seq) VALUES (1)", [])?)
        })))
        .await;
    assert!(adb.close(Duration::from_secs(30)).await);
    assert_eq!(queued_write.await?, 1);
    assert!(matches!(adb.read(|_| Ok(())).await, Err(Error::Closed)));
    assert!(matches!(adb.write(|_| Ok(())).await, Err(Error::Closed)));
    // The Db goes on for sync callers.
    assert_eq!(adb.db().read(|c| count(c, "SELECT count(*) FROM acks"))?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_finishes_queued_work() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async.db");
    let adb = AsyncDb::new(open(&dir, 2)?);
    let mut tasks = Vec::new();
    for seq in 1..=200 {
        let adb = adb.clone();
        tasks.push(tokio::spawn(async move {
            adb.write(move |c| Ok(c.execute("INSERT INTO acks (seq) VALUES (?1)", [seq])?))
                .await
        }));
    }
    drop(adb);
    for task in tasks {
        task.await.unwrap()?;
    }
    // Every handle is gone: the threads were joined and the Db closed; the file has all.
    let db = Db::open(&path)?;
    assert_eq!(db.read(|c| count(c, "SELECT count(*) FROM acks"))?, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_handle_dropped_on_a_strata_thread_does_not_deadlock() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 1)?);
    let (inner, caller) = (adb.clone(), adb.clone());
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, hold) = gate();
    let (dropped_tx, dropped) = mpsc::channel();
    let task = tokio::spawn(async move {
        caller
            .read(move |_| {
                let _ = started_tx.send(());
                let _ = hold.lock().recv();
                // The caller has gone: this clone is the last handle, dropped on the reader
                // thread, which must not wait for itself.
                drop(inner);
                dropped_tx.send(()).unwrap();
                Ok(())
            })
            .await
    });
    started.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(adb);
    release.send(()).unwrap();
    // A guard against a hang, not a timing: the drop returns at once or never.
    let signal = tokio::task::spawn_blocking(move || dropped.recv_timeout(Duration::from_secs(60)));
    assert!(signal.await.unwrap().is_ok(), "the drop deadlocked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_need_no_thread_and_writes_reach_them() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 2)?);
    let items: AsyncRepository<Item> = adb.repository().await?;
    // A miss is counted once (not on the task and again on the reader thread), a hit once.
    let before = items.sync().cache().stats();
    items.get(1).await?;
    items.get(1).await?;
    let after = items.sync().cache().stats();
    assert_eq!(after.misses - before.misses, 1);
    assert_eq!(after.hits - before.hits, 1);
    let all: Vec<i64> = (1..=4).collect();
    assert_eq!(items.get_many(all.clone()).await?.len(), 4);
    // Every key is cached: answered after close, with no thread left to run anything.
    assert!(adb.close(Duration::from_secs(30)).await);
    let hits = items.get_many(all).await?;
    assert!(hits.iter().all(|h| h.as_ref().map(|i| i.v) == Some(0)));
    assert_eq!(items.get(2).await?.unwrap().v, 0);
    assert!(matches!(items.get(10).await, Err(Error::Closed)));

    let adb = AsyncDb::new(adb.db().clone());
    let items: AsyncRepository<Item> = adb.repository().await?;
    items.update(Item { id: 2, v: 42 }).await?;
    assert_eq!(items.get(2).await?.unwrap().v, 42);
    adb.write(|c| Ok(c.execute("UPDATE items SET v = 43 WHERE id = 2", [])?))
        .await?;
    assert_eq!(items.get(2).await?.unwrap().v, 43);
    assert!(items.delete(2).await?);
    assert_eq!(items.get(2).await?, None);
    let big = items
        .query("SELECT id, v FROM items WHERE id > ?1", vec![60i64.into()])
        .await?;
    assert_eq!(big.len(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_committed_change_sets() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 1)?);
    let mut changes = adb.subscribe();
    adb.write(|c| Ok(c.execute("INSERT INTO acks (seq) VALUES (1)", [])?))
        .await?;
    let set = changes.next().await.expect("a set")?;
    assert!(set.touches("acks"));
    Ok(())
}

/// xorshift64*: a test's own repeatable randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cancelled_tasks_leave_no_stale_cache_no_lost_write_no_leaked_reader(
) -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::builder()
        .read_queue(256)
        .write_queue(256)
        .build(open(&dir, 4)?)?;
    let items: AsyncRepository<Item> = adb.repository().await?;
    let seq = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(Vec::<(i64, i64)>::new()));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tasks = Vec::new();
    for n in 0..20_000u64 {
        let (adb, items, seq, acked) = (adb.clone(), items.clone(), seq.clone(), acked.clone());
        let id = 1 + rng.below(ITEMS as u64) as i64;
        let kind = rng.below(4);
        // Every other task is cancelled, after 0 to ~100 µs: before its call was queued, while
        // queued, while running, or after it ended.
        let cancel_after = (n % 2 == 0).then(|| Duration::from_micros(rng.below(100)));
        tasks.push(tokio::spawn(async move {
            let work = async {
                match kind {
                    0 | 1 => {
                        let s = seq.fetch_add(1, Ordering::SeqCst) as i64 + 1;
                        adb.write(move |c| {
                            c.execute("INSERT INTO acks (seq) VALUES (?1)", [s])?;
                            c.execute("UPDATE items SET v = max(v, ?1) WHERE id = ?2", [s, id])?;
                            Ok(())
                        })
                        .await?;
                        acked.lock().push((id, s));
                    }
                    2 => {
                        items.get(id).await?;
                    }
                    _ => {
                        adb.read(move |c| {
                            // Several statements, so that some are interrupted mid-read.
                            for _ in 0..5 {
                                c.query_row("SELECT sum(v) FROM items", [], |r| {
                                    r.get::<_, i64>(0)
                                })?;
                            }
                            Ok(())
                        })
                        .await?;
                    }
                }
                Ok::<(), Error>(())
            };
            match cancel_after {
                Some(after) => {
                    let _ = tokio::time::timeout(after, work).await;
                    Ok(())
                }
                None => work.await,
            }
        }));
    }
    for task in tasks {
        task.await.unwrap()?;
    }
    // No lost acknowledged write: every acknowledged sequence number is in the log, and every
    // item's value is at least the highest acknowledged one for it.
    let acked = std::mem::take(&mut *acked.lock());
    assert!(acked.len() > 1000, "{} writes acknowledged", acked.len());
    let (logged, values) = adb
        .read(|c| {
            let mut stmt = c.prepare("SELECT seq FROM acks")?;
            let logged: std::collections::HashSet<i64> =
                stmt.query_map([], |r| r.get(0))?
                    .collect::<strata::rusqlite::Result<_>>()?;
            let mut stmt = c.prepare("SELECT id, v FROM items")?;
            let values: std::collections::HashMap<i64, i64> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<strata::rusqlite::Result<_>>()?;
            Ok((logged, values))
        })
        .await?;
    for (id, s) in &acked {
        assert!(logged.contains(s), "acknowledged write {s} lost");
        assert!(
            values[id] >= *s,
            "item {id} is {} below acknowledged {s}",
            values[id]
        );
    }
    // No stale cache entry: what the cache serves is what the database holds.
    for id in 1..=ITEMS {
        let cached = items.get(id).await?.expect("row").v;
        assert_eq!(cached, values[&id], "item {id}: stale cache entry");
    }
    // No leaked reader: all back in the pool, and as many reads at once as readers all run.
    let pool = adb.db().report().pool;
    assert_eq!(pool.idle, pool.size, "every reader is back");
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let (adb, barrier) = (adb.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                adb.read(move |_| {
                    barrier.wait();
                    Ok(())
                })
                .await
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_maintenance_have_async_counterparts() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let adb = AsyncDb::new(open(&dir, 2)?);
    let mut batch = strata::Batch::new();
    for seq in 1..=100i64 {
        batch.insert("acks", &["seq"], (seq,));
    }
    assert_eq!(adb.apply(batch).await?.applied, 100);
    assert_eq!(
        adb.read(|c| count(c, "SELECT count(*) FROM acks")).await?,
        100
    );
    adb.optimize().await?;
    assert!(adb.health().await?.ok);
    adb.advise(strata::advisor::AdviseOptions::default())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_runs_async() -> Result<()> {
    use strata::asynch::AsyncTracker;
    use strata::domain::{Expense, ExpenseTracker, User};
    let dir = tempfile::tempdir().unwrap();
    let tracker = ExpenseTracker::open(dir.path().join("tracker.db"))?;
    let tracker = AsyncTracker::new(AsyncDb::new(tracker.db().clone()), tracker);
    let user = User {
        id: 0,
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: 0,
    };
    let user_id = tracker.users.insert(user).await?;
    for n in 0..3 {
        let expense = Expense {
            id: 0,
            user_id,
            category_id: None,
            amount_cents: 100 + n,
            description: format!("coffee {n}"),
            expense_date: "2026-01-02".into(),
            created_at: n,
        };
        tracker.create_expense(expense).await?;
    }
    let page = tracker.expenses_of(user_id, 2, None).await?;
    assert_eq!(page.items.len(), 2);
    let rest = tracker.expenses_of(user_id, 2, page.next).await?;
    assert_eq!(rest.items.len(), 1);
    let between = tracker
        .expenses_between(user_id, "2026-01-01".into(), "2026-01-31".into())
        .await?;
    assert_eq!(between.len(), 3);
    let metrics = tracker.daily_metrics(user_id, "2026-01-02".into()).await?;
    assert_eq!((metrics.count, metrics.total_cents), (3, 303));
    assert!(tracker.categories_of(user_id).await?.is_empty());
    tracker.suggest_category("coffee".into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writes_in_one_group_are_no_n_plus_one() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, 1)?;
    let before = db.write_stats();
    let adb = AsyncDb::new(db);
    let (release, hold) = gate();
    let holder = queued(Box::pin(adb.write(move |_| {
        let _ = hold.lock().recv();
        Ok(())
    })))
    .await;
    // 50 writes of one statement each, queued behind the holder: one group, 50 scopes.
    let mut writes = Vec::new();
    for seq in 1..=50i64 {
        let write = adb.write(move |c| {
            let mut stmt = c.prepare_cached("INSERT INTO acks (seq) VALUES (?1)")?;
            Ok(stmt.execute([seq])?)
        });
        writes.push(queued(Box::pin(write)).await);
    }
    release.send(()).unwrap();
    holder.await?;
    for write in writes {
        write.await?;
    }
    // The report counts each queued write, and the writes queued meanwhile as groups (how
    // many the writer thread takes at once depends on when it wakes: at least two here).
    let stats = adb.db().write_stats();
    assert!(stats.max_group >= 2, "{stats:?}");
    assert_eq!(stats.writes - before.writes, 51, "{stats:?}");
    let warnings = adb.db().n_plus_one_warnings();
    assert!(
        !warnings.iter().any(|w| w.sql.contains("acks")),
        "{warnings:?}"
    );
    Ok(())
}
