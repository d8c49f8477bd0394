//! `strata demo` and `strata load`: open (or create) and seed a database, run the workload with
//! a progress bar, report; for `load`, write JSON and compare with a baseline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::compare::{compare, Baseline, Comparison};
use super::engine::{Engine, EngineKind};
use super::jobs_figures::JobsFigures;
use super::load::{self, LoadOptions, Schedule};
use super::phases::Phase;
pub use super::prepare::{prepare, prepare_with, remove_database, Prepared, Target};
use super::progress::Bar;
use super::raw::{self, RawEngine};
use super::raw_jobs::{self, RawJobWorker};
use super::report::{group, LoadReport};
use super::sections::report_sections;
use super::seed::{Dataset, Scale, SeedReport};
use strata::{Error, Result};

/// The database file `demo` uses unless told otherwise, recreated on every run.
pub fn default_demo_path() -> PathBuf {
    std::env::temp_dir().join("strata-demo.db")
}

/// The database file `load` uses unless told otherwise, recreated on every run.
pub fn default_load_path() -> PathBuf {
    std::env::temp_dir().join("strata-load.db")
}

/// Client threads `strata load` runs by default: the requests a service has in flight at once
/// (a web server's worker pool), not the cores of the machine; the demo runs one per core.
pub const DEFAULT_LOAD_THREADS: usize = 16;

/// Threads the demo runs by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The demo's trend window: it runs for seconds, not the hours a service's 1-minute windows
/// are made for.
const DEMO_TREND_WINDOW: Duration = Duration::from_secs(1);

/// The options of `strata demo`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// The database.
    pub target: Target,
    /// How much data to seed.
    pub scale: Scale,
    /// The workload.
    pub load: LoadOptions,
    /// Where to write the HTML page of the run.
    pub html: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
}

/// Runs the demo, writing the report to `out`.
pub fn demo(options: &DemoOptions, out: &mut dyn Write) -> Result<LoadReport> {
    if let Some(html) = &options.html {
        check_writable_parent(html)?;
    }
    let bar = Bar::new(options.quiet);
    let prepared = prepare(
        &options.target,
        options.scale,
        &bar,
        Some(DEMO_TREND_WINDOW),
    )?;
    let report = run_and_report(&prepared, &options.load, &bar)?;
    let extra = report_sections(&prepared.db)?;
    let mut text = header("demo", &options.target, &prepared, &options.load)?;
    text.push_str(&report.render(&extra));
    if let Some(html) = &options.html {
        super::html::write(html, &report)?;
        text.push_str(&format!("\nwrote {}\n", html.display()));
    }
    emit(out, &text)?;
    Ok(report)
}

/// The options of `strata load`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadCommand {
    /// The database.
    pub target: Target,
    /// How much data to seed when the database has none.
    pub scale: Scale,
    /// The workload.
    pub load: LoadOptions,
    /// Which engine runs it: strata, the raw engine, or both one after the other.
    pub engine: EngineKind,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Where to write the HTML page.
    pub html: Option<PathBuf>,
    /// A saved JSON report to compare with, and the threshold in percent.
    pub baseline: Option<(PathBuf, f64)>,
    /// No progress bar.
    pub quiet: bool,
    /// Other processes share the database ([`Config::instances`](strata::Config::instances)).
    pub instances: bool,
}

/// What `strata load` found.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// The run's report.
    pub report: LoadReport,
    /// The comparison with the baseline, when one was given.
    pub comparison: Option<Comparison>,
}

/// Runs the load test, writing the report (and the comparison) to `out`. Arguments that can be
/// checked before the run (the baseline file, the JSON file's directory, the threshold) are
/// checked first, so a mistake costs no run.
pub fn load(command: &LoadCommand, out: &mut dyn Write) -> Result<LoadOutcome> {
    command.load.validate()?;
    let baseline = match &command.baseline {
        Some((path, threshold)) => {
            let baseline = Baseline::read(path)?;
            Some((baseline, *threshold))
        }
        None => None,
    };
    for file in [&command.json, &command.html].into_iter().flatten() {
        check_writable_parent(file)?;
    }
    let bar = Bar::new(command.quiet);
    let prepared = prepare_with(
        &command.target,
        command.scale,
        &bar,
        None,
        command.instances,
    )?;
    let mut text = header("load", &command.target, &prepared, &command.load)?;
    let report = match command.engine {
        EngineKind::Strata => {
            let report = run_and_report(&prepared, &command.load, &bar)?;
            text.push_str(&report.render(&report_sections(&prepared.db)?));
            if let Some(instances) = prepared.db.instances_report() {
                text.push_str(&instances_lines(&instances));
            }
            report
        }
        EngineKind::Raw => {
            let path = prepared.db.path().to_owned();
            let (data, seeded) = (prepared.data, prepared.seed.clone());
            text.push_str(&format!(
                "engine: raw (rusqlite on an r2d2 pool of {} read-write connections)\n",
                raw::default_connections()
            ));
            // The raw service is the only one on the file, as it would be without strata.
            drop(prepared);
            let report = run_raw(&path, data, seeded, &command.load, &bar)?;
            text.push_str(&report.render_raw());
            report
        }
        EngineKind::Both => {
            let (report, both) = run_both(prepared, command, &bar)?;
            text.push_str(&both);
            report
        }
    };
    if let Some(html) = &command.html {
        super::html::write(html, &report)?;
        text.push_str(&format!("\nwrote {}\n", html.display()));
    }
    if let Some(json) = &command.json {
        report.write_json(json)?;
        text.push_str(&format!("\nwrote {}\n", json.display()));
    }
    let comparison = match baseline {
        Some((baseline, threshold)) => match compare(&report, &baseline, threshold) {
            Ok(cmp) => {
                text.push_str(&cmp.render());
                Some(cmp)
            }
            Err(e) => {
                // The run's report is still shown: only its comparison failed.
                emit(out, &text)?;
                return Err(e);
            }
        },
        None => None,
    };
    emit(out, &text)?;
    Ok(LoadOutcome { report, comparison })
}

/// Runs the raw engine on the database at `path`.
fn run_raw(
    path: &Path,
    data: Dataset,
    seeded: Option<SeedReport>,
    options: &LoadOptions,
    bar: &Bar,
) -> Result<LoadReport> {
    let raw = RawEngine::open(path, raw::default_connections())?;
    // Its job worker runs for the whole run, as strata's pool does in `run_and_report`.
    let worker = RawJobWorker::start(&raw)?;
    let result = load::run_on(&Engine::Raw(raw.clone()), data, options, &mut |p| {
        bar.load(p)
    });
    let jobs = worker.shutdown();
    bar.finish();
    let result = result?;
    let mut report = LoadReport::raw(&raw, options, data, seeded, &result);
    let left = raw_jobs::jobs_left(&raw)?;
    report.jobs = Some(JobsFigures::from_raw(
        &jobs,
        left,
        result.elapsed.as_secs_f64(),
    ));
    Ok(report)
}

/// `--engine both`: copies the prepared database twice, runs strata on one copy and then the
/// raw engine on the other, removes the copies; returns strata's report (with raw's inside)
/// and the text of both runs and their ratios.
fn run_both(prepared: Prepared, command: &LoadCommand, bar: &Bar) -> Result<(LoadReport, String)> {
    let copy = |engine: &str| {
        let mut name = prepared.db.path().as_os_str().to_owned();
        name.push(format!(".{engine}-copy"));
        PathBuf::from(name)
    };
    let (strata_copy, raw_copy) = (copy("strata"), copy("raw"));
    raw::copy_database(prepared.db.path(), &strata_copy)?;
    raw::copy_database(prepared.db.path(), &raw_copy)?;
    let (data, seeded) = (prepared.data, prepared.seed.clone());
    drop(prepared);
    let mut text = format!(
        "engines: strata on {}, then raw (rusqlite on an r2d2 pool of {} read-write \
         connections) on {}; both copies of the database, removed afterwards\n",
        strata_copy.display(),
        raw::default_connections(),
        raw_copy.display()
    );
    let strata = prepare(
        &Target::Given(strata_copy.clone()),
        command.scale,
        bar,
        None,
    )?;
    let mut report = run_and_report(&strata, &command.load, bar)?;
    report.seed = seeded.clone();
    text.push_str(&report.render(&report_sections(&strata.db)?));
    drop(strata);
    bar.reset();
    let raw_report = run_raw(&raw_copy, data, seeded, &command.load, bar)?;
    text.push_str(&raw_report.render_raw());
    let report = report.with_raw(raw_report);
    if let (Some(versus), Some(raw)) = (&report.versus, &report.raw) {
        text.push_str(&versus.render(&report, raw));
    }
    for copy in [strata_copy, raw_copy] {
        remove_database(&copy)?;
    }
    Ok((report, text))
}

/// The change log's figures, for a load run with `--instances`.
fn instances_lines(r: &strata::instances::InstancesReport) -> String {
    format!(
        "\nInstances\n  this one appended {} entries ({} bytes), applied {} of the others'; \
         {} gaps{}\n  propagation (entry written to applied here): p50 {:.0} µs, p99 {:.0} µs, \
         max {:.0} µs; turns given {}, pauses {}\n",
        r.appended,
        r.appended_bytes,
        r.applied,
        r.gaps,
        r.last_gap
            .as_ref()
            .map(|g| format!(" (last: {g})"))
            .unwrap_or_default(),
        r.propagation_p50_us,
        r.propagation_p99_us,
        r.propagation_max_us,
        r.turns_given,
        r.pauses
    )
}

/// Client threads per job worker thread of the strata engine's suggestion pool.
const JOB_CLIENTS_PER_THREAD: usize = 16;

fn run_and_report(prepared: &Prepared, options: &LoadOptions, bar: &Bar) -> Result<LoadReport> {
    // Worker threads run the suggestions while the workload runs; what is left when it ends
    // waits in the file for the next run. A job's completion is a write that waits in the
    // clients' group commits (10 ms at its median with 64 clients), so one thread per 16
    // clients: a single thread completed 91 jobs/s of the 136/s that 64 clients enqueued.
    let threads = (options.max_threads() / JOB_CLIENTS_PER_THREAD).max(1);
    let pool = prepared
        .tracker
        .category_workers()?
        .threads(threads)
        .start()?;
    let result = load::run(&prepared.tracker, prepared.data, options, &mut |p| {
        bar.load(p)
    });
    pool.shutdown(std::time::Duration::from_secs(5));
    bar.finish();
    let result = result?;
    LoadReport::new(
        &prepared.db,
        options,
        prepared.data,
        prepared.seed.clone(),
        &result,
    )
}

fn header(
    command: &str,
    target: &Target,
    prepared: &Prepared,
    options: &LoadOptions,
) -> Result<String> {
    let how = match (target, &prepared.seed) {
        (Target::Fresh(_), _) => "created anew",
        (Target::Given(_), Some(_)) => "seeded now",
        (Target::Given(_), None) => "used as found",
    };
    let version = prepared.db.schema_version()?.unwrap_or(0);
    let mut text = format!(
        "strata {command}: {} ({how}, schema V{version})\n",
        prepared.db.path().display()
    );
    if let Some(s) = &prepared.seed {
        text.push_str(&format!(
            "seeded {} users, {} categories, {} keywords, {} expenses through Batch in {:.2} s ({} rows/s, {} transactions)\n",
            group(s.users),
            group(s.categories),
            group(s.keywords),
            group(s.expenses),
            s.elapsed.as_secs_f64(),
            group(s.rows_per_sec() as u64),
            group(s.chunks as u64),
        ));
    }
    let d = &prepared.data;
    text.push_str(&format!(
        "data: {} users, {} categories, {} expenses\n",
        group(d.users as u64),
        group(d.categories as u64),
        group(d.expenses as u64)
    ));
    let schedule = match &options.schedule {
        Schedule::Phases(phases) => phases
            .iter()
            .map(describe_phase)
            .collect::<Vec<_>>()
            .join(", then "),
        Schedule::Iterations {
            threads,
            iterations,
        } => format!("{} calls on {threads} threads", group(*iterations)),
    };
    text.push_str(&format!(
        "workload: {schedule}; read ratio {:.2}, zipf {:.2}, 9 operations\n",
        options.read_ratio, options.zipf
    ));
    Ok(text)
}

fn describe_phase(p: &Phase) -> String {
    format!(
        "{} ({} threads, {})",
        p.name,
        p.threads,
        human_duration(p.duration)
    )
}

fn human_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn check_writable_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::MissingDirectory {
            path: path.to_owned(),
        });
    }
    if path.is_dir() {
        return Err(Error::IsDirectory {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(threads: usize, iterations: u64) -> LoadOptions {
        LoadOptions {
            schedule: Schedule::Iterations {
                threads,
                iterations,
            },
            read_ratio: 0.9,
            zipf: 1.0,
            seed: 1,
        }
    }

    #[test]
    fn demo_reports_every_section() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let options = DemoOptions {
            target: Target::Fresh(dir.path().join("demo.db")),
            scale: Scale::new(0.01)?,
            load: quick(2, 300),
            html: None,
            quiet: true,
        };
        let mut out = Vec::new();
        let report = demo(&options, &mut out)?;
        let text = String::from_utf8(out).map_err(Error::closure)?;
        assert!(text.contains("seeded 100 users"), "{text}");
        assert!(text.contains("\nIndex advice\n"), "{text}");
        assert!(text.contains("\nJob queue\n"), "{text}");
        assert_eq!(report.total_ops + report.errors, 300);
        // Suggestions ran in the background during the run; none failed.
        let db = strata::Db::open(dir.path().join("demo.db"))?;
        let dead: i64 = db.read(|c| {
            Ok(c.query_row("SELECT count(*) FROM strata_dead_jobs", [], |r| r.get(0))?)
        })?;
        assert_eq!(dead, 0);
        // A fresh target starts over; a given one is reused as found.
        demo(&options, &mut Vec::new())?;
        let given = DemoOptions {
            target: Target::Given(dir.path().join("demo.db")),
            ..options
        };
        let mut out = Vec::new();
        demo(&given, &mut out)?;
        assert!(String::from_utf8_lossy(&out).contains("used as found"));
        Ok(())
    }

    #[test]
    fn load_checks_its_files_before_running() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let command = LoadCommand {
            target: Target::Given(dir.path().join("load.db")),
            scale: Scale::new(0.01)?,
            load: quick(1, 10),
            engine: EngineKind::Strata,
            json: None,
            html: None,
            baseline: Some((dir.path().join("missing.json"), 10.0)),
            quiet: true,
            instances: false,
        };
        let err = load(&command, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        assert!(!dir.path().join("load.db").exists(), "nothing ran");
        let command = LoadCommand {
            baseline: None,
            json: Some(dir.path().join("no/dir/out.json")),
            ..command
        };
        let err = load(&command, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::MissingDirectory { .. }), "{err}");
        Ok(())
    }
}
