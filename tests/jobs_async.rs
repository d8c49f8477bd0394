//! Async job handlers (feature `tokio`): jobs run through futures on a tokio runtime with the
//! same claims, retries, dead letters, transactional completion, shutdown and limits as sync
//! handlers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::jobs::Job;
use strata::{AsyncDb, Db, Error, Result};

#[path = "common/jobs.rs"]
mod jobs_common;
use jobs_common::{count, open, shutdown_abandons_the_running_job, wait_until, WAIT};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn async_handlers_run_every_job_once() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let rt = runtime();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let mut workers = queue
        .workers()
        .threads(8)
        .runtime(rt.handle().clone())
        .async_handler("echo", move |ctx, n: i64| {
            let log = Arc::clone(&log);
            async move {
                // A real await point: the future yields to the runtime.
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert_eq!(ctx.kind(), "echo");
                log.lock().unwrap().push(n);
                Ok(())
            }
        });
    let completed = workers.completed();
    let pool = workers.start()?;
    for n in 0..100_i64 {
        queue.enqueue(Job::new("echo", &n)?)?;
    }
    let mut done = HashSet::new();
    while done.len() < 100 {
        let c = completed.recv_timeout(WAIT).expect("a completion");
        assert_eq!((c.kind.as_str(), c.attempt), ("echo", 1));
        assert!(done.insert(c.id), "job {} completed twice", c.id);
    }
    pool.shutdown(WAIT);
    let mut ran = seen.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, (0..100).collect::<Vec<_>>(), "each job ran once");
    assert!(queue.is_empty()?);
    let report = queue.report()?;
    let echo = report.kinds.iter().find(|k| k.kind == "echo").unwrap();
    assert_eq!(echo.completed, 100);
    Ok(())
}

#[test]
fn failing_and_panicking_futures_retry_then_go_to_the_dead_letters() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let rt = runtime();
    let failing = queue.enqueue(Job::new("fail", &())?.max_attempts(2))?.id;
    let panicking = queue.enqueue(Job::new("panic", &())?.max_attempts(2))?.id;
    let bad_payload = queue
        .enqueue(Job::new("fail", &"not a unit")?.max_attempts(2))?
        .id;
    let mut workers = queue
        .workers()
        .runtime(rt.handle().clone())
        .backoff(Duration::from_millis(5), Duration::from_millis(10))
        .async_handler("fail", |ctx, ()| async move {
            tokio::task::yield_now().await;
            Err(Error::closure(format!("failure {}", ctx.attempt())))
        })
        .async_handler("panic", |_, ()| async move {
            tokio::task::yield_now().await;
            panic!("the future panicked");
        });
    let errors = workers.errors();
    let pool = workers.start()?;
    let mut events = Vec::new();
    while events.len() < 5 {
        events.push(errors.recv_timeout(WAIT).expect("an error notification"));
    }
    wait_until(
        "three dead letters",
        || Ok(queue.dead_letters()?.len() == 3),
    )?;
    pool.shutdown(WAIT);
    let runs = |id| events.iter().filter(|e| e.id == id).count();
    assert_eq!(
        (runs(failing), runs(panicking), runs(bad_payload)),
        (2, 2, 1),
        "two runs each, one for a payload no retry fixes"
    );
    let dead = queue.dead_letters()?;
    let error_of = |id| {
        dead.iter()
            .find(|d| d.id == id)
            .map(|d| d.last_error.clone())
            .unwrap_or_default()
    };
    assert_eq!(error_of(failing), "failure 2");
    assert!(error_of(panicking).contains("the future panicked"));
    assert!(error_of(bad_payload).contains("payload does not deserialize"));
    assert!(queue.is_empty()?);
    Ok(())
}

#[test]
fn complete_in_through_async_db_applies_the_effects_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE hits (id INTEGER PRIMARY KEY, n INT)")?))?;
    let queue = db.jobs()?;
    let rt = runtime();
    let adb = rt.block_on(async { AsyncDb::new(db.clone()) });
    for id in 0..50_i64 {
        db.write(|c| {
            c.execute("INSERT INTO hits (id, n) VALUES (?1, 0)", [id])?;
            queue.enqueue_in(c, Job::new("hit", &id)?)?;
            Ok(())
        })?;
    }
    // The job that lost its lease: completed elsewhere before its handler's write.
    let lost = queue.enqueue(Job::new("hit_late", &())?)?.id;
    let handler_db = adb.clone();
    let mut workers = queue
        .workers()
        .threads(8)
        .runtime(rt.handle().clone())
        .async_handler("hit", move |ctx, id: i64| {
            let adb = handler_db.clone();
            async move {
                adb.write(move |c| {
                    c.execute("UPDATE hits SET n = n + 1 WHERE id = ?1", [id])?;
                    ctx.complete_in(c)
                })
                .await
            }
        })
        .async_handler("hit_late", {
            let adb = adb.clone();
            move |ctx, ()| {
                let adb = adb.clone();
                async move {
                    let id = ctx.id();
                    // Another run took the job over and completed it meanwhile.
                    adb.write(move |c| {
                        c.execute("DELETE FROM strata_jobs WHERE id = ?1", [id])?;
                        Ok(())
                    })
                    .await?;
                    adb.write(move |c| {
                        c.execute("UPDATE hits SET n = n + 100 WHERE id = 0", [])?;
                        ctx.complete_in(c)
                    })
                    .await
                }
            }
        });
    let errors = workers.errors();
    let pool = workers.start()?;
    let lease_lost = errors
        .recv_timeout(WAIT)
        .expect("the late completion fails");
    assert_eq!(lease_lost.id, lost);
    assert!(lease_lost.error.contains("lease"), "{}", lease_lost.error);
    wait_until("every job", || queue.is_empty())?;
    pool.shutdown(WAIT);
    assert_eq!(count(&db, "SELECT count(*) FROM hits WHERE n = 1")?, 50);
    assert_eq!(
        count(&db, "SELECT sum(n) FROM hits")?,
        50,
        "the late run's effects rolled back with its completion"
    );
    rt.block_on(adb.close(WAIT));
    Ok(())
}

#[test]
fn shutdown_waits_for_running_futures_up_to_its_deadline() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let rt = runtime();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let pool = queue
        .workers()
        .threads(1)
        .runtime(rt.handle().clone())
        .async_handler("slow", move |_, ms: u64| {
            let (s, f) = (Arc::clone(&s), Arc::clone(&f));
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                f.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .start()?;
    queue.enqueue(Job::new("slow", &200_u64)?)?;
    wait_until("the start", || Ok(started.load(Ordering::SeqCst) == 1))?;
    let shutdown = pool.shutdown(WAIT);
    assert_eq!((shutdown.released, shutdown.abandoned), (0, 0));
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown waited for the future"
    );
    assert!(queue.is_empty()?, "and completed its job");

    // Past the deadline: the future is abandoned, its job stays leased, then completes.
    finished.store(false, Ordering::SeqCst);
    let s = Arc::clone(&started);
    let pool = queue
        .workers()
        .threads(1)
        .runtime(rt.handle().clone())
        .async_handler("slow", move |_, ms: u64| {
            let s = Arc::clone(&s);
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        })
        .start()?;
    queue.enqueue(Job::new("slow", &300_u64)?)?;
    wait_until("the second start", || {
        Ok(started.load(Ordering::SeqCst) == 2)
    })?;
    shutdown_abandons_the_running_job(&db, &queue, pool)
}

#[test]
fn threads_and_concurrency_limits_bound_the_futures_in_flight() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let rt = runtime();
    let gauges: [Arc<(AtomicUsize, AtomicUsize)>; 2] = Default::default();
    let handler = |gauge: &Arc<(AtomicUsize, AtomicUsize)>| {
        let gauge = Arc::clone(gauge);
        move |_, ()| {
            let gauge = Arc::clone(&gauge);
            async move {
                let now = gauge.0.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                gauge.0.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
    for _ in 0..30 {
        queue.enqueue(Job::new("limited", &())?)?;
        queue.enqueue(Job::new("free", &())?)?;
    }
    let pool = queue
        .workers()
        .threads(4)
        .concurrency("limited", 2)
        .runtime(rt.handle().clone())
        .async_handler("limited", handler(&gauges[0]))
        .async_handler("free", handler(&gauges[1]))
        .start()?;
    wait_until("every job", || queue.is_empty())?;
    pool.shutdown(WAIT);
    let (limited, free) = (
        gauges[0].1.load(Ordering::SeqCst),
        gauges[1].1.load(Ordering::SeqCst),
    );
    assert!((1..=2).contains(&limited), "{limited} limited in flight");
    assert!((1..=4).contains(&free), "{free} in flight on 4 threads");
    Ok(())
}

#[test]
fn async_handlers_without_a_runtime_fail_to_start() -> Result<()> {
    let db = Db::open_in_memory()?;
    let queue = db.jobs()?;
    let started = queue
        .workers()
        .async_handler("k", |_, ()| async { Ok(()) })
        .start();
    match started {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "runtime"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
    // Started inside a runtime, the pool takes it.
    let rt = runtime();
    let pool = rt.block_on(async {
        queue
            .workers()
            .async_handler("k", |_, ()| async { Ok(()) })
            .start()
    })?;
    let completed = pool.completed();
    queue.enqueue(Job::new("k", &())?)?;
    completed.recv_timeout(WAIT).expect("a completion");
    pool.shutdown(WAIT);
    Ok(())
}
