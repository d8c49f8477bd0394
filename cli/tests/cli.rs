//! The `strata` binary as a user runs it: demo, load (JSON, baselines), migrate, the
//! inspecting commands, and one-line errors with the right exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use strata::{Error, Result};

fn strata(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .map_err(Error::closure)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(Error::closure)
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Asserts a failed run: the exit code, and stderr as exactly one line containing `expected`.
fn assert_one_line_error(out: &Output, code: i32, expected: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let line = err.trim_end();
    assert!(!line.contains('\n'), "more than one line: {err:?}");
    assert!(line.starts_with("strata: "), "{line}");
    for e in expected {
        assert!(line.contains(e), "`{e}` missing from: {line}");
    }
}

#[test]
fn demo_prints_every_report_section() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("demo.db");
    let out = strata(&[
        "demo",
        "--db",
        arg(&db),
        "--scale",
        "0.01",
        "--duration",
        "1s",
        "--quiet",
    ])?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("seeded 100 users"), "{stdout}");
    for section in [
        "Throughput",
        "Latency per operation",
        "Caches",
        "Statement cache",
        "Writes",
        "Top statements",
        "Trends",
        "Index advice",
    ] {
        assert!(
            stdout.contains(&format!("\n{section}\n")),
            "{section} missing:\n{stdout}"
        );
    }
    for op in [
        "get_user",
        "categories_of",
        "expenses_page",
        "expenses_between",
        "daily_metrics",
        "suggest_category",
        "create_expense",
        "update_expense",
        "create_category",
    ] {
        assert!(stdout.contains(op), "{op} missing:\n{stdout}");
    }
    Ok(())
}

/// A `load --iterations` run on `db` writing `json`, with extra arguments.
fn load(db: &Path, json: &Path, extra: &[&str]) -> Result<Output> {
    let mut args = vec![
        "load",
        "--db",
        arg(db),
        "--scale",
        "0.01",
        "--threads",
        "2",
        "--iterations",
        "2000",
        "--json",
        arg(json),
        "-q",
    ];
    args.extend_from_slice(extra);
    strata(&args)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(Error::closure)?;
    serde_json::from_str(&text).map_err(Error::closure)
}

/// The report with every operation's throughput multiplied and p99 divided by `factor`.
fn doctored(report: &Value, factor: f64, path: &Path) -> Result<PathBuf> {
    let mut report = report.clone();
    let ops = report["operations"]
        .as_object_mut()
        .expect("operations is an object");
    for op in ops.values_mut() {
        let throughput = op["throughput"].as_f64().expect("throughput");
        let p99 = op["p99_us"].as_f64().expect("p99_us");
        op["throughput"] = Value::from(throughput * factor);
        op["p99_us"] = Value::from(p99 / factor);
    }
    std::fs::write(path, report.to_string()).map_err(Error::closure)?;
    Ok(path.to_owned())
}

#[test]
fn load_runs_as_two_processes_on_one_file() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("shared.db");
    let out = strata(&[
        "load",
        "--db",
        arg(&db),
        "--scale",
        "0.01",
        "--threads",
        "1",
        "--iterations",
        "300",
        "-q",
        "--processes",
        "2",
    ])?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for process in ["== process 1 of 2", "== process 2 of 2"] {
        assert!(stdout.contains(process), "{process} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("\nInstances\n").count(), 2, "{stdout}");
    Ok(())
}

#[test]
fn load_writes_json_and_compares_with_baselines() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("load.db");
    let json = dir.path().join("run.json");
    let out = load(&db, &json, &[])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = read_json(&json)?;
    for field in [
        "format",
        "strata_version",
        "database",
        "config",
        "dataset",
        "elapsed_ms",
        "total_ops",
        "errors",
        "throughput",
        "operations",
        "phases",
        "caches",
        "writes",
        "report",
    ] {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    assert_eq!(report["config"]["iterations"], 2000);
    assert_eq!(
        report["total_ops"].as_u64().unwrap() + report["errors"].as_u64().unwrap(),
        2000
    );
    let ops = report["operations"].as_object().expect("operations");
    assert_eq!(ops.len(), 9, "{ops:?}");
    for (name, op) in ops {
        for field in [
            "class",
            "count",
            "errors",
            "throughput",
            "mean_us",
            "p50_us",
            "p95_us",
            "p99_us",
            "max_us",
        ] {
            assert!(op.get(field).is_some(), "{name}.{field} missing");
        }
        assert!(op["count"].as_u64().unwrap() > 0, "{name} never ran");
    }
    for field in ["commits", "writes", "max_group", "mean_group"] {
        assert!(report["writes"].get(field).is_some(), "writes.{field}");
    }

    // Against a baseline a thousand times slower, nothing regressed (debug builds on a busy
    // machine vary by more than ten times in p99 from run to run).
    let slow = doctored(&report, 0.001, &dir.path().join("slow.json"))?;
    let out = load(&db, &json, &["--baseline", arg(&slow), "--threshold", "10"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Baseline comparison"));

    // Against a baseline a thousand times faster, every operation is named.
    let fast = doctored(&report, 1000.0, &dir.path().join("fast.json"))?;
    let out = load(&db, &json, &["--baseline", arg(&fast), "--threshold", "10"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    for op in ["get_user", "create_expense", "expenses_page"] {
        assert!(
            err.contains(&format!("strata: {op} got slower by more than 10%")),
            "{op} not named: {err}"
        );
    }
    Ok(())
}

/// A baseline whose operations the run does not have (another workload's report) compared
/// nothing: that fails with one clear line instead of passing, and the run's report is shown.
#[test]
fn load_fails_against_a_baseline_sharing_no_operation() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("load.db");
    let json = dir.path().join("run.json");
    let other = dir.path().join("other.json");
    let op = r#"{"count": 100, "throughput": 1000.0, "p99_us": 50.0}"#;
    std::fs::write(
        &other,
        format!(r#"{{"operations": {{"get_order": {op}, "list_orders": {op}}}}}"#),
    )
    .map_err(Error::closure)?;
    let out = load(
        &db,
        &json,
        &["--baseline", arg(&other), "--threshold", "10"],
    )?;
    assert_one_line_error(
        &out,
        1,
        &[
            "shares no operation",
            "get_order, list_orders",
            "get_user",
            arg(&other),
        ],
    );
    assert!(text(&out.stdout).contains("Latency per operation"));
    Ok(())
}

#[test]
fn phases_run_in_order() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("phases.db");
    let json = dir.path().join("phases.json");
    let out = strata(&[
        "load",
        "--db",
        arg(&db),
        "--scale",
        "0.01",
        "--phases",
        "ramp:300ms:1,peak:300ms:2",
        "--json",
        arg(&json),
        "-q",
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = read_json(&json)?;
    let phases: Vec<(&str, u64)> = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["threads"].as_u64().unwrap()))
        .collect();
    assert_eq!(phases, [("ramp", 1), ("peak", 2)]);
    Ok(())
}

#[test]
fn migrate_creates_and_reports() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("m.db");
    let out = strata(&["migrate", "--db", arg(&db)])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("migrated from none to V2"));
    let out = strata(&["migrate", "--db", arg(&db)])?;
    assert!(text(&out.stdout).contains("up to date at V2"));
    let nowhere = dir.path().join("no/such/dir/m.db");
    let out = strata(&["migrate", "--db", arg(&nowhere)])?;
    assert_one_line_error(&out, 1, &["parent directory does not exist", arg(&nowhere)]);
    Ok(())
}

#[test]
fn bad_arguments_print_one_clear_line() -> Result<()> {
    let dir = tempdir()?;
    let missing = dir.path().join("missing.json");
    let db = dir.path().join("unused.db");

    // A missing input file: the problem and the path, nothing created, nothing run.
    let out = strata(&[
        "load",
        "--db",
        arg(&db),
        "--iterations",
        "10",
        "--baseline",
        arg(&missing),
    ])?;
    assert_one_line_error(&out, 1, &["no such file", arg(&missing)]);
    assert!(!db.exists());
    let missing_db = dir.path().join("missing.db");
    for command in ["health", "optimize", "advise"] {
        let out = strata(&[command, "--db", arg(&missing_db)])?;
        assert_one_line_error(&out, 1, &["no such file", arg(&missing_db)]);
        assert!(!missing_db.exists(), "{command} created the file");
    }

    // Usage errors: exit 2, one line.
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["load", "--phases", "ramp-10s"],
            &["phase", "name:duration:threads"],
        ),
        (&["load", "--phases", "ramp:10:2"], &["phase", "unit"]),
        (
            &["load", "--baseline", "b.json", "--threshold", "abc"],
            &["--threshold", "not a number"],
        ),
        (&["load", "--duration", "soon"], &["--duration"]),
        (
            &["load", "--read-ratio", "2"],
            &["--read-ratio", "within 0 and 1"],
        ),
        (&["demo", "--no-such-flag"], &["--no-such-flag"]),
    ];
    for (args, expected) in cases {
        let out = strata(args)?;
        assert_one_line_error(&out, 2, expected);
    }
    let out = strata(&["health"])?;
    assert_one_line_error(&out, 2, &["--db"]);
    Ok(())
}

#[test]
fn help_everywhere() -> Result<()> {
    for command in [
        &[][..],
        &["demo"],
        &["load"],
        &["migrate"],
        &["advise"],
        &["optimize"],
        &["health"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = strata(&args)?;
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage: strata"), "{args:?}");
    }
    Ok(())
}

fn file_hash(path: &Path) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).map_err(Error::closure)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Ok(h.finish())
}

#[test]
fn advise_plans_a_workload_without_touching_the_file() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("advise.db");
    assert!(strata(&["migrate", "--db", arg(&db)])?.status.success());
    {
        let conn = strata::rusqlite::Connection::open(&db)?;
        conn.execute_batch("DROP INDEX idx_categories_of_user; PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    let workload = dir.path().join("workload.sql");
    std::fs::write(
        &workload,
        "SELECT id, name FROM categories WHERE user_id = 7 ORDER BY name;\n\
         DELETE FROM categories WHERE user_id = 7;\n",
    )
    .map_err(Error::closure)?;
    let before = file_hash(&db)?;
    let out = strata(&["advise", "--db", arg(&db), "--workload", arg(&workload)])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("CREATE INDEX"), "{stdout}");
    assert!(stdout.contains("categories"), "{stdout}");
    assert_eq!(file_hash(&db)?, before, "advise changed the database file");
    let conn = strata::rusqlite::Connection::open(&db)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM categories", [], |r| r.get(0))?;
    assert_eq!(n, 0, "the workload's DELETE was planned, never executed");
    Ok(())
}

#[test]
fn health_fails_on_a_corrupt_file() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("health.db");
    assert!(strata(&["migrate", "--db", arg(&db)])?.status.success());
    let out = strata(&["health", "--db", arg(&db)])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Garbage over every page but the header.
    let mut bytes = std::fs::read(&db).map_err(Error::closure)?;
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).map_err(Error::closure)?;
    let out = strata(&["health", "--db", arg(&db)])?;
    assert_ne!(out.status.code(), Some(0), "a corrupt file passed");
    Ok(())
}

/// Every schema object of the file at `path` as (type, name, sql), sorted; not the planner's
/// statistics tables, which `optimize` exists to fill.
fn schema_of(path: &Path) -> Result<Vec<(String, String, Option<String>)>> {
    let conn = strata::rusqlite::Connection::open(path)?;
    let mut stmt = conn.prepare(
        "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' \
         ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

#[test]
fn inspecting_commands_never_migrate_a_service_database() -> Result<()> {
    let dir = tempdir()?;
    let db = dir.path().join("service.db");
    {
        // A service's own `users`, unlike the tracker's, and no refinery history.
        let conn = strata::rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "CREATE TABLE users (uid TEXT PRIMARY KEY, handle TEXT);
             INSERT INTO users VALUES ('u-1', 'ada');",
        )?;
    }
    let before = schema_of(&db)?;
    let workload = dir.path().join("workload.sql");
    std::fs::write(&workload, "SELECT uid FROM users WHERE handle = 'ada';\n")
        .map_err(Error::closure)?;
    for args in [
        vec!["advise", "--db", arg(&db), "--workload", arg(&workload)],
        vec!["advise", "--db", arg(&db)],
        vec!["optimize", "--db", arg(&db)],
        vec!["health", "--db", arg(&db)],
    ] {
        let out = strata(&args)?;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(schema_of(&db)?, before, "{args:?} changed the schema");
    }
    Ok(())
}
