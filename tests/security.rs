//! No name handed to strata, and no name found in a database's schema, can change the SQL strata
//! runs. Caller strings reach SQL only as bound values or as identifiers checked against the
//! schema and quoted; the raw-SQL entry points (`read`, `write` closures, `Repository::query`)
//! are documented as such and are not tested here.
//!
//! (a) hostile table and column names given to `Batch`, `Repository`, `watch` and rules are
//!     refused and leave the schema and the rows unchanged;
//! (b) a schema whose table, column and index names are hostile works through every strata API
//!     that generates SQL from schema names, and nothing but the intended rows changes.

use std::sync::Arc;

use strata::rusqlite::types::ToSql;
use strata::rusqlite::{Connection, Row};
use strata::{Batch, Db, Entity, EntityCache, Error, InvalidationRule, Repository, Result};

/// Names that would run `DROP TABLE users` if pasted into SQL unquoted or badly quoted.
const HOSTILE: &[&str] = &[
    "users; DROP TABLE users; --",
    "users\"; DROP TABLE users; --",
    "users\" (email) VALUES ('x'); DROP TABLE users; --",
    "users]; DROP TABLE users; --",
    "users`; DROP TABLE users; --",
    "users'; DROP TABLE users; --",
    "main\".\"users",
    "1=1 OR id",
    "id OR 1=1",
    "rowid; DELETE FROM users",
    "sqlite_schema",
    "sqlite_master",
    "",
    "\0users",
];

const USERS: i64 = 20;

fn open(dir: &tempfile::TempDir) -> Result<Db> {
    let db = Db::builder()
        .path(dir.path().join("sec.db"))
        .readers(2)
        .build()?;
    db.write(|c| {
        let mut stmt =
            c.prepare("INSERT INTO users (email, name, created_at) VALUES (?1, ?2, 0)")?;
        for i in 0..USERS {
            stmt.execute((format!("u{i}@example.com"), format!("user {i}")))?;
        }
        Ok(())
    })?;
    Ok(db)
}

/// Everything that could be damaged: the schema and every user row.
#[derive(Debug, PartialEq)]
struct Snapshot {
    schema: Vec<(String, String, Option<String>)>,
    users: Vec<(i64, String, String)>,
}

fn snapshot(c: &Connection) -> Result<Snapshot> {
    let mut stmt = c.prepare(
        "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' ORDER BY type, name",
    )?;
    let schema = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<strata::rusqlite::Result<_>>()?;
    let mut stmt = c.prepare("SELECT id, email, name FROM users ORDER BY id")?;
    let users = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<strata::rusqlite::Result<_>>()?;
    Ok(Snapshot { schema, users })
}

// ---------------------------------------------------------------------------------------------
// (a) Hostile names from the caller.

#[test]
fn hostile_names_given_to_batch_are_refused_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir)?;
    let before = db.read(snapshot)?;
    let mut batch = Batch::new().max_failure_rate(1.0);
    let mut expected = 0;
    for name in HOSTILE {
        // As a table.
        batch.insert(name, &["email", "name", "created_at"], ("h@x", "h", 0));
        batch.upsert(name, &["email", "name"], ("h@x", "h"), &["email"]);
        batch.update(name, &["name"], ("h",), "id", 1);
        batch.delete(name, "id", 1);
        // As a column, a conflict target and a key column of a real table.
        batch.insert("users", &["email", name, "created_at"], ("h@x", "h", 0));
        batch.upsert(
            "users",
            &["email", "name", "created_at"],
            ("u1@example.com", "h", 0),
            &[name],
        );
        batch.update("users", &[name], ("h",), "id", 1);
        batch.update("users", &["name"], ("h",), name, 1);
        batch.delete("users", name, 1);
        expected += 9;
    }
    let report = db.apply(&batch)?;
    let after = db.read(snapshot)?;
    println!(
        "security: {} hostile batch operations ({} names as table, column, conflict target and \
         key): {} refused, {} applied; schema and rows unchanged: {}",
        batch.len(),
        HOSTILE.len(),
        report.failed.len(),
        report.applied,
        before == after
    );
    assert_eq!(before, after, "a hostile name changed the database");
    assert_eq!(report.applied, 0, "{report:?}");
    assert_eq!(report.failed.len(), expected, "{report:?}");
    for failure in &report.failed {
        assert!(
            failure.reason.contains("no table named") || failure.reason.contains("has no column"),
            "refused for the wrong reason: {failure:?}"
        );
    }
    Ok(())
}

/// An entity whose table name is hostile.
#[derive(Debug)]
struct HostileTable;

impl Entity for HostileTable {
    const TABLE: &'static str = "users\"; DROP TABLE users; --";
    const COLUMNS: &'static [&'static str] = &["email"];
    const CACHE: &'static str = "hostile_table";
    fn key(&self) -> Option<i64> {
        None
    }
    fn from_row(_: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(HostileTable)
    }
    fn params(&self) -> Vec<&dyn ToSql> {
        Vec::new()
    }
}

/// An entity of the real users table whose column names are hostile.
#[derive(Debug)]
struct HostileColumns {
    email: String,
}

impl Entity for HostileColumns {
    const TABLE: &'static str = "users";
    const COLUMNS: &'static [&'static str] = &["email\" FROM users; DROP TABLE users; --"];
    const CACHE: &'static str = "hostile_columns";
    fn key(&self) -> Option<i64> {
        None
    }
    fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(HostileColumns { email: row.get(1)? })
    }
    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.email]
    }
}

#[test]
fn hostile_names_given_to_repositories_watches_and_rules_are_refused() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir)?;
    let before = db.read(snapshot)?;

    let err = Repository::<HostileTable>::new(&db).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");

    // The table exists, so the repository is built; every statement it runs names the hostile
    // column, quoted, which SQLite reports as missing.
    let repo = Repository::<HostileColumns>::new(&db)?;
    let err = repo.get(1).unwrap_err();
    assert!(err.to_string().contains("no such column"), "{err}");
    let err = repo.get_many(&[1, 2]).unwrap_err();
    assert!(err.to_string().contains("no such column"), "{err}");
    let err = repo
        .insert(&HostileColumns {
            email: "x@x".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("no column named"), "{err}");
    let report = repo.insert_many(&[HostileColumns {
        email: "y@y".into(),
    }])?;
    assert_eq!((report.applied, report.failed.len()), (0, 1), "{report:?}");

    let mut refused = 0;
    for name in HOSTILE {
        assert!(db.watch(name, &[]).is_err(), "watch({name:?})");
        assert!(
            db.watch("users", &[name]).is_err(),
            "watch(users, {name:?})"
        );
        let cache = format!("c{refused}");
        db.register_cache(EntityCache::<i64, String>::builder(cache.as_str()))?;
        assert!(db
            .add_rule(InvalidationRule::rowid_key(name, &cache))
            .is_err());
        assert!(db
            .add_rule(InvalidationRule::column_key("users", name, &cache))
            .is_err());
        assert!(db
            .add_rule(InvalidationRule::column_tag("users", name, &cache, "p"))
            .is_err());
        refused += 5;
    }
    // Writes still work and the triggers strata did install are its own, in TEMP only.
    db.write(|c| Ok(c.execute("UPDATE users SET name = name WHERE id = 1", [])?))?;
    let after = db.read(snapshot)?;
    println!(
        "security: hostile repository table refused, hostile repository columns fail as \
         missing columns; {refused} hostile watch/rule calls refused; schema and rows unchanged: {}",
        before == after
    );
    assert_eq!(before, after);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) Hostile names in the schema.

const T: &str = "t\"; DROP TABLE users; --";
const V: &str = "v\"); DROP TABLE users; --";
const G: &str = "g' OR 1=1; DELETE FROM users; --";
const INDEX: &str = "x\"; DROP TABLE users; --";
const INDEX2: &str = "ix\" ON users(name); DROP TABLE users; --";

fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A row of the hostile table, through a repository.
#[derive(Debug, Clone, PartialEq)]
struct Hostile {
    id: i64,
    v: String,
    g: i64,
}

impl Entity for Hostile {
    const TABLE: &'static str = T;
    const COLUMNS: &'static [&'static str] = &[V, G];
    const CACHE: &'static str = "hostile";
    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }
    fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(Hostile {
            id: row.get(0)?,
            v: row.get(1)?,
            g: row.get(2)?,
        })
    }
    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.v, &self.g]
    }
}

#[test]
fn a_schema_with_hostile_names_cannot_make_strata_run_other_sql() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir)?;
    db.write(|c| {
        Ok(c.execute_batch(&format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, {v} TEXT NOT NULL, {g} INTEGER NOT NULL);
             CREATE INDEX {x} ON users (email, name);
             CREATE INDEX {x2} ON {t} ({v}, {g});",
            t = q(T),
            v = q(V),
            g = q(G),
            x = q(INDEX),
            x2 = q(INDEX2),
        ))?)
    })?;
    let users_before = db.read(snapshot)?.users;
    let changes = db.subscribe();

    // Watches, rules and caches over the hostile names.
    db.watch(T, &[V, G])?;
    let by_group = db.register_cache(EntityCache::<i64, Vec<i64>>::builder("by_group"))?;
    db.add_rule(InvalidationRule::column_key(T, G, "by_group"))?;
    let repo = Repository::<Hostile>::new(&db)?;

    // Repository CRUD.
    let id = repo.insert(&Hostile {
        id: 0,
        v: "one".into(),
        g: 7,
    })?;
    assert_eq!(repo.require(id)?.v, "one");
    by_group.insert(7, vec![id]);
    repo.update(&Hostile {
        id,
        v: "two".into(),
        g: 8,
    })?;
    assert_eq!(
        repo.require(id)?.v,
        "two",
        "the rule dropped the cached row"
    );
    assert!(
        by_group.get(&7).is_none(),
        "the column rule saw the hostile column"
    );
    repo.upsert(&Hostile {
        id: 50,
        v: "fifty".into(),
        g: 1,
    })?;
    assert_eq!(
        repo.get_many(&[id, 50, 51])?
            .iter()
            .filter(|r| r.is_some())
            .count(),
        2
    );

    // Batches over the hostile names: every kind of operation.
    let mut batch = Batch::new();
    batch.insert(T, &["id", V, G], (100, "batch", 1));
    batch.upsert(T, &["id", V, G], (100, "batch2", 2), &["id"]);
    batch.update(T, &[V], ("batch3",), "id", 100);
    batch.update(T, &[G], (3,), V, "batch3");
    batch.delete(T, V, "nothing matches");
    batch.delete(T, "id", 50);
    let report = db.apply(&batch)?;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.applied, 6);
    let rows: Vec<(i64, String, i64)> = repo.query(
        &format!(
            "SELECT id, {v}, {g} FROM {t} ORDER BY id",
            t = q(T),
            v = q(V),
            g = q(G)
        ),
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    assert_eq!(rows, [(id, "two".into(), 8), (100, "batch3".into(), 3)]);
    assert!(repo.delete(id)?);

    // The changes name the hostile table as it is, with the hostile columns' values.
    let sets: Vec<Arc<strata::ChangeSet>> = changes.try_iter().collect();
    let changed: usize = sets
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| &*c.table == T && c.value(V).is_some() && c.value(G).is_some())
        .count();
    assert!(
        changed >= 8,
        "{changed} captured changes of the hostile table"
    );

    // TODO(advisor): once `db.advise()`, `db.explain()`, `db.redundant_indexes()` and
    // `db.unused_indexes()` are merged, run each of them here over this schema (with a workload
    // on the hostile table and on users, and `advise_queries` naming both) and check that the
    // advice's CREATE INDEX text quotes every name (it parses back to the same identifiers), and
    // that the users rows and the schema below are unchanged by the advisor.

    let after = db.read(snapshot)?;
    assert_eq!(after.users, users_before, "users rows changed");
    let names: Vec<&str> = after.schema.iter().map(|(_, n, _)| n.as_str()).collect();
    for name in ["users", T, INDEX, INDEX2] {
        assert!(names.contains(&name), "{name:?} missing from {names:?}");
    }
    let integrity: String =
        db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))?;
    assert_eq!(integrity, "ok");
    println!(
        "security: hostile table, column and index names in the schema: watch, rules, \
         repository CRUD, 6 batch operations and {changed} captured changes all worked on \
         them; users ({} rows) and the schema intact",
        after.users.len()
    );
    Ok(())
}
