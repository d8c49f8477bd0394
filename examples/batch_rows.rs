//! Inserts N rows through a `Batch` (as benches/write.rs `batch_insert_100k` does: the same
//! table, rows and default chunk size) or through one raw rusqlite transaction with a prepared
//! insert, for counting the instructions a row costs with valgrind's callgrind. Only `measured`
//! is counted (`--toggle-collect`), on the calling thread, where both the batch and the raw
//! loop run; the per-row figure is (count at 2N − count at N) / N, which cancels the fixed
//! costs. benches/batch_callgrind.sh runs it.
//!
//! Usage: `batch_rows strata|raw|raw_autocheckpoint N [REPEAT]`: REPEAT fresh databases one
//! after the other in one process (as criterion's iterations are), each timed.

use std::time::Duration;

use strata::rusqlite::Connection;
use strata::{Batch, Db, Result, Synchronous};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, \
                     amount INTEGER NOT NULL, note TEXT)";
const INSERT: &str = "INSERT INTO bulk (kind, amount, note) VALUES (?1, ?2, ?3)";
const COLUMNS: &[&str] = &["kind", "amount", "note"];

/// One bench row: kind, amount, note.
type Row = (String, i64, String);

/// The instructions counted: everything the insert of the rows costs on the calling thread.
#[inline(never)]
fn measured(run: &mut dyn FnMut() -> usize) -> usize {
    let (thread, process) = (
        cpu(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu(libc::CLOCK_PROCESS_CPUTIME_ID),
    );
    let switches = context_switches();
    let started = std::time::Instant::now();
    let n = run();
    let after = context_switches();
    // Wall and CPU time too, for a quick look outside valgrind (criterion's benches are the
    // figure): CPU time of this thread and of the whole process (background threads included).
    eprintln!(
        "{n} rows in {:?} wall, {:?} cpu on this thread, {:?} cpu in the process, \
         {} voluntary and {} involuntary context switches of this thread",
        started.elapsed(),
        cpu(libc::CLOCK_THREAD_CPUTIME_ID) - thread,
        cpu(libc::CLOCK_PROCESS_CPUTIME_ID) - process,
        after.0 - switches.0,
        after.1 - switches.1,
    );
    n
}

/// This thread's voluntary and involuntary context switches so far.
fn context_switches() -> (i64, i64) {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is this thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (usage.ru_nvcsw, usage.ru_nivcsw)
}

fn cpu(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to; the clocks are the standard CPU-time ones.
    unsafe { libc::clock_gettime(clock, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (side, n, repeat) = match args.as_slice() {
        [side, n] => (side, n, 1),
        [side, n, repeat] => (side, n, repeat.parse().expect("REPEAT")),
        _ => panic!("usage: batch_rows strata|raw|raw_autocheckpoint N [REPEAT]"),
    };
    let n: usize = n.parse().expect("N rows");
    let rows: Vec<Row> = (0..n)
        .map(|i| (format!("k{}", i % 10), i as i64, format!("note {i}")))
        .collect();
    for _ in 0..repeat {
        once(side, &rows)?;
    }
    Ok(())
}

/// One fresh database and one insert of `rows`, as one criterion iteration does.
fn once(side: &str, rows: &[Row]) -> Result<()> {
    let n = rows.len();
    // Beside the build output, on the disk a service database would be on (not a tmpfs).
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let dir = tempfile::tempdir_in(base).expect("scratch dir");
    let path = dir.path().join("bulk.db");
    let inserted = match side {
        "strata" => {
            let db = Db::builder()
                .path(&path)
                .synchronous(Synchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .build()?;
            db.write(|c| Ok(c.execute_batch(TABLE)?))?;
            let mut batch = Batch::new();
            for (kind, amount, note) in rows {
                batch.insert("bulk", COLUMNS, (kind, amount, note));
            }
            let applied = measured(&mut || db.apply(&batch).expect("batch").applied);
            // What criterion's batch case counted until it returned the batch from its
            // routine: freeing the batch's allocations (the raw loop frees nothing).
            let started = std::time::Instant::now();
            drop(batch);
            eprintln!("batch dropped in {:?}", started.elapsed());
            applied
        }
        "raw" | "raw_autocheckpoint" => {
            let conn = Connection::open(&path)?;
            conn.set_prepared_statement_cache_capacity(128);
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-8192;
                 PRAGMA temp_store=MEMORY; PRAGMA foreign_keys=ON; PRAGMA trusted_schema=OFF;",
            )?;
            if side == "raw" {
                conn.execute_batch("PRAGMA wal_autocheckpoint=0")?;
            }
            conn.execute_batch(TABLE)?;
            measured(&mut || {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                {
                    let mut stmt = conn.prepare_cached(INSERT).unwrap();
                    for row in rows {
                        stmt.execute((&row.0, row.1, &row.2)).unwrap();
                    }
                }
                conn.execute_batch("COMMIT").unwrap();
                rows.len()
            })
        }
        other => panic!("unknown side {other}"),
    };
    assert_eq!(inserted, n);
    Ok(())
}
