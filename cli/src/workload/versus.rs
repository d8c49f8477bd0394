//! strata against the raw engine (`strata load --engine both`): per operation and in total,
//! how many times better strata did in throughput, p50 and p99.

use std::collections::BTreeMap;

use serde::Serialize;

use super::jobs_figures::us;
use super::latency::{round3, LatencySummary};
use super::report::{group, LoadReport};

/// How many times better strata did than the raw engine: above 1 strata is ahead.
/// Throughput is strata's over raw's; latencies are raw's over strata's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    /// strata's calls per second over raw's.
    pub throughput: f64,
    /// raw's median latency over strata's.
    pub p50: f64,
    /// raw's 99th percentile latency over strata's.
    pub p99: f64,
}

impl Ratios {
    fn of(strata: &LatencySummary, raw: &LatencySummary) -> Ratios {
        Ratios {
            throughput: ratio(strata.throughput, raw.throughput),
            p50: ratio(raw.p50_us, strata.p50_us),
            p99: ratio(raw.p99_us, strata.p99_us),
        }
    }
}

/// `a / b`, rounded; 0 when `b` is 0 (nothing to compare with).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        round3(a / b)
    } else {
        0.0
    }
}

/// The two runs side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versus {
    /// All operations together (throughput of the whole run, percentiles of every call).
    pub total: Ratios,
    /// Per operation, by name.
    pub operations: BTreeMap<String, Ratios>,
}

impl Versus {
    /// The ratios of `strata`'s run over `raw`'s.
    pub fn new(strata: &LoadReport, raw: &LoadReport) -> Versus {
        let mut total = Ratios::of(&strata.overall, &raw.overall);
        // The whole run's throughput is over wall time, errors excluded, as the report says.
        total.throughput = ratio(strata.throughput, raw.throughput);
        let operations = strata
            .operations
            .iter()
            .filter_map(|(name, s)| {
                let r = raw.operations.get(name)?;
                Some((name.clone(), Ratios::of(&s.latency, &r.latency)))
            })
            .collect();
        Versus { total, operations }
    }

    /// The comparison as text: one line per operation and the total.
    pub fn render(&self, strata: &LoadReport, raw: &LoadReport) -> String {
        let mut out = String::from(
            "\nstrata vs raw (same workload, keys and threads, each on its own copy; \
             x = times better for strata)\n",
        );
        out.push_str(&format!(
            "  {:<18} {:>10} {:>10} {:>8} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}\n",
            "operation",
            "strata/s",
            "raw/s",
            "x",
            "p50 s µs",
            "p50 r µs",
            "x",
            "p99 s µs",
            "p99 r µs",
            "x"
        ));
        let line = |name: &str, s: &LatencySummary, r: &LatencySummary, x: &Ratios| {
            format!(
                "  {name:<18} {:>10} {:>10} {:>7.2}x {:>9.1} {:>9.1} {:>6.2}x {:>9.1} {:>9.1} {:>6.2}x\n",
                group(s.throughput.round() as u64),
                group(r.throughput.round() as u64),
                x.throughput,
                s.p50_us,
                r.p50_us,
                x.p50,
                s.p99_us,
                r.p99_us,
                x.p99
            )
        };
        for (name, x) in &self.operations {
            if let (Some(s), Some(r)) = (strata.operations.get(name), raw.operations.get(name)) {
                out.push_str(&line(name, &s.latency, &r.latency, x));
            }
        }
        let mut s = strata.overall.clone();
        s.throughput = strata.throughput;
        let mut r = raw.overall.clone();
        r.throughput = raw.throughput;
        out.push_str(&line("total", &s, &r, &self.total));
        if let (Some(s), Some(r)) = (&strata.jobs, &raw.jobs) {
            out.push_str(&format!(
                "  suggest_category jobs: strata {} completed ({:.0}/s, lag p99 {} µs, {} left), \
                 raw {} completed ({:.0}/s, lag p99 {} µs, {} left)\n",
                group(s.completed),
                s.jobs_per_s,
                us(s.lag_p99_us),
                group(s.left),
                group(r.completed),
                r.jobs_per_s,
                us(r.lag_p99_us),
                group(r.left)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_how_much_better_strata_did() {
        let summary = |throughput, p50_us, p99_us| LatencySummary {
            count: 1,
            errors: 0,
            throughput,
            mean_us: 0.0,
            p50_us,
            p95_us: 0.0,
            p99_us,
            max_us: 0.0,
        };
        let x = Ratios::of(&summary(300.0, 10.0, 100.0), &summary(100.0, 20.0, 50.0));
        assert_eq!((x.throughput, x.p50, x.p99), (3.0, 2.0, 0.5));
        let none = Ratios::of(&summary(300.0, 0.0, 0.0), &summary(0.0, 20.0, 50.0));
        assert_eq!((none.throughput, none.p50), (0.0, 0.0));
    }
}
