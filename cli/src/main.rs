//! The strata command line: a thin clap layer over `strata_cli::workload`.
//!
//! Exit codes: 0 ok, 1 failure (an error, a regression against the baseline, an unhealthy
//! database), 2 bad arguments. Errors are one line on stderr: `strata: <problem>: <path>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use strata::Error;
use strata_cli::jobs::JobsCommand;
use strata_cli::workload::commands::{self, DemoOptions, LoadCommand, Target};
use strata_cli::workload::phases::{parse_duration, parse_phases, parse_thread_count, Phase};
use strata_cli::workload::{admin, processes, EngineKind, LoadOptions, Scale, Schedule};

/// strata: a data access layer for SQLite. Without a command, runs `strata demo`.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seed a fresh database, run a mixed workload with a progress bar, print a report
    /// (the default command).
    Demo(DemoArgs),
    /// Run the workload with threads, phases and key skew; write JSON; compare with a baseline
    /// (exit 1 when an operation got slower by more than the threshold).
    Load(LoadArgs),
    /// Create the database if needed and apply the expense tracker's migrations.
    Migrate {
        /// The database file.
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
    /// Print index advice (CREATE INDEX) for the observed workload or a file of statements;
    /// the database is opened read-only and the statements are only planned, never executed.
    Advise {
        /// The database file (must exist; never modified).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// SQL statements, separated by `;`, to advise on.
        #[arg(long, value_name = "FILE.sql")]
        workload: Option<PathBuf>,
        /// Write the advice as the next migration file into this directory.
        #[arg(long, value_name = "DIR")]
        write_migration: Option<PathBuf>,
    },
    /// Run PRAGMA optimize and a WAL checkpoint.
    Optimize {
        /// The database file (must exist).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
    /// The job queue: depth per queue and kind; `failed` lists the dead letters, `retry`
    /// enqueues them again, `purge` deletes them.
    Jobs {
        /// The database file (must exist).
        #[arg(long, value_name = "FILE", global = true)]
        db: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<JobsSub>,
    },
    /// Sizes of tables and indexes, rows per table, WAL, pages and free pages, migration
    /// version, job queue depths; the file is opened read-only and never changed.
    Stats {
        /// The database file (must exist).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// Count every table's rows (a full scan each) instead of the planner's estimates.
        #[arg(long)]
        exact: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the database (integrity, WAL, migration version); exit 0 only when healthy.
    Health {
        /// The database file (must exist).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum JobsSub {
    /// List the dead letters with their last error.
    Failed,
    /// Enqueue a dead letter again (by id), or every one (--all).
    Retry {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

/// Options shared by `demo` and `load`.
#[derive(Debug, Clone, Args)]
struct WorkloadArgs {
    /// Seed size: 1 is 10,000 users and 100,000 expenses.
    #[arg(long, default_value = "1", value_name = "FACTOR", value_parser = scale)]
    scale: Scale,
    /// Share of calls that are reads, 0 to 1.
    #[arg(long, default_value_t = 0.9, value_name = "RATIO", value_parser = ratio)]
    read_ratio: f64,
    /// Zipf exponent of the keys (users, days, expenses); 0 is uniform.
    #[arg(long, default_value_t = 1.0, value_name = "S", value_parser = skew)]
    zipf: f64,
    /// Stop after this many calls in all, instead of after a duration.
    #[arg(long, value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    /// Seed of the workload's random keys.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Database file; default: strata-demo.db in the temp directory, created anew each run.
    /// A file given here is used as found (seeded only when it has no users).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Worker threads; default: one per core.
    #[arg(long, value_name = "N", value_parser = threads)]
    threads: Option<usize>,
    /// How long the workload runs (500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration)]
    duration: Duration,
    /// Write the run as one self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    workload: WorkloadArgs,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Database file; default: strata-load.db in the temp directory, created and seeded anew
    /// each run. A file given here is used as found (seeded only when it has no users).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Client threads: the requests in flight at once, as in a service's worker pool (not the
    /// core count).
    #[arg(long, default_value_t = commands::DEFAULT_LOAD_THREADS, value_name = "N",
          value_parser = threads)]
    threads: usize,
    /// How long the workload runs (500ms, 20s, 2m).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration)]
    duration: Duration,
    /// Phases run one after another: name:duration:threads, comma-separated
    /// (ramp:10s:2,peak:30s:8). Replaces --threads and --duration.
    #[arg(long, value_name = "PHASES", value_parser = phases,
          conflicts_with_all = ["threads", "duration", "iterations"])]
    phases: Option<Phases>,
    /// Which code runs the workload: strata, raw (plain rusqlite on an r2d2 pool, no caches,
    /// one transaction per write), or both one after the other on copies of the same database,
    /// with the ratios.
    #[arg(long, value_enum, default_value_t = EngineKind::Strata)]
    engine: EngineKind,
    /// Write the report as JSON (see README: "load --json").
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the run as one self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// A saved --json report to compare with; exit 1 when an operation got slower.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// This process shares the database with other processes running the workload
    /// (`Config::instances`: a change log keeps every process's caches exact).
    #[arg(long)]
    instances: bool,
    /// Run the workload as N processes on one database (each a `load --instances`, with
    /// these arguments), and print each one's report.
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with_all = ["json", "baseline"],
          value_parser = clap::value_parser!(u16).range(1..=64))]
    processes: u16,
    /// Percent by which throughput may fall or p99 rise before it counts as slower.
    #[arg(long, default_value_t = 10.0, value_name = "PCT", requires = "baseline",
          value_parser = percent)]
    threshold: f64,
    #[command(flatten)]
    workload: WorkloadArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("strata: {}", err.one_line());
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout with exit 0; every other parse error is one line, exit 2.
fn usage_error(err: &clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    eprintln!("strata: {} (see --help)", parts.join(" "));
    ExitCode::from(2)
}

fn run(cli: Cli) -> strata::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        None => demo(DemoArgs::parse_defaults(), &mut stdout),
        Some(Command::Demo(args)) => demo(args, &mut stdout),
        Some(Command::Load(args)) => load(args, &mut stdout),
        Some(Command::Migrate { db }) => {
            let outcome = admin::migrate(&db)?;
            println!("{outcome}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Advise {
            db,
            workload,
            write_migration,
        }) => {
            admin::advise(
                &db,
                workload.as_deref(),
                write_migration.as_deref(),
                &mut stdout,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Optimize { db }) => {
            admin::optimize(&db, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Jobs { db, command }) => {
            let Some(db) = db else {
                eprintln!("strata: jobs needs --db FILE (see --help)");
                return Ok(ExitCode::from(2));
            };
            let command = match command {
                None => JobsCommand::Stats,
                Some(JobsSub::Failed) => JobsCommand::Failed,
                Some(JobsSub::Retry { id, .. }) => JobsCommand::Retry(id),
                Some(JobsSub::Purge) => JobsCommand::Purge,
            };
            strata_cli::jobs::run(&db, &command, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Stats { db, exact, json }) => {
            strata_cli::stats::run(&db, exact, json, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Health { db }) => Ok(if admin::health(&db, &mut stdout)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
    }
}

impl DemoArgs {
    /// `strata` alone: the demo with every default.
    fn parse_defaults() -> DemoArgs {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            demo: DemoArgs,
        }
        Defaults::parse_from(["strata"]).demo
    }
}

fn demo(args: DemoArgs, out: &mut dyn Write) -> strata::Result<ExitCode> {
    let w = args.workload;
    let threads = args.threads.unwrap_or_else(commands::default_threads);
    let options = DemoOptions {
        target: match args.db {
            Some(p) => Target::Given(p),
            None => Target::Fresh(commands::default_demo_path()),
        },
        scale: w.scale,
        load: load_options(&w, threads, args.duration, None),
        html: args.html,
        quiet: w.quiet,
    };
    commands::demo(&options, out)?;
    Ok(ExitCode::SUCCESS)
}

fn load(args: LoadArgs, out: &mut dyn Write) -> strata::Result<ExitCode> {
    let w = args.workload;
    let target = match args.db {
        Some(p) => Target::Given(p),
        None => Target::Fresh(commands::default_load_path()),
    };
    if args.processes > 1 {
        let child_args = processes::child_args(std::env::args_os().skip(1));
        let ok = processes::run(
            usize::from(args.processes),
            &target,
            w.scale,
            &child_args,
            out,
        )?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let command = LoadCommand {
        target,
        scale: w.scale,
        load: load_options(&w, args.threads, args.duration, args.phases.map(|p| p.0)),
        engine: args.engine,
        json: args.json,
        html: args.html,
        baseline: args.baseline.map(|b| (b, args.threshold)),
        quiet: w.quiet,
        instances: args.instances,
    };
    let outcome = commands::load(&command, out)?;
    match outcome.comparison {
        Some(cmp) if !cmp.passed() => {
            for line in cmp.regression_lines() {
                eprintln!("strata: {line}");
            }
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn load_options(
    w: &WorkloadArgs,
    threads: usize,
    duration: Duration,
    phases: Option<Vec<Phase>>,
) -> LoadOptions {
    let schedule = match (phases, w.iterations) {
        (Some(phases), _) => Schedule::Phases(phases),
        (None, Some(iterations)) => Schedule::Iterations {
            threads,
            iterations,
        },
        (None, None) => Schedule::Phases(vec![Phase {
            name: "run".into(),
            duration,
            threads,
        }]),
    };
    LoadOptions {
        schedule,
        read_ratio: w.read_ratio,
        zipf: w.zipf,
        seed: w.seed,
    }
}

// Value parsers: the library checks, clap reports (one line, exit 2).

fn reason(err: Error) -> String {
    match err {
        Error::InvalidValue { reason, .. } => reason,
        other => other.one_line(),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(reason)
}

/// The phases of `--phases` (a newtype: clap reads an `Option<Vec<_>>` as repeated values).
#[derive(Debug, Clone)]
struct Phases(Vec<Phase>);

fn phases(text: &str) -> Result<Phases, String> {
    parse_phases(text).map(Phases).map_err(|e| match e {
        Error::InvalidValue { value, reason, .. } => format!("phase `{value}`: {reason}"),
        other => other.one_line(),
    })
}

fn threads(text: &str) -> Result<usize, String> {
    parse_thread_count(text).map_err(reason)
}

fn scale(text: &str) -> Result<Scale, String> {
    let factor: f64 = text.parse().map_err(|_| "not a number".to_owned())?;
    Scale::new(factor).map_err(reason)
}

fn number(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err("not a number".to_owned()),
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    let x = number(text)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err("must be within 0 and 1".to_owned())
    }
}

fn skew(text: &str) -> Result<f64, String> {
    let x = number(text)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err("must be 0 or more".to_owned())
    }
}

fn percent(text: &str) -> Result<f64, String> {
    let x = number(text.trim().trim_end_matches('%'))?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err("must be a percentage, 0 or more".to_owned())
    }
}
