//! Trends in monitoring: windows roll with the (manual) trend clock, the trend maths over them,
//! `Alert::Regression` firing for a statement that got slower and not otherwise, and the
//! report (and its JSON) carrying statement and cache trends. No sleeps: the windows follow a
//! `ManualClock`, the statements' durations are real (a scan over a table that grew).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::cache::{EntityCache, ManualClock};
use strata::monitor::{Alert, Report, StatementTrend};
use strata::{Config, Db, Result};

const WINDOW: Duration = Duration::from_secs(60);
const BY_ID: &str = "SELECT v FROM t WHERE id = ?1";
/// A full scan: its time follows the table's size.
const SCAN: &str = "SELECT count(*) FROM t WHERE g = ?1";
/// Traced runs per window of the scan: enough for the regression check (it needs 10).
const SCANS: usize = 20;

struct Fixture {
    db: Db,
    clock: Arc<ManualClock>,
    alerts: Arc<Mutex<Vec<Alert>>>,
    _dir: tempfile::TempDir,
}

/// A WAL file database with a table `t` of `rows` rows, every closure traced (exact counts),
/// its trend windows on a manual clock, its alerts collected.
fn open(rows: i64, config: impl FnOnce(Config) -> Config) -> Result<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new());
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&alerts);
    let builder = Db::builder()
        .path(dir.path().join("trends.db"))
        .trace_budget(1.0)
        .trend_window(WINDOW)
        .trend_clock(clock.clone())
        .on_alert(move |a: &Alert| sink.lock().expect("alerts").push(a.clone()));
    let db = config(builder).build()?;
    db.write(|c| {
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, g INT)")?;
        Ok(())
    })?;
    grow(&db, rows)?;
    Ok(Fixture {
        db,
        clock,
        alerts,
        _dir: dir,
    })
}

/// Adds `rows` rows to `t`.
fn grow(db: &Db, rows: i64) -> Result<()> {
    db.write(|c| {
        let mut insert = c.prepare("INSERT INTO t (v, g) VALUES ('v', ?1)")?;
        for i in 0..rows {
            insert.execute([i % 4])?;
        }
        Ok(())
    })
}

fn lookups(db: &Db, n: usize) -> Result<()> {
    for i in 0..n {
        db.read(|c| {
            let v: Option<String> = c
                .prepare_cached(BY_ID)?
                .query_row([i as i64 % 10 + 1], |r| r.get(0))
                .ok();
            Ok(v)
        })?;
    }
    Ok(())
}

fn scans(db: &Db, n: usize) -> Result<()> {
    for i in 0..n {
        db.read(|c| {
            Ok(c.prepare_cached(SCAN)?
                .query_row([i as i64 % 4], |r| r.get::<_, i64>(0))?)
        })?;
    }
    Ok(())
}

fn trend<'a>(report: &'a Report, sql: &str) -> &'a StatementTrend {
    report
        .trends
        .statements
        .iter()
        .find(|s| s.sql == sql)
        .unwrap_or_else(|| panic!("{sql} has no trend: {:#?}", report.trends.statements))
}

fn regressions(f: &Fixture) -> Vec<Alert> {
    f.alerts
        .lock()
        .expect("alerts")
        .iter()
        .filter(|a| matches!(a, Alert::Regression { .. }))
        .cloned()
        .collect()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn windows_roll_with_the_clock_and_the_trend_compares_the_last_with_the_earlier() -> Result<()> {
    let f = open(10, |c| c)?;
    for calls in [10, 20, 30] {
        lookups(&f.db, calls)?;
        f.clock.advance(WINDOW);
    }
    // The window in progress is not part of any trend.
    lookups(&f.db, 1000)?;
    let report = f.db.report();
    assert_eq!(report.trends.completed_windows, 3);
    assert_eq!(report.trends.window_us, 60e6);
    let t = trend(&report, BY_ID);
    let calls: Vec<u64> = t.windows.iter().map(|w| w.calls).collect();
    assert_eq!(calls, [10, 20, 30]);
    let starts: Vec<f64> = t.windows.iter().map(|w| w.start_us).collect();
    assert_eq!(starts, [0.0, 60e6, 120e6]);
    assert!(t.windows.iter().all(|w| w.p95_us > 0.0 && w.mean_us > 0.0));
    // Calls per second: last 30/60, baseline the mean of 10/60 and 20/60, +10/60 a window.
    assert!(close(t.calls_per_s.last, 0.5), "{:?}", t.calls_per_s);
    assert!(close(t.calls_per_s.baseline, 0.25), "{:?}", t.calls_per_s);
    assert!(close(t.calls_per_s.change, 1.0), "{:?}", t.calls_per_s);
    assert!(
        close(t.calls_per_s.slope, 10.0 / 60.0),
        "{:?}",
        t.calls_per_s
    );
    assert!(t.p95_us.last.is_some() && t.p95_us.baseline.is_some());

    // Only the last `trend_windows` are kept: with 2, the oldest went.
    let f = open(10, |c| c.trend_windows(2))?;
    for calls in [10, 20, 30] {
        lookups(&f.db, calls)?;
        f.clock.advance(WINDOW);
    }
    let report = f.db.report();
    let calls: Vec<u64> = trend(&report, BY_ID)
        .windows
        .iter()
        .map(|w| w.calls)
        .collect();
    assert_eq!(calls, [20, 30]);
    Ok(())
}

#[test]
fn a_window_without_calls_counts_as_zero_throughput() -> Result<()> {
    let f = open(10, |c| c)?;
    lookups(&f.db, 12)?;
    f.clock.advance(WINDOW * 2);
    lookups(&f.db, 6)?;
    f.clock.advance(WINDOW);
    let report = f.db.report();
    let t = trend(&report, BY_ID);
    assert_eq!(t.windows.len(), 2, "the empty window has no figures");
    // 12, 0, 6 calls: baseline 6 a window, last 6.
    assert!(close(t.calls_per_s.baseline, 0.1), "{:?}", t.calls_per_s);
    assert!(close(t.calls_per_s.change, 0.0), "{:?}", t.calls_per_s);
    Ok(())
}

/// Three windows of scans over a small table, then one over a table `growth` rows larger.
/// Three earlier windows are the fewest a baseline needs, so only the last window is checked:
/// on a loaded machine a steady statement's p95 over 20 runs can jump by more than 50% (two
/// preempted runs), which is a regression these tests are not about.
fn scan_windows(f: &Fixture, growth: i64) -> Result<()> {
    for _ in 0..3 {
        scans(&f.db, SCANS)?;
        f.clock.advance(WINDOW);
    }
    grow(&f.db, growth)?;
    scans(&f.db, SCANS)?;
    f.clock.advance(WINDOW);
    Ok(())
}

#[test]
fn a_statement_that_got_slower_raises_a_regression() -> Result<()> {
    let f = open(100, |c| c)?;
    scan_windows(&f, 50_000)?;
    assert!(regressions(&f).is_empty(), "the slow window is still open");
    // Its first run in the next window closes the slow one: the alert fires from the read.
    scans(&f.db, 1)?;
    let fired = regressions(&f);
    let [Alert::Regression {
        sql,
        baseline_p95,
        p95,
        window,
    }] = fired.as_slice()
    else {
        panic!("one regression expected: {fired:?}");
    };
    assert_eq!(sql, SCAN);
    assert_eq!(*window, WINDOW);
    assert!(
        p95.as_secs_f64() > baseline_p95.as_secs_f64() * 1.5,
        "{p95:?} against {baseline_p95:?}"
    );
    let report = f.db.report();
    let t = trend(&report, SCAN);
    assert!(t.p95_us.change.is_some_and(|c| c > 0.5), "{:?}", t.p95_us);
    assert!(t.p95_us.slope.is_some_and(|s| s > 0.0), "{:?}", t.p95_us);
    assert_eq!(
        report.trends.top_movers(1).next().map(|s| s.sql.as_str()),
        Some(SCAN)
    );
    assert_eq!(
        regressions(&f).len(),
        1,
        "once per statement and alert window"
    );
    Ok(())
}

#[test]
fn a_report_closes_the_windows_of_statements_that_stopped() -> Result<()> {
    let f = open(100, |c| c)?;
    scan_windows(&f, 50_000)?;
    let _ = f.db.report();
    let fired = regressions(&f);
    assert!(
        matches!(fired.as_slice(), [Alert::Regression { sql, .. }] if sql == SCAN),
        "{fired:?}"
    );
    Ok(())
}

#[test]
fn no_regression_when_faster_too_early_or_under_the_threshold() -> Result<()> {
    // Faster: the table shrank.
    let f = open(20_000, |c| c)?;
    for _ in 0..3 {
        scans(&f.db, SCANS)?;
        f.clock.advance(WINDOW);
    }
    f.db.write(|c| Ok(c.execute_batch("DELETE FROM t WHERE id > 100")?))?;
    scans(&f.db, SCANS)?;
    f.clock.advance(WINDOW);
    let report = f.db.report();
    assert!(regressions(&f).is_empty(), "{:?}", regressions(&f));
    assert!(trend(&report, SCAN).p95_us.change.is_some_and(|c| c < 0.0));

    // Slower, but with two earlier windows only: no baseline yet.
    let f = open(100, |c| c)?;
    for _ in 0..2 {
        scans(&f.db, SCANS)?;
        f.clock.advance(WINDOW);
    }
    grow(&f.db, 50_000)?;
    scans(&f.db, SCANS)?;
    f.clock.advance(WINDOW);
    let report = f.db.report();
    assert!(regressions(&f).is_empty(), "{:?}", regressions(&f));
    assert!(trend(&report, SCAN).p95_us.change.is_some_and(|c| c > 0.5));

    // Slower, by less than a threshold of a million times.
    let f = open(100, |c| c.regression_threshold(1e6))?;
    scan_windows(&f, 50_000)?;
    let _ = f.db.report();
    assert!(regressions(&f).is_empty(), "{:?}", regressions(&f));
    Ok(())
}

#[test]
fn the_report_carries_statement_and_cache_trends() -> Result<()> {
    let f = open(10, |c| c)?;
    let users =
        f.db.register_cache(EntityCache::<i64, i64>::builder("users"))?;
    // Window 0: 100 misses.
    for k in 0..100 {
        assert!(users.get(&k).is_none());
        users.insert(k, k);
    }
    lookups(&f.db, 5)?;
    f.clock.advance(WINDOW);
    // The first statement to end in window 1 cuts the caches' window 0.
    lookups(&f.db, 5)?;
    for k in 0..100 {
        assert!(users.get(&k).is_some());
    }
    f.clock.advance(WINDOW);
    let report = f.db.report();
    let cache = &report.trends.caches[0];
    assert_eq!(cache.cache, "users");
    let figures: Vec<(u64, f64)> = cache
        .windows
        .iter()
        .map(|w| (w.lookups, w.hit_rate))
        .collect();
    assert_eq!(figures, [(100, 0.0), (100, 1.0)]);
    assert_eq!(cache.hit_rate.last, Some(1.0));
    assert_eq!(cache.hit_rate.baseline, Some(0.0));
    assert_eq!(
        cache.hit_rate.change, None,
        "no change from a zero baseline"
    );
    assert!(close(cache.hit_rate.slope, 1.0));

    let json = serde_json::to_value(&report).expect("report serializes");
    let trends = &json["trends"];
    assert_eq!(trends["completed_windows"], 2);
    let statement = trends["statements"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["sql"] == BY_ID))
        .expect("the lookup's trend");
    assert_eq!(statement["windows"][1]["calls"], 5);
    assert_eq!(statement["calls_per_s"]["change"], 0.0);
    assert!(statement["p95_us"]["last"].as_f64().is_some());
    assert_eq!(
        trends["caches"][0]["hit_rate"]["change"],
        serde_json::Value::Null
    );
    // A delta keeps the later report's trends.
    let delta = report.delta(&report);
    assert_eq!(delta.trends, report.trends);
    Ok(())
}

#[test]
fn trend_settings_are_validated() -> Result<()> {
    for config in [
        Config::new().trend_window(Duration::ZERO),
        Config::new().trend_windows(1),
        Config::new().regression_threshold(-1.0),
        Config::new().regression_threshold(f64::NAN),
    ] {
        assert!(
            matches!(config.build(), Err(strata::Error::InvalidConfig { .. })),
            "accepted"
        );
    }
    Ok(())
}
