//! The report of a run: the JSON written by `--json` (and read back as a baseline) and the
//! text a person reads at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::jobs_figures::JobsFigures;
use super::latency::LatencySummary;
use super::load::{LoadOptions, LoadResult, PhaseResult, Schedule};
use super::ops::OpClass;
use super::phases::Phase;
use super::raw::RawEngine;
use super::samples::Sample;
use super::sections::{ExtraSections, Section};
use super::seed::{Dataset, SeedReport};
use super::versus::Versus;
use strata::cache::CacheStats;
use strata::monitor::WriteStats;
use strata::{Db, Error, Result};

/// The version of the JSON layout; bumped when a field changes meaning or goes away.
pub const FORMAT: u32 = 1;

/// Everything about one run, as `strata load --json FILE` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// [`FORMAT`].
    pub format: u32,
    /// The strata version that ran.
    pub strata_version: &'static str,
    /// The engine that ran the workload: `strata` or `raw`.
    pub engine: &'static str,
    /// The database file.
    pub database: String,
    /// What was asked for.
    pub config: RunConfig,
    /// The key ranges the workload drew from.
    pub dataset: Dataset,
    /// Seeding done before the run, if any.
    pub seed: Option<SeedReport>,
    /// Wall time of the run, milliseconds.
    pub elapsed_ms: u64,
    /// Successful calls of all operations.
    pub total_ops: u64,
    /// Failed calls of all operations.
    pub errors: u64,
    /// Successful calls per second.
    pub throughput: f64,
    /// Every operation's calls together: calls, throughput, latency percentiles in µs.
    pub overall: LatencySummary,
    /// Per operation, by name: calls, errors, throughput, latency percentiles in µs.
    pub operations: BTreeMap<String, OperationReport>,
    /// The first error of each operation that failed, by name.
    pub first_errors: BTreeMap<String, String>,
    /// Per phase: threads, wall time, calls, throughput.
    pub phases: Vec<PhaseResult>,
    /// The entity caches' counters after the run.
    pub caches: Vec<CacheStats>,
    /// The write path's counters after the run.
    pub writes: WritesReport,
    /// The monitoring report (`db.report()`), or null in a build without monitoring (and for
    /// the raw engine).
    pub report: Option<serde_json::Value>,
    /// The run over time, about one sample a second.
    pub samples: Vec<Sample>,
    /// The `suggest_category` jobs the run's worker ran, when the database has the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsFigures>,
    /// With `--engine both`: the raw engine's run of the same workload on its own copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Box<LoadReport>>,
    /// With `--engine both`: how many times better strata did than the raw engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus: Option<Versus>,
}

/// The options of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// The most threads of any phase.
    pub threads: usize,
    /// The phases (empty for a run by iterations).
    pub phases: Vec<Phase>,
    /// Calls in all, for a run by iterations.
    pub iterations: Option<u64>,
    /// Share of reads.
    pub read_ratio: f64,
    /// Zipf exponent of the keys.
    pub zipf: f64,
    /// Generator seed.
    pub seed: u64,
}

/// One operation's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    /// `read` or `write`.
    pub class: OpClass,
    /// Calls, errors, throughput and latency percentiles.
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// The write path's counters.
#[derive(Debug, Clone, Serialize)]
pub struct WritesReport {
    /// Commits, writes, failures, largest group.
    #[serde(flatten)]
    pub stats: WriteStats,
    /// Mean `write` calls per commit.
    pub mean_group: f64,
}

impl LoadReport {
    /// The report of `result`, run on `db` with `options`, with the caches' and the write
    /// path's counters as they are now.
    pub fn new(
        db: &Db,
        options: &LoadOptions,
        data: Dataset,
        seed: Option<SeedReport>,
        result: &LoadResult,
    ) -> Result<LoadReport> {
        let writes = db.write_stats();
        let mut report = Self::common(options, data, seed, result, writes);
        report.database = db.path().display().to_string();
        report.caches = db.caches().stats();
        report.report = super::sections::monitor_report(db)?;
        let secs = result.elapsed.as_secs_f64();
        report.jobs = db.report().jobs.map(|j| JobsFigures::from_strata(&j, secs));
        Ok(report)
    }

    /// The report of `result`, run on the raw engine `raw` with `options`.
    pub fn raw(
        raw: &RawEngine,
        options: &LoadOptions,
        data: Dataset,
        seed: Option<SeedReport>,
        result: &LoadResult,
    ) -> LoadReport {
        let writes = WriteStats {
            commits: raw.commits(),
            writes: raw.commits(),
            failed_writes: raw.failed_writes(),
            failed_commits: 0,
            max_group: u64::from(raw.commits() > 0),
        };
        let mut report = Self::common(options, data, seed, result, writes);
        report.engine = "raw";
        report.database = raw.path().display().to_string();
        report
    }

    fn common(
        options: &LoadOptions,
        data: Dataset,
        seed: Option<SeedReport>,
        result: &LoadResult,
        writes: WriteStats,
    ) -> LoadReport {
        let (phases, iterations) = match &options.schedule {
            Schedule::Phases(p) => (p.clone(), None),
            Schedule::Iterations { iterations, .. } => (Vec::new(), Some(*iterations)),
        };
        LoadReport {
            format: FORMAT,
            strata_version: env!("CARGO_PKG_VERSION"),
            engine: "strata",
            database: String::new(),
            config: RunConfig {
                threads: options.max_threads(),
                phases,
                iterations,
                read_ratio: options.read_ratio,
                zipf: options.zipf,
                seed: options.seed,
            },
            dataset: data,
            seed,
            elapsed_ms: u64::try_from(result.elapsed.as_millis()).unwrap_or(u64::MAX),
            total_ops: result.ok_ops(),
            errors: result.errors(),
            throughput: result.throughput(),
            overall: result.overall(),
            operations: result
                .operations
                .iter()
                .map(|(op, l)| {
                    let report = OperationReport {
                        class: op.class(),
                        latency: l.summary(result.elapsed),
                    };
                    (op.name().to_owned(), report)
                })
                .collect(),
            first_errors: result
                .first_errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            phases: result.phases.clone(),
            caches: Vec::new(),
            writes: WritesReport {
                stats: writes,
                mean_group: super::latency::round3(writes.mean_group()),
            },
            report: None,
            samples: result.samples.clone(),
            jobs: None,
            raw: None,
            versus: None,
        }
    }

    /// Adds the raw engine's run of the same workload and the ratios between the two.
    pub fn with_raw(mut self, raw: LoadReport) -> LoadReport {
        self.versus = Some(Versus::new(&self, &raw));
        self.raw = Some(Box::new(raw));
        self
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(Error::closure)?;
        std::fs::write(path, text + "\n").map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The report as text: throughput, latency per operation, caches, statement cache, writes,
    /// top statements, index advice (the last three from `extra`).
    pub fn render(&self, extra: &ExtraSections) -> String {
        let mut out = self.render_runs();
        let mut caches = vec![format!(
            "{:<18} {:>11} {:>11} {:>9} {:>15} {:>13}",
            "cache", "hits", "misses", "hit rate", "entries", "invalidations"
        )];
        let (mut hits, mut misses) = (0, 0);
        for c in &self.caches {
            hits += c.hits;
            misses += c.misses;
            caches.push(format!(
                "{:<18} {:>11} {:>11} {:>8.1}% {:>15} {:>13}",
                c.name,
                group(c.hits),
                group(c.misses),
                c.hit_rate * 100.0,
                format!("{}/{}", group(c.size as u64), group(c.capacity as u64)),
                group(c.invalidations)
            ));
        }
        let all = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 * 100.0 / (hits + misses) as f64
        };
        caches.push(format!("all caches: {all:.1}% hits"));
        section(&mut out, "Caches", &caches);

        render_section(&mut out, &extra.statement_cache);
        out.push_str(&self.render_writes());
        if let Some(jobs) = &extra.jobs {
            let secs = self.elapsed_ms as f64 / 1000.0;
            section(&mut out, "Job queue", &jobs_lines(jobs, secs));
        }
        render_section(&mut out, &extra.top_statements);
        render_section(&mut out, &extra.trends);
        render_section(&mut out, &extra.index_advice);
        out
    }

    /// The report of the raw engine as text: throughput, latency per operation, writes, and
    /// its job worker's figures.
    pub fn render_raw(&self) -> String {
        let mut out = self.render_runs();
        out.push_str(&self.render_writes());
        if let Some(jobs) = &self.jobs {
            section(&mut out, "Job queue (raw engine)", &[jobs.line()]);
        }
        out
    }

    /// The throughput and latency sections.
    fn render_runs(&self) -> String {
        let mut out = String::new();
        let engine = match self.engine {
            "strata" => String::new(),
            other => format!(" ({other} engine)"),
        };
        let secs = self.elapsed_ms as f64 / 1000.0;
        let mut throughput = vec![format!(
            "{} calls in {secs:.1} s: {} ops/s ({} threads, read ratio {:.2}, zipf {:.2}), {} errors",
            group(self.total_ops),
            group(self.throughput.round() as u64),
            self.config.threads,
            self.config.read_ratio,
            self.config.zipf,
            group(self.errors),
        )];
        if self.phases.len() > 1 {
            for p in &self.phases {
                throughput.push(format!(
                    "phase {}: {} threads, {:.1} s, {} calls, {} ops/s",
                    p.name,
                    p.threads,
                    p.elapsed.as_secs_f64(),
                    group(p.ops),
                    group(p.throughput.round() as u64)
                ));
            }
        }
        for (op, err) in &self.first_errors {
            throughput.push(format!("{op}: first error: {err}"));
        }
        section(&mut out, &format!("Throughput{engine}"), &throughput);

        let mut latency = vec![format!(
            "{:<18} {:>11} {:>10} {:>9} {:>9} {:>9} {:>10} {:>7}",
            "operation", "calls", "ops/s", "p50 µs", "p95 µs", "p99 µs", "max µs", "errors"
        )];
        for (name, op) in &self.operations {
            let l = &op.latency;
            latency.push(format!(
                "{name:<18} {:>11} {:>10} {:>9} {:>9} {:>9} {:>10} {:>7}",
                group(l.count),
                group(l.throughput.round() as u64),
                us(l.p50_us),
                us(l.p95_us),
                us(l.p99_us),
                us(l.max_us),
                group(l.errors)
            ));
        }
        section(
            &mut out,
            &format!("Latency per operation{engine}"),
            &latency,
        );
        out
    }

    fn render_writes(&self) -> String {
        let mut out = String::new();
        let w = &self.writes;
        section(
            &mut out,
            "Writes",
            &[format!(
                "{} commits for {} writes: mean group {:.2}, largest {}; {} failed writes, {} failed commits",
                group(w.stats.commits),
                group(w.stats.writes),
                w.mean_group,
                w.stats.max_group,
                group(w.stats.failed_writes),
                group(w.stats.failed_commits)
            )],
        );
        out
    }
}

/// Per kind: jobs run and their rate over the run, enqueue→start lag and run time; then what
/// waits in the queue.
fn jobs_lines(jobs: &strata::jobs::JobsReport, secs: f64) -> Vec<String> {
    let mut lines: Vec<String> = jobs
        .kinds
        .iter()
        .map(|k| {
            format!(
                "{}: {} completed ({:.0} jobs/s), {} failed; lag p50 {} µs p99 {} µs; run p50 {} µs p99 {} µs",
                k.kind,
                group(k.completed),
                k.completed as f64 / secs.max(1e-9),
                group(k.failed),
                us(k.start_lag.p50_us),
                us(k.start_lag.p99_us),
                us(k.run_time.p50_us),
                us(k.run_time.p99_us)
            )
        })
        .collect();
    for q in &jobs.queues {
        lines.push(format!(
            "queue {}: {} waiting, {} running, {} dead; oldest waiting {:.1} s",
            q.queue,
            group(q.pending),
            group(q.running),
            group(q.dead),
            jobs.oldest_pending_age_us / 1e6
        ));
    }
    if lines.is_empty() {
        lines.push("no jobs ran".into());
    }
    lines
}

fn render_section(out: &mut String, s: &Section) {
    section(out, s.title, &s.lines);
}

fn section(out: &mut String, title: &str, lines: &[String]) {
    let _ = writeln!(out, "\n{title}");
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
}

/// A latency in µs with the precision that matters: 0.42, 12.3, 1520.
fn us(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 1000.0 {
        format!("{x:.1}")
    } else {
        group(x.round() as u64)
    }
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::load::run;
    use crate::workload::seed::{seed, Scale};
    use strata::domain::ExpenseTracker;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(us(0.4231), "0.42");
        assert_eq!(us(12.34), "12.3");
        assert_eq!(us(1520.4), "1,520");
    }

    #[test]
    fn report_has_every_field_and_section() -> Result<()> {
        let tracker = ExpenseTracker::open_in_memory()?;
        let db = tracker.db().clone();
        let seeded = seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?;
        let data = Dataset::read(&db)?;
        let options = LoadOptions {
            schedule: Schedule::Iterations {
                threads: 2,
                iterations: 500,
            },
            read_ratio: 0.9,
            zipf: 1.0,
            seed: 1,
        };
        let result = run(&tracker, data, &options, &mut |_| {})?;
        let report = LoadReport::new(&db, &options, data, Some(seeded), &result)?;
        let json = serde_json::to_value(&report).map_err(Error::closure)?;
        for field in [
            "format",
            "strata_version",
            "database",
            "config",
            "dataset",
            "seed",
            "elapsed_ms",
            "total_ops",
            "errors",
            "throughput",
            "operations",
            "first_errors",
            "phases",
            "caches",
            "writes",
            "report",
        ] {
            assert!(json.get(field).is_some(), "{field} missing");
        }
        let get_user = &json["operations"]["get_user"];
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
            assert!(get_user.get(field).is_some(), "get_user.{field} missing");
        }
        assert_eq!(json["writes"]["commits"], report.writes.stats.commits);
        let text = report.render(&crate::workload::sections::report_sections(&db)?);
        for title in [
            "Throughput",
            "Latency per operation",
            "Caches",
            "Statement cache",
            "Writes",
            "Top statements",
            "Trends",
            "Index advice",
        ] {
            assert!(text.contains(&format!("\n{title}\n")), "{title} missing");
        }
        Ok(())
    }
}
