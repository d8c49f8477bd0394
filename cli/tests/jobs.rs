//! `strata jobs`: stats, dead letters, retry and purge on a database file, as a user runs it.

use std::process::{Command, Output};

use strata::jobs::{Job, UnknownKind};
use strata::{Db, Error, Result};

fn strata(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .map_err(Error::closure)
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn jobs_lists_retries_and_purges_dead_letters() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let path = dir.path().join("q.db");
    let file = path.to_str().unwrap();
    Db::open(&path)?;
    // A database without a queue is reported, not given one.
    assert!(stdout(&strata(&["jobs", "--db", file])?).contains("no job queue"));
    assert!(!strata::jobs::exists(&Db::open(&path)?)?);

    let db = Db::open(&path)?;
    let queue = db.jobs()?;
    let dead = queue.enqueue(Job::new("orphan", &"p")?.queue("mail"))?.id;
    queue.enqueue(Job::new("orphan", &"q")?.queue("mail"))?;
    let pool = queue
        .workers()
        .unknown_kinds(UnknownKind::DeadLetter)
        .start()?;
    while queue.dead_letters()?.len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    pool.shutdown(std::time::Duration::from_secs(5));
    queue.enqueue(Job::new("waiting", &1)?.queue("mail"))?;
    drop((queue, db));

    let stats = stdout(&strata(&["jobs", "--db", file])?);
    let mail = stats.lines().find(|l| l.starts_with("mail")).expect(&stats);
    let cols: Vec<&str> = mail.split_whitespace().collect();
    assert_eq!(cols, ["mail", "1", "1", "0", "2", "no"], "{stats}");
    assert!(
        stats
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orphan", "0", "0", "2"]),
        "{stats}"
    );

    let failed = stdout(&strata(&["jobs", "failed", "--db", file])?);
    assert!(failed.contains("no handler for kind orphan"), "{failed}");
    assert!(
        failed.contains(&format!("{dead} orphan queue=mail")),
        "{failed}"
    );

    let retried = stdout(&strata(&[
        "jobs",
        "retry",
        &dead.to_string(),
        "--db",
        file,
    ])?);
    assert!(
        retried.contains(&format!("dead letter {dead} enqueued again")),
        "{retried}"
    );
    let missing = strata(&["jobs", "retry", "999999", "--db", file])?;
    assert_eq!(missing.status.code(), Some(1));
    let purged = stdout(&strata(&["jobs", "purge", "--db", file])?);
    assert!(purged.contains("1 dead letters purged"), "{purged}");
    let all = stdout(&strata(&["jobs", "retry", "--all", "--db", file])?);
    assert!(all.contains("0 dead letters enqueued again"), "{all}");
    let db = Db::open(&path)?;
    assert_eq!(db.jobs()?.len()?, 2);
    assert!(strata(&["jobs", "retry", "--db", file])?.status.code() == Some(2));
    Ok(())
}
