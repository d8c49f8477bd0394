//! The expense tracker on a real WAL file: every cache of the tracker (`users`, `categories`,
//! `user_categories`, `keywords`, `daily_metrics`) drops exactly the entries its rule names
//! (through repository methods and raw SQL), cursor pagination under concurrent inserts, the
//! list queries' plans, and bad input.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

use strata::cache::CacheStats;
use strata::domain::{
    parse_cents, validate_date, Category, Cursor, Expense, ExpenseTracker, Keyword, User,
    LIST_QUERIES,
};
use strata::rusqlite::params_from_iter;
use strata::rusqlite::types::Null;
use strata::{Db, Error, Result};

fn open() -> Result<(tempfile::TempDir, Db, ExpenseTracker)> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let t = ExpenseTracker::open(dir.path().join("domain.db"))?;
    Ok((dir, t.db().clone(), t))
}

fn user(n: i64) -> User {
    User {
        id: 0,
        email: format!("user{n}@example.com"),
        name: format!("User {n}"),
        created_at: 1_700_000_000_000 + n,
    }
}

fn category(user_id: i64, name: &str) -> Category {
    Category {
        id: 0,
        user_id,
        name: name.to_owned(),
        created_at: 1_700_000_000_000,
    }
}

fn expense(user_id: i64, date: &str, cents: i64) -> Expense {
    Expense {
        id: 0,
        user_id,
        category_id: None,
        amount_cents: cents,
        description: format!("spent {cents}"),
        expense_date: date.to_owned(),
        created_at: 1_700_000_000_000,
    }
}

fn keyword(word: &str, category: &str, weight: i64) -> Keyword {
    Keyword {
        id: 0,
        keyword: word.to_owned(),
        category_name: category.to_owned(),
        weight,
        created_at: 1_700_000_000_000,
    }
}

fn stats(db: &Db, cache: &str) -> CacheStats {
    db.caches()
        .stats()
        .into_iter()
        .find(|s| s.name == cache)
        .unwrap_or_else(|| panic!("no cache named {cache}"))
}

fn invalidations(db: &Db, cache: &str) -> u64 {
    stats(db, cache).invalidations
}

/// How one read-through lookup was answered, told by the cache's counters.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    Hit,
    Load,
}

/// Runs one single-key lookup and tells from `cache`'s counters whether it was a hit or a load.
fn probe<T>(db: &Db, cache: &str, f: impl FnOnce() -> Result<T>) -> Result<(T, Served)> {
    let before = stats(db, cache);
    let value = f()?;
    let after = stats(db, cache);
    let delta = (
        after.hits - before.hits,
        after.misses - before.misses,
        after.loads - before.loads,
    );
    let served = match delta {
        (1, 0, 0) => Served::Hit,
        (0, 1, 1) => Served::Load,
        other => panic!("{cache}: one lookup moved (hits, misses, loads) by {other:?}"),
    };
    Ok((value, served))
}

fn exec(db: &Db, sql: &str, params: impl strata::rusqlite::Params + Send) -> Result<usize> {
    db.write(|c| Ok(c.execute(sql, params)?))
}

// ---------------------------------------------------------------------------------------------
// 1. Cache rules
// ---------------------------------------------------------------------------------------------

#[test]
fn users_cache_drops_only_the_changed_user() -> Result<()> {
    let (_dir, db, t) = open()?;
    let u1 = t.users.insert(&user(1))?;
    let u2 = t.users.insert(&user(2))?;
    let get = |id| probe(&db, "users", || t.users.require(id));

    assert_eq!(get(u1)?.1, Served::Load);
    assert_eq!(get(u2)?.1, Served::Load);
    assert_eq!(get(u1)?.1, Served::Hit);
    assert_eq!(get(u2)?.1, Served::Hit);

    // Repository update of user 1: drops user 1 only.
    let before = invalidations(&db, "users");
    t.users.update(&User {
        id: u1,
        name: "Ada Lovelace".into(),
        ..user(1)
    })?;
    assert_eq!(invalidations(&db, "users") - before, 1);
    assert_eq!(get(u2)?.1, Served::Hit, "user 2 untouched");
    let (fresh, served) = get(u1)?;
    assert_eq!(
        (fresh.name.as_str(), served),
        ("Ada Lovelace", Served::Load)
    );

    // Raw SQL update of user 2: drops user 2 only.
    let before = invalidations(&db, "users");
    exec(&db, "UPDATE users SET name = 'Grace' WHERE id = ?1", [u2])?;
    assert_eq!(invalidations(&db, "users") - before, 1);
    assert_eq!(get(u1)?.1, Served::Hit, "user 1 untouched");
    let (fresh, served) = get(u2)?;
    assert_eq!((fresh.name.as_str(), served), ("Grace", Served::Load));

    // Upsert through the repository.
    t.users.upsert(&User {
        id: u2,
        name: "Grace Hopper".into(),
        ..user(2)
    })?;
    assert_eq!(get(u1)?.1, Served::Hit);
    assert_eq!(get(u2)?.0.name, "Grace Hopper");

    // A cached "absent" is dropped by the insert that creates the row.
    let absent = probe(&db, "users", || t.users.get(500))?;
    assert!(absent.0.is_none());
    assert_eq!(
        probe(&db, "users", || t.users.get(500))?,
        (None, Served::Hit)
    );
    exec(
        &db,
        "INSERT INTO users (id, email, name, created_at) VALUES (500, 'x@y', 'Late', 0)",
        [],
    )?;
    assert_eq!(get(500)?.0.name, "Late");

    // Delete (repository) and delete (raw): gone, not served stale.
    assert!(t.users.delete(u1)?);
    assert!(t.users.get(u1)?.is_none());
    assert_eq!(get(u2)?.1, Served::Hit);
    exec(&db, "DELETE FROM users WHERE id = ?1", [u2])?;
    assert!(t.users.get(u2)?.is_none());
    Ok(())
}

#[test]
fn categories_cache_drops_only_the_changed_category() -> Result<()> {
    let (_dir, db, t) = open()?;
    let u1 = t.users.insert(&user(1))?;
    let c1 = t.categories.insert(&category(u1, "Food"))?;
    let c2 = t.categories.insert(&category(u1, "Rent"))?;
    let get = |id| probe(&db, "categories", || t.categories.require(id));

    assert_eq!(get(c1)?.1, Served::Load);
    assert_eq!(get(c2)?.1, Served::Load);

    let before = invalidations(&db, "categories");
    t.categories.update(&Category {
        id: c1,
        ..category(u1, "Groceries")
    })?;
    assert_eq!(invalidations(&db, "categories") - before, 1);
    assert_eq!(get(c2)?.1, Served::Hit);
    assert_eq!(get(c1)?, (get_fresh(&t, c1)?, Served::Load));
    assert_eq!(get(c1)?.0.name, "Groceries");

    let before = invalidations(&db, "categories");
    exec(
        &db,
        "UPDATE categories SET name = 'Housing' WHERE id = ?1",
        [c2],
    )?;
    assert_eq!(invalidations(&db, "categories") - before, 1);
    assert_eq!(get(c1)?.1, Served::Hit);
    let (fresh, served) = get(c2)?;
    assert_eq!((fresh.name.as_str(), served), ("Housing", Served::Load));

    // A write to another table (an expense in category 1) does not drop categories.
    let before = stats(&db, "categories");
    t.create_expense(&Expense {
        category_id: Some(c1),
        ..expense(u1, "2026-03-01", 100)
    })?;
    assert_eq!(stats(&db, "categories").invalidations, before.invalidations);
    assert_eq!(get(c1)?.1, Served::Hit);

    // Deleting the owner cascades to the categories: both dropped.
    t.users.delete(u1)?;
    assert!(t.categories.get(c1)?.is_none());
    assert!(t.categories.get(c2)?.is_none());
    Ok(())
}

/// The category as stored now, bypassing the cache.
fn get_fresh(t: &ExpenseTracker, id: i64) -> Result<std::sync::Arc<Category>> {
    let rows = t.categories.query_entities(
        "SELECT id, user_id, name, created_at FROM categories WHERE id = ?1",
        [id],
    )?;
    Ok(std::sync::Arc::new(rows.into_iter().next().expect("row")))
}

#[test]
fn user_categories_drop_on_any_category_of_that_user() -> Result<()> {
    let (_dir, db, t) = open()?;
    let u1 = t.users.insert(&user(1))?;
    let u2 = t.users.insert(&user(2))?;
    let food = t.categories.insert(&category(u1, "Food"))?;
    t.categories.insert(&category(u2, "Rent"))?;
    const C: &str = "user_categories";
    let list = |id| -> Result<(Vec<String>, Served)> {
        let (cats, served) = probe(&db, C, || t.categories_of(id))?;
        Ok((cats.iter().map(|c| c.name.clone()).collect(), served))
    };

    assert_eq!(list(u1)?, (vec!["Food".to_owned()], Served::Load));
    assert_eq!(list(u2)?, (vec!["Rent".to_owned()], Served::Load));
    assert_eq!(list(u1)?.1, Served::Hit);
    assert_eq!(list(u2)?.1, Served::Hit);

    // Create (repository) a category of user 1.
    let before = invalidations(&db, C);
    let bills = t.categories.insert(&category(u1, "Bills"))?;
    assert_eq!(invalidations(&db, C) - before, 1);
    assert_eq!(list(u2)?.1, Served::Hit);
    assert_eq!(
        list(u1)?,
        (vec!["Bills".into(), "Food".into()], Served::Load)
    );

    // Rename (repository).
    t.categories.update(&Category {
        id: food,
        ..category(u1, "Eating out")
    })?;
    assert_eq!(list(u2)?.1, Served::Hit);
    assert_eq!(
        list(u1)?,
        (vec!["Bills".into(), "Eating out".into()], Served::Load)
    );

    // Delete (repository).
    assert!(t.categories.delete(bills)?);
    assert_eq!(list(u2)?.1, Served::Hit);
    assert_eq!(list(u1)?, (vec!["Eating out".into()], Served::Load));

    // Raw SQL: a category of user 2 drops user 2's list, not user 1's.
    let before = invalidations(&db, C);
    exec(
        &db,
        "INSERT INTO categories (user_id, name, created_at) VALUES (?1, 'Travel', 0)",
        [u2],
    )?;
    assert_eq!(invalidations(&db, C) - before, 1);
    assert_eq!(list(u1)?.1, Served::Hit);
    assert_eq!(
        list(u2)?,
        (vec!["Rent".into(), "Travel".into()], Served::Load)
    );

    // Raw SQL: moving a category from user 1 to user 2 drops both lists.
    let before = invalidations(&db, C);
    exec(
        &db,
        "UPDATE categories SET user_id = ?1 WHERE id = ?2",
        [u2, food],
    )?;
    assert_eq!(invalidations(&db, C) - before, 2);
    assert_eq!(list(u1)?, (vec![], Served::Load));
    assert_eq!(
        list(u2)?,
        (
            vec!["Eating out".into(), "Rent".into(), "Travel".into()],
            Served::Load
        )
    );

    // Writes elsewhere (an expense, a user, a keyword) keep the lists.
    let before = invalidations(&db, C);
    t.create_expense(&expense(u1, "2026-03-01", 100))?;
    t.users.update(&User { id: u1, ..user(11) })?;
    t.keywords_by_id.insert(&keyword("coffee", "Food", 1))?;
    assert_eq!(invalidations(&db, C), before);
    assert_eq!(list(u1)?.1, Served::Hit);
    assert_eq!(list(u2)?.1, Served::Hit);

    // Raw SQL delete of a category of user 2.
    exec(&db, "DELETE FROM categories WHERE id = ?1", [food])?;
    assert_eq!(list(u1)?.1, Served::Hit);
    assert_eq!(
        list(u2)?,
        (vec!["Rent".into(), "Travel".into()], Served::Load)
    );
    Ok(())
}

#[test]
fn keywords_cache_drops_whole_on_any_keyword_change() -> Result<()> {
    let (_dir, db, t) = open()?;
    const C: &str = "keywords";
    t.keywords_by_id.insert(&keyword("coffee", "Food", 1))?;
    let taxi = t.keywords_by_id.insert(&keyword("taxi", "Transport", 2))?;
    let u1 = t.users.insert(&user(1))?;
    let text = "Coffee at the AIRPORT";

    let s0 = stats(&db, C);
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Food"));
    let s1 = stats(&db, C);
    // Four distinct lowercased words, one load; the three that are no keyword cached as absent.
    assert_eq!((s1.misses - s0.misses, s1.loads - s0.loads), (4, 1));
    assert_eq!(s1.size, 4);
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Food"));
    let s2 = stats(&db, C);
    assert_eq!((s2.hits - s1.hits, s2.loads - s1.loads), (4, 0));

    // Writes that are not keyword changes keep the cache.
    t.create_expense(&expense(u1, "2026-03-01", 100))?;
    exec(&db, "UPDATE users SET name = 'x' WHERE id = ?1", [u1])?;
    t.categories.insert(&category(u1, "Food"))?;
    let s3 = stats(&db, C);
    assert_eq!((s3.invalidations, s3.size), (s2.invalidations, 4));
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Food"));
    assert_eq!(stats(&db, C).loads, s3.loads);

    // Adding a keyword (repository) drops everything, the negative entry of "airport" too.
    t.keywords_by_id.insert(&keyword("airport", "Travel", 5))?;
    let s4 = stats(&db, C);
    assert_eq!((s4.invalidations - s3.invalidations, s4.size), (4, 0));
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Travel"));

    // Changing a keyword (raw SQL) drops everything.
    let before = stats(&db, C);
    assert_eq!(before.size, 4);
    exec(
        &db,
        "UPDATE keywords SET category_name = 'Flights' WHERE keyword = 'airport'",
        [],
    )?;
    let after = stats(&db, C);
    assert_eq!(
        (after.invalidations - before.invalidations, after.size),
        (4, 0)
    );
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Flights"));

    // Changing a keyword no cached word mentions still drops everything.
    let before = stats(&db, C);
    t.keywords_by_id.update(&Keyword {
        id: taxi,
        ..keyword("taxi", "Transport", 9)
    })?;
    assert_eq!(stats(&db, C).size, 0);
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Flights"));
    assert_eq!(stats(&db, C).loads - before.loads, 1);
    assert_eq!(
        t.suggest_category("taxi to the airport")?.as_deref(),
        Some("Transport")
    );

    // Deleting a keyword (raw SQL) drops everything.
    exec(&db, "DELETE FROM keywords WHERE keyword = 'airport'", [])?;
    assert_eq!(stats(&db, C).size, 0);
    assert_eq!(t.suggest_category(text)?.as_deref(), Some("Food"));
    assert_eq!(t.suggest_category("nothing matches")?, None);
    assert_eq!(t.suggest_category("  ,;  ")?, None);
    Ok(())
}

#[test]
fn daily_metrics_drop_per_user_and_day() -> Result<()> {
    let (_dir, db, t) = open()?;
    const C: &str = "daily_metrics";
    let (d1, d2, d3) = ("2026-03-01", "2026-03-02", "2026-03-03");
    let u1 = t.users.insert(&user(1))?;
    let u2 = t.users.insert(&user(2))?;
    let e1 = t.create_expense(&expense(u1, d1, 1000))?;
    let e2 = t.create_expense(&expense(u1, d2, 500))?;
    let e3 = t.create_expense(&expense(u2, d1, 700))?;
    let metric = |u: i64, d: &str| -> Result<((i64, i64), Served)> {
        let (m, served) = probe(&db, C, || t.daily_metrics(u, d))?;
        assert_eq!((m.user_id, m.date.as_str()), (u, d));
        Ok(((m.total_cents, m.count), served))
    };
    // Every key cached; `state` lists the expected values.
    let mut state: HashMap<(i64, &str), (i64, i64)> = HashMap::from([
        ((u1, d1), (1000, 1)),
        ((u1, d2), (500, 1)),
        ((u1, d3), (0, 0)),
        ((u2, d1), (700, 1)),
        ((u2, d2), (0, 0)),
    ]);
    for (&(u, d), &want) in &state {
        assert_eq!(metric(u, d)?, (want, Served::Load));
        assert_eq!(metric(u, d)?, (want, Served::Hit));
    }
    // After a write: the `dropped` keys reload with their new values, the rest are hits.
    let check = |state: &HashMap<(i64, &str), (i64, i64)>,
                 dropped: &[(i64, &str)],
                 what: &str|
     -> Result<()> {
        for (&(u, d), &want) in state {
            let expect = if dropped.contains(&(u, d)) {
                Served::Load
            } else {
                Served::Hit
            };
            assert_eq!(metric(u, d)?, (want, expect), "{what}: ({u}, {d})");
        }
        Ok(())
    };
    let dropped_by = |f: &dyn Fn() -> Result<()>| -> Result<u64> {
        let before = invalidations(&db, C);
        f()?;
        Ok(invalidations(&db, C) - before)
    };

    // Create (domain method).
    let n = dropped_by(&|| t.create_expense(&expense(u1, d1, 250)).map(drop))?;
    assert_eq!(n, 1);
    state.insert((u1, d1), (1250, 2));
    check(&state, &[(u1, d1)], "create")?;

    // Change the amount (repository update).
    let n = dropped_by(&|| {
        t.expenses.update(&Expense {
            id: e1,
            ..expense(u1, d1, 2000)
        })
    })?;
    assert_eq!(n, 1);
    state.insert((u1, d1), (2250, 2));
    check(&state, &[(u1, d1)], "amount")?;

    // Move e2 from day 2 to day 3: drops both days.
    let n = dropped_by(&|| {
        t.expenses.update(&Expense {
            id: e2,
            ..expense(u1, d3, 500)
        })
    })?;
    assert_eq!(n, 2);
    state.insert((u1, d2), (0, 0));
    state.insert((u1, d3), (500, 1));
    check(&state, &[(u1, d2), (u1, d3)], "move day")?;

    // Delete (repository) an expense of user 2.
    let n = dropped_by(&|| t.expenses.delete(e3).map(drop))?;
    assert_eq!(n, 1);
    state.insert((u2, d1), (0, 0));
    check(&state, &[(u2, d1)], "delete")?;

    // Raw SQL insert.
    let n = dropped_by(&|| {
        exec(
            &db,
            "INSERT INTO expenses (user_id, amount_cents, description, expense_date, created_at) \
             VALUES (?1, 42, 'raw', ?2, 0)",
            (u2, d2),
        )
        .map(drop)
    })?;
    assert_eq!(n, 1);
    state.insert((u2, d2), (42, 1));
    check(&state, &[(u2, d2)], "raw insert")?;

    // Raw SQL: move e1 to user 2 (same day): drops (u1, d1) and (u2, d1).
    let n = dropped_by(&|| {
        exec(
            &db,
            "UPDATE expenses SET user_id = ?1 WHERE id = ?2",
            [u2, e1],
        )
        .map(drop)
    })?;
    assert_eq!(n, 2);
    state.insert((u1, d1), (250, 1));
    state.insert((u2, d1), (2000, 1));
    check(&state, &[(u1, d1), (u2, d1)], "move user")?;

    // Raw SQL: one statement moving user and day at once.
    let n = dropped_by(&|| {
        exec(
            &db,
            "UPDATE expenses SET user_id = ?1, expense_date = ?2 WHERE id = ?3",
            (u1, d2, e1),
        )
        .map(drop)
    })?;
    assert_eq!(n, 2);
    state.insert((u2, d1), (0, 0));
    state.insert((u1, d2), (2000, 1));
    check(&state, &[(u2, d1), (u1, d2)], "move both")?;

    // Raw SQL delete of a whole day of user 1, several rows in one statement.
    t.create_expense(&expense(u1, d3, 1))?;
    metric(u1, d3)?;
    state.insert((u1, d3), (501, 2));
    let n = dropped_by(&|| {
        exec(
            &db,
            "DELETE FROM expenses WHERE user_id = ?1 AND expense_date = ?2",
            (u1, d3),
        )
        .map(drop)
    })?;
    assert_eq!(n, 1, "two rows of one key: one entry dropped");
    state.insert((u1, d3), (0, 0));
    check(&state, &[(u1, d3)], "raw delete")?;

    // Writes to other tables keep every entry.
    let n = dropped_by(&|| {
        t.users.update(&User { id: u1, ..user(11) })?;
        t.categories.insert(&category(u1, "Food")).map(drop)?;
        t.keywords_by_id
            .insert(&keyword("tea", "Food", 1))
            .map(drop)
    })?;
    assert_eq!(n, 0);
    check(&state, &[], "other tables")?;

    // A rolled-back write drops nothing and changes nothing.
    let err = db
        .write(|c| {
            c.execute(
                "UPDATE expenses SET amount_cents = 1 WHERE user_id = ?1",
                [u1],
            )?;
            Err::<(), _>(Error::closure("abort"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Closure(_)));
    check(&state, &[], "rolled back")?;

    // Deleting user 1 cascades to their expenses: their days are dropped.
    t.users.delete(u1)?;
    state.insert((u1, d1), (0, 0));
    state.insert((u1, d2), (0, 0));
    check(&state, &[(u1, d1), (u1, d2)], "cascade")?;
    Ok(())
}

#[test]
fn replace_conflicts_drop_the_replaced_rows_entries() -> Result<()> {
    let (_dir, db, t) = open()?;
    let u = t.users.insert(&user(1))?;
    let e = t.create_expense(&expense(u, "2026-03-01", 100))?;
    assert_eq!(t.daily_metrics(u, "2026-03-01")?.total_cents, 100);
    assert_eq!(t.expenses.require(e)?.amount_cents, 100);
    // REPLACE deletes the old row (no update trigger): its (user, day) must still be dropped.
    exec(
        &db,
        "INSERT OR REPLACE INTO expenses (id, user_id, amount_cents, description, expense_date, \
         created_at) VALUES (?1, ?2, 5, 'y', '2026-03-02', 0)",
        (e, u),
    )?;
    assert_eq!(t.daily_metrics(u, "2026-03-01")?.count, 0);
    assert_eq!(t.daily_metrics(u, "2026-03-02")?.total_cents, 5);
    assert_eq!(t.expenses.require(e)?.amount_cents, 5);

    // A REPLACE on the keyword's UNIQUE column deletes the row under another id.
    let k = t.keywords_by_id.insert(&keyword("coffee", "Food", 1))?;
    assert_eq!(t.keywords_by_id.require(k)?.category_name, "Food");
    assert_eq!(t.suggest_category("coffee")?.as_deref(), Some("Food"));
    exec(
        &db,
        "INSERT OR REPLACE INTO keywords (keyword, category_name, weight, created_at) \
         VALUES ('COFFEE', 'Drinks', 1, 0)",
        [],
    )?;
    assert!(
        t.keywords_by_id.get(k)?.is_none(),
        "the replaced id is gone"
    );
    assert_eq!(t.suggest_category("coffee")?.as_deref(), Some("Drinks"));

    // Same for a category moved to another user by REPLACE.
    let u2 = t.users.insert(&user(2))?;
    let c = t.categories.insert(&category(u, "Food"))?;
    assert_eq!(t.categories_of(u)?.len(), 1);
    assert_eq!(t.categories_of(u2)?.len(), 0);
    exec(
        &db,
        "REPLACE INTO categories (id, user_id, name, created_at) VALUES (?1, ?2, 'Food', 0)",
        [c, u2],
    )?;
    assert_eq!(t.categories_of(u)?.len(), 0);
    assert_eq!(t.categories_of(u2)?.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Cursor pagination under concurrent inserts
// ---------------------------------------------------------------------------------------------

#[test]
fn cursor_pages_return_every_expense_once_while_inserts_happen() -> Result<()> {
    let (_dir, db, t) = open()?;
    let me = t.users.insert(&user(1))?;
    let other = t.users.insert(&user(2))?;
    const SEEDED: i64 = 1000;
    const BASE: i64 = 1_700_000_000_000;
    // 1000 expenses over 400 distinct created_at values, not in id order: many ties.
    let seed: Vec<Expense> = (0..SEEDED)
        .map(|i| Expense {
            created_at: BASE + (i * 7919) % 400,
            ..expense(me, "2026-03-01", i + 1)
        })
        .collect();
    let report = t.expenses.insert_many(&seed)?;
    assert_eq!(report.applied, SEEDED as usize);
    let seeded: HashMap<i64, i64> = db.read(|c| {
        let mut stmt = c.prepare("SELECT id, created_at FROM expenses WHERE user_id = ?1")?;
        let rows = stmt.query_map([me], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
    })?;
    assert_eq!(seeded.len(), SEEDED as usize);

    let (go, wait_go) = mpsc::channel::<bool>();
    let (done, wait_done) = mpsc::channel::<Result<()>>();
    let inserter = {
        let t = t.clone();
        thread::spawn(move || {
            let mut k = 0;
            while let Ok(true) = wait_go.recv() {
                let mut outcome = Ok(());
                for who in [me, me, other] {
                    k += 1;
                    let e = Expense {
                        created_at: BASE + 10_000 + k,
                        ..expense(who, "2026-03-02", k)
                    };
                    if let Err(err) = t.create_expense(&e) {
                        outcome = Err(err);
                    }
                }
                if done.send(outcome).is_err() {
                    break;
                }
            }
        })
    };

    let mut seen: Vec<(i64, i64)> = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page = t.expenses_of(me, 37, cursor)?;
        pages += 1;
        assert!(page.items.len() <= 37);
        for e in &page.items {
            assert_eq!(e.user_id, me, "another user's expense");
            seen.push((e.created_at, e.id));
        }
        if let Some(next) = page.next {
            let last = page.items.last().expect("a full page");
            assert_eq!((next.created_at, next.id), (last.created_at, last.id));
        }
        // Between pages, new expenses (newer than all seeded ones) are committed.
        go.send(true).map_err(Error::closure)?;
        wait_done.recv().map_err(Error::closure)??;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    go.send(false).map_err(Error::closure)?;
    inserter.join().expect("inserter thread");

    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "not strictly descending by (created_at, id)"
    );
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for &(created_at, id) in &seen {
        *counts.entry(id).or_default() += 1;
        assert_eq!(
            seeded.get(&id),
            Some(&created_at),
            "expense {id} was not seeded (created after the first page) or changed"
        );
    }
    assert_eq!(counts.len(), SEEDED as usize, "a seeded expense is missing");
    assert!(counts.values().all(|&n| n == 1), "an expense came twice");
    assert_eq!(pages, (SEEDED as usize).div_ceil(37));
    // The new expenses exist and are on the first page of a fresh listing.
    let first = t.expenses_of(me, 37, None)?;
    assert!(first.items[0].created_at > BASE + 10_000);
    assert!(matches!(
        t.expenses_of(me, 0, None),
        Err(Error::InvalidValue { .. })
    ));
    Ok(())
}

#[test]
fn ties_on_created_at_are_paged_by_id() -> Result<()> {
    let (_dir, _db, t) = open()?;
    let me = t.users.insert(&user(1))?;
    // Every expense at the same millisecond: only the id orders them.
    let seed: Vec<Expense> = (0..100).map(|i| expense(me, "2026-03-01", i)).collect();
    t.expenses.insert_many(&seed)?;
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = t.expenses_of(me, 10, cursor)?;
        ids.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.sort_unstable_by(|a, b| b.cmp(a));
    want.dedup();
    assert_eq!(ids, want);
    assert_eq!(ids.len(), 100);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Plans of the list queries
// ---------------------------------------------------------------------------------------------

fn plan(db: &Db, sql: &str) -> Result<Vec<String>> {
    db.read(|c| {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let nulls = vec![Null; stmt.parameter_count()];
        let rows = stmt.query_map(params_from_iter(nulls), |r| r.get::<_, String>(3))?;
        Ok(rows.collect::<strata::rusqlite::Result<_>>()?)
    })
}

fn check_plans(db: &Db, when: &str) -> Result<()> {
    let expected = HashMap::from([
        ("expenses_of_user", "idx_expenses_user_recent"),
        ("expenses_in_range", "idx_expenses_user_date_range"),
        ("categories_of_user", "idx_categories_of_user"),
        ("daily_metrics", "idx_expenses_user_date_range"),
        ("keywords_by_word", "sqlite_autoindex_keywords_1"),
    ]);
    assert_eq!(
        LIST_QUERIES.len(),
        expected.len(),
        "a list query has no check"
    );
    for &(name, sql) in LIST_QUERIES {
        let steps = plan(db, sql)?;
        let text = steps.join(" | ");
        for table in ["expenses", "categories", "keywords", "users"] {
            assert!(
                !steps
                    .iter()
                    .any(|s| s == &format!("SCAN {table}")
                        || s.starts_with(&format!("SCAN {table} "))),
                "{when}: {name} scans {table}: {text}"
            );
        }
        assert!(
            !text.contains("TEMP B-TREE"),
            "{when}: {name} sorts: {text}"
        );
        let index = expected
            .get(name)
            .unwrap_or_else(|| panic!("unknown query {name}"));
        assert!(
            steps.iter().any(|s| s.contains(&format!("INDEX {index} "))
                || s.ends_with(&format!("INDEX {index}"))),
            "{when}: {name} does not use {index}: {text}"
        );
    }
    Ok(())
}

#[test]
fn list_queries_use_their_indexes() -> Result<()> {
    let (_dir, db, t) = open()?;
    check_plans(&db, "empty")?;

    let users: Vec<User> = (1..=50).map(user).collect();
    t.users.insert_many(&users)?;
    let cats: Vec<Category> = (1..=50)
        .flat_map(|u| ["Food", "Rent", "Travel", "Fun"].map(|n| category(u, n)))
        .collect();
    t.categories.insert_many(&cats)?;
    let expenses: Vec<Expense> = (0..5000)
        .map(|i| Expense {
            category_id: Some(i % 200 + 1),
            created_at: 1_700_000_000_000 + i * 1000,
            ..expense(
                i % 50 + 1,
                &format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
                i,
            )
        })
        .collect();
    t.expenses.insert_many(&expenses)?;
    let words: Vec<Keyword> = (0..300)
        .map(|i| keyword(&format!("word{i}"), "Food", i))
        .collect();
    t.keywords_by_id.insert_many(&words)?;
    check_plans(&db, "with data")?;

    db.write(|c| Ok(c.execute_batch("ANALYZE")?))?;
    check_plans(&db, "after ANALYZE")?;

    // The plans are the ones the domain's methods run: they answer correctly on this data.
    assert_eq!(t.expenses_of(7, 1000, None)?.items.len(), 100);
    assert_eq!(t.categories_of(7)?.len(), 4);
    assert_eq!(
        t.suggest_category("WORD299 and word3")?.as_deref(),
        Some("Food")
    );
    let m = t.daily_metrics(7, "2026-07-07")?;
    let by_range = t.expenses_between(7, "2026-07-07", "2026-07-07")?;
    assert_eq!(m.count, by_range.len() as i64);
    assert_eq!(
        m.total_cents,
        by_range.iter().map(|e| e.amount_cents).sum::<i64>()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_ids_are_none_or_not_found() -> Result<()> {
    let (_dir, _db, t) = open()?;
    assert!(t.users.get(42)?.is_none());
    assert!(t.categories.get(-1)?.is_none());
    assert!(t.expenses.get(i64::MAX)?.is_none());
    assert!(t.keywords_by_id.get(0)?.is_none());
    assert!(matches!(
        t.users.require(42),
        Err(Error::NotFound { table: "users", .. })
    ));
    assert!(matches!(
        t.expenses.require(7),
        Err(Error::NotFound {
            table: "expenses",
            ..
        })
    ));
    assert!(matches!(
        t.users.update(&User { id: 42, ..user(42) }),
        Err(Error::NotFound { table: "users", ref key }) if key == "42"
    ));
    assert!(matches!(
        t.categories.update(&category(1, "no id yet")),
        Err(Error::NotFound {
            table: "categories",
            ..
        })
    ));
    assert!(!t.users.delete(42)?);
    assert_eq!(
        t.users
            .get_many(&[1, 2])?
            .iter()
            .filter(|u| u.is_some())
            .count(),
        0
    );
    // The update that failed left no row behind.
    assert!(t.users.get(42)?.is_none());
    assert!(t.categories_of(42)?.is_empty());
    assert_eq!(t.daily_metrics(42, "2026-01-01")?.count, 0);
    Ok(())
}

#[test]
fn expenses_of_missing_users_or_categories_are_constraint_errors() -> Result<()> {
    let (_dir, db, t) = open()?;
    let is_expenses_constraint = |r: Result<i64>| matches!(r, Err(Error::Constraint { table: Some(ref t), .. }) if t == "expenses");
    assert!(is_expenses_constraint(t.create_expense(&expense(
        999,
        "2026-03-01",
        1
    ))));
    let u = t.users.insert(&user(1))?;
    assert!(is_expenses_constraint(t.create_expense(&Expense {
        category_id: Some(999),
        ..expense(u, "2026-03-01", 1)
    })));
    assert!(is_expenses_constraint(t.expenses.insert(&expense(
        999,
        "2026-03-01",
        1
    ))));
    assert!(matches!(
        t.users.insert(&User { id: 0, ..user(1) }),
        Err(Error::Constraint { table: Some(ref t), .. }) if t == "users"
    ));
    let n: i64 =
        db.read(|c| Ok(c.query_row("SELECT count(*) FROM expenses", [], |r| r.get(0))?))?;
    assert_eq!(n, 0, "failed writes left nothing");
    Ok(())
}

#[test]
fn text_round_trips_exactly() -> Result<()> {
    let (_dir, db, t) = open()?;
    let texts = [
        "",
        "O'Brien \"quoted\" `back` ; DROP TABLE users; --",
        "Zoë Ünïcödé 日本語 🚀👩‍👩‍👧 \u{200d}\u{feff}",
        "tab\there\nnewline\r\n  trailing  ",
        "nul\0inside",
        "%_like_wildcards_% \\ backslash",
    ];
    for (i, text) in texts.iter().enumerate() {
        let uid = t.users.insert(&User {
            id: 0,
            email: format!("{text}#{i}"),
            name: (*text).to_owned(),
            created_at: i as i64,
        })?;
        let cid = t.categories.insert(&category(uid, text))?;
        let eid = t.create_expense(&Expense {
            category_id: Some(cid),
            description: (*text).to_owned(),
            ..expense(uid, "2026-03-01", 1)
        })?;
        let kid = t
            .keywords_by_id
            .insert(&keyword(&format!("k{i}"), text, 1))?;
        // Read twice: the load from the database and the cached copy.
        for _ in 0..2 {
            let u = t.users.require(uid)?;
            assert_eq!(
                (u.name.as_str(), u.email.clone()),
                (*text, format!("{text}#{i}"))
            );
            assert_eq!(t.categories.require(cid)?.name, *text);
            assert_eq!(t.expenses.require(eid)?.description, *text);
            assert_eq!(t.keywords_by_id.require(kid)?.category_name, *text);
        }
        assert_eq!(t.categories_of(uid)?[0].name, *text);
        assert_eq!(t.expenses_of(uid, 10, None)?.items[0].description, *text);
        assert_eq!(
            t.suggest_category(&format!("x k{i} y"))?.as_deref(),
            Some(*text)
        );
        // And byte for byte in the database.
        let stored: Vec<u8> = db.read(|c| {
            Ok(c.query_row(
                "SELECT CAST(description AS BLOB) FROM expenses WHERE id = ?1",
                [eid],
                |r| r.get(0),
            )?)
        })?;
        assert_eq!(stored, text.as_bytes());
    }
    Ok(())
}

#[test]
fn invalid_dates_and_amounts_are_refused() -> Result<()> {
    let (_dir, db, t) = open()?;
    let u = t.users.insert(&user(1))?;
    for bad in [
        "2026-02-30",
        "2026-13-01",
        "26-01-01",
        "2026/01/01",
        "",
        "2026-01-01 ",
    ] {
        assert!(
            matches!(
                t.create_expense(&expense(u, bad, 1)),
                Err(Error::InvalidValue {
                    field: "expense_date",
                    ..
                })
            ),
            "{bad:?} accepted by create_expense"
        );
        assert!(matches!(
            validate_date(bad),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            t.daily_metrics(u, bad),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            t.expenses_between(u, "2026-01-01", bad),
            Err(Error::InvalidValue { .. })
        ));
    }
    validate_date("2024-02-29")?;
    // The schema's CHECK refuses what bypasses the domain method's validation.
    assert!(matches!(
        t.expenses.insert(&expense(u, "March 1st", 1)),
        Err(Error::Constraint { .. })
    ));

    assert_eq!(parse_cents("92233720368547758.07")?, i64::MAX);
    assert_eq!(parse_cents("-92233720368547758.07")?, -i64::MAX);
    for beyond in [
        "92233720368547758.08",
        "-92233720368547758.09",
        "100000000000000000000",
        "9223372036854775807",
    ] {
        assert!(
            matches!(
                parse_cents(beyond),
                Err(Error::InvalidValue {
                    field: "amount",
                    ..
                })
            ),
            "{beyond} accepted"
        );
    }
    // Amounts at the ends of i64 are stored and read back exactly.
    for cents in [i64::MAX, i64::MIN, 0, -1] {
        let id = t.create_expense(&expense(u, "2026-03-01", cents))?;
        assert_eq!(t.expenses.require(id)?.amount_cents, cents);
        t.expenses.delete(id)?;
    }
    let n: i64 =
        db.read(|c| Ok(c.query_row("SELECT count(*) FROM expenses", [], |r| r.get(0))?))?;
    assert_eq!(n, 0);
    Ok(())
}
