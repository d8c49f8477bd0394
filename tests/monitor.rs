//! Monitoring: per-statement counts, rows and latencies (raw SQL on the closure's connection
//! included), scan/sort counters, the slow-query log and its ring, alerts once per window,
//! the JSON shape of `Report` and `Report::delta`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strata::cache::EntityCache;
use strata::monitor::{Alert, QueryStats, Report};
use strata::rusqlite::Connection;
use strata::{Config, Db, Result};

const ROWS: i64 = 200;
const BY_ID: &str = "SELECT v FROM t WHERE id = ?1";

/// A table of `ROWS` rows: `id` is the primary key, `v` and `g` have no index. Every closure
/// is traced, so that counts are exact (sampling has its own test, on [`open_sampled`]).
fn open(config: Config) -> Result<Db> {
    open_sampled(config.trace_budget(1.0))
}

/// [`open`] with `config`'s own trace budget.
fn open_sampled(config: Config) -> Result<Db> {
    let db = config.readers(1).build()?;
    db.write(|c| {
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, g INT)")?;
        let mut insert = c.prepare("INSERT INTO t (id, v, g) VALUES (?1, ?2, ?3)")?;
        for i in 1..=ROWS {
            insert.execute((i, format!("v{:04}", ROWS - i), i % 4))?;
        }
        Ok(())
    })?;
    Ok(db)
}

fn query<'a>(report: &'a Report, sql: &str) -> &'a QueryStats {
    report
        .queries
        .iter()
        .find(|q| q.sql == sql)
        .unwrap_or_else(|| panic!("{sql} not in the report: {:#?}", report.queries))
}

/// Collects every alert fired.
fn collector() -> (
    Arc<Mutex<Vec<Alert>>>,
    impl Fn(&Alert) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |a: &Alert| {
        sink.lock().expect("alerts").push(a.clone())
    })
}

fn lookup(c: &Connection, id: i64) -> Result<String> {
    Ok(c.prepare_cached(BY_ID)?.query_row([id], |r| r.get(0))?)
}

#[test]
fn counts_rows_and_latencies_per_statement() -> Result<()> {
    let db = open(Config::new())?;
    let before = db.report();
    let started = Instant::now();
    db.read(|c| {
        for id in 1..=10 {
            lookup(c, id)?;
        }
        // Raw SQL on the closure's connection, not through any strata helper.
        for _ in 0..3 {
            let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
            assert_eq!(n, ROWS);
        }
        let mut stmt = c.prepare("SELECT id FROM t WHERE g = 1")?;
        let ids: Vec<i64> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(ids.len() as i64, ROWS / 4);
        Ok(())
    })?;
    db.write(|c| {
        for id in 1..=5 {
            c.execute("UPDATE t SET v = v || 'x' WHERE id = ?1", [id])?;
        }
        Ok(())
    })?;
    let wall_us = started.elapsed().as_secs_f64() * 1e6;
    let r = db.report().delta(&before);

    let by_id = query(&r, BY_ID);
    assert_eq!((by_id.calls, by_id.rows), (10, 10));
    assert_eq!(
        by_id.prepares, 1,
        "prepare_cached prepares once on one reader"
    );
    let count = query(&r, "SELECT count(*) FROM t");
    assert_eq!((count.calls, count.rows), (3, 3));
    assert_eq!(count.prepares, 3, "query_row prepares every time");
    let scan = query(&r, "SELECT id FROM t WHERE g = 1");
    assert_eq!((scan.calls, scan.rows), (1, (ROWS / 4) as u64));
    let update = query(&r, "UPDATE t SET v = v || 'x' WHERE id = ?1");
    assert_eq!((update.calls, update.rows), (5, 0));
    assert_eq!(
        r.queries.len(),
        4,
        "BEGIN/COMMIT are not counted: {:?}",
        r.queries
    );

    let total: f64 = r.queries.iter().map(|q| q.total_us).sum();
    assert!(
        total > 0.0 && total <= wall_us,
        "{total} µs of {wall_us} µs"
    );
    for q in &r.queries {
        assert!(q.total_us > 0.0, "{q:?}");
        assert!(
            (q.mean_us - q.total_us / q.calls as f64).abs() < 1e-6,
            "{q:?}"
        );
        assert!(
            q.p50_us > 0.0 && q.p50_us <= q.p95_us && q.p95_us <= q.p99_us,
            "{q:?}"
        );
        // Percentiles are within the histogram's 1% of the exact maximum.
        assert!(
            q.p99_us <= q.max_us * 1.01 && q.max_us <= q.total_us,
            "{q:?}"
        );
    }
    assert!(
        r.queries.windows(2).all(|w| w[0].total_us >= w[1].total_us),
        "sorted by total time"
    );
    let sc = r.statement_cache;
    assert_eq!((sc.hits + sc.misses), 10 + 3 + 1 + 5);
    assert_eq!(sc.misses, 1 + 3 + 1 + 5);
    Ok(())
}

#[test]
fn full_scans_sorts_and_autoindexes_are_counted() -> Result<()> {
    let db = open(Config::new())?;
    db.read(|c| {
        lookup(c, 7)?;
        c.query_row("SELECT count(*) FROM t WHERE v = 'v0100'", [], |r| {
            r.get::<_, i64>(0)
        })?;
        c.prepare("SELECT v FROM t ORDER BY v")?
            .query_map([], |r| r.get::<_, String>(0))?
            .for_each(drop);
        c.query_row("SELECT count(*) FROM t a JOIN t b ON a.v = b.v", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    })?;
    let r = db.report();
    let indexed = query(&r, BY_ID);
    assert_eq!(
        (indexed.fullscan_steps, indexed.sorts, indexed.autoindexes),
        (0, 0, 0)
    );
    let scan = query(&r, "SELECT count(*) FROM t WHERE v = 'v0100'");
    assert!(scan.fullscan_steps >= ROWS as u64 - 1, "{scan:?}");
    let sorted = query(&r, "SELECT v FROM t ORDER BY v");
    assert_eq!(sorted.sorts, 1, "{sorted:?}");
    let join = query(&r, "SELECT count(*) FROM t a JOIN t b ON a.v = b.v");
    assert!(join.autoindexes > 0, "{join:?}");

    // The counters are per execution even though the prepared statement is reused.
    db.read(|c| lookup(c, 8).map(drop))?;
    db.read(|c| {
        for _ in 0..2 {
            c.prepare_cached("SELECT count(*) FROM t WHERE v = 'v0100'")?
                .query_row([], |r| r.get::<_, i64>(0))?;
        }
        Ok(())
    })?;
    let later = db.report().delta(&r);
    let scan = query(&later, "SELECT count(*) FROM t WHERE v = 'v0100'");
    assert_eq!(scan.calls, 2);
    let one_scan = query(&r, "SELECT count(*) FROM t WHERE v = 'v0100'").fullscan_steps;
    assert_eq!(
        scan.fullscan_steps,
        2 * one_scan,
        "not cumulative: {scan:?}"
    );
    assert_eq!(query(&later, BY_ID).fullscan_steps, 0);
    Ok(())
}

#[test]
fn interleaved_statements_and_group_commits_are_attributed_right() -> Result<()> {
    let db = open(Config::new())?;
    // A query per row of another: two statements in flight on one connection.
    db.read(|c| {
        let mut outer = c.prepare("SELECT id FROM t WHERE id <= 10")?;
        let mut rows = outer.query([])?;
        while let Some(row) = rows.next()? {
            lookup(c, row.get(0)?)?;
        }
        Ok(())
    })?;
    let r = db.report();
    let outer = query(&r, "SELECT id FROM t WHERE id <= 10");
    assert_eq!((outer.calls, outer.rows), (1, 10));
    assert_eq!((query(&r, BY_ID).calls, query(&r, BY_ID).rows), (10, 10));

    // Followers' closures run on the leader's thread: still counted, once each.
    const THREADS: i64 = 8;
    const EACH: i64 = 50;
    thread::scope(|s| {
        for t in 0..THREADS {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    db.write(|c| {
                        c.prepare_cached("INSERT INTO t (v, g) VALUES (?1, ?2)")?
                            .execute((format!("{t}-{i}"), t))?;
                        Ok(())
                    })
                    .expect("insert");
                }
            });
        }
    });
    let insert = query(&db.report(), "INSERT INTO t (v, g) VALUES (?1, ?2)").clone();
    assert_eq!(insert.calls as i64, THREADS * EACH);
    Ok(())
}

#[test]
fn sampled_tracing_estimates_counts_and_catches_slow_statements() -> Result<()> {
    let db = open_sampled(Config::new().slow_query_threshold(Duration::from_millis(1)))?;
    const CALLS: u64 = 20_000;
    for i in 0..CALLS {
        db.read(|c| lookup(c, 1 + (i as i64 % ROWS)))?;
    }
    let r = db.report();
    let by_id = query(&r, BY_ID);
    // Each traced call counts for the calls it stands for: an estimate, close to the truth.
    let error = (by_id.calls as f64 - CALLS as f64).abs() / CALLS as f64;
    assert!(error < 0.3, "estimated {} of {CALLS} calls", by_id.calls);
    assert_eq!(by_id.rows, by_id.calls, "one row per lookup");

    // One call site, fast thousands of times (so it is sampled), then slow: the slow
    // statement reaches the log by its second run, traced or not the first time.
    let count = |sql: &str| db.read(|c| Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?));
    for _ in 0..5_000 {
        count("SELECT count(*) FROM t WHERE id = 1")?;
    }
    let slow = "SELECT count(*) FROM t a, t b, t c WHERE a.v < b.v AND b.g = c.g";
    for _ in 0..2 {
        count(slow)?;
    }
    assert!(
        db.report().slow_queries.iter().any(|q| q.sql == slow),
        "the slow statement is logged"
    );
    Ok(())
}

#[test]
fn a_panicking_closure_still_counts_what_ran() -> Result<()> {
    let db = open(Config::new().slow_query_threshold(Duration::ZERO))?;
    let before = db.report();
    let err = db
        .read(|c| -> Result<()> {
            lookup(c, 1)?;
            panic!("boom")
        })
        .unwrap_err();
    assert!(matches!(err, strata::Error::Panic { .. }));
    db.write(|c| -> Result<()> {
        c.execute("UPDATE t SET g = 0 WHERE id = 1", [])?;
        panic!("boom")
    })
    .unwrap_err();
    // The same reader and the writer again: traced once, not twice, and still counted.
    db.read(|c| lookup(c, 2).map(drop))?;
    db.write(|c| Ok(c.execute("UPDATE t SET g = 0 WHERE id = 1", []).map(drop)?))?;
    let r = db.report().delta(&before);
    assert_eq!(query(&r, BY_ID).calls, 2);
    assert_eq!(query(&r, "UPDATE t SET g = 0 WHERE id = 1").calls, 2);
    assert_eq!(r.slow_queries_total, 4);
    Ok(())
}

#[test]
fn watched_tables_count_each_statement_once() -> Result<()> {
    // Cache rules install capture triggers: their programs must not count as statements.
    let db = open(Config::new())?;
    db.register_cache(EntityCache::<i64, String>::builder("t"))?;
    db.add_rule(strata::cache::InvalidationRule::rowid_key("t", "t"))?;
    db.write(|c| {
        Ok(c.execute("UPDATE t SET g = g + 1 WHERE id <= 3", [])
            .map(drop)?)
    })?;
    let update = query(&db.report(), "UPDATE t SET g = g + 1 WHERE id <= 3").clone();
    assert_eq!(update.calls, 1);
    Ok(())
}

const SLOW: &str =
    "SELECT count(*) FROM t a, t b, t c WHERE a.v < b.v AND b.g <> c.g AND a.g >= ?1";

#[test]
fn slow_queries_keep_their_plan() -> Result<()> {
    // SLOW takes ~100 ms (release) to ~250 ms (debug); a lookup a few µs.
    let db = open(Config::new().slow_query_threshold(Duration::from_millis(5)))?;
    let before = db.report();
    db.read(|c| {
        lookup(c, 1)?;
        c.query_row(SLOW, [0], |r| r.get::<_, i64>(0))?;
        Ok(())
    })?;
    let r = db.report().delta(&before);
    let slow = r
        .slow_queries
        .iter()
        .find(|s| s.sql == SLOW)
        .unwrap_or_else(|| panic!("not logged: {:#?}", r.slow_queries));
    assert!(slow.duration_us >= 5000.0, "{slow:?}");
    assert!(
        (slow.duration_us - query(&r, SLOW).max_us).abs() < 1e-6,
        "the log and the table saw the same run"
    );
    assert_eq!(slow.params, 1);
    let plan = slow.plan.as_deref().expect("a plan");
    assert!(plan.contains("SCAN a") && plan.contains("SCAN b"), "{plan}");
    Ok(())
}

#[test]
fn slow_query_ring_stays_bounded() -> Result<()> {
    let db = open(
        Config::new()
            .slow_query_threshold(Duration::ZERO)
            .slow_query_log_size(3),
    )?;
    let before = db.report();
    db.read(|c| {
        for i in 0..10 {
            c.query_row(&format!("SELECT {i}"), [], |r| r.get::<_, i64>(0))?;
        }
        Ok(())
    })?;
    let r = db.report();
    assert_eq!(r.slow_queries.len(), 3);
    assert_eq!(r.slow_queries_total - before.slow_queries_total, 10);
    let sql: Vec<&str> = r.slow_queries.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql, ["SELECT 7", "SELECT 8", "SELECT 9"]);
    assert!(r.slow_queries.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(r.slow_queries[2].plan.as_deref(), Some("SCAN CONSTANT ROW"));
    Ok(())
}

#[test]
fn alerts_fire_once_per_condition_and_window() -> Result<()> {
    let (seen, on_alert) = collector();
    let db = open(
        Config::new()
            .slow_query_threshold(Duration::ZERO)
            .alert_window(Duration::from_millis(500))
            .on_alert(on_alert),
    )?;
    let slow_alerts = |sql: &str| {
        seen.lock()
            .expect("alerts")
            .iter()
            .filter(|a| matches!(a, Alert::SlowQuery { sql: s, .. } if s == sql))
            .count()
    };
    for _ in 0..20 {
        db.read(|c| lookup(c, 3).map(drop))?;
    }
    db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))?;
    assert_eq!(
        slow_alerts(BY_ID),
        1,
        "once per statement, not per execution"
    );
    assert_eq!(slow_alerts("SELECT 1"), 1, "another statement has its own");
    thread::sleep(Duration::from_millis(550));
    db.read(|c| lookup(c, 3).map(drop))?;
    assert_eq!(slow_alerts(BY_ID), 2, "again in the next window");
    assert_eq!(
        db.report().alerts_fired,
        seen.lock().expect("alerts").len() as u64
    );
    Ok(())
}

#[test]
fn pool_waits_are_counted_and_alert_once() -> Result<()> {
    let (seen, on_alert) = collector();
    let db = open(
        Config::new()
            .pool_wait_alert(Duration::from_millis(1))
            .on_alert(on_alert),
    )?;
    // Four reads of 20 ms on one reader: three of them wait.
    thread::scope(|s| {
        for _ in 0..4 {
            let db = db.clone();
            s.spawn(move || {
                db.read(|_| {
                    thread::sleep(Duration::from_millis(20));
                    Ok(())
                })
                .expect("read");
            });
        }
    });
    let r = db.report();
    assert!(r.pool.waits >= 2, "{:?}", r.pool);
    assert!(r.pool.wait_time_us >= 20_000.0, "{:?}", r.pool);
    assert_eq!((r.pool.max_size, r.pool.size, r.pool.idle), (1, 1, 1));
    let saturated = seen
        .lock()
        .expect("alerts")
        .iter()
        .filter(|a| matches!(a, Alert::PoolSaturated { wait } if *wait >= Duration::from_millis(1)))
        .count();
    assert_eq!(saturated, 1);
    Ok(())
}

#[test]
fn low_cache_hit_rate_alerts_once_per_window() -> Result<()> {
    let (seen, on_alert) = collector();
    let db = open(Config::new().cache_hit_rate_alert(0.9).on_alert(on_alert))?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("values"))?;
    let load = |c: &Connection, id: &i64| -> Result<Option<String>> { lookup(c, *id).map(Some) };
    let low = || {
        seen.lock()
            .expect("alerts")
            .iter()
            .filter(|a| matches!(a, Alert::LowCacheHitRate { cache, hit_rate, .. } if cache == "values" && *hit_rate < 0.9))
            .count()
    };
    for id in 1..=50 {
        db.cached(&cache, &id, load)?;
    }
    db.check_alerts();
    assert_eq!(low(), 0, "50 lookups are too few to judge");
    for id in 51..=ROWS {
        db.cached(&cache, &id, load)?;
    }
    db.check_alerts();
    assert_eq!(low(), 1);
    for id in ROWS + 1..ROWS + 200 {
        db.cached(&cache, &id, |_, _| Ok(None))?;
    }
    db.check_alerts();
    assert_eq!(low(), 1, "once per window");
    Ok(())
}

#[test]
fn wal_over_its_limit_alerts_and_checks_run_by_themselves() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seen, on_alert) = collector();
    let db = open(
        Config::new()
            .path(dir.path().join("m.db"))
            .journal_size_limit(4096)
            .alert_window(Duration::from_millis(300))
            .on_alert(on_alert),
    )?;
    let wal = |seen: &Mutex<Vec<Alert>>| {
        seen.lock()
            .expect("alerts")
            .iter()
            .filter(|a| matches!(a, Alert::WalOverLimit { bytes, limit: 4096 } if *bytes > 4096))
            .count()
    };
    assert!(db.report().wal_bytes > 4096);
    // No explicit check: the next statement after the window runs them.
    thread::sleep(Duration::from_millis(350));
    db.read(|c| lookup(c, 1).map(drop))?;
    assert_eq!(wal(&seen), 1);
    db.read(|c| lookup(c, 1).map(drop))?;
    db.check_alerts();
    assert_eq!(wal(&seen), 1, "not again within the window");
    Ok(())
}

fn keys(value: &serde_json::Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn report_serialises_with_the_documented_fields() -> Result<()> {
    let db = open(Config::new().slow_query_threshold(Duration::ZERO))?;
    db.register_cache(EntityCache::<i64, String>::builder("values"))?;
    db.read(|c| lookup(c, 1).map(drop))?;
    let json = serde_json::to_value(db.report()).expect("serialise");
    let mut expected = BTreeSet::from([
        "monitoring",
        "uptime_us",
        "pool",
        "statement_cache",
        "caches",
        "writes",
        "queries",
        "slow_queries",
        "slow_queries_total",
        "alerts_fired",
        "wal_bytes",
        "jobs",
        "trends",
        "instances",
    ]);
    // The shared cache tier's counters, with the feature that has one.
    if cfg!(feature = "redis") {
        expected.insert("shared_tier");
    }
    assert_eq!(keys(&json), expected);
    assert_eq!(
        keys(&json["trends"]),
        BTreeSet::from(["window_us", "completed_windows", "statements", "caches"])
    );
    assert_eq!(
        json["jobs"],
        serde_json::Value::Null,
        "no queue used: no jobs section"
    );
    assert_eq!(
        json["instances"],
        serde_json::Value::Null,
        "no instances: no change-log section"
    );

    assert_eq!(
        keys(&json["pool"]),
        BTreeSet::from(["max_size", "size", "idle", "waits", "wait_time_us"])
    );
    assert_eq!(
        keys(&json["statement_cache"]),
        BTreeSet::from(["capacity", "hits", "misses", "hit_rate"])
    );
    assert_eq!(
        keys(&json["writes"]),
        BTreeSet::from([
            "commits",
            "writes",
            "failed_writes",
            "failed_commits",
            "max_group",
            "mean_group",
        ])
    );
    assert_eq!(
        keys(&json["queries"][0]),
        BTreeSet::from([
            "sql",
            "calls",
            "rows",
            "total_us",
            "mean_us",
            "p50_us",
            "p95_us",
            "p99_us",
            "max_us",
            "fullscan_steps",
            "sorts",
            "autoindexes",
            "prepares",
        ])
    );
    assert_eq!(
        keys(&json["slow_queries"][0]),
        BTreeSet::from(["seq", "sql", "duration_us", "params", "plan", "at_unix_ms"])
    );
    assert_eq!(json["caches"][0]["name"], "values");
    assert_eq!(json["statement_cache"]["capacity"], 128);
    assert_eq!(json["writes"]["commits"], 1);
    assert!(json["queries"][0]["total_us"].as_f64().expect("a number") > 0.0);
    // Once the queue is used, the report has its section.
    db.jobs()?;
    let json = serde_json::to_value(db.report()).expect("serialise");
    assert_eq!(
        keys(&json["jobs"]),
        BTreeSet::from(["queues", "kinds", "enqueued", "oldest_pending_age_us"])
    );
    Ok(())
}

#[test]
fn delta_of_two_snapshots_is_the_window() -> Result<()> {
    let db = open(Config::new().slow_query_threshold(Duration::from_millis(5)))?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("values"))?;
    let load = |c: &Connection, id: &i64| -> Result<Option<String>> { lookup(c, *id).map(Some) };
    db.read(|c| {
        for id in 1..=5 {
            lookup(c, id)?;
        }
        c.query_row(SLOW, [0], |r| r.get::<_, i64>(0))?;
        Ok(())
    })?;
    db.cached(&cache, &1, load)?;
    let earlier = db.report();

    db.read(|c| {
        for id in 1..=3 {
            lookup(c, id)?;
        }
        c.query_row(SLOW, [1], |r| r.get::<_, i64>(0))?;
        Ok(())
    })?;
    db.cached(&cache, &1, load)?;
    db.cached(&cache, &2, load)?;
    db.write(|c| Ok(c.execute("DELETE FROM t WHERE id = 200", []).map(drop)?))?;
    let later = db.report();
    let d = later.delta(&earlier);

    assert!(d.uptime_us > 0.0 && d.uptime_us < later.uptime_us);
    let by_id = query(&d, BY_ID);
    assert_eq!(
        (by_id.calls, by_id.rows),
        (3 + 1, 3 + 1),
        "three lookups and a cache load"
    );
    assert_eq!(by_id.prepares, 0, "prepared before the window");
    let all = query(&later, BY_ID);
    assert!(by_id.total_us < all.total_us);
    assert!(by_id.max_us <= all.max_us * 1.01);
    assert_eq!(query(&d, SLOW).calls, 1);
    assert!(
        d.queries
            .iter()
            .all(|q| q.sql != "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, g INT)"),
        "statements that did not run in the window are left out"
    );
    assert_eq!(d.slow_queries_total, 1);
    assert_eq!(d.slow_queries.len(), 1);
    assert!(d.slow_queries[0].seq > earlier.slow_queries[0].seq);
    assert_eq!((d.writes.stats.commits, d.writes.stats.writes), (1, 1));
    assert_eq!(d.writes.mean_group, 1.0);
    let values = &d.caches[0];
    assert_eq!((values.hits, values.misses, values.loads), (1, 1, 1));
    assert_eq!(values.hit_rate, 0.5);
    assert_eq!(d.statement_cache.misses, 2, "the slow query and the DELETE");
    assert_eq!(
        d.statement_cache.hits + d.statement_cache.misses,
        d.queries.iter().map(|q| q.calls).sum::<u64>()
    );
    Ok(())
}

#[test]
fn monitoring_off_reports_no_statements() -> Result<()> {
    let (seen, on_alert) = collector();
    let db = open(
        Config::new()
            .monitoring(false)
            .slow_query_threshold(Duration::ZERO)
            .on_alert(on_alert),
    )?;
    db.read(|c| lookup(c, 1).map(drop))?;
    db.check_alerts();
    let r = db.report();
    assert!(!r.monitoring);
    assert!(r.queries.is_empty() && r.slow_queries.is_empty());
    assert_eq!(r.slow_queries_total, 0);
    assert_eq!(
        r.writes.stats.commits, 1,
        "the write path is still reported"
    );
    assert!(seen.lock().expect("alerts").is_empty());
    Ok(())
}

/// The `metrics` facade gets the same figures (feature `metrics`).
#[cfg(feature = "metrics")]
mod metrics_export {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    use super::*;

    /// Every series by `name{label=value,...}`: counters' totals, gauges' last values and
    /// histograms' sample counts, all as `f64`.
    #[derive(Default)]
    struct Series(Mutex<HashMap<String, Arc<Value>>>);

    #[derive(Default)]
    struct Value(AtomicU64);

    impl Value {
        fn get(&self) -> f64 {
            f64::from_bits(self.0.load(Ordering::Relaxed))
        }
        fn put(&self, v: f64) {
            self.0.store(v.to_bits(), Ordering::Relaxed);
        }
    }

    impl CounterFn for Value {
        fn increment(&self, value: u64) {
            self.put(self.get() + value as f64);
        }
        fn absolute(&self, value: u64) {
            self.put(value as f64);
        }
    }

    impl GaugeFn for Value {
        fn increment(&self, value: f64) {
            self.put(self.get() + value);
        }
        fn decrement(&self, value: f64) {
            self.put(self.get() - value);
        }
        fn set(&self, value: f64) {
            self.put(value);
        }
    }

    impl HistogramFn for Value {
        fn record(&self, _value: f64) {
            self.put(self.get() + 1.0);
        }
    }

    impl Series {
        fn value(&self, key: &Key) -> Arc<Value> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::clone(self.0.lock().expect("series").entry(name).or_default())
        }

        fn get(&self, name: &str) -> f64 {
            let series = self.0.lock().expect("series");
            series
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {:?}", series.keys()))
                .get()
        }
    }

    impl Recorder for Series {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.value(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.value(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.value(key))
        }
    }

    #[test]
    fn counters_reach_the_recorder() -> Result<()> {
        let series = Series::default();
        let db = metrics::with_local_recorder(&series, || -> Result<Db> {
            let db = open(Config::new().slow_query_threshold(Duration::ZERO))?;
            for id in 1..=7 {
                db.read(|c| lookup(c, id).map(drop))?;
            }
            db.report();
            Ok(db)
        })?;
        let path = db.path().display().to_string();
        let sql = |name: &str| format!("{name}{{db={path},sql={BY_ID}}}");
        let db_only = |name: &str| format!("{name}{{db={path}}}");
        assert_eq!(series.get(&sql("strata_query_calls_total")), 7.0);
        assert_eq!(series.get(&sql("strata_query_rows_total")), 7.0);
        assert_eq!(series.get(&sql("strata_query_duration_seconds")), 7.0);
        assert_eq!(series.get(&sql("strata_query_fullscan_steps_total")), 0.0);
        // The seed's CREATE TABLE and INSERT, then the lookup: each prepared once.
        assert_eq!(
            series.get(&db_only("strata_statement_cache_misses_total")),
            3.0
        );
        assert_eq!(
            series.get(&db_only("strata_statement_cache_hits_total")),
            (ROWS - 1 + 6) as f64
        );
        assert_eq!(series.get(&db_only("strata_write_commits_total")), 1.0);
        assert!(series.get(&db_only("strata_slow_queries_total")) >= 7.0);
        assert_eq!(
            series.get(&format!("strata_alerts_total{{db={path},kind=slow_query}}")),
            2.0,
            "INSERT and lookup; 200 INSERTs pushed the CREATE TABLE out of the 100-entry log"
        );
        assert_eq!(series.get(&db_only("strata_pool_size")), 1.0);
        Ok(())
    }
}
