//! Which closures are traced: sampling within a budget of added time.
//!
//! Tracing a closure costs per statement: SQLite reads the OS clock at the start and end of
//! every statement once the profile event is on, and the hook reads statement counters and
//! records the run (about 130 ns a statement here, against ~180 ns for a one-row insert). A
//! loop of small statements would run half again as long, so closures are traced by sampling:
//! each call site (the closure's type) keeps a stride, and a call is traced with probability
//! `1 / stride`; a traced run then counts for `stride` runs in the statistics, which keeps
//! calls, rows and total time unbiased estimates. The stride is chosen after each traced run so
//! that tracing adds at most `budget` of the site's untraced time on average: a site whose
//! statements are cheap next to their tracing is sampled rarely, one with slow statements on
//! every call.
//!
//! A site's first call is always traced (nothing is known of it yet), so every statement of a
//! new code path shows up at once. An untraced call that takes longer than the slow-query
//! threshold makes the site's next call traced (counted for nothing, so estimates stay
//! unbiased), so that a statement that is slow every time reaches the slow-query log at its
//! second run. A budget of 1 or more traces every call, which makes the counts exact.
//!
//! The state is per thread (no lock, no shared cache line on the path of every call), keyed by
//! the address of a function instantiated per closure type; a site's stride is therefore
//! learned once per thread.

use std::cell::RefCell;
use std::collections::HashMap;

/// Estimated cost of tracing, per statement run and per row returned, and per traced closure
/// (registering and removing the hook). Measured on a 2-vCPU VM; a faster machine only traces
/// a little less often than it could.
const STATEMENT_NS: f64 = 150.0;
const ROW_NS: f64 = 10.0;
const CLOSURE_NS: f64 = 100.0;

/// The most runs one traced run stands for: the statistics of a site move at least this often.
const MAX_STRIDE: u64 = 1024;

/// Sites remembered per thread; past this, calls of new sites are traced every time (a
/// program with this many distinct closure types is generating them).
const MAX_SITES: usize = 4096;

/// A call site: the address of [`site_of`] instantiated for the closure's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Site(usize);

/// The site of closures of type `F`.
pub(crate) fn site_of<F>() -> Site {
    Site(site_of::<F> as fn() -> Site as usize)
}

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Trace it; its statements count `weight` times (0: observed for the slow-query log and
    /// the N+1 check only).
    Traced { weight: u64 },
    /// Run it untraced, timing only the whole call.
    Untraced,
}

/// How a traced call went.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracedRun {
    pub(crate) nanos: u64,
    pub(crate) statements: u64,
    pub(crate) rows: u64,
}

struct SiteState {
    stride: u64,
    /// Moving average of untraced calls' durations; 0 until one was seen.
    untraced_ns: f64,
    /// Moving average of traced calls' durations (weighted ones only); 0 until one was seen.
    traced_ns: f64,
    /// The next call is traced whatever the draw says.
    force: bool,
}

struct Sites {
    /// FxHash multiplies the address, so the alignment zeros of its low bits do not crowd
    /// the table's buckets.
    map: HashMap<Site, SiteState, rustc_hash::FxBuildHasher>,
    /// The generator of the draws.
    rng: rand::rngs::Xoshiro256PlusPlus,
}

thread_local! {
    static SITES: RefCell<Sites> = RefCell::new(Sites {
        map: HashMap::default(),
        rng: rand::SeedableRng::seed_from_u64(seed()),
    });
}

fn seed() -> u64 {
    let local = 0u8;
    // Any per-thread value will do: threads need not draw the same sequence.
    std::ptr::from_ref(&local) as u64
}

/// The sampling policy of one monitor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampler {
    budget: f64,
}

impl Sampler {
    pub(crate) fn new(budget: f64) -> Self {
        Sampler { budget }
    }

    /// Whether every call is traced.
    pub(crate) fn traces_all(&self) -> bool {
        self.budget >= 1.0
    }

    /// Decides one call of `site`.
    pub(crate) fn plan(&self, site: Site) -> Plan {
        if self.traces_all() {
            return Plan::Traced { weight: 1 };
        }
        SITES
            .try_with(|sites| {
                let Ok(mut sites) = sites.try_borrow_mut() else {
                    return Plan::Traced { weight: 1 };
                };
                let draw = rand::Rng::next_u64(&mut sites.rng);
                let Some(state) = sites.map.get_mut(&site) else {
                    return Plan::Traced { weight: 1 };
                };
                if state.stride <= 1 || draw % state.stride == 0 {
                    state.force = false;
                    Plan::Traced {
                        weight: state.stride.max(1),
                    }
                } else if state.force {
                    state.force = false;
                    Plan::Traced { weight: 0 }
                } else {
                    Plan::Untraced
                }
            })
            .unwrap_or(Plan::Traced { weight: 1 })
    }

    /// After a traced call: picks the site's stride for the calls that follow.
    pub(crate) fn traced(&self, site: Site, run: TracedRun) {
        if self.traces_all() {
            return;
        }
        let cost = CLOSURE_NS + run.statements as f64 * STATEMENT_NS + run.rows as f64 * ROW_NS;
        let _ = SITES.try_with(|sites| {
            let Ok(mut sites) = sites.try_borrow_mut() else {
                return;
            };
            if !sites.map.contains_key(&site) && sites.map.len() >= MAX_SITES {
                return;
            }
            let state = sites.map.entry(site).or_insert(SiteState {
                stride: 1,
                untraced_ns: 0.0,
                traced_ns: 0.0,
                force: false,
            });
            if state.untraced_ns > 0.0 {
                // Only runs after an untraced one: the site's first run prepared its
                // statements.
                state.traced_ns = moving_average(state.traced_ns, run.nanos as f64);
                // What tracing costs here, when this machine is slower than the model's (or
                // the statements' tracing dearer): the budget holds on any machine.
                let measured = state.traced_ns - state.untraced_ns;
                state.stride = stride(cost.max(measured), state.untraced_ns, self.budget);
            } else {
                // Until an untraced call has been timed, tracing's cost here is unknown: at
                // least every other call goes untraced so that it can be measured.
                let untraced = (run.nanos as f64 - cost).max(1.0);
                state.stride = stride(cost, untraced, self.budget).max(2);
            }
        });
    }

    /// After an untraced call that took `nanos`; `slow` if it took at least the slow-query
    /// threshold.
    pub(crate) fn untraced(&self, site: Site, nanos: u64, slow: bool) {
        let _ = SITES.try_with(|sites| {
            let Ok(mut sites) = sites.try_borrow_mut() else {
                return;
            };
            if let Some(state) = sites.map.get_mut(&site) {
                state.untraced_ns = moving_average(state.untraced_ns, nanos as f64);
                state.force |= slow;
            }
        });
    }
}

/// `average` moved an eighth of the way to `sample` (`sample` itself if there was none).
fn moving_average(average: f64, sample: f64) -> f64 {
    if average > 0.0 {
        average + (sample - average) / 8.0
    } else {
        sample
    }
}

/// The stride that keeps `cost` per traced call within `budget` of `untraced` per call.
fn stride(cost: f64, untraced: f64, budget: f64) -> u64 {
    let stride = (cost / (budget * untraced)).ceil();
    if stride.is_nan() || stride < 1.0 {
        1
    } else {
        (stride as u64).min(MAX_STRIDE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    struct A;
    struct B;

    #[test]
    fn sites_differ_per_closure_type() -> Result<()> {
        assert_eq!(site_of::<A>(), site_of::<A>());
        assert_ne!(site_of::<A>(), site_of::<B>());
        Ok(())
    }

    #[test]
    fn stride_keeps_tracing_within_budget() -> Result<()> {
        // A 100-statement closure of 17 µs: 15.1 µs of tracing at 2% needs 1 in 45.
        assert_eq!(stride(15_100.0, 17_000.0, 0.02), 45);
        // A slow closure is traced every time.
        assert_eq!(stride(250.0, 5_000_000.0, 0.02), 1);
        assert_eq!(stride(1e9, 1.0, 0.02), MAX_STRIDE);
        Ok(())
    }

    #[test]
    fn a_new_site_is_traced_then_sampled_with_weights() -> Result<()> {
        struct Site1;
        let sampler = Sampler::new(0.02);
        let site = site_of::<Site1>();
        assert_eq!(sampler.plan(site), Plan::Traced { weight: 1 });
        sampler.traced(
            site,
            TracedRun {
                nanos: 30_000,
                statements: 100,
                rows: 0,
            },
        );
        let mut weights = 0;
        let runs = 20_000;
        for _ in 0..runs {
            match sampler.plan(site) {
                Plan::Traced { weight } => weights += weight,
                Plan::Untraced => sampler.untraced(site, 15_000, false),
            }
        }
        // Each traced run stands for `stride` runs: the total estimates the real count.
        let error = (weights as f64 - runs as f64).abs() / runs as f64;
        assert!(error < 0.25, "estimated {weights} of {runs} runs");
        Ok(())
    }

    #[test]
    fn a_slow_untraced_call_forces_the_next_trace() -> Result<()> {
        struct Site2;
        let sampler = Sampler::new(0.0001);
        let site = site_of::<Site2>();
        sampler.traced(
            site,
            TracedRun {
                nanos: 1_000,
                statements: 5,
                rows: 0,
            },
        );
        assert!(
            (0..10_000).any(|_| sampler.plan(site) == Plan::Untraced),
            "a sampled site skips calls"
        );
        sampler.untraced(site, 50_000_000, true);
        let next = sampler.plan(site);
        assert!(matches!(next, Plan::Traced { .. }), "{next:?}");
        Ok(())
    }

    #[test]
    fn a_tracing_dearer_than_the_model_is_sampled_less() -> Result<()> {
        struct Site4;
        let sampler = Sampler::new(0.02);
        let site = site_of::<Site4>();
        let one_statement = |nanos| TracedRun {
            nanos,
            statements: 1,
            rows: 1,
        };
        sampler.traced(site, one_statement(100_000));
        sampler.untraced(site, 10_000, false);
        // The model's cost (260 ns) of 10 µs at 2%: 1 in 2.
        sampler.traced(site, one_statement(10_260));
        let stride_of = || SITES.with(|s| s.borrow().map.get(&site).map_or(0, |s| s.stride));
        assert_eq!(stride_of(), 2);
        // Traced runs measured 5 µs dearer than untraced ones (a machine five times slower
        // than the model's, say): 25 in 1 keeps the budget.
        for _ in 0..100 {
            sampler.traced(site, one_statement(15_000));
        }
        assert_eq!(stride_of(), 25);
        Ok(())
    }

    #[test]
    fn a_budget_of_one_traces_everything() -> Result<()> {
        struct Site3;
        let sampler = Sampler::new(1.0);
        let site = site_of::<Site3>();
        sampler.traced(site, TracedRun::default());
        for _ in 0..100 {
            assert_eq!(sampler.plan(site), Plan::Traced { weight: 1 });
        }
        Ok(())
    }
}
