//! A loop of primary-key lookups through `Db::read`, for counting the instructions a lookup
//! costs with valgrind's callgrind (README, "Benchmarks": the per-call cost of the trend
//! windows). Usage: `pk_lookups [LOOKUPS [TRACE_BUDGET]]`, defaults 100000 and 0.02; a
//! budget of 1 traces (and records) every lookup.

use strata::{Db, Result};

const ROWS: i64 = 1000;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let lookups: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let budget: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.02);
    let path = std::env::temp_dir().join(format!("strata-pk-lookups-{}.db", std::process::id()));
    let db = Db::builder().path(&path).trace_budget(budget).build()?;
    db.write(|c| {
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")?;
        let mut insert = c.prepare("INSERT INTO t (id, v) VALUES (?1, ?2)")?;
        for id in 1..=ROWS {
            insert.execute([id, id * 7])?;
        }
        Ok(())
    })?;
    let mut sum = 0i64;
    for i in 0..lookups {
        sum += db.read(|c| {
            Ok(c.prepare_cached("SELECT v FROM t WHERE id = ?1")?
                .query_row([i % ROWS + 1], |r| r.get::<_, i64>(0))?)
        })?;
    }
    println!("{lookups} lookups, sum {sum}");
    drop(db);
    for suffix in ["", "-wal", "-shm", "-lock"] {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    Ok(())
}
