//! Latency per operation: one hdrhistogram per operation and worker thread, merged at the end.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The longest latency recorded as itself; longer ones are recorded as this.
const MAX_NANOS: u64 = 60_000_000_000;

/// Latencies of one operation, in nanoseconds, with 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    errors: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 ns .. 60 s at 3 significant digits: bounds that are valid by construction.
            histogram: Histogram::new_with_bounds(1, MAX_NANOS, 3)
                .expect("1..60s at 3 significant digits are valid histogram bounds"),
            errors: 0,
        }
    }
}

impl Latency {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one successful call that took `elapsed`.
    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos())
            .unwrap_or(MAX_NANOS)
            .clamp(1, MAX_NANOS);
        self.histogram.saturating_record(nanos);
    }

    /// Counts one failed call (not in the percentiles).
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Successful calls recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Failed calls counted.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Adds another recorder's calls to this one.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding cannot fail; saturate regardless.
        if self.histogram.add(&other.histogram).is_err() {
            for v in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.errors += other.errors;
    }

    /// The summary of the calls recorded, over `elapsed` wall time.
    pub fn summary(&self, elapsed: Duration) -> LatencySummary {
        let h = &self.histogram;
        let us = |nanos: u64| round3(nanos as f64 / 1000.0);
        let empty = h.is_empty();
        let at = |q: f64| {
            if empty {
                0.0
            } else {
                us(h.value_at_quantile(q))
            }
        };
        let secs = elapsed.as_secs_f64();
        LatencySummary {
            count: h.len(),
            errors: self.errors,
            throughput: if secs > 0.0 {
                round3(h.len() as f64 / secs)
            } else {
                0.0
            },
            mean_us: if empty {
                0.0
            } else {
                round3(h.mean() / 1000.0)
            },
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: if empty { 0.0 } else { us(h.max()) },
        }
    }
}

/// What one operation did during a run, as written to `--json` and read back as a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Successful calls.
    pub count: u64,
    /// Failed calls (not in the percentiles).
    #[serde(default)]
    pub errors: u64,
    /// Successful calls per second of the run's wall time.
    pub throughput: f64,
    /// Mean latency, microseconds.
    #[serde(default)]
    pub mean_us: f64,
    /// Median latency, microseconds.
    #[serde(default)]
    pub p50_us: f64,
    /// 95th percentile latency, microseconds.
    #[serde(default)]
    pub p95_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Longest call, microseconds.
    #[serde(default)]
    pub max_us: f64,
}

/// Rounds to 3 decimals, so that reports carry no false precision.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::Result;

    #[test]
    fn percentiles_and_throughput() -> Result<()> {
        let mut a = Latency::new();
        for us in 1..=100u64 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Latency::new();
        b.record(Duration::from_secs(3600)); // beyond the bound: saturates, never panics
        b.record_error();
        a.merge(&b);
        let s = a.summary(Duration::from_secs(2));
        assert_eq!((s.count, s.errors), (101, 1));
        assert_eq!(s.throughput, 50.5);
        assert!((49.0..=51.1).contains(&s.p50_us), "{s:?}");
        assert!((98.0..=100.1).contains(&s.p99_us), "{s:?}");
        assert!(s.max_us >= 59_000_000.0, "{s:?}");
        Ok(())
    }

    #[test]
    fn empty_summary_is_zero() -> Result<()> {
        let s = Latency::new().summary(Duration::ZERO);
        assert_eq!((s.count, s.throughput, s.p99_us), (0, 0.0, 0.0));
        Ok(())
    }
}
