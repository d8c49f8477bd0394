//! The rings of per-window figures behind [`Trends`](super::Trends).
//!
//! A statement's ring lives in its row of the statement table, under the lock its execution
//! takes anyway: recording adds to the window in progress (a few counters and a histogram,
//! allocated with the row), and the first execution in a later window rolls the finished one
//! into the ring, which is when its p95 is computed and checked for a regression. Nothing is
//! allocated per execution, and no thread wakes up to roll windows: a statement that stops
//! running is rolled by the next report or alert check.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::trends::{CacheTrend, CacheWindow, StatementTrend, StatementWindow, Trend};
use crate::cache::{CacheStats, Clock};

/// A window needs this many traced executions for its p95 to count as evidence of a
/// regression: one sampled run standing for a thousand says little about the tail.
const MIN_SAMPLES: u64 = 10;

/// A statement needs this many earlier windows (with [`MIN_SAMPLES`]) before its own baseline
/// means anything.
const MIN_BASELINE_WINDOWS: usize = 3;

/// How time is cut into windows, and what the trends keep and alert on.
#[derive(Clone)]
pub(crate) struct TrendClock {
    pub(crate) length: Duration,
    length_ns: u64,
    pub(crate) kept: usize,
    pub(crate) threshold: f64,
    /// A clock given in the settings and its reading at open; without one, windows follow
    /// the monitor's statement clock, read anyway when a statement ends.
    clock: Option<(Arc<dyn Clock>, Instant)>,
}

impl TrendClock {
    pub(crate) fn new(
        length: Duration,
        kept: usize,
        threshold: f64,
        clock: Option<Arc<dyn Clock>>,
    ) -> Self {
        TrendClock {
            length,
            length_ns: super::nanos(length).max(1),
            kept: kept.max(2),
            threshold,
            clock: clock.map(|c| {
                let epoch = c.now();
                (c, epoch)
            }),
        }
    }

    /// The window in progress, `since_open_ns` after the `Db` opened by the statement clock.
    pub(crate) fn index(&self, since_open_ns: u64) -> u64 {
        match &self.clock {
            None => since_open_ns / self.length_ns,
            Some((clock, epoch)) => {
                super::nanos(clock.now().saturating_duration_since(*epoch)) / self.length_ns
            }
        }
    }

    fn start_us(&self, index: u64) -> f64 {
        index as f64 * self.length_ns as f64 / 1000.0
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 * 1e9 / self.length_ns as f64
    }

    /// The first window a trend at `now` covers for a subject first seen in window `first`.
    fn oldest(&self, now: u64, first: u64) -> u64 {
        first.max(now.saturating_sub(self.kept as u64))
    }
}

/// A completed window of a statement.
#[derive(Debug, Clone, Copy)]
struct Done {
    index: u64,
    calls: u64,
    samples: u64,
    nanos: u64,
    p95_ns: u64,
}

/// A regression found when a window was rolled: its p95 against the baseline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Regression {
    pub(crate) baseline_p95_ns: u64,
    pub(crate) p95_ns: u64,
}

/// A statement's cumulative figures (its row of the statement table), read when a window
/// closes: the window's own are their growth since it began.
pub(crate) struct Totals<'a> {
    pub(crate) calls: u64,
    pub(crate) nanos: u64,
    pub(crate) histogram: &'a Histogram<u64>,
}

/// One statement's window in progress and its completed windows.
///
/// The window in progress keeps no figures of its own beyond a count of traced runs: its
/// calls, time and p95 are what the statement's cumulative counters and histogram gained
/// since it began, taken when it closes. A run thus costs the ring one comparison and one
/// increment; the histogram difference (a pass over its buckets) is paid once per window.
pub(crate) struct StatementRing {
    first: u64,
    current: u64,
    /// Traced runs in the window in progress.
    samples: u64,
    /// The cumulative figures when the window in progress began.
    base_calls: u64,
    base_nanos: u64,
    base: Histogram<u64>,
    done: VecDeque<Done>,
}

impl StatementRing {
    pub(crate) fn new(index: u64, kept: usize, histogram: Histogram<u64>) -> Self {
        StatementRing {
            first: index,
            current: index,
            samples: 0,
            base_calls: 0,
            base_nanos: 0,
            base: histogram,
            done: VecDeque::with_capacity(kept),
        }
    }

    /// Whether a run that ended in window `index` closes the window in progress.
    #[inline]
    pub(crate) fn due(&self, index: u64) -> bool {
        index > self.current
    }

    /// Counts a traced run in the window in progress (after the totals counted it).
    #[inline]
    pub(crate) fn count(&mut self) {
        self.samples += 1;
    }

    /// Closes the window in progress if `now` is past it; `totals` are the statement's
    /// cumulative figures, which hold no run of a later window yet.
    pub(crate) fn roll(
        &mut self,
        now: u64,
        totals: &Totals<'_>,
        trend: &TrendClock,
    ) -> Option<Regression> {
        if now <= self.current {
            return None;
        }
        let mut regression = None;
        if self.samples > 0 {
            let done = Done {
                index: self.current,
                calls: totals.calls.saturating_sub(self.base_calls),
                samples: self.samples,
                nanos: totals.nanos.saturating_sub(self.base_nanos),
                p95_ns: quantile_since(totals.histogram, &self.base, 0.95),
            };
            self.trim(done.index, trend.kept);
            regression = self.regression(&done, trend.threshold);
            if self.done.len() == trend.kept {
                self.done.pop_front();
            }
            self.done.push_back(done);
            self.samples = 0;
            (self.base_calls, self.base_nanos) = (totals.calls, totals.nanos);
            self.base.reset();
            // Grows the base's buckets only when the statement reached new durations.
            let _ = self.base.add(totals.histogram);
        }
        self.current = now;
        self.trim(now, trend.kept);
        regression
    }

    /// Drops the windows a trend at `now` no longer covers.
    fn trim(&mut self, now: u64, kept: usize) {
        while self
            .done
            .front()
            .is_some_and(|d| d.index + (kept as u64) < now)
        {
            self.done.pop_front();
        }
    }

    /// `done` against the average p95 of the kept windows before it.
    fn regression(&self, done: &Done, threshold: f64) -> Option<Regression> {
        if done.samples < MIN_SAMPLES {
            return None;
        }
        let (n, sum) = self
            .done
            .iter()
            .filter(|d| d.samples >= MIN_SAMPLES)
            .fold((0usize, 0u64), |(n, s), d| (n + 1, s + d.p95_ns));
        if n < MIN_BASELINE_WINDOWS {
            return None;
        }
        let baseline = sum as f64 / n as f64;
        (done.p95_ns as f64 > baseline * (1.0 + threshold)).then_some(Regression {
            baseline_p95_ns: baseline.round() as u64,
            p95_ns: done.p95_ns,
        })
    }

    /// The trend of the completed windows before `now` (rolled first).
    pub(crate) fn trend(&self, sql: &str, now: u64, trend: &TrendClock) -> StatementTrend {
        let oldest = trend.oldest(now, self.first);
        let done: Vec<&Done> = self
            .done
            .iter()
            .filter(|d| d.index >= oldest && d.index < now)
            .collect();
        let us = |ns: u64| ns as f64 / 1000.0;
        let windows = done
            .iter()
            .map(|d| StatementWindow {
                start_us: trend.start_us(d.index),
                calls: d.calls,
                mean_us: us(d.nanos) / d.calls.max(1) as f64,
                p95_us: us(d.p95_ns),
            })
            .collect();
        let p95: Vec<(u64, f64)> = done.iter().map(|d| (d.index, us(d.p95_ns))).collect();
        let mut calls = Vec::new();
        let mut next = done.iter().peekable();
        for i in oldest..now {
            let n = next.next_if(|d| d.index == i).map_or(0, |d| d.calls);
            calls.push((i, trend.per_second(n)));
        }
        let last = now.saturating_sub(1);
        StatementTrend {
            sql: sql.to_owned(),
            windows,
            p95_us: Trend::of(&p95, last),
            calls_per_s: Trend::of(&calls, last),
        }
    }
}

/// The value at quantile `q` of the values `now` recorded since it was `base` (an earlier
/// copy of it), without building their difference.
fn quantile_since(now: &Histogram<u64>, base: &Histogram<u64>, q: f64) -> u64 {
    let total = now.len().saturating_sub(base.len());
    if total == 0 {
        return 0;
    }
    let target = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for v in now.iter_recorded() {
        let value = v.value_iterated_to();
        // `count_at` clamps to its last bucket: a value past the base's range is new.
        let before = if value <= base.max() {
            base.count_at(value)
        } else {
            0
        };
        seen += v.count_at_value().saturating_sub(before);
        if seen >= target {
            return value;
        }
    }
    now.max()
}

/// A completed window of a cache.
#[derive(Debug, Clone, Copy)]
struct CacheDone {
    index: u64,
    hits: u64,
    misses: u64,
}

struct CacheRing {
    first: u64,
    /// The cache's counters at the previous cut.
    hits: u64,
    misses: u64,
    done: VecDeque<CacheDone>,
}

/// Every cache's completed windows, cut from their cumulative counters.
#[derive(Default)]
pub(crate) struct CacheRings {
    /// The window in progress at the previous cut.
    at: u64,
    caches: HashMap<String, CacheRing>,
}

impl CacheRings {
    /// The window in progress at the previous cut.
    pub(crate) fn at(&self) -> u64 {
        self.at
    }

    /// Closes the windows from the previous cut up to `now`, sharing the lookups since then
    /// evenly among them.
    pub(crate) fn cut(&mut self, now: u64, stats: &[CacheStats], trend: &TrendClock) {
        if now <= self.at {
            return;
        }
        let spanned = now - self.at;
        let from = now.saturating_sub(spanned.min(trend.kept as u64));
        for cache in stats {
            let ring = self
                .caches
                .entry(cache.name.clone())
                .or_insert_with(|| CacheRing {
                    first: self.at,
                    hits: 0,
                    misses: 0,
                    done: VecDeque::with_capacity(trend.kept),
                });
            let hits = cache.hits.saturating_sub(ring.hits);
            let misses = cache.misses.saturating_sub(ring.misses);
            (ring.hits, ring.misses) = (cache.hits, cache.misses);
            for index in from..now {
                let share = |n: u64| n / spanned + if index + 1 == now { n % spanned } else { 0 };
                if ring.done.len() == trend.kept {
                    ring.done.pop_front();
                }
                ring.done.push_back(CacheDone {
                    index,
                    hits: share(hits),
                    misses: share(misses),
                });
            }
        }
        self.at = now;
    }

    /// Every cache's trend over the windows cut before `now`, by name.
    pub(crate) fn trends(&self, now: u64, trend: &TrendClock) -> Vec<CacheTrend> {
        let mut all: Vec<CacheTrend> = self
            .caches
            .iter()
            .map(|(name, ring)| {
                let oldest = trend.oldest(now, ring.first);
                let done: Vec<&CacheDone> = ring
                    .done
                    .iter()
                    .filter(|d| d.index >= oldest && d.index < now)
                    .collect();
                let windows: Vec<CacheWindow> = done
                    .iter()
                    .map(|d| {
                        let lookups = d.hits + d.misses;
                        CacheWindow {
                            start_us: trend.start_us(d.index),
                            lookups,
                            hits: d.hits,
                            hit_rate: d.hits as f64 / lookups.max(1) as f64,
                        }
                    })
                    .collect();
                let rates: Vec<(u64, f64)> = done
                    .iter()
                    .zip(&windows)
                    .filter(|(_, w)| w.lookups > 0)
                    .map(|(d, w)| (d.index, w.hit_rate))
                    .collect();
                let lookups: Vec<(u64, f64)> = done
                    .iter()
                    .zip(&windows)
                    .map(|(d, w)| (d.index, trend.per_second(w.lookups)))
                    .collect();
                let last = now.saturating_sub(1);
                CacheTrend {
                    cache: name.clone(),
                    windows,
                    hit_rate: Trend::of(&rates, last),
                    lookups_per_s: Trend::of(&lookups, last),
                }
            })
            .collect();
        all.sort_by(|a, b| a.cache.cmp(&b.cache));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::queries::Execution;
    use crate::Result;

    fn clock(kept: usize) -> TrendClock {
        TrendClock::new(Duration::from_secs(60), kept, 0.5, None)
    }

    fn run(window: u64, nanos: u64) -> Execution {
        Execution {
            nanos,
            weight: 1,
            window,
            ..Execution::default()
        }
    }

    fn histogram() -> Result<Histogram<u64>> {
        Histogram::new(2).map_err(|e| crate::Error::InvalidConfig {
            field: "histogram",
            reason: e.to_string(),
        })
    }

    /// A statement's row as the statement table keeps it: totals and the ring.
    struct Row {
        calls: u64,
        nanos: u64,
        histogram: Histogram<u64>,
        ring: StatementRing,
    }

    impl Row {
        fn add(&mut self, run: &Execution, t: &TrendClock) -> Option<Regression> {
            let found = self.roll(run.window, t);
            self.calls += run.weight;
            self.nanos += run.nanos * run.weight;
            let _ = self.histogram.record_n(run.nanos, run.weight);
            self.ring.count();
            found
        }

        fn roll(&mut self, now: u64, t: &TrendClock) -> Option<Regression> {
            let totals = Totals {
                calls: self.calls,
                nanos: self.nanos,
                histogram: &self.histogram,
            };
            self.ring.roll(now, &totals, t)
        }

        fn trend(&self, now: u64, t: &TrendClock) -> StatementTrend {
            self.ring.trend("S", now, t)
        }
    }

    fn ring() -> Result<Row> {
        Ok(Row {
            calls: 0,
            nanos: 0,
            histogram: histogram()?,
            ring: StatementRing::new(0, 4, histogram()?),
        })
    }

    #[test]
    fn the_window_quantile_is_of_the_new_values_only() -> Result<()> {
        let mut base = histogram()?;
        for _ in 0..100 {
            base.record(1_000).map_err(crate::Error::closure)?;
        }
        let mut now = base.clone();
        for v in 1..=100u64 {
            now.record(v * 1_000_000).map_err(crate::Error::closure)?;
        }
        let p95 = quantile_since(&now, &base, 0.95);
        assert!((94_000_000..=96_000_000).contains(&p95), "{p95}");
        assert_eq!(quantile_since(&base, &base, 0.95), 0);
        Ok(())
    }

    #[test]
    fn windows_roll_and_only_the_kept_ones_stay() -> Result<()> {
        let t = clock(4);
        let mut r = ring()?;
        for w in 0..10 {
            for _ in 0..=w {
                assert_eq!(r.add(&run(w, 1000), &t), None);
            }
        }
        r.roll(10, &t);
        let trend = r.trend(10, &t);
        let calls: Vec<u64> = trend.windows.iter().map(|w| w.calls).collect();
        assert_eq!(calls, [7, 8, 9, 10], "the last 4 of 10 windows");
        assert_eq!(trend.windows[0].start_us, 6.0 * 60e6);
        assert_eq!(trend.calls_per_s.last, Some(10.0 / 60.0));
        Ok(())
    }

    #[test]
    fn a_slower_window_is_a_regression_a_steady_one_is_not() -> Result<()> {
        let t = clock(60);
        let mut r = ring()?;
        for w in 0..4 {
            for _ in 0..MIN_SAMPLES {
                assert_eq!(r.add(&run(w, 10_000), &t), None);
            }
        }
        for _ in 0..MIN_SAMPLES {
            r.add(&run(4, 14_000), &t);
        }
        assert_eq!(r.roll(5, &t), None, "40% is under the threshold");
        for _ in 0..MIN_SAMPLES {
            r.add(&run(5, 30_000), &t);
        }
        let found = r.roll(6, &t).expect("tripled");
        assert_eq!(found.p95_ns / 1000, 30);
        assert!(
            (10_000..=11_000).contains(&found.baseline_p95_ns),
            "{found:?}"
        );
        Ok(())
    }

    #[test]
    fn gaps_count_as_no_calls() -> Result<()> {
        let t = clock(60);
        let mut r = ring()?;
        r.add(&run(0, 1000), &t);
        r.add(&run(2, 1000), &t);
        r.roll(3, &t);
        let trend = r.trend(3, &t);
        assert_eq!(trend.windows.len(), 2);
        let rate = 1.0 / 60.0;
        assert_eq!(trend.calls_per_s.baseline, Some(rate / 2.0));
        assert_eq!(trend.calls_per_s.last, Some(rate));
        Ok(())
    }

    #[test]
    fn cache_lookups_are_shared_among_the_windows_a_cut_spans() -> Result<()> {
        let t = clock(60);
        let mut rings = CacheRings::default();
        let mut stats = CacheStats::empty("users", 10);
        (stats.hits, stats.misses) = (90, 10);
        rings.cut(1, std::slice::from_ref(&stats), &t);
        (stats.hits, stats.misses) = (100, 110);
        rings.cut(3, std::slice::from_ref(&stats), &t);
        let trends = rings.trends(3, &t);
        let lookups: Vec<u64> = trends[0].windows.iter().map(|w| w.lookups).collect();
        assert_eq!(lookups, [100, 55, 55]);
        assert_eq!(trends[0].hit_rate.last, Some(5.0 / 55.0));
        assert_eq!(trends[0].hit_rate.baseline, Some((0.9 + 5.0 / 55.0) / 2.0));
        Ok(())
    }
}
