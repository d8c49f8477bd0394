//! What dropping the last `Db` handle does to the file: its closing TRUNCATE checkpoint must not
//! hold the close up for the whole `busy_timeout` while another connection reads.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use strata::{Db, Result};

/// Far longer than the bounded wait of the closing checkpoint, so that waiting it out is
/// unmistakable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn dropping_the_last_handle_does_not_wait_out_busy_timeout_for_a_reader() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("close.db");
    let db = Db::builder()
        .path(&path)
        .busy_timeout(BUSY_TIMEOUT)
        .connection_timeout(2 * BUSY_TIMEOUT)
        .build()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))?;

    // A plain connection of the same process holds a read transaction on the WAL: the
    // TRUNCATE checkpoint cannot complete until it ends.
    let reader = rusqlite::Connection::open(&path)?;
    reader.execute_batch("BEGIN")?;
    let rows: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    assert_eq!(rows, 1);

    let (done, dropped) = mpsc::channel();
    let closer = thread::spawn(move || {
        drop(db);
        let _ = done.send(());
    });
    // Generous: the bounded wait is about 100 ms; the bug waited the whole 30 s busy_timeout.
    let closed_while_reading = dropped.recv_timeout(Duration::from_secs(10)).is_ok();
    reader.execute_batch("COMMIT")?;
    closer.join().expect("the closing thread");
    assert!(
        closed_while_reading,
        "dropping the Db waited for the reader's snapshot"
    );

    // The close went through: the file opens again and holds the row.
    let again = Db::builder().path(&path).build()?;
    let rows: i64 = again.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(rows, 1);
    Ok(())
}
