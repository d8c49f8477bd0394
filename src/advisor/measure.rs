//! Timing statements on the sample copy, before and after the advised indexes, with
//! parameters bound to values drawn from the sampled rows (a point query for a key that
//! exists, a range between two existing values), the same sequence in both runs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::Connection;

use super::analyze::{Analysis, ParamRole};
use super::copy::SchemaCopy;
use super::plan::QueryPlan;
use super::verify::{drop_index, restore, Tried, Work};
use crate::error::Result;
use crate::sql::quote_ident;

/// The page size bound to `LIMIT ?`: what a listing typically asks for.
const LIMIT_VALUE: i64 = 50;
/// At most this many runs per statement and phase.
const MAX_RUNS: u32 = 200;
/// Values drawn per column.
const VALUES_PER_COLUMN: i64 = 1000;

/// The measured time of one statement before and after the advised indexes, on the sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Speedup {
    /// Median time per run without the advised indexes.
    pub before: Duration,
    /// Median time per run with them.
    pub after: Duration,
    /// Runs per phase.
    pub runs: u32,
    /// Rows per table in the sample the runs read.
    pub sample_rows: usize,
}

impl Speedup {
    /// `before / after`: 10.0 means ten times faster.
    pub fn factor(&self) -> f64 {
        self.before.as_secs_f64() / self.after.as_secs_f64().max(1e-9)
    }
}

/// Values to bind, drawn once from the sample copy.
pub(crate) struct Bindings {
    /// Per parameter index: how to pick its value.
    plan: Vec<(usize, Pick)>,
    columns: HashMap<(String, String), Vec<Value>>,
    /// BETWEEN pairs: (low index, high index).
    pairs: Vec<(usize, usize)>,
}

enum Pick {
    Column(String, String),
    Fixed(Value),
}

impl Bindings {
    /// Works out what to bind for each parameter of a statement with `count` parameters.
    pub(crate) fn new(conn: &Connection, analysis: Option<&Analysis>, count: usize) -> Bindings {
        let mut plan = Vec::with_capacity(count);
        let mut columns = HashMap::new();
        let mut lows: HashMap<usize, usize> = HashMap::new();
        let mut highs: HashMap<usize, usize> = HashMap::new();
        let params = analysis.map(|a| a.params.as_slice()).unwrap_or_default();
        for index in 1..=count {
            let found = params.iter().find(|p| p.index == index);
            let pick = match found {
                Some(p) => {
                    match p.role {
                        ParamRole::Low(pair) => {
                            lows.insert(pair, index);
                        }
                        ParamRole::High(pair) => {
                            highs.insert(pair, index);
                        }
                        _ => {}
                    }
                    match (&p.role, &p.column) {
                        (ParamRole::Limit, _) => Pick::Fixed(Value::Integer(LIMIT_VALUE)),
                        (ParamRole::Offset, _) => Pick::Fixed(Value::Integer(0)),
                        (_, Some((table, column))) => {
                            let key = (table.clone(), column.clone());
                            if !columns.contains_key(&key) {
                                columns.insert(key.clone(), draw(conn, table, column));
                            }
                            Pick::Column(table.clone(), column.clone())
                        }
                        _ => Pick::Fixed(Value::Null),
                    }
                }
                None => Pick::Fixed(Value::Null),
            };
            plan.push((index, pick));
        }
        let pairs = lows
            .iter()
            .filter_map(|(pair, low)| Some((*low, *highs.get(pair)?)))
            .collect();
        Bindings {
            plan,
            columns,
            pairs,
        }
    }

    /// The values of one run.
    fn values(&self, rng: &mut Rng) -> Vec<(usize, Value)> {
        let mut values: Vec<(usize, Value)> = self
            .plan
            .iter()
            .map(|(index, pick)| {
                let v = match pick {
                    Pick::Fixed(v) => v.clone(),
                    Pick::Column(t, c) => self
                        .columns
                        .get(&(t.clone(), c.clone()))
                        .filter(|v| !v.is_empty())
                        .map(|v| v[rand::RngExt::random_range(rng, 0..v.len())].clone())
                        .unwrap_or(Value::Null),
                };
                (*index, v)
            })
            .collect();
        for (low, high) in &self.pairs {
            let (Some(l), Some(h)) = (
                values.iter().position(|(i, _)| i == low),
                values.iter().position(|(i, _)| i == high),
            ) else {
                continue;
            };
            if less(&values[h].1, &values[l].1) {
                let tmp = values[l].1.clone();
                values[l].1 = values[h].1.clone();
                values[h].1 = tmp;
            }
        }
        values
    }
}

/// Draws up to [`VALUES_PER_COLUMN`] non-null values of a column from the sample.
fn draw(conn: &Connection, table: &str, column: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT {c} FROM main.{t} WHERE {c} IS NOT NULL LIMIT {VALUES_PER_COLUMN}",
        c = quote_ident(column),
        t = quote_ident(table)
    );
    conn.prepare(&sql)
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, Value>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap_or_default()
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x < y,
        (Value::Real(x), Value::Real(y)) => x < y,
        (Value::Integer(x), Value::Real(y)) => (*x as f64) < *y,
        (Value::Real(x), Value::Integer(y)) => *x < (*y as f64),
        (Value::Text(x), Value::Text(y)) => x < y,
        (Value::Blob(x), Value::Blob(y)) => x < y,
        _ => false,
    }
}

/// A seeded generator: both phases bind the same sequence.
type Rng = rand::rngs::Xoshiro256PlusPlus;

fn seeded(seed: u64) -> Rng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// Runs `sql` `runs` times (or until `budget` is spent, when `runs` is `None`) and returns the
/// runs made and the median time of one (the median: a run that meets a page allocation or a
/// scheduler hiccup must not skew the figure). A run that writes is rolled back. A run over `budget * 10`
/// is interrupted and the phase fails, rather than hold the advisor up.
pub(crate) fn time(
    conn: &Connection,
    sql: &str,
    bindings: &Bindings,
    runs: Option<u32>,
    budget: Duration,
) -> Result<(u32, Duration)> {
    let mut stmt = conn.prepare(sql)?;
    let writes = !stmt.readonly();
    let hard_stop = Instant::now() + budget * 10;
    conn.progress_handler(10_000, Some(move || Instant::now() > hard_stop))?;
    let mut rng = seeded(0x9e37_79b9_7f4a_7c15);
    let mut one = |rng: &mut Rng| -> Result<Duration> {
        for (index, value) in bindings.values(rng) {
            stmt.raw_bind_parameter(index, value)?;
        }
        if writes {
            conn.execute_batch("SAVEPOINT strata_measure")?;
        }
        let started = Instant::now();
        let result = (|| -> rusqlite::Result<()> {
            let mut rows = stmt.raw_query();
            while rows.next()?.is_some() {}
            Ok(())
        })();
        let elapsed = started.elapsed();
        if writes {
            conn.execute_batch("ROLLBACK TO strata_measure; RELEASE strata_measure")?;
        }
        result?;
        Ok(elapsed)
    };
    let outcome = (|| -> Result<(u32, Duration)> {
        // One unmeasured run warms the page cache the same way for both phases.
        one(&mut seeded(1))?;
        let mut times: Vec<Duration> = Vec::new();
        let mut done = 0u32;
        let started = Instant::now();
        loop {
            let enough = match runs {
                Some(n) => done >= n,
                None => done >= MAX_RUNS || (done > 0 && started.elapsed() >= budget),
            };
            if enough {
                break;
            }
            times.push(one(&mut rng)?);
            done += 1;
        }
        times.sort();
        Ok((
            done,
            times.get(times.len() / 2).copied().unwrap_or_default(),
        ))
    })();
    let cleared = conn.progress_handler(0, None::<fn() -> bool>);
    let outcome = outcome?;
    cleared?;
    Ok(outcome)
}

/// Times every statement that some advised index serves: with the indexes (as they are on
/// the copy now), then without, then puts them back.
pub(super) fn measure_served(
    copy: &SchemaCopy,
    work: &[Work],
    after: &[QueryPlan],
    final_set: &[Tried],
    budget: Duration,
    stats: &[(String, String, String)],
) -> Result<Vec<Option<Speedup>>> {
    let conn = &copy.conn;
    let served: Vec<bool> = after
        .iter()
        .map(|p| final_set.iter().any(|t| p.uses_index(&t.name)))
        .collect();
    let mut bindings = Vec::with_capacity(work.len());
    for w in work {
        let count = conn
            .prepare(&w.sql)
            .map(|s| s.parameter_count())
            .unwrap_or(0);
        bindings.push(Bindings::new(conn, w.analysis.as_ref(), count));
    }
    let mut before: Vec<Option<(u32, Duration)>> = vec![None; work.len()];
    for t in final_set {
        drop_index(conn, &t.name)?;
    }
    for (i, w) in work.iter().enumerate() {
        if served[i] {
            before[i] = time(conn, &w.sql, &bindings[i], None, budget).ok();
        }
    }
    for t in final_set {
        restore(copy, t, stats)?;
    }
    let mut out = vec![None; work.len()];
    for (i, w) in work.iter().enumerate() {
        let Some((runs, median_before)) = before[i] else {
            continue;
        };
        if runs == 0 {
            continue;
        }
        if let Ok((_, median_after)) = time(conn, &w.sql, &bindings[i], Some(runs), budget) {
            out[i] = Some(Speedup {
                before: median_before,
                after: median_after,
                runs,
                sample_rows: copy.sample_rows,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::analyze::analyze;
    use crate::advisor::catalog::Catalog;

    #[test]
    fn binds_existing_values_and_orders_between() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE t(a INT, d TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT i % 50, printf('2024-01-%02d', i % 28 + 1) FROM n;",
        )?;
        let cat = Catalog::load(&conn)?;
        let sql = "SELECT * FROM t WHERE a = ?1 AND d BETWEEN ?2 AND ?3 LIMIT ?4";
        let analysis = analyze(sql, &cat).map_err(crate::Error::closure)?;
        let b = Bindings::new(&conn, Some(&analysis), 4);
        let mut rng = seeded(7);
        for _ in 0..20 {
            let v = b.values(&mut rng);
            assert!(matches!(v[0].1, Value::Integer(0..=49)));
            assert!(!less(&v[2].1, &v[1].1), "{v:?}");
            assert_eq!(v[3].1, Value::Integer(LIMIT_VALUE));
        }
        let (runs, _) = time(&conn, sql, &b, Some(5), Duration::from_millis(50))?;
        assert_eq!(runs, 5);
        // A write is measured and rolled back.
        let update = "UPDATE t SET d = 'x' WHERE a = ?1";
        let analysis = analyze(update, &cat).map_err(crate::Error::closure)?;
        let b = Bindings::new(&conn, Some(&analysis), 1);
        time(&conn, update, &b, None, Duration::from_millis(20))?;
        let changed: i64 =
            conn.query_row("SELECT count(*) FROM t WHERE d = 'x'", [], |r| r.get(0))?;
        assert_eq!(changed, 0);
        Ok(())
    }
}
