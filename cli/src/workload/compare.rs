//! Comparing a run with a saved one (`--baseline FILE --threshold PCT`): per operation,
//! throughput and p99 latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{group, LoadReport};
use strata::{Error, Result};

/// What a baseline keeps of each operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineOp {
    /// Successful calls (0 or absent: the operation is not compared).
    #[serde(default)]
    pub count: u64,
    /// Successful calls per second.
    pub throughput: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
}

/// A saved `strata load --json` report, as far as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its operations by name.
    pub operations: BTreeMap<String, BaselineOp>,
}

#[derive(Deserialize)]
struct BaselineFile {
    operations: BTreeMap<String, BaselineOp>,
}

impl Baseline {
    /// Reads a baseline written by `strata load --json`.
    pub fn read(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_owned(),
                }
            } else {
                Error::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let file: BaselineFile = serde_json::from_str(&text).map_err(|e| Error::InvalidFile {
            path: path.to_owned(),
            reason: format!("not a `strata load --json` report ({e})"),
        })?;
        let baseline = Baseline {
            path: path.to_owned(),
            operations: file.operations,
        };
        if !baseline.operations.values().any(BaselineOp::comparable) {
            return Err(Error::InvalidFile {
                path: path.to_owned(),
                reason: "the baseline has no operation with calls to compare with".into(),
            });
        }
        Ok(baseline)
    }
}

impl BaselineOp {
    /// Whether the operation had calls in the baseline: only those are compared.
    fn comparable(&self) -> bool {
        self.count > 0 || self.throughput > 0.0
    }
}

/// One operation, baseline against now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationChange {
    /// The operation's name.
    pub operation: String,
    /// Throughput in the baseline and now, calls per second.
    pub throughput: (f64, f64),
    /// p99 latency in the baseline and now, µs.
    pub p99_us: (f64, f64),
    /// What got worse by more than the threshold (`throughput`, `p99`, `no successful calls`);
    /// empty when nothing did.
    pub regressions: Vec<&'static str>,
}

impl OperationChange {
    /// Throughput change, percent (negative is slower).
    pub fn throughput_pct(&self) -> f64 {
        pct(self.throughput.0, self.throughput.1)
    }

    /// p99 change, percent (positive is slower).
    pub fn p99_pct(&self) -> f64 {
        pct(self.p99_us.0, self.p99_us.1)
    }

    /// True when this operation got slower by more than the threshold.
    pub fn regressed(&self) -> bool {
        !self.regressions.is_empty()
    }
}

/// A run against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The threshold, percent.
    pub threshold_pct: f64,
    /// The operations found in both, by name.
    pub changes: Vec<OperationChange>,
    /// Operations of the baseline that this run does not have, and the reverse.
    pub not_compared: Vec<String>,
}

/// Compares `current` with `baseline`: an operation regressed when its throughput fell, or
/// its p99 rose, by more than `threshold_pct` percent, or when it had calls in the baseline and
/// has no successful call now. A baseline that shares no operation with the run (none of its
/// operations with calls is in the run) is [`Error::InvalidFile`]: nothing compared is no pass.
pub fn compare(
    current: &LoadReport,
    baseline: &Baseline,
    threshold_pct: f64,
) -> Result<Comparison> {
    if !threshold_pct.is_finite() || threshold_pct < 0.0 {
        return Err(Error::InvalidValue {
            field: "threshold",
            value: threshold_pct.to_string(),
            reason: "must be a percentage >= 0".into(),
        });
    }
    let limit = threshold_pct / 100.0;
    let mut changes = Vec::new();
    let mut not_compared = Vec::new();
    for (name, base) in &baseline.operations {
        let Some(now) = current.operations.get(name) else {
            not_compared.push(name.clone());
            continue;
        };
        if !base.comparable() {
            not_compared.push(name.clone());
            continue;
        }
        let now = &now.latency;
        let mut regressions = Vec::new();
        if now.count == 0 {
            regressions.push("no successful calls");
        } else {
            if now.throughput < base.throughput * (1.0 - limit) {
                regressions.push("throughput");
            }
            if now.p99_us > base.p99_us * (1.0 + limit) {
                regressions.push("p99");
            }
        }
        changes.push(OperationChange {
            operation: name.clone(),
            throughput: (base.throughput, now.throughput),
            p99_us: (base.p99_us, now.p99_us),
            regressions,
        });
    }
    for name in current.operations.keys() {
        if !baseline.operations.contains_key(name) {
            not_compared.push(name.clone());
        }
    }
    if changes.is_empty() {
        // Nothing compared is not a pass: a baseline from another workload (or an empty one)
        // would otherwise let every regression through.
        let names = |ops: Vec<&String>| {
            if ops.is_empty() {
                "none".to_owned()
            } else {
                ops.into_iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        return Err(Error::InvalidFile {
            path: baseline.path.clone(),
            reason: format!(
                "the baseline shares no operation with this run (baseline: {}; this run: {})",
                names(baseline.operations.keys().collect()),
                names(current.operations.keys().collect()),
            ),
        });
    }
    Ok(Comparison {
        threshold_pct,
        changes,
        not_compared,
    })
}

impl Comparison {
    /// The operations that regressed.
    pub fn regressions(&self) -> impl Iterator<Item = &OperationChange> {
        self.changes.iter().filter(|c| c.regressed())
    }

    /// True when no operation regressed.
    pub fn passed(&self) -> bool {
        self.regressions().next().is_none()
    }

    /// The comparison as a table, one operation a line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "\nBaseline comparison (threshold {}%)\n",
            self.threshold_pct
        );
        let _ = writeln!(
            out,
            "  {:<18} {:>10} {:>10} {:>8}   {:>9} {:>9} {:>8}  verdict",
            "operation", "base op/s", "now op/s", "change", "base p99", "now p99", "change"
        );
        for c in &self.changes {
            let verdict = if c.regressed() {
                format!("SLOWER ({})", c.regressions.join(", "))
            } else {
                "ok".to_owned()
            };
            let _ = writeln!(
                out,
                "  {:<18} {:>10} {:>10} {:>+7.1}%   {:>9.2} {:>9.2} {:>+7.1}%  {verdict}",
                c.operation,
                group(c.throughput.0.round() as u64),
                group(c.throughput.1.round() as u64),
                c.throughput_pct(),
                c.p99_us.0,
                c.p99_us.1,
                c.p99_pct(),
            );
        }
        if !self.not_compared.is_empty() {
            let _ = writeln!(out, "  not compared: {}", self.not_compared.join(", "));
        }
        out
    }

    /// One line per regression, for the error output.
    pub fn regression_lines(&self) -> Vec<String> {
        self.regressions()
            .map(|c| {
                format!(
                    "{} got slower by more than {}%: throughput {} -> {} ops/s ({:+.1}%), p99 {:.2} -> {:.2} µs ({:+.1}%)",
                    c.operation,
                    self.threshold_pct,
                    group(c.throughput.0.round() as u64),
                    group(c.throughput.1.round() as u64),
                    c.throughput_pct(),
                    c.p99_us.0,
                    c.p99_us.1,
                    c.p99_pct()
                )
            })
            .collect()
    }
}

fn pct(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        (after - before) / before * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::latency::LatencySummary;
    use crate::workload::ops::OpClass;
    use crate::workload::report::OperationReport;

    fn op(count: u64, throughput: f64, p99_us: f64) -> OperationReport {
        OperationReport {
            class: OpClass::Read,
            latency: LatencySummary {
                count,
                errors: 0,
                throughput,
                mean_us: 0.0,
                p50_us: 0.0,
                p95_us: 0.0,
                p99_us,
                max_us: 0.0,
            },
        }
    }

    fn baseline(ops: &[(&str, f64, f64)]) -> Baseline {
        Baseline {
            path: PathBuf::from("b.json"),
            operations: ops
                .iter()
                .map(|(n, t, p)| {
                    let op = BaselineOp {
                        count: 10,
                        throughput: *t,
                        p99_us: *p,
                    };
                    ((*n).to_owned(), op)
                })
                .collect(),
        }
    }

    fn current(ops: &[(&str, u64, f64, f64)]) -> Result<LoadReport> {
        let db = strata::Db::open_in_memory()?;
        let options = crate::workload::load::LoadOptions {
            schedule: crate::workload::load::Schedule::Iterations {
                threads: 1,
                iterations: 1,
            },
            read_ratio: 1.0,
            zipf: 0.0,
            seed: 0,
        };
        let result = crate::workload::load::LoadResult {
            elapsed: std::time::Duration::from_secs(1),
            operations: Vec::new(),
            phases: Vec::new(),
            first_errors: BTreeMap::new(),
            samples: Vec::new(),
        };
        let data = crate::workload::seed::Dataset {
            users: 1,
            categories: 0,
            expenses: 0,
        };
        let mut report = LoadReport::new(&db, &options, data, None, &result)?;
        report.operations = ops
            .iter()
            .map(|(n, c, t, p)| ((*n).to_owned(), op(*c, *t, *p)))
            .collect();
        Ok(report)
    }

    #[test]
    fn slower_beyond_threshold_is_named() -> Result<()> {
        let now = current(&[
            ("a", 10, 1000.0, 10.0),
            ("b", 10, 850.0, 10.0),
            ("c", 10, 1000.0, 12.0),
            ("d", 0, 0.0, 0.0),
            ("new", 10, 1.0, 1.0),
        ])?;
        let base = baseline(&[
            ("a", 1050.0, 10.5),
            ("b", 1000.0, 10.0),
            ("c", 1000.0, 10.0),
            ("d", 1000.0, 10.0),
            ("gone", 1.0, 1.0),
        ]);
        let cmp = compare(&now, &base, 10.0)?;
        let slower: Vec<&str> = cmp.regressions().map(|c| c.operation.as_str()).collect();
        assert_eq!(slower, ["b", "c", "d"]);
        assert_eq!(cmp.not_compared, ["gone", "new"]);
        assert!(!cmp.passed());
        let lines = cmp.regression_lines();
        assert!(
            lines[0].starts_with("b got slower by more than 10%"),
            "{lines:?}"
        );
        assert!(cmp.render().contains("SLOWER (p99)"));
        // A generous threshold lets everything but the failing operation pass.
        let cmp = compare(&now, &base, 50.0)?;
        let slower: Vec<&str> = cmp.regressions().map(|c| c.operation.as_str()).collect();
        assert_eq!(slower, ["d"]);
        assert!(compare(&now, &base, -1.0).is_err());
        assert!(compare(&now, &base, f64::NAN).is_err());
        Ok(())
    }

    /// A baseline that has none of the run's operations (or only ones it never called) fails
    /// the comparison rather than passing it with nothing compared.
    #[test]
    fn a_baseline_sharing_no_operation_is_an_error() -> Result<()> {
        let now = current(&[("get_user", 10, 1000.0, 10.0)])?;
        let mut idle = baseline(&[("get_user", 0.0, 0.0)]);
        idle.operations.get_mut("get_user").expect("get_user").count = 0;
        for base in [baseline(&[("other", 1000.0, 10.0)]), baseline(&[]), idle] {
            let err = compare(&now, &base, 10.0).unwrap_err();
            assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
            assert!(err.to_string().contains("shares no operation"), "{err}");
        }
        let err = compare(&now, &baseline(&[("other", 1.0, 1.0)]), 10.0).unwrap_err();
        assert!(
            err.to_string()
                .contains("baseline: other; this run: get_user"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn baseline_files_are_checked() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let missing = dir.path().join("none.json");
        assert!(matches!(
            Baseline::read(&missing),
            Err(Error::MissingFile { .. })
        ));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"format\": 1}").map_err(Error::closure)?;
        let err = Baseline::read(&bad).unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
        assert!(err.one_line().ends_with("bad.json"), "{}", err.one_line());
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"operations": {"get_user": {"count": 5, "throughput": 100.0, "p99_us": 2.5, "extra": 1}}}"#,
        )
        .map_err(Error::closure)?;
        let b = Baseline::read(&good)?;
        assert_eq!(b.operations["get_user"].p99_us, 2.5);
        // Nothing to compare with: refused before any run.
        for idle in [
            r#"{"operations": {}}"#,
            r#"{"operations": {"get_user": {"count": 0, "throughput": 0.0, "p99_us": 0.0}}}"#,
        ] {
            std::fs::write(&good, idle).map_err(Error::closure)?;
            let err = Baseline::read(&good).unwrap_err();
            assert!(err.to_string().contains("no operation with calls"), "{err}");
        }
        Ok(())
    }
}
