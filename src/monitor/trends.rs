//! Trends: per-window figures of each statement and cache, and how the last window compares
//! with the ones before it.
//!
//! Time is cut into windows of [`Config::trend_window`](crate::Config::trend_window) since the
//! `Db` opened; the last [`trend_windows`](crate::Config::trend_windows) completed ones are
//! kept. The window in progress is never part of a trend: a trend compares the *last completed*
//! window with the *average of the earlier ones* (since the statement or cache was first seen),
//! and fits a least-squares line through all of them.

use serde::Serialize;

/// How one figure moved across the kept windows, in a [`StatementTrend`] or [`CacheTrend`].
///
/// Every field is `None` (`null` in JSON) when there is not enough to say: `last` when the
/// last completed window has no value (a statement that did not run in it), `baseline` with
/// no earlier window, `change` without both or with a zero baseline, `slope` with fewer than
/// two windows.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Trend {
    /// The value in the last completed window.
    pub last: Option<f64>,
    /// The average value of the earlier windows.
    pub baseline: Option<f64>,
    /// `last / baseline - 1`: 0.5 is 50% higher than the baseline, -0.5 half as high.
    pub change: Option<f64>,
    /// The least-squares slope of the value over the windows, in units per window.
    pub slope: Option<f64>,
}

impl Trend {
    /// The trend of `points` (window index, value), oldest first, where `last` is the index of
    /// the last completed window.
    pub(crate) fn of(points: &[(u64, f64)], last: u64) -> Trend {
        let (last_value, earlier) = match points.split_last() {
            Some((&(i, v), earlier)) if i == last => (Some(v), earlier),
            _ => (None, points),
        };
        let baseline = (!earlier.is_empty())
            .then(|| earlier.iter().map(|&(_, v)| v).sum::<f64>() / earlier.len() as f64);
        let change = match (last_value, baseline) {
            (Some(l), Some(b)) if b > 0.0 => Some(l / b - 1.0),
            _ => None,
        };
        Trend {
            last: last_value,
            baseline,
            change,
            slope: slope(points),
        }
    }
}

/// The least-squares slope of `points`; `None` with fewer than two distinct x.
pub(crate) fn slope(points: &[(u64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    // Centred on the first x: window indexes are large next to their spread.
    let x0 = points[0].0;
    let x = |i: u64| (i - x0) as f64;
    let mean_x = points.iter().map(|&(i, _)| x(i)).sum::<f64>() / n;
    let mean_y = points.iter().map(|&(_, v)| v).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(i, v) in points {
        let dx = x(i) - mean_x;
        sxy += dx * (v - mean_y);
        sxx += dx * dx;
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// One completed window of a statement, in a [`StatementTrend`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatementWindow {
    /// When the window started, since the `Db` opened.
    pub start_us: f64,
    /// Executions in the window (an estimate under sampling, like [`QueryStats`](super::QueryStats)).
    pub calls: u64,
    /// Mean duration.
    pub mean_us: f64,
    /// 95th percentile duration.
    pub p95_us: f64,
}

/// One statement's windows and trends, in [`Trends`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementTrend {
    /// The statement's SQL text.
    pub sql: String,
    /// The kept completed windows in which it ran, oldest first.
    pub windows: Vec<StatementWindow>,
    /// Its 95th percentile duration, in µs, over the windows in which it ran.
    pub p95_us: Trend,
    /// Its executions per second, over every window since it was first seen (0 where it did
    /// not run).
    pub calls_per_s: Trend,
}

/// One completed window of a cache, in a [`CacheTrend`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CacheWindow {
    /// When the window started, since the `Db` opened.
    pub start_us: f64,
    /// Lookups in the window.
    pub lookups: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// `hits / lookups`, 0 without lookups.
    pub hit_rate: f64,
}

/// One cache's windows and trends, in [`Trends`].
///
/// A cache's lookups run no SQL, so its windows are cut when the monitor next notices time
/// has moved on (a statement's end, a report, the alert checks); lookups since the previous
/// cut are shared evenly among the windows it spans.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheTrend {
    /// The cache's name.
    pub cache: String,
    /// The kept completed windows since the cache was first seen, oldest first.
    pub windows: Vec<CacheWindow>,
    /// Its hit rate (0 to 1), over the windows with lookups.
    pub hit_rate: Trend,
    /// Its lookups per second, over every window.
    pub lookups_per_s: Trend,
}

/// The trends section of a [`Report`](super::Report).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trends {
    /// The length of a window ([`Config::trend_window`](crate::Config::trend_window)).
    pub window_us: f64,
    /// Windows completed since the `Db` opened (only the last `trend_windows` are kept).
    pub completed_windows: u64,
    /// Statements, biggest p95 move first (by the absolute `p95_us.change`; statements
    /// without one last, by SQL text).
    pub statements: Vec<StatementTrend>,
    /// Caches, by name.
    pub caches: Vec<CacheTrend>,
}

impl Trends {
    /// The statements whose p95 moved the most, at most `n`, biggest move first: those with
    /// a `p95_us.change`.
    pub fn top_movers(&self, n: usize) -> impl Iterator<Item = &StatementTrend> {
        self.statements
            .iter()
            .filter(|s| s.p95_us.change.is_some())
            .take(n)
    }
}

/// Biggest absolute p95 change first; statements without one after, by SQL text.
pub(crate) fn sort_by_movement(statements: &mut [StatementTrend]) {
    let key = |s: &StatementTrend| s.p95_us.change.map(f64::abs);
    statements.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.sql.cmp(&b.sql)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.sql.cmp(&b.sql),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn the_last_window_against_the_average_of_the_earlier_ones() -> Result<()> {
        let t = Trend::of(&[(3, 10.0), (4, 20.0), (5, 30.0), (6, 40.0)], 6);
        assert_eq!(t.last, Some(40.0));
        assert_eq!(t.baseline, Some(20.0));
        assert_eq!(t.change, Some(1.0));
        assert_eq!(t.slope, Some(10.0));
        Ok(())
    }

    #[test]
    fn no_last_value_when_the_last_window_is_missing() -> Result<()> {
        let t = Trend::of(&[(1, 5.0), (2, 5.0)], 4);
        assert_eq!((t.last, t.baseline, t.change), (None, Some(5.0), None));
        assert_eq!(t.slope, Some(0.0));
        let one = Trend::of(&[(4, 5.0)], 4);
        assert_eq!((one.last, one.baseline, one.slope), (Some(5.0), None, None));
        assert_eq!(Trend::of(&[], 4), Trend::default());
        Ok(())
    }

    #[test]
    fn slope_is_least_squares_over_uneven_windows() -> Result<()> {
        // y = 2x + 1 with gaps: exact.
        let s = slope(&[(100, 201.0), (103, 207.0), (110, 221.0)]).expect("three points");
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        // Noise around a flat line: the fit, not the endpoints.
        let s = slope(&[(0, 1.0), (1, 3.0), (2, 1.0), (3, 3.0)]).expect("points");
        assert!((s - 0.4).abs() < 1e-9, "{s}");
        Ok(())
    }

    #[test]
    fn movers_sort_by_absolute_change() -> Result<()> {
        let st = |sql: &str, change| StatementTrend {
            sql: sql.into(),
            windows: Vec::new(),
            p95_us: Trend {
                change,
                ..Trend::default()
            },
            calls_per_s: Trend::default(),
        };
        let mut all = vec![
            st("a", None),
            st("b", Some(0.2)),
            st("c", Some(-0.9)),
            st("d", Some(3.0)),
        ];
        sort_by_movement(&mut all);
        let order: Vec<&str> = all.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(order, ["d", "c", "b", "a"]);
        let trends = Trends {
            statements: all,
            ..Trends::default()
        };
        assert_eq!(trends.top_movers(10).count(), 3);
        Ok(())
    }
}
