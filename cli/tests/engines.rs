//! `strata load --engine raw|both` and `--html`: the raw engine runs the same workload, both
//! engines run on their own copies and are compared, and the HTML page holds the charts' data.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use strata::{Error, Result};

fn strata(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .map_err(Error::closure)
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn succeeded(out: &Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(Error::closure)?;
    serde_json::from_str(&text).map_err(Error::closure)
}

/// The JSON the page embeds for its charts.
fn embedded(html: &str) -> Result<Value> {
    let open = "<script type=\"application/json\" id=\"load-data\">";
    let start = html.find(open).ok_or_else(|| Error::closure("no data"))? + open.len();
    let len = html[start..]
        .find("</script>")
        .ok_or_else(|| Error::closure("data not closed"))?;
    serde_json::from_str(&html[start..start + len].replace("<\\/", "</")).map_err(Error::closure)
}

const OPERATIONS: [&str; 9] = [
    "get_user",
    "categories_of",
    "expenses_page",
    "expenses_between",
    "daily_metrics",
    "suggest_category",
    "create_expense",
    "update_expense",
    "create_category",
];

#[test]
fn both_engines_run_on_copies_and_are_compared() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let (db, json, html) = (
        dir.path().join("load.db"),
        dir.path().join("run.json"),
        dir.path().join("run.html"),
    );
    let out = strata(&[
        "load",
        "--engine",
        "both",
        "--db",
        arg(&db),
        "--scale",
        "0.01",
        "--threads",
        "4",
        "--duration",
        "1200ms",
        "--json",
        arg(&json),
        "--html",
        arg(&html),
        "--quiet",
    ])?;
    let stdout = succeeded(&out)?;
    assert!(stdout.contains("\nstrata vs raw"), "{stdout}");
    assert!(stdout.contains("\nThroughput (raw engine)\n"), "{stdout}");

    let report = read_json(&json)?;
    assert_eq!(report["engine"], "strata");
    let raw = &report["raw"];
    assert_eq!(raw["engine"], "raw");
    assert_eq!(raw["caches"].as_array().map(Vec::len), Some(0));
    assert!(raw["writes"]["commits"].as_u64() > Some(0), "{raw}");
    assert_eq!(raw["errors"], 0, "{}", raw["first_errors"]);
    assert_eq!(report["errors"], 0, "{}", report["first_errors"]);
    for op in OPERATIONS {
        for run in [&report, raw] {
            assert!(run["operations"][op]["count"].as_u64() > Some(0), "{op}");
        }
        let x = &report["versus"]["operations"][op];
        for field in ["throughput", "p50", "p99"] {
            assert!(x[field].as_f64() > Some(0.0), "{op}.{field}: {x}");
        }
    }
    // Both engines ran their suggest_category jobs during the run, none failed.
    assert!(stdout.contains("\nJob queue (raw engine)\n"), "{stdout}");
    assert!(stdout.contains("suggest_category jobs: strata"), "{stdout}");
    for run in [&report, raw] {
        let jobs = &run["jobs"];
        assert!(
            jobs["completed"].as_u64() > Some(0),
            "{}: {jobs}",
            run["engine"]
        );
        assert_eq!(jobs["failed"], 0, "{jobs}");
    }
    let total = &report["versus"]["total"];
    let expected =
        report["throughput"].as_f64().unwrap_or(0.0) / raw["throughput"].as_f64().unwrap_or(1.0);
    let throughput = total["throughput"].as_f64().unwrap_or(0.0);
    assert!(
        (throughput - expected).abs() < 0.01,
        "{total} vs {expected}"
    );
    for run in [&report, raw] {
        let samples = run["samples"].as_array().cloned().unwrap_or_default();
        assert!(!samples.is_empty(), "{run}");
        let ops: u64 = samples.iter().filter_map(|s| s["ops"].as_u64()).sum();
        assert!(ops > 0);
    }
    // Both ran on copies, removed afterwards; the seeded file itself saw no workload.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .map_err(Error::closure)?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(!names.iter().any(|n| n.contains("-copy")), "{names:?}");

    let page = std::fs::read_to_string(&html).map_err(Error::closure)?;
    for chart in [
        "throughput",
        "latency",
        "hit_rate",
        "group_commit",
        "versus",
    ] {
        assert!(
            page.contains(&format!("data-chart=\"{chart}\"")),
            "{chart} missing"
        );
    }
    for engine in ["strata", "raw"] {
        assert!(
            page.contains(&format!("data-series=\"{engine}\"")),
            "{engine}"
        );
        assert!(page.contains(&format!("data-op=\"get_user\" data-engine=\"{engine}\"")));
    }
    assert!(
        !page.contains("http://") || !page.contains("<script src"),
        "no network"
    );
    let data = embedded(&page)?;
    assert_eq!(data["versus"], report["versus"]);
    assert_eq!(data["samples"], report["samples"]);
    assert_eq!(data["raw"]["samples"], raw["samples"]);
    Ok(())
}

/// Expenses without a category among those created after the seed (ids above `seeded`).
fn uncategorized_after(db: &Path, seeded: i64) -> Result<u64> {
    let conn = rusqlite::Connection::open(db).map_err(Error::closure)?;
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM expenses WHERE id > ?1 AND category_id IS NULL",
            [seeded],
            |r| r.get(0),
        )
        .map_err(Error::closure)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[test]
fn raw_engine_runs_alone_and_demo_writes_a_page() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let (db, json) = (dir.path().join("raw.db"), dir.path().join("raw.json"));
    let out = strata(&[
        "load",
        "--engine",
        "raw",
        "--db",
        arg(&db),
        "--scale",
        "0.01",
        "--threads",
        "2",
        "--iterations",
        "2000",
        "--json",
        arg(&json),
        "--quiet",
    ])?;
    let stdout = succeeded(&out)?;
    assert!(stdout.contains("engine: raw"), "{stdout}");
    let report = read_json(&json)?;
    assert_eq!(report["engine"], "raw");
    assert_eq!(report["total_ops"], 2000, "{}", report["first_errors"]);
    assert!(report.get("versus").is_none());
    // Every write was one transaction of its own.
    assert_eq!(report["writes"]["commits"], report["writes"]["writes"]);
    // The raw engine's worker ran the jobs its create_expense enqueued: every description has
    // a keyword, so the expenses still without a category are exactly those whose job is left.
    let jobs = &report["jobs"];
    assert_eq!(jobs["failed"], 0, "{jobs}");
    let seeded = report["dataset"]["expenses"].as_i64().unwrap_or(i64::MAX);
    let (completed, left) = (jobs["completed"].as_u64(), jobs["left"].as_u64());
    assert!(completed.unwrap_or(0) + left.unwrap_or(0) > 0, "{jobs}");
    assert_eq!(Some(uncategorized_after(&db, seeded)?), left, "{jobs}");

    let html = dir.path().join("demo.html");
    let out = strata(&[
        "demo",
        "--db",
        arg(&dir.path().join("demo.db")),
        "--scale",
        "0.01",
        "--duration",
        "1100ms",
        "--html",
        arg(&html),
        "--quiet",
    ])?;
    succeeded(&out)?;
    let page = std::fs::read_to_string(&html).map_err(Error::closure)?;
    let data = embedded(&page)?;
    assert_eq!(data["engine"], "strata");
    assert!(data.get("raw").is_none());
    let rates: Vec<f64> = data["samples"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["hit_rate"].as_f64())
        .collect();
    assert!(!rates.is_empty() && rates.iter().all(|r| (0.0..=1.0).contains(r)));
    assert!(page.contains("data-chart=\"hit_rate\""));
    Ok(())
}

#[test]
fn engine_must_be_known() -> Result<()> {
    let out = strata(&["load", "--engine", "diesel"])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("diesel") && err.contains("strata, raw, both"),
        "{err}"
    );
    Ok(())
}
