//! Expense-tracker benchmarks: the domain's repositories and queries against a raw rusqlite
//! connection running the same SQL on the same file with the same pragmas, in the same group.
//!
//! Data: 10k users and 100k expenses (user 1 has 500+ of them) in a WAL file in a tempdir. The
//! raw connections open that same file. `create_expense` runs its raw case twice: with SQLite's
//! default auto-checkpoint (a COMMIT that leaves 1000 WAL pages checkpoints on the caller's
//! thread) and with `wal_autocheckpoint=0` (no COMMIT checkpoints, like strata's, whose
//! checkpoints run on a background thread).
//!
//! Targets: `user_get` cached at least 20x faster than uncached, uncached at most 1.3x raw;
//! `expenses_of_user_100` at most 1.2x raw; `create_expense` at most 1.3x raw.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use strata::domain::{Expense, ExpenseTracker, User};
use strata::rusqlite::{self, Connection};
use support::{Ids, USERS};

const EXPENSES: i64 = 100_000;
/// Expenses given to user 1 before the rest are spread evenly.
const HEAVY: i64 = 500;
const BASE_MS: i64 = 1_700_000_000_000;

const USER_BY_ID: &str = "SELECT id, email, name, created_at FROM users WHERE id = ?1";
/// The same text as `EXPENSES_OF_USER` in src/domain/expenses.rs.
const EXPENSES_OF_USER: &str =
    "SELECT id, user_id, category_id, amount_cents, description, expense_date, created_at \
     FROM expenses WHERE user_id = ?1 AND (created_at, id) < (?2, ?3) \
     ORDER BY created_at DESC, id DESC LIMIT ?4";
/// The statement `Repository<Expense>::insert` runs.
const INSERT_EXPENSE: &str = "INSERT INTO expenses \
     (id, user_id, category_id, amount_cents, description, expense_date, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

fn date(i: i64) -> String {
    format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1)
}

fn seed(t: &ExpenseTracker) {
    let users: Vec<User> = (1..=USERS)
        .map(|i| User {
            id: 0,
            email: format!("user{i}@example.com"),
            name: format!("User {i}"),
            created_at: BASE_MS + i,
        })
        .collect();
    let report = t.users.insert_many(&users).expect("seed users");
    assert_eq!(report.applied, USERS as usize);
    let expenses: Vec<Expense> = (0..EXPENSES)
        .map(|i| Expense {
            id: 0,
            user_id: if i < HEAVY { 1 } else { i % USERS + 1 },
            category_id: None,
            amount_cents: 100 + i % 10_000,
            description: format!("expense number {i}"),
            expense_date: date(i),
            created_at: BASE_MS + i * 1000,
        })
        .collect();
    let report = t.expenses.insert_many(&expenses).expect("seed expenses");
    assert_eq!(report.applied, EXPENSES as usize);
}

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    db: strata::Db,
    t: ExpenseTracker,
    raw: Connection,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("domain.db");
    let t = ExpenseTracker::open(&path).expect("open the tracker");
    seed(&t);
    let raw = support::open_raw(&path, "NORMAL");
    let n: i64 = raw
        .query_row("SELECT count(*) FROM expenses", [], |r| r.get(0))
        .expect("count expenses");
    assert_eq!(n, EXPENSES);
    Setup {
        _dir: dir,
        path,
        db: t.db().clone(),
        t,
        raw,
    }
}

fn raw_user(c: &Connection, id: i64) -> rusqlite::Result<User> {
    c.prepare_cached(USER_BY_ID)?.query_row([id], |r| {
        Ok(User {
            id: r.get(0)?,
            email: r.get(1)?,
            name: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
}

fn expense_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Expense> {
    Ok(Expense {
        id: r.get(0)?,
        user_id: r.get(1)?,
        category_id: r.get(2)?,
        amount_cents: r.get(3)?,
        description: r.get(4)?,
        expense_date: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn user_get(c: &mut Criterion) {
    let s = setup();
    let cache = s.t.users.cache();
    let mut group = c.benchmark_group("user_get");

    // Warm ids: fewer than the cache's capacity, all loaded before measuring.
    let warm: Vec<i64> = (1..=500).collect();
    for &id in &warm {
        s.t.users.get(id).expect("warm");
    }
    let before = cache.stats();
    let mut lookups = 0u64;
    group.bench_function("cached", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % warm.len();
            lookups += 1;
            black_box(s.t.users.get(warm[i]).expect("cached get"));
        })
    });
    let after = cache.stats();
    assert_eq!(
        after.hits - before.hits,
        lookups,
        "every cached get was a hit"
    );
    assert_eq!(after.loads, before.loads);

    let mut ids = Ids::new();
    let before = cache.stats();
    let mut lookups = 0u64;
    group.bench_function("uncached", |b| {
        b.iter(|| {
            let id = ids.next_id();
            // Dropped right before the lookup: every get is a miss and a load.
            cache.invalidate(&id);
            lookups += 1;
            black_box(s.t.users.get(id).expect("uncached get"));
        })
    });
    let after = cache.stats();
    assert_eq!(
        after.loads - before.loads,
        lookups,
        "every uncached get loaded"
    );
    assert_eq!(after.hits, before.hits);

    let mut ids = Ids::new();
    group.bench_function("raw", |b| {
        b.iter(|| black_box(raw_user(&s.raw, ids.next_id()).expect("raw get")))
    });

    // Attribution, not a target: the raw lookup inside `Db::read` (pool checkout and the read
    // transaction's BEGIN/COMMIT), without the cache. uncached - db_read is the cache's miss
    // path; db_read - raw is the read path's.
    let mut ids = Ids::new();
    group.bench_function("db_read", |b| {
        b.iter(|| {
            let id = ids.next_id();
            black_box(s.db.read(|c| Ok(raw_user(c, id)?)).expect("db.read get"))
        })
    });
    group.finish();
}

fn expenses_of_user_100(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("expenses_of_user_100");

    let page = s.t.expenses_of(1, 100, None).expect("page");
    assert_eq!(page.items.len(), 100);
    group.bench_function("strata", |b| {
        b.iter(|| black_box(s.t.expenses_of(1, 100, None).expect("expenses_of")))
    });

    let raw_page = |c: &Connection| -> rusqlite::Result<Vec<Expense>> {
        c.prepare_cached(EXPENSES_OF_USER)?
            .query_map((1, i64::MAX, i64::MAX, 100), expense_from_row)?
            .collect()
    };
    assert_eq!(raw_page(&s.raw).expect("raw page"), page.items);
    group.bench_function("raw", |b| {
        b.iter(|| black_box(raw_page(&s.raw).expect("raw page")))
    });
    group.finish();
}

fn create_expense(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("create_expense");
    let mut n = EXPENSES;
    let next = |n: &mut i64| {
        *n += 1;
        Expense {
            id: 0,
            user_id: *n % USERS + 1,
            category_id: None,
            amount_cents: 1234,
            description: format!("new expense {n}"),
            expense_date: date(*n),
            created_at: BASE_MS + *n * 1000,
        }
    };

    group.bench_function("strata", |b| {
        b.iter(|| black_box(s.t.create_expense(&next(&mut n)).expect("create_expense")))
    });

    let no_autocheckpoint = support::open_raw_with(&s.path, "NORMAL", support::RawCheckpoint::Off);
    for (raw, checkpoint) in [
        (&s.raw, "autocheckpoint"),
        (&no_autocheckpoint, "no_autocheckpoint"),
    ] {
        group.bench_function(format!("raw/{checkpoint}"), |b| {
            b.iter(|| {
                let e = next(&mut n);
                raw.prepare_cached(INSERT_EXPENSE)
                    .and_then(|mut stmt| {
                        stmt.execute((
                            None::<i64>,
                            e.user_id,
                            e.category_id,
                            e.amount_cents,
                            &e.description,
                            &e.expense_date,
                            e.created_at,
                        ))
                    })
                    .expect("raw insert");
                black_box(raw.last_insert_rowid())
            })
        });
    }
    group.finish();
    let total: i64 =
        s.db.read(|c| Ok(c.query_row("SELECT count(*) FROM expenses", [], |r| r.get(0))?))
            .expect("count");
    assert_eq!(total, n, "every insert of both cases landed");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = user_get, expenses_of_user_100, create_expense
}
criterion_main!(benches);
