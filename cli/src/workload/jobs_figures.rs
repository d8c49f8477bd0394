//! The category-suggestion jobs of a run, in one shape for both engines: strata's pool (from
//! its monitoring report) and the raw engine's worker ([`RawJobStats`]).

use serde::Serialize;

use super::latency::round3;
use super::raw_jobs::RawJobStats;
use super::report::group;
use strata::domain::SUGGEST_CATEGORY;
use strata::jobs::JobsReport;

/// What the run's job worker did with the `suggest_category` jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JobsFigures {
    /// Jobs completed during the run.
    pub completed: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Completed jobs per second of the run.
    pub jobs_per_s: f64,
    /// From the time a job was due to its start, median, µs.
    pub lag_p50_us: f64,
    /// The same, 99th percentile.
    pub lag_p99_us: f64,
    /// A job's run time, median, µs.
    pub run_p50_us: f64,
    /// The same, 99th percentile.
    pub run_p99_us: f64,
    /// Jobs left in the table when the run ended (waiting or leased).
    pub left: u64,
}

impl JobsFigures {
    /// strata's figures from its monitoring report, over a run of `secs` seconds.
    pub fn from_strata(jobs: &JobsReport, secs: f64) -> JobsFigures {
        let left = jobs.queues.iter().map(|q| q.pending + q.running).sum();
        let Some(k) = jobs.kinds.iter().find(|k| k.kind == SUGGEST_CATEGORY) else {
            return JobsFigures {
                left,
                ..JobsFigures::default()
            };
        };
        JobsFigures {
            completed: k.completed,
            failed: k.failed,
            jobs_per_s: per_s(k.completed, secs),
            lag_p50_us: k.start_lag.p50_us,
            lag_p99_us: k.start_lag.p99_us,
            run_p50_us: k.run_time.p50_us,
            run_p99_us: k.run_time.p99_us,
            left,
        }
    }

    /// The raw worker's figures, with `left` jobs in the table, over a run of `secs` seconds.
    pub fn from_raw(stats: &RawJobStats, left: u64, secs: f64) -> JobsFigures {
        JobsFigures {
            completed: stats.completed,
            failed: stats.failed,
            jobs_per_s: per_s(stats.completed, secs),
            lag_p50_us: stats.lag_p50_us,
            lag_p99_us: stats.lag_p99_us,
            run_p50_us: stats.run_p50_us,
            run_p99_us: stats.run_p99_us,
            left,
        }
    }

    /// One line, as the report's "Job queue" section shows it.
    pub fn line(&self) -> String {
        format!(
            "{SUGGEST_CATEGORY}: {} completed ({:.0} jobs/s), {} failed; lag p50 {} µs p99 {} \
             µs; run p50 {} µs p99 {} µs; {} left in the table",
            group(self.completed),
            self.jobs_per_s,
            group(self.failed),
            us(self.lag_p50_us),
            us(self.lag_p99_us),
            us(self.run_p50_us),
            us(self.run_p99_us),
            group(self.left)
        )
    }
}

/// A latency in whole µs, grouped as the report's other figures.
pub(super) fn us(x: f64) -> String {
    group(x.round() as u64)
}

fn per_s(n: u64, secs: f64) -> f64 {
    round3(n as f64 / secs.max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_run() {
        let stats = RawJobStats {
            completed: 500,
            failed: 1,
            lag_p50_us: 1000.0,
            ..RawJobStats::default()
        };
        let f = JobsFigures::from_raw(&stats, 3, 2.0);
        assert_eq!((f.jobs_per_s, f.failed, f.left), (250.0, 1, 3));
        assert!(
            f.line().contains("500 completed (250 jobs/s)"),
            "{}",
            f.line()
        );
        let none = JobsFigures::from_strata(&JobsReport::default(), 2.0);
        assert_eq!(none, JobsFigures::default());
    }
}
