//! The job queue (`strata::jobs`) on real database files: enqueue atomic with the caller's
//! write, ordering, unique keys, retries and dead letters, panics, lease expiry,
//! transactional completion, several pools, bad input, pause, limits, shutdown, recurring
//! slots and the report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use strata::jobs::{Job, Priority, Queue, Recurring, UnknownKind};
use strata::{Db, Error, Result};

#[path = "common/jobs.rs"]
mod jobs_common;
use jobs_common::{count, open, shutdown_abandons_the_running_job, wait_until, WAIT};

/// For what only a wake-up (not a poll) can deliver in time.
const SHORT: Duration = Duration::from_secs(3);

#[test]
fn enqueue_commits_and_rolls_back_with_the_write() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")?))?;
    let queue = db.jobs()?;
    let err = db
        .write(|c| {
            c.execute("INSERT INTO orders (id) VALUES (1)", [])?;
            queue.enqueue_in(c, Job::new("ship", &1)?)?;
            Err::<(), _>(Error::closure("payment refused"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Closure(_)));
    assert_eq!(count(&db, "SELECT count(*) FROM strata_jobs")?, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM orders")?, 0);

    let id = db.write(|c| {
        c.execute("INSERT INTO orders (id) VALUES (2)", [])?;
        Ok(queue.enqueue_in(c, Job::new("ship", &2)?)?.id)
    })?;
    assert_eq!(queue.len()?, 1);
    let payload: String = db.read(|c| {
        Ok(
            c.query_row("SELECT payload FROM strata_jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })?,
        )
    })?;
    assert_eq!(payload, "2");
    // A second handle on the same Db shares the queue; enqueueing from inside a write with
    // the standalone call is refused rather than deadlocking.
    let again = db.jobs()?;
    let nested = db
        .write(|_| again.enqueue(Job::new("ship", &3)?))
        .unwrap_err();
    assert!(matches!(nested, Error::NestedWrite), "{nested:?}");
    Ok(())
}

#[test]
fn tables_are_created_once_by_concurrent_opens() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    Db::open(&path)?;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || -> Result<()> {
                let db = Db::open(&path)?;
                db.jobs()?.enqueue(Job::new("k", &())?)?;
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap()?;
    }
    let db = Db::open(&path)?;
    assert!(strata::jobs::exists(&db)?);
    assert_eq!(db.jobs()?.len()?, 4);
    Ok(())
}

#[test]
fn high_priority_first_then_run_time_and_delays_are_kept() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let past = SystemTime::now() - Duration::from_secs(60);
    let jobs = [
        ("low", Priority::Low, None),
        ("normal-late", Priority::Normal, None),
        ("normal-early", Priority::Normal, Some(past)),
        ("high", Priority::High, None),
    ];
    for (name, priority, at) in jobs {
        let mut job = Job::new("record", &name)?.priority(priority);
        if let Some(at) = at {
            job = job.run_at(at);
        }
        queue.enqueue(job)?;
    }
    queue.enqueue(Job::new("record", &"delayed")?.delay(Duration::from_millis(300)))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let pool = queue
        .workers()
        .threads(1)
        .prefetch(0)
        .handler("record", move |_, name: String| {
            log.lock().unwrap().push((name, Instant::now()));
            Ok(())
        })
        .start()?;
    let started = Instant::now();
    wait_until("five runs", || Ok(seen.lock().unwrap().len() == 5))?;
    pool.shutdown(WAIT);
    let seen = seen.lock().unwrap();
    let order: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        order,
        ["high", "normal-early", "normal-late", "low", "delayed"]
    );
    assert!(
        seen[4].1 - started >= Duration::from_millis(250),
        "the delay was kept"
    );
    Ok(())
}

#[test]
fn a_unique_key_enqueues_once_while_its_job_is_unfinished() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let first = queue.enqueue(Job::new("report", &1)?.unique_key("daily"))?;
    let second = queue.enqueue(Job::new("report", &2)?.unique_key("daily"))?;
    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    assert_eq!(second.id, first.id);
    assert_eq!(queue.len()?, 1);
    let other = queue.enqueue(Job::new("report", &3)?.unique_key("weekly"))?;
    assert!(!other.deduplicated);
    let pool = queue
        .workers()
        .handler("report", |_, _: i64| Ok(()))
        .start()?;
    wait_until("an empty queue", || queue.is_empty())?;
    pool.shutdown(WAIT);
    // Finished: the key is free again.
    let third = queue.enqueue(Job::new("report", &4)?.unique_key("daily"))?;
    assert!(!third.deduplicated);
    assert_ne!(third.id, first.id);
    Ok(())
}

#[test]
fn failures_retry_with_backoff_then_go_to_the_dead_letters() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let id = queue.enqueue(Job::new("flaky", &"x")?.max_attempts(3))?.id;
    let runs = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&runs);
    let mut builder = queue
        .workers()
        .backoff(Duration::from_millis(40), Duration::from_secs(1))
        .handler("flaky", move |ctx, _: String| {
            log.lock().unwrap().push((ctx.attempt(), Instant::now()));
            Err(Error::closure(format!("failure {}", ctx.attempt())))
        });
    let errors = builder.errors();
    let pool = builder.start()?;
    for attempt in 1..=3 {
        let e = errors.recv_timeout(WAIT).expect("an error notification");
        assert_eq!((e.id, e.attempt), (id, attempt));
        assert_eq!(
            e.retry_at.is_none(),
            attempt == 3,
            "only the last is not retried"
        );
    }
    wait_until("the dead letter", || Ok(queue.dead_letters()?.len() == 1))?;
    let dead = queue.dead_letters()?.remove(0);
    assert_eq!(
        (dead.id, dead.attempts, dead.kind.as_str()),
        (id, 3, "flaky")
    );
    assert_eq!(dead.last_error, "failure 3");
    assert!(dead.first_run_at.is_some() && dead.failed_at >= dead.enqueued_at);
    assert!(queue.is_empty()?);
    {
        let runs = runs.lock().unwrap();
        let attempts: Vec<u32> = runs.iter().map(|r| r.0).collect();
        assert_eq!(attempts, [1, 2, 3]);
        // Jitter takes off at most half: 20 ms, then 40 ms at least.
        assert!(runs[1].1 - runs[0].1 >= Duration::from_millis(20));
        assert!(runs[2].1 - runs[1].1 >= Duration::from_millis(40));
    }
    let report = queue.report()?;
    let flaky = report.kinds.iter().find(|k| k.kind == "flaky").unwrap();
    assert_eq!(
        (flaky.failed, flaky.retried, flaky.dead_lettered),
        (3, 2, 1)
    );

    // Retried from the dead letters: a new job with fresh attempts.
    let again = queue.retry_dead(id)?.expect("the dead letter");
    assert_ne!(again.id, id);
    assert!(queue.dead_letters()?.is_empty());
    assert_eq!(queue.retry_dead(id)?, None);
    for _ in 1..=3 {
        errors
            .recv_timeout(WAIT)
            .expect("the retried job fails again");
    }
    wait_until("the dead letter again", || {
        Ok(queue.dead_letters()?.len() == 1)
    })?;
    pool.shutdown(WAIT);
    assert_eq!(queue.retry_all_dead()?, 1);
    assert_eq!(queue.len()?, 1);
    queue.enqueue(Job::new("gone", &())?.max_attempts(1))?;
    assert_eq!(queue.purge_dead(None)?, 0);
    Ok(())
}

#[test]
fn a_panicking_handler_is_caught_and_retried() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    queue.enqueue(Job::new("boom", &())?.max_attempts(2))?;
    let mut builder = queue
        .workers()
        .threads(1)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .handler("boom", |ctx, ()| {
            if ctx.attempt() == 1 {
                panic!("handler exploded");
            }
            Ok(())
        });
    let (errors, completed) = (builder.errors(), builder.completed());
    let pool = builder.start()?;
    let e = errors.recv_timeout(WAIT).expect("the panic, reported");
    assert!(e.error.contains("handler exploded"), "{}", e.error);
    let done = completed.recv_timeout(WAIT).expect("the retry completes");
    assert_eq!(done.attempt, 2);
    pool.shutdown(WAIT);
    assert!(queue.is_empty()? && queue.dead_letters()?.is_empty());
    Ok(())
}

#[test]
fn a_job_whose_worker_died_runs_again_after_its_lease() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let id = queue.enqueue(Job::new("work", &7)?)?.id;
    let last = queue.enqueue(Job::new("work", &8)?.max_attempts(1))?.id;
    // What a process killed mid-run leaves: running, leased to a token nobody holds, the lease
    // in the past.
    db.write(|c| {
        c.execute(
            "UPDATE strata_jobs SET state = 1, attempts = attempts + 1, lease_token = 42,
             lease_until = 1 WHERE id IN (?1, ?2)",
            [id, last],
        )?;
        Ok(())
    })?;
    let mut builder = queue
        .workers()
        .poll_interval(Duration::from_millis(20))
        .handler("work", |_, _: i64| Ok(()));
    let completed = builder.completed();
    let pool = builder.start()?;
    let done = completed.recv_timeout(WAIT).expect("the job runs again");
    assert_eq!((done.id, done.attempt), (id, 2));
    wait_until("an empty queue", || queue.is_empty())?;
    pool.shutdown(WAIT);
    // The one whose lost run was its last attempt is a dead letter, with the reason.
    let dead = queue.dead_letters()?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, last);
    assert_eq!(dead[0].last_error, "lease expired during attempt 1");
    Ok(())
}

#[test]
fn a_transactional_completion_commits_the_effects_once() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE credits (job INTEGER, amount INTEGER)")?))?;
    let queue = db.jobs()?;
    let stolen = queue.enqueue(Job::new("credit", &10)?)?.id;
    for amount in [1, 2, 3] {
        queue.enqueue(Job::new("credit", &amount)?)?;
    }
    let lost = Arc::new(AtomicUsize::new(0));
    let lost_seen = Arc::clone(&lost);
    let pool = queue
        .workers()
        .handler("credit", move |ctx, amount: i64| {
            let result = ctx.db().write(|c| {
                c.execute(
                    "INSERT INTO credits (job, amount) VALUES (?1, ?2)",
                    [ctx.id(), amount],
                )?;
                if ctx.id() == stolen && ctx.attempt() == 1 {
                    // Another run took the job over meanwhile (its lease expired).
                    c.execute(
                        "UPDATE strata_jobs SET lease_token = 7 WHERE id = ?1",
                        [ctx.id()],
                    )?;
                }
                ctx.complete_in(c)
            });
            if matches!(result, Err(Error::JobLeaseLost { .. })) {
                lost_seen.fetch_add(1, Ordering::SeqCst);
            }
            result
        })
        .start()?;
    wait_until("the three others", || {
        Ok(count(&db, "SELECT count(*) FROM credits")? == 3)
    })?;
    pool.shutdown(WAIT);
    assert_eq!(lost.load(Ordering::SeqCst), 1);
    assert_eq!(
        count(&db, "SELECT sum(amount) FROM credits")?,
        6,
        "the lost run's credit rolled back"
    );
    // The stolen job is still there, leased to the run that took over.
    assert_eq!(queue.len()?, 1);
    Ok(())
}

#[test]
fn several_pools_never_run_a_job_twice() -> Result<()> {
    const JOBS: i64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let runs: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let running: Arc<Mutex<std::collections::HashSet<i64>>> = Arc::default();
    // Pools on separate `Db` handles of one file, as separate processes would be.
    let mut pools = Vec::new();
    for _ in 0..3 {
        let other = Db::open(dir.path().join("jobs.db"))?.jobs()?;
        let (runs, running) = (Arc::clone(&runs), Arc::clone(&running));
        pools.push(
            other
                .workers()
                .threads(2)
                .poll_interval(Duration::from_millis(5))
                .handler("n", move |ctx, _: i64| {
                    assert!(
                        running.lock().unwrap().insert(ctx.id()),
                        "job {} run twice at once",
                        ctx.id()
                    );
                    *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
                    std::thread::yield_now();
                    running.lock().unwrap().remove(&ctx.id());
                    Ok(())
                })
                .start()?,
        );
    }
    for i in 0..JOBS {
        queue.enqueue(Job::new("n", &i)?)?;
    }
    wait_until("every job", || {
        Ok(runs.lock().unwrap().len() == JOBS as usize)
    })?;
    wait_until("an empty queue", || queue.is_empty())?;
    for pool in pools {
        pool.shutdown(WAIT);
    }
    let runs = runs.lock().unwrap();
    assert!(runs.values().all(|n| *n == 1), "every job ran exactly once");
    Ok(())
}

#[test]
fn unknown_kinds_wait_or_go_to_the_dead_letters() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let mystery = queue.enqueue(Job::new("mystery", &())?)?.id;
    queue.enqueue(Job::new("known", &())?)?;
    let mut builder = queue.workers().handler("known", |_, ()| Ok(()));
    let completed = builder.completed();
    let pool = builder.start()?;
    completed.recv_timeout(WAIT).expect("the known kind runs");
    pool.shutdown(WAIT);
    assert_eq!(queue.len()?, 1, "the unknown kind is left waiting");

    let pool = queue
        .workers()
        .unknown_kinds(UnknownKind::DeadLetter)
        .start()?;
    wait_until("the dead letter", || Ok(!queue.dead_letters()?.is_empty()))?;
    pool.shutdown(WAIT);
    let dead = queue.dead_letters()?;
    assert_eq!(dead[0].id, mystery);
    assert_eq!(dead[0].last_error, "no handler for kind mystery");
    assert!(matches!(
        queue.workers().start(),
        Err(Error::InvalidConfig {
            field: "workers",
            ..
        })
    ));
    Ok(())
}

#[test]
fn a_payload_that_does_not_deserialize_goes_to_the_dead_letters_at_once() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let id = queue
        .enqueue(Job::new("typed", &"not a number")?.max_attempts(5))?
        .id;
    let mut builder = queue.workers().handler("typed", |_, _: u32| Ok(()));
    let errors = builder.errors();
    let pool = builder.start()?;
    let e = errors.recv_timeout(WAIT).expect("the error");
    assert_eq!((e.id, e.retry_at), (id, None));
    wait_until("the dead letter", || Ok(!queue.dead_letters()?.is_empty()))?;
    pool.shutdown(WAIT);
    let dead = queue.dead_letters()?.remove(0);
    assert_eq!(dead.attempts, 1, "not retried: a retry cannot fix it");
    assert!(
        dead.last_error
            .starts_with("payload does not deserialize: invalid type: string"),
        "{}",
        dead.last_error
    );
    Ok(())
}

#[test]
fn paused_queues_wait_and_limits_cap_concurrency() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    queue.pause("slow")?;
    assert!(queue.is_paused("slow")?);
    for i in 0..12 {
        queue.enqueue(Job::new("sleep", &i)?.queue("slow"))?;
    }
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (Arc::clone(&now), Arc::clone(&peak));
    let pool = queue
        .workers()
        .threads(6)
        .concurrency("sleep", 2)
        .handler("sleep", move |_, _: i64| {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(running, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .start()?;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(queue.len()?, 12, "nothing runs while paused");
    let report = db.report().jobs.expect("a jobs section");
    assert!(report
        .queues
        .iter()
        .any(|q| q.queue == "slow" && q.paused && q.pending == 12));
    queue.resume("slow")?;
    wait_until("an empty queue", || queue.is_empty())?;
    pool.shutdown(WAIT);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "the limit was reached and kept"
    );
    let report = db.report().jobs.expect("a jobs section");
    let kind = report.kinds.iter().find(|k| k.kind == "sleep").unwrap();
    assert_eq!(
        (kind.completed, kind.start_lag.count, kind.run_time.count),
        (12, 12, 12)
    );
    assert!(kind.run_time.p50_us >= 5_000.0);
    assert_eq!(report.enqueued, 12);
    Ok(())
}

#[test]
fn shutdown_hands_unstarted_jobs_back() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let pool = queue
        .workers()
        .threads(1)
        .prefetch(3)
        .handler("hold", move |_, _: i64| {
            s.fetch_add(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
        .start()?;
    for i in 0..4 {
        queue.enqueue(Job::new("hold", &i)?)?;
    }
    wait_until("a start", || Ok(started.load(Ordering::SeqCst) == 1))?;
    wait_until("the prefetch", || {
        Ok(count(&db, "SELECT count(*) FROM strata_jobs WHERE state = 1")? == 4)
    })?;
    // The running handler is let go only once the shutdown has begun.
    let r = Arc::clone(&release);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        r.store(true, Ordering::SeqCst);
    });
    let shutdown = pool.shutdown(WAIT);
    releaser.join().unwrap();
    assert_eq!((shutdown.released, shutdown.abandoned), (3, 0));
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM strata_jobs WHERE state = 0 AND attempts = 0"
        )?,
        3
    );
    Ok(())
}

#[test]
fn shutdown_leaves_a_handler_past_its_deadline_leased() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let pool = queue
        .workers()
        .threads(1)
        .handler("slow", move |_, ()| {
            s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .start()?;
    queue.enqueue(Job::new("slow", &())?)?;
    wait_until("the start", || Ok(started.load(Ordering::SeqCst) == 1))?;
    shutdown_abandons_the_running_job(&db, &queue, pool)
}

#[test]
fn a_recurring_job_fires_once_per_slot_across_pools() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let schedule = Recurring::every("tick", Duration::from_millis(100), Job::new("tick", &())?)?;
    let ticks = Arc::new(AtomicUsize::new(0));
    let first_slot = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 100;
    let mut pools = Vec::new();
    for _ in 0..3 {
        let queue = Db::open(dir.path().join("jobs.db"))?.jobs()?;
        let t = Arc::clone(&ticks);
        pools.push(
            queue
                .workers()
                .recurring(schedule.clone())
                .handler("tick", move |_, ()| {
                    t.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .start()?,
        );
    }
    std::thread::sleep(Duration::from_millis(550));
    for pool in pools {
        pool.shutdown(WAIT);
    }
    let last_slot = count(
        &db,
        "SELECT last_slot FROM strata_job_schedules WHERE name = 'tick'",
    )?;
    let slots = (last_slot - first_slot + 1) as usize;
    let fired = ticks.load(Ordering::SeqCst) + db.jobs()?.len()? as usize;
    // Three pools fire every slot they see; a slot a late wake skipped is not made up.
    assert!(fired >= 2, "{fired} firings");
    assert!(
        fired <= slots,
        "{fired} firings in {slots} slots: at most one per slot"
    );
    // The current slot, fired by hand: once.
    let queue = db.jobs()?;
    let fired_now = [queue.fire(&schedule)?, queue.fire(&schedule)?];
    assert!(!fired_now[1], "a slot fires once");
    Ok(())
}

#[test]
fn a_cron_schedule_fires_each_second_once_across_two_handles_without_polling() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let schedule = Recurring::cron("each_second", "* * * * * *", Job::new("tick", &())?)?;
    let mut pools = Vec::new();
    for _ in 0..2 {
        let queue = Db::open(dir.path().join("jobs.db"))?.jobs()?;
        // The ticks are left in the table to be counted: these pools handle another kind,
        // and an hour's poll interval leaves only the cron times to wake their schedulers.
        pools.push(
            queue
                .workers()
                .poll_interval(Duration::from_secs(3600))
                .lease(Duration::from_secs(3600))
                .recurring(schedule.clone())
                .handler("other", |_, ()| Ok(()))
                .start()?,
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    for pool in pools {
        pool.shutdown(WAIT);
    }
    let seconds: Vec<i64> = db.read(|c| {
        let mut stmt = c.prepare(
            "SELECT enqueued_at / 1000 FROM strata_jobs WHERE kind = 'tick' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })?;
    let mut distinct = seconds.clone();
    distinct.dedup();
    assert_eq!(distinct, seconds, "one job per second's slot");
    assert!(seconds.len() >= 2, "fired in {} slots", seconds.len());
    let last_slot = count(
        &db,
        "SELECT last_slot FROM strata_job_schedules WHERE name = 'each_second'",
    )?;
    assert_eq!(
        Some(&(last_slot / 1000)),
        seconds.last(),
        "the row names the last slot"
    );
    Ok(())
}

#[test]
fn a_job_enqueued_by_this_process_wakes_an_idle_pool_without_polling() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir)?;
    let queue = db.jobs()?;
    let pool = queue
        .workers()
        .poll_interval(Duration::from_secs(3600))
        .lease(Duration::from_secs(3600))
        .handler("ping", |_, ()| Ok(()))
        .start()?;
    let completed = pool.completed();
    // Let the pool find the queue empty and go to sleep for an hour.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        db.write(|c| queue.enqueue_in(c, Job::new("ping", &())?))?;
        completed.recv_timeout(SHORT).expect("woken by the commit");
    }
    pool.shutdown(WAIT);
    Ok(())
}

fn _queue_is_send_sync(q: Queue) -> impl Send + Sync {
    q
}
