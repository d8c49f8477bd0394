//! Statistics for candidate indexes. On the copy the existing indexes carry the live
//! `sqlite_stat1` rows; a candidate without any would get SQLite's default guess (about ten
//! rows per key), and an index on a column with two values would look as good as one on a key.
//! So each candidate gets a `sqlite_stat1` row estimated from a bounded sample of the live
//! table: the average number of rows per distinct value of each leading part of its key.

use rusqlite::Connection;

use super::candidates::Candidate;
use crate::error::Result;
use crate::sql::quote_ident;

/// The `sqlite_stat1` text for `candidate` on a table of `rows` rows (per the live
/// statistics), from the first `sample` rows of the live table: `"rows d1 d2 ..."`, where
/// `di` is the estimated number of rows per distinct value of the first `i` key columns.
pub(crate) fn stat_for(
    live: &Connection,
    candidate: &Candidate,
    rows: i64,
    sample: usize,
) -> Result<String> {
    let limit = i64::try_from(sample).unwrap_or(i64::MAX);
    let table = quote_ident(&candidate.table);
    let seen: i64 = live.query_row(
        &format!("SELECT count(*) FROM (SELECT 1 FROM main.{table} LIMIT ?1)"),
        [limit],
        |r| r.get(0),
    )?;
    let rows = rows.max(seen).max(1);
    let mut stat = rows.to_string();
    let mut previous = rows;
    for i in 1..=candidate.columns.len() {
        let cols: Vec<String> = candidate.columns[..i]
            .iter()
            .map(|(c, _)| quote_ident(c))
            .collect();
        let cols = cols.join(", ");
        let distinct: i64 = live.query_row(
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT {cols} FROM \
                 (SELECT {cols} FROM main.{table} LIMIT ?1))"
            ),
            [limit],
            |r| r.get(0),
        )?;
        let per_key = rows_per_key(rows, seen, distinct).min(previous).max(1);
        previous = per_key;
        stat.push(' ');
        stat.push_str(&per_key.to_string());
    }
    Ok(stat)
}

/// Rows per distinct key on the whole table, from `distinct` keys among `seen` sampled rows
/// of `rows`. When the sample is the whole table the answer is exact. Otherwise: keys seen
/// ten times or more on average are taken to be all there is (a category, a user), so each
/// holds proportionally more rows in the whole table; rarer keys are taken to keep growing
/// with the table (a timestamp, an email), so their rows per key stay as sampled.
fn rows_per_key(rows: i64, seen: i64, distinct: i64) -> i64 {
    if seen == 0 || distinct == 0 {
        return 1;
    }
    let sampled = (seen + distinct / 2) / distinct;
    if seen >= rows || sampled < 10 {
        sampled
    } else {
        ((sampled as f64) * (rows as f64) / (seen as f64)).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_rows_per_key() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE t(flag INT, user INT, at INT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO t SELECT i % 2, i % 100, i FROM n;",
        )?;
        let c = |cols: &[&str]| Candidate {
            table: "t".into(),
            columns: cols.iter().map(|c| (c.to_string(), false)).collect(),
        };
        // The whole table sampled: exact.
        assert_eq!(
            stat_for(&conn, &c(&["flag", "user"]), 4000, 10_000)?,
            "4000 2000 40"
        );
        // A quarter sampled: repeated keys scale up, unique ones stay unique.
        assert_eq!(stat_for(&conn, &c(&["user"]), 4000, 1000)?, "4000 40");
        assert_eq!(stat_for(&conn, &c(&["at"]), 4000, 1000)?, "4000 1");
        Ok(())
    }
}
