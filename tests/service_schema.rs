//! A service's own schema: `Db::open` applies no migrations, so a database whose tables share
//! names with the expense tracker's opens untouched; a service's refinery runner given to
//! `Config::migrations` is what runs; the tracker brings its own migrations.

use std::path::Path;

use refinery::{Migration, Runner};
use strata::domain::{ExpenseTracker, User};
use strata::rusqlite::Connection;
use strata::{Db, Result};

/// The service's `users`: same name as the tracker's table, other columns.
const SERVICE_USERS: &str = "CREATE TABLE users (uid TEXT PRIMARY KEY, handle TEXT NOT NULL)";

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Every schema object as (type, name, sql), sorted; not the planner's statistics tables, which
/// `PRAGMA optimize` on close may create.
fn schema(c: &Connection) -> Result<Vec<(String, String, Option<String>)>> {
    let mut stmt = c.prepare(
        "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' \
         ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

fn columns(c: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let rows = stmt.query_map([table], |r| r.get(0))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

fn handles(c: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = c.prepare("SELECT uid, handle FROM users ORDER BY uid")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
}

/// A database made by the service without strata: its `users` table and one row.
fn service_file(path: &Path) -> Result<()> {
    let c = Connection::open(path)?;
    c.execute_batch(SERVICE_USERS)?;
    c.execute("INSERT INTO users VALUES ('u-1', 'ada')", [])?;
    Ok(())
}

#[test]
fn open_leaves_a_service_schema_untouched() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("service.db");
    service_file(&path)?;
    let before = schema(&Connection::open(&path)?)?;

    let db = Db::open(&path)?;
    assert_eq!(db.schema_version()?, None, "no refinery history");
    let (after, cols, rows) = db.read(|c| Ok((schema(c)?, columns(c, "users")?, handles(c)?)))?;
    assert_eq!(after, before, "the open added or changed schema objects");
    assert_eq!(cols, ["uid", "handle"]);
    assert_eq!(rows, [("u-1".to_owned(), "ada".to_owned())]);
    // The service writes its own table through strata as usual.
    db.write(|c| Ok(c.execute("INSERT INTO users VALUES ('u-2', 'grace')", [])?))?;
    drop(db);

    let c = Connection::open(&path)?;
    assert_eq!(schema(&c)?, before, "closing added nothing either");
    assert_eq!(handles(&c)?.len(), 2);
    Ok(())
}

#[test]
fn open_in_memory_starts_empty() -> Result<()> {
    let db = Db::open_in_memory()?;
    assert!(db.read(schema)?.is_empty());
    assert_eq!(db.schema_version()?, None);
    Ok(())
}

#[test]
fn a_service_runner_is_what_runs() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("service.db");
    let runner = || -> Result<Runner> {
        Ok(Runner::new(&[
            Migration::unapplied("V1__users", SERVICE_USERS)?,
            Migration::unapplied(
                "V2__handles",
                "CREATE UNIQUE INDEX users_handle ON users (handle)",
            )?,
        ]))
    };
    let db = Db::builder().path(&path).migrations(runner()?).build()?;
    assert_eq!(db.schema_version()?, Some(2));
    let (cols, tables) = db.read(|c| {
        let tables: Vec<String> = schema(c)?
            .into_iter()
            .filter(|(kind, ..)| kind == "table")
            .map(|(_, name, _)| name)
            .collect();
        Ok((columns(c, "users")?, tables))
    })?;
    assert_eq!(
        cols,
        ["uid", "handle"],
        "the service's users, not the tracker's"
    );
    assert_eq!(tables, ["refinery_schema_history", "users"]);
    drop(db);

    // Reopened without the runner: nothing runs, nothing is refused.
    let db = Db::open(&path)?;
    assert_eq!(db.schema_version()?, Some(2));
    // And with it again: nothing left to apply.
    drop(db);
    let db = Db::builder().path(&path).migrations(runner()?).build()?;
    assert_eq!(db.schema_version()?, Some(2));
    Ok(())
}

#[test]
fn the_tracker_applies_its_own_migrations() -> Result<()> {
    let dir = tempdir();
    let path = dir.path().join("tracker.db");
    let tracker = ExpenseTracker::open(&path)?;
    assert_eq!(tracker.db().schema_version()?, Some(2));
    let id = tracker.users.insert(&User {
        id: 0,
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: 0,
    })?;
    drop(tracker);

    // A plain open of the tracker's file finds its data and migrates nothing.
    let db = Db::open(&path)?;
    assert_eq!(db.schema_version()?, Some(2));
    let tracker = ExpenseTracker::new(&db)?;
    assert_eq!(tracker.users.require(id)?.name, "Ada");

    let in_memory = ExpenseTracker::open_in_memory()?;
    assert_eq!(in_memory.db().schema_version()?, Some(2));
    Ok(())
}

#[test]
fn the_tracker_refuses_a_service_users_table() -> Result<()> {
    // The tracker's migrations on a service's database fail the open and change nothing.
    let dir = tempdir();
    let path = dir.path().join("service.db");
    service_file(&path)?;
    let before = schema(&Connection::open(&path)?)?;
    let err = ExpenseTracker::open(&path).unwrap_err();
    assert!(matches!(err, strata::Error::Migration { .. }), "{err:?}");
    assert_eq!(schema(&Connection::open(&path)?)?, before);
    Ok(())
}
