//! A write closure gets the writer connection itself. Whatever it does to strata's
//! transaction or hooks (COMMIT, ROLLBACK, BEGIN, strata's savepoint, removing the update
//! hook, the authorizer, the commit hook or the capture function), it fails alone with a typed
//! error and its changes roll back, while the other calls of its group commit, are published
//! and invalidate their cache entries; the writer keeps capturing afterwards.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use strata::cache::{EntityCache, InvalidationRule};
use strata::events::ChangeSet;
use strata::rusqlite::hooks::{Action, AuthContext, Authorization};
use strata::rusqlite::{Connection, OptionalExtension};
use strata::{Db, Error, Result};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `t` (cached by id, so watched through triggers) and `log` (unwatched: only the update hook
/// sees its rows).
fn open(dir: &tempfile::TempDir) -> Result<Db> {
    let db = Db::builder().path(dir.path().join("g.db")).build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INT NOT NULL);
             CREATE TABLE log (who TEXT NOT NULL);
             INSERT INTO t VALUES (1, 0), (2, 0);",
        )?)
    })?;
    Ok(db)
}

fn n_of(db: &Db, cache: &EntityCache<i64, i64>, id: i64) -> Result<Option<Arc<i64>>> {
    db.cached(cache, &id, |c, id| {
        Ok(
            c.query_row("SELECT n FROM t WHERE id = ?1", [id], |r| r.get(0))
                .optional()?,
        )
    })
}

fn logged(db: &Db) -> Result<Vec<String>> {
    db.read(|c| {
        let mut stmt = c.prepare("SELECT who FROM log ORDER BY who")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

/// The outcomes of one group: a holder that runs first (and so without a savepoint), then
/// `good-1`, `guilty` and `good-2` queued behind it.
struct Outcome {
    holder: Result<()>,
    good: Vec<Result<()>>,
    guilty: Result<()>,
}

/// A good call: logs its name and sets `n` of row `id`.
fn good(db: &Db, who: &'static str, id: i64) -> Result<()> {
    db.write(move |c| {
        c.execute("INSERT INTO log VALUES (?1)", [who])?;
        c.execute("UPDATE t SET n = ?1 WHERE id = ?1", [id])?;
        Ok(())
    })
}

/// Runs `guilty` (after it logged `guilty`) in one group with the holder and two good calls.
fn group_with(db: &Db, guilty: fn(&Connection) -> Result<()>) -> Outcome {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let holder = s.spawn(|| {
            db.write(move |c| {
                c.execute("INSERT INTO log VALUES ('holder')", [])?;
                started_tx.send(()).expect("test alive");
                release_rx.recv().expect("test alive");
                Ok(())
            })
        });
        started_rx.recv().expect("holder started");
        let good_1 = s.spawn(|| good(db, "good-1", 1));
        let guilty = s.spawn(move || {
            db.write(move |c| {
                c.execute("INSERT INTO log VALUES ('guilty')", [])?;
                guilty(c)
            })
        });
        let good_2 = s.spawn(|| good(db, "good-2", 2));
        // Time for the three to queue; it only shapes the group.
        thread::sleep(Duration::from_millis(300));
        release_tx.send(()).expect("holder alive");
        let join = |h: thread::ScopedJoinHandle<'_, Result<()>>| h.join().expect("no panic");
        Outcome {
            holder: join(holder),
            good: vec![join(good_1), join(good_2)],
            guilty: join(guilty),
        }
    })
}

/// Runs the group around `guilty` on a fresh database and checks everything but the guilty
/// call's error, which it returns.
fn only_the_guilty_fails(guilty: fn(&Connection) -> Result<()>) -> Result<Error> {
    let dir = tempdir();
    let db = open(&dir)?;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("t_by_id"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t_by_id"))?;
    assert_eq!(n_of(&db, &cache, 1)?.as_deref(), Some(&0));
    assert_eq!(n_of(&db, &cache, 2)?.as_deref(), Some(&0));
    let changes = db.subscribe();

    let outcome = group_with(&db, guilty);
    outcome.holder?;
    for result in outcome.good {
        result?;
    }
    let err = outcome.guilty.expect_err("the guilty call fails");
    assert!(db.write_stats().max_group >= 4, "the four ran as one group");

    // The others committed, the guilty call's row did not.
    assert_eq!(logged(&db)?, ["good-1", "good-2", "holder"], "{err:?}");
    let set: Arc<ChangeSet> = changes
        .recv_timeout(Duration::from_secs(5))
        .expect("the group's ChangeSet");
    let mut logged_rows = set.changes.iter().filter(|c| &*c.table == "log").count();
    assert_eq!(logged_rows, 3, "holder, good-1, good-2: {set:?}");
    assert_eq!(set.changes.iter().filter(|c| &*c.table == "t").count(), 2);
    assert!(changes.try_recv().is_err(), "one transaction");
    // Their cache entries were dropped: the reads see the new values.
    assert!(cache.get(&1).is_none() && cache.get(&2).is_none());
    assert_eq!(n_of(&db, &cache, 1)?.as_deref(), Some(&1));
    assert_eq!(n_of(&db, &cache, 2)?.as_deref(), Some(&2));

    // The writer still captures everything: the hooks are back.
    db.write(|c| {
        c.execute("INSERT INTO log VALUES ('after')", [])?;
        c.execute("UPDATE t SET n = 10 WHERE id = 1", [])?;
        Ok(())
    })?;
    let set = changes
        .recv_timeout(Duration::from_secs(5))
        .expect("the next ChangeSet");
    logged_rows = set.changes.iter().filter(|c| &*c.table == "log").count();
    assert_eq!(logged_rows, 1, "{set:?}");
    assert_eq!(n_of(&db, &cache, 1)?.as_deref(), Some(&10));
    Ok(err)
}

fn refused(statement: &str, err: &Error) {
    assert!(
        matches!(err, Error::TransactionControl { statement: s } if s == statement),
        "expected TransactionControl {{ {statement} }}, got {err:?}"
    );
}

fn tampered(hook: &str, err: &Error) {
    assert!(
        matches!(err, Error::HookTampered { hook: h } if *h == hook),
        "expected HookTampered {{ {hook} }}, got {err:?}"
    );
}

#[test]
fn commit_in_a_closure_is_refused() -> Result<()> {
    // The closure drops SQLite's refusal: it still fails.
    let err = only_the_guilty_fails(|c| {
        let _ = c.execute_batch("COMMIT");
        Ok(())
    })?;
    refused("COMMIT", &err);
    Ok(())
}

#[test]
fn end_in_a_closure_is_refused() -> Result<()> {
    let err = only_the_guilty_fails(|c| Ok(c.execute_batch("END TRANSACTION")?))?;
    refused("COMMIT", &err);
    Ok(())
}

#[test]
fn the_groups_cached_commit_statement_is_not_handed_to_a_closure() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        c.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })?;
    refused("COMMIT", &err);
    Ok(())
}

#[test]
fn rollback_in_a_closure_is_refused() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        let _ = c.execute_batch("ROLLBACK");
        Ok(())
    })?;
    refused("ROLLBACK", &err);
    Ok(())
}

#[test]
fn begin_in_a_closure_is_refused() -> Result<()> {
    let err = only_the_guilty_fails(|c| Ok(c.execute_batch("BEGIN IMMEDIATE")?))?;
    refused("BEGIN", &err);
    Ok(())
}

#[test]
fn releasing_strata_savepoint_is_refused() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        let _ = c.execute_batch("RELEASE strata_write");
        Ok(())
    })?;
    refused("RELEASE strata_write", &err);
    let err = only_the_guilty_fails(|c| Ok(c.execute_batch("ROLLBACK TO \"STRATA_WRITE\"")?))?;
    refused("ROLLBACK TO STRATA_WRITE", &err);
    Ok(())
}

#[test]
fn removing_the_update_hook_is_detected_and_undone() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        c.update_hook(None::<fn(Action, &str, &str, i64)>)?;
        Ok(())
    })?;
    tampered("update hook", &err);
    Ok(())
}

#[test]
fn removing_the_authorizer_is_detected_and_undone() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        c.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)?;
        Ok(())
    })?;
    tampered("authorizer", &err);
    Ok(())
}

#[test]
fn a_commit_hook_of_the_closure_is_detected_and_undone() -> Result<()> {
    // A hook that vetoes every commit: left in place, no later group could commit.
    let err = only_the_guilty_fails(|c| {
        c.commit_hook(Some(|| true))?;
        Ok(())
    })?;
    tampered("commit hook", &err);
    Ok(())
}

#[test]
fn removing_the_capture_function_is_detected_and_undone() -> Result<()> {
    let err = only_the_guilty_fails(|c| {
        c.remove_function("strata_capture", -1)?;
        Ok(())
    })?;
    tampered("change capture function", &err);
    Ok(())
}

#[test]
fn a_closure_keeps_savepoints_of_its_own() -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    db.write(|c| {
        c.execute_batch(
            "SAVEPOINT mine; INSERT INTO log VALUES ('kept'); RELEASE mine;
             SAVEPOINT undone; INSERT INTO log VALUES ('undone'); ROLLBACK TO undone;
             RELEASE undone;",
        )?;
        Ok(())
    })?;
    assert_eq!(logged(&db)?, ["kept"]);
    Ok(())
}

/// Runs `guilty` in a group whose transaction it ends past the authorizer: the commit hook
/// turns the COMMIT into a rollback, so nothing of the group commits; the calls that had run
/// are told so with the guilty call's error as the shared cause.
fn nothing_commits(guilty: fn(&Connection) -> Result<()>, check: fn(&Error)) -> Result<()> {
    let dir = tempdir();
    let db = open(&dir)?;
    let outcome = group_with(&db, guilty);
    check(outcome.guilty.as_ref().unwrap_err());
    match &outcome.holder {
        Err(Error::GroupFailed { source }) => check(source),
        other => panic!("expected GroupFailed for the holder, got {other:?}"),
    }
    for result in &outcome.good {
        match result {
            Ok(()) => {} // ran after the transaction ended, in the next one
            Err(Error::GroupFailed { source }) => check(source),
            Err(other) => panic!("expected GroupFailed, got {other:?}"),
        }
    }
    let logged = logged(&db)?;
    assert!(
        !logged.iter().any(|w| w == "guilty" || w == "holder"),
        "{logged:?}"
    );
    Ok(())
}

#[test]
fn a_commit_after_removing_the_authorizer_commits_nothing() -> Result<()> {
    nothing_commits(
        |c| {
            c.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)?;
            let _ = c.execute_batch("COMMIT");
            Ok(())
        },
        |err| tampered("authorizer", err),
    )
}

#[test]
fn a_commit_through_the_groups_own_cached_statement_commits_nothing() -> Result<()> {
    nothing_commits(
        |c| {
            let _ = c
                .prepare_cached("COMMIT--strata")
                .and_then(|mut s| s.execute([]));
            Ok(())
        },
        |err| refused("COMMIT", err),
    )
}
