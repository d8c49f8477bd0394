//! No name handed to strata, and no name found in a database's schema, can change the SQL strata
//! runs. Caller strings reach SQL only as bound values or as identifiers checked against the
//! schema and quoted; the raw-SQL entry points (`read`, `write` closures, `Repository::query`)
//! are documented as such and are not tested here.
//!
//! (a) hostile table and column names given to `Batch`, `Repository`, `watch` and rules are
//!     refused and leave the schema and the rows unchanged;
//! (b) a schema whose table, column and index names are hostile works through every strata API
//!     that generates SQL from schema names, and nothing but the intended rows changes; the
//!     advisor's CREATE/DROP texts name exactly the intended objects, quoted, and advising
//!     changes nothing.

use std::sync::Arc;

use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, ObjectType, Statement};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use strata::advisor::{Advice, AdviseOptions};
use strata::cache::CacheSettings;
use strata::cache::{EntityCache, InvalidationRule};
use strata::rusqlite::types::ToSql;
use strata::rusqlite::{Connection, Row};
use strata::{Batch, Db, Entity, Error, Repository, Result};

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
        .migrations(strata::domain::migrations())
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
    fn cache() -> CacheSettings {
        CacheSettings::new("hostile_table")
    }
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
    fn cache() -> CacheSettings {
        CacheSettings::new("hostile_columns")
    }
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
    fn cache() -> CacheSettings {
        CacheSettings::new("hostile")
    }
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
    let sets: Vec<Arc<strata::events::ChangeSet>> = changes.try_iter().collect();
    let changed: usize = sets
        .iter()
        .flat_map(|s| &s.changes)
        .filter(|c| &*c.table == T && c.value(V).is_some() && c.value(G).is_some())
        .count();
    assert!(
        changed >= 8,
        "{changed} captured changes of the hostile table"
    );

    // The advisor over the hostile schema (and more hostile objects made for it).
    let advised = advise_over_hostile_names(&db, &dir)?;

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
    println!("security: advisor over hostile names: {advised}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The advisor over hostile schema names.

/// A second hostile table, with unicode (a right-to-left override among it) in its names.
const U: &str = "ü; DROP TABLE users; -- 🙂\u{202e}";
const C1: &str = "ключ\"; --";
const C2: &str = "k`]'; DELETE FROM users; --";
/// An index that `INDEX2` (on `T (V, G)`) makes redundant.
const REDUNDANT: &str = "r\"; DROP TABLE users; -- prefix";
/// An index no statement uses.
const UNUSED: &str = "ü idx'; DROP TABLE users; --";
/// A used index whose name looks like the parts of a plan line (` USING INDEX `, ` (`).
const PLAN_LIKE: &str = "p USING INDEX q (v=?) (";
/// A table and a column whose names look like the parts of a plan line, and a used index on
/// them: `SEARCH w USING COVERING INDEX z USING INDEX wi"; -- (a (b=?)`.
const W: &str = "w USING COVERING INDEX z";
const WA: &str = "a (b";
const WI: &str = "wi\"; --";

/// The one name of a parsed object name, unquoted.
fn single_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] if ident.quote_style == Some('"') => {
            Some(ident.value.clone())
        }
        _ => None,
    }
}

/// `sql` parsed by sqlparser as exactly one statement.
fn parse_one(sql: &str) -> Statement {
    let mut parsed = Parser::parse_sql(&SQLiteDialect {}, sql)
        .unwrap_or_else(|e| panic!("generated SQL does not parse: {e}: {sql}"));
    assert_eq!(parsed.len(), 1, "not exactly one statement: {sql}");
    parsed.remove(0)
}

/// Checks that a `CREATE INDEX` text names exactly (index, table, columns), each quoted.
fn check_create(sql: &str, statement: &Statement, index: &str, table: &str, columns: &[String]) {
    let Statement::CreateIndex(create) = statement else {
        panic!("not a CREATE INDEX: {sql}");
    };
    assert_eq!(
        create.name.as_ref().and_then(single_name).as_deref(),
        Some(index),
        "{sql}"
    );
    assert_eq!(
        single_name(&create.table_name).as_deref(),
        Some(table),
        "{sql}"
    );
    let cols: Vec<String> = create
        .columns
        .iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(ident) if ident.quote_style == Some('"') => ident.value.clone(),
            other => panic!("index column is not a quoted identifier: {other:?} in {sql}"),
        })
        .collect();
    assert_eq!(cols, columns, "{sql}");
    assert!(create.predicate.is_none() && !create.unique, "{sql}");
}

/// Checks that a `DROP INDEX` text drops exactly `index`.
fn check_drop(sql: &str, index: &str) {
    match parse_one(sql) {
        Statement::Drop {
            object_type: ObjectType::Index,
            names,
            ..
        } => {
            assert_eq!(names.len(), 1, "{sql}");
            assert_eq!(single_name(&names[0]).as_deref(), Some(index), "{sql}");
        }
        other => panic!("not a DROP INDEX: {other:?}: {sql}"),
    }
}

/// Every object of a schema, as (type, name, table), and the users rows.
type Objects = std::collections::BTreeSet<(String, String, String)>;

fn objects(c: &Connection) -> Result<(Objects, i64)> {
    let mut stmt = c.prepare("SELECT type, name, tbl_name FROM sqlite_schema")?;
    let objects = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<strata::rusqlite::Result<_>>()?;
    let users: i64 = c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    Ok((objects, users))
}

/// Runs `sql` on a fresh copy of the database and returns the objects it added and removed
/// and the users rows left.
fn on_a_copy(
    db_path: &std::path::Path,
    copy: &std::path::Path,
    sql: &str,
) -> Result<(Objects, Objects, i64)> {
    let _ = std::fs::remove_file(copy);
    Connection::open(db_path)?.execute("VACUUM INTO ?1", [copy.to_str().expect("utf-8 path")])?;
    let conn = Connection::open(copy)?;
    let (before, _) = objects(&conn)?;
    conn.execute_batch(sql)?;
    let (after, users) = objects(&conn)?;
    Ok((
        after.difference(&before).cloned().collect(),
        before.difference(&after).cloned().collect(),
        users,
    ))
}

fn schema_version(db: &Db) -> Result<(i64, Snapshot, i64)> {
    db.read(|c| {
        let version: i64 = c.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        let objects: i64 = c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((version, snapshot(c)?, objects))
    })
}

/// `explain`, `advise` (given queries and observed), `redundant_indexes`, `unused_indexes` and
/// `migration_sql` over hostile names: every generated statement parses as exactly one
/// statement naming exactly the intended objects, quoted, and creates or drops exactly that
/// object on a copy; the advisor changes nothing on the live database.
fn advise_over_hostile_names(db: &Db, dir: &tempfile::TempDir) -> Result<String> {
    db.write(|c| {
        Ok(c.execute_batch(&format!(
            "CREATE TABLE {u} (id INTEGER PRIMARY KEY, {c1} TEXT, {c2} INTEGER);
             INSERT INTO {u} ({c1}, {c2}) VALUES ('a', 1), ('b', 2), ('c', 3);
             INSERT INTO {t} ({v}, {g}) VALUES ('x', 1), ('y', 2);
             CREATE INDEX {r} ON {t} ({v});
             CREATE INDEX {unused} ON {u} ({c1});
             CREATE INDEX {plan_like} ON users (created_at);
             CREATE TABLE {w} (id INTEGER PRIMARY KEY, {wa} INTEGER, other INTEGER);
             CREATE INDEX {wi} ON {w} ({wa});",
            w = q(W),
            wa = q(WA),
            wi = q(WI),
            u = q(U),
            c1 = q(C1),
            c2 = q(C2),
            t = q(T),
            v = q(V),
            g = q(G),
            r = q(REDUNDANT),
            unused = q(UNUSED),
            plan_like = q(PLAN_LIKE),
        ))?)
    })?;
    let (version, snap, count) = schema_version(db)?;

    let on_t = format!(
        "SELECT id, {v} FROM {t} WHERE {g} = ?1 ORDER BY {v}",
        t = q(T),
        v = q(V),
        g = q(G)
    );
    let on_u = format!(
        "SELECT {c1} FROM {u} WHERE {c2} = ?1",
        u = q(U),
        c1 = q(C1),
        c2 = q(C2)
    );
    let served_by_index2 = format!(
        "SELECT {g} FROM {t} WHERE {v} = ?1 AND {g} > 0",
        t = q(T),
        v = q(V),
        g = q(G)
    );
    let served_by_plan_like = "SELECT id FROM users WHERE created_at > ?1".to_owned();
    let on_w = format!(
        "SELECT other FROM {w} WHERE {wa} = ?1",
        w = q(W),
        wa = q(WA)
    );
    let on_users = "SELECT id FROM users WHERE name = ?1 ORDER BY created_at".to_owned();
    let workload = [
        on_t.clone(),
        on_u.clone(),
        served_by_index2.clone(),
        served_by_plan_like.clone(),
        on_users.clone(),
        on_w.clone(),
    ];

    // Plans name the hostile objects as they are.
    let plan = db.explain(&served_by_index2)?;
    assert!(plan.uses_index(INDEX2), "{plan:#?}");
    let plan = db.explain(&served_by_plan_like)?;
    assert!(plan.uses_index(PLAN_LIKE), "{plan:#?}");
    let plan = db.explain(&on_w)?;
    assert!(plan.uses_index(WI), "{plan:#?}");
    let plan = db.explain(&on_u)?;
    assert!(plan.full_scans().iter().any(|a| a.name == U), "{plan:#?}");

    let advice: Advice = db.advise(AdviseOptions::new().queries(&workload))?;
    let observed = db.advise(AdviseOptions::new())?;
    let redundant = db.redundant_indexes()?;
    let unused = db.unused_indexes()?;
    let migration = advice.migration_sql();

    // Nothing changed on the live database.
    let (version_after, snap_after, count_after) = schema_version(db)?;
    assert_eq!(
        version_after, version,
        "advising changed PRAGMA schema_version"
    );
    assert_eq!(
        count_after, count,
        "advising added or removed schema objects"
    );
    assert_eq!(
        snap_after, snap,
        "advising changed the schema or the users rows"
    );

    // The advice: indexes on both hostile tables, each CREATE text exactly one statement
    // naming exactly its index, table and columns.
    let tables: Vec<&str> = advice.indexes.iter().map(|i| i.table.as_str()).collect();
    assert!(tables.contains(&T) && tables.contains(&U), "{advice:#?}");
    let db_path = dir.path().join("sec.db");
    let copy = dir.path().join("copy.db");
    for index in advice.indexes.iter().chain(&observed.indexes) {
        let statement = parse_one(&index.create_sql);
        check_create(
            &index.create_sql,
            &statement,
            &index.name,
            &index.table,
            &index.columns,
        );
        let (added, removed, users) = on_a_copy(&db_path, &copy, &index.create_sql)?;
        assert_eq!(
            added.into_iter().collect::<Vec<_>>(),
            [("index".to_owned(), index.name.clone(), index.table.clone())],
            "{}",
            index.create_sql
        );
        assert!(removed.is_empty() && users == USERS, "{}", index.create_sql);
    }
    // The migration: one CREATE INDEX per advice and nothing else, comments included.
    let statements = Parser::parse_sql(&SQLiteDialect {}, &migration)
        .unwrap_or_else(|e| panic!("the migration does not parse: {e}:\n{migration}"));
    assert_eq!(statements.len(), advice.indexes.len(), "{migration}");
    for (statement, index) in statements.iter().zip(&advice.indexes) {
        check_create(
            &migration,
            statement,
            &index.name,
            &index.table,
            &index.columns,
        );
    }
    let (added, removed, users) = on_a_copy(&db_path, &copy, &migration)?;
    let expected: Objects = advice
        .indexes
        .iter()
        .map(|i| ("index".to_owned(), i.name.clone(), i.table.clone()))
        .collect();
    assert_eq!(added, expected, "{migration}");
    assert!(removed.is_empty() && users == USERS, "{migration}");

    // Redundant and unused indexes: each DROP text drops exactly its index.
    assert!(
        redundant
            .iter()
            .any(|r| r.index == REDUNDANT && r.covered_by == INDEX2 && r.table == T),
        "{redundant:#?}"
    );
    let unused_names: Vec<&str> = unused.iter().map(|u| u.index.as_str()).collect();
    assert!(unused_names.contains(&UNUSED), "{unused:#?}");
    for used in [INDEX2, PLAN_LIKE, WI] {
        assert!(
            !unused_names.contains(&used),
            "{used:?} is used by an observed statement, yet reported unused: {unused:#?}"
        );
    }
    let drops = redundant
        .iter()
        .map(|r| (&r.drop_sql, &r.index, &r.table))
        .chain(unused.iter().map(|u| (&u.drop_sql, &u.index, &u.table)));
    let mut dropped = 0;
    for (sql, index, table) in drops {
        check_drop(sql, index);
        let (added, removed, users) = on_a_copy(&db_path, &copy, sql)?;
        assert!(added.is_empty() && users == USERS, "{sql}");
        assert_eq!(
            removed.into_iter().collect::<Vec<_>>(),
            [("index".to_owned(), index.clone(), table.clone())],
            "{sql}"
        );
        dropped += 1;
    }
    Ok(format!(
        "{} indexes advised for {} statements ({} for the observed workload), {} redundant and \
         {} unused indexes found; every CREATE/DROP text and the {}-statement migration parse \
         as exactly the intended statements and create or drop exactly their object on a copy \
         ({dropped} drops tried); schema_version {version} and the live schema unchanged",
        advice.indexes.len(),
        workload.len(),
        observed.indexes.len(),
        redundant.len(),
        unused.len(),
        statements.len(),
    ))
}
