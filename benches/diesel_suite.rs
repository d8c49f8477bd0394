//! The workloads of diesel's benchmark suite, plus a primary-key lookup, written as a new user
//! of each side would write them, in the same criterion group: strata through its public API
//! with every default (`Db::open_in_memory()`, no migrations, `db.read`/`db.write`,
//! `prepare_cached`) against plain rusqlite (`Connection::open_in_memory()`, no pragmas, no
//! explicit transactions). Workloads: primary-key lookup (1 000 users), trivial query (100 and
//! 10 000 users), medium complex query (users LEFT JOIN posts filtered by hair color, 100
//! users), insert 100 users in one multi-row INSERT (diesel's `insert_into(..).values(&vec)`),
//! and loading associations (9 users, 90 posts, 900 comments).
//!
//! Target: every strata case within 1.1x its raw case.
//!
//! Both sides hold the same schema and data and run the same SQL through the same functions
//! (benches/diesel/workloads.rs); a group's strata and raw results are checked equal after it
//! runs. strata's in-memory database is a memdb every connection of the `Db` shares (a raw
//! connection cannot open it), raw's a private `:memory:` one.
//!
//! `diesel_suite --callgrind WORKLOAD SIDE ITERATIONS` (SIDE: strata, strata_rarely_traced or
//! raw) runs one case
//! without criterion, each iteration inside `measured`, for instruction counts:
//! benches/callgrind.sh runs it under valgrind for every case.

#[path = "diesel/workloads.rs"]
mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use strata::rusqlite::Connection;
use workloads::{
    associations, fill_associations, fill_medium, insert_many, insert_many_sql, insert_users,
    medium, new_users, trivial, user_by_id, Fingerprint, SCHEMA,
};

/// Users of the primary-key lookup's table.
const PK_USERS: i64 = 1_000;

/// Rows of the insert workload.
const INSERTED: usize = 100;

/// A workload: a criterion group, and a case of benches/callgrind.sh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    PkLookup,
    Trivial100,
    Trivial10k,
    Medium,
    Insert100,
    Associations,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::PkLookup,
        Workload::Trivial100,
        Workload::Trivial10k,
        Workload::Medium,
        Workload::Insert100,
        Workload::Associations,
    ];

    /// The group's name.
    fn name(self) -> &'static str {
        match self {
            Workload::PkLookup => "pk_lookup",
            Workload::Trivial100 => "trivial_query_100",
            Workload::Trivial10k => "trivial_query_10000",
            Workload::Medium => "medium_complex_query_100",
            Workload::Insert100 => "insert_100_users",
            Workload::Associations => "loading_associations",
        }
    }

    /// Writes the workload's data.
    fn fill(self, c: &Connection) -> strata::rusqlite::Result<()> {
        match self {
            Workload::PkLookup => insert_users(c, PK_USERS),
            Workload::Trivial100 => insert_users(c, 100),
            Workload::Trivial10k => insert_users(c, 10_000),
            Workload::Medium => fill_medium(c),
            Workload::Insert100 => Ok(()),
            Workload::Associations => fill_associations(c),
        }
    }
}

/// The two sides of a workload, holding the same schema and data.
struct Sides {
    workload: Workload,
    db: strata::Db,
    raw: Connection,
    insert_sql: String,
    new_users: Vec<(String, Option<&'static str>)>,
}

impl Sides {
    fn open(workload: Workload) -> Sides {
        Sides::open_with(workload, strata::Db::builder().in_memory())
    }

    fn open_with(workload: Workload, config: strata::Config) -> Sides {
        let db = config.build().expect("open strata db");
        db.write(|c| {
            c.execute_batch(SCHEMA)?;
            Ok(workload.fill(c)?)
        })
        .expect("strata schema and data");
        let raw = Connection::open_in_memory().expect("open raw connection");
        raw.execute_batch(SCHEMA).expect("raw schema");
        raw.execute_batch("BEGIN").expect("raw begin");
        workload.fill(&raw).expect("raw data");
        raw.execute_batch("COMMIT").expect("raw commit");
        Sides {
            workload,
            db,
            raw,
            insert_sql: insert_many_sql(INSERTED),
            new_users: new_users(INSERTED),
        }
    }

    /// What an iteration needs first, outside the timing: the insert's table emptied.
    fn prepare(&self, strata: bool) {
        if self.workload != Workload::Insert100 {
            return;
        }
        if strata {
            self.db
                .write(|c| Ok(c.execute("DELETE FROM users", [])?))
                .expect("strata delete");
        } else {
            self.raw
                .execute("DELETE FROM users", [])
                .expect("raw delete");
        }
    }

    /// Iteration `i` on strata: the rows it read or wrote.
    fn strata(&self, i: u64) -> usize {
        let db = &self.db;
        match self.workload {
            Workload::PkLookup => {
                let id = pk_of(i);
                black_box(db.read(|c| Ok(user_by_id(c, id)?)).expect("strata lookup"));
                1
            }
            Workload::Trivial100 | Workload::Trivial10k => {
                black_box(db.read(|c| Ok(trivial(c)?)).expect("strata query")).len()
            }
            Workload::Medium => black_box(db.read(|c| Ok(medium(c)?)).expect("strata query")).len(),
            Workload::Insert100 => {
                let (sql, users) = (&self.insert_sql, &self.new_users);
                db.write(|c| Ok(insert_many(c, sql, users)?))
                    .expect("strata insert")
            }
            Workload::Associations => {
                black_box(db.read(|c| Ok(associations(c)?)).expect("strata load")).len()
            }
        }
    }

    /// Iteration `i` on raw: the rows it read or wrote.
    fn raw(&self, i: u64) -> usize {
        let c = &self.raw;
        match self.workload {
            Workload::PkLookup => {
                black_box(user_by_id(c, pk_of(i)).expect("raw lookup"));
                1
            }
            Workload::Trivial100 | Workload::Trivial10k => {
                black_box(trivial(c).expect("raw query")).len()
            }
            Workload::Medium => black_box(medium(c).expect("raw query")).len(),
            Workload::Insert100 => {
                insert_many(c, &self.insert_sql, &self.new_users).expect("raw insert")
            }
            Workload::Associations => black_box(associations(c).expect("raw load")).len(),
        }
    }

    /// Checks that both sides hold and return the same rows, and as many as expected.
    fn check(&self) {
        let (ours, theirs, expected) = match self.workload {
            Workload::PkLookup => {
                let ours = self.db.read(|c| Ok(user_by_id(c, 7)?)).expect("lookup");
                let theirs = user_by_id(&self.raw, 7).expect("lookup");
                let (ours, theirs) = (
                    Fingerprint::of_users(&[ours]),
                    Fingerprint::of_users(&[theirs]),
                );
                (ours, theirs, 1)
            }
            Workload::Trivial100 | Workload::Trivial10k | Workload::Insert100 => {
                let ours = self.db.read(|c| Ok(trivial(c)?)).expect("query");
                let expected = match self.workload {
                    Workload::Trivial100 | Workload::Insert100 => 100,
                    _ => 10_000,
                };
                let theirs = trivial(&self.raw).expect("query");
                (
                    Fingerprint::of_users(&ours),
                    Fingerprint::of_users(&theirs),
                    expected,
                )
            }
            Workload::Medium => {
                let ours = self.db.read(|c| Ok(medium(c)?)).expect("query");
                let theirs = medium(&self.raw).expect("query");
                (
                    Fingerprint::of_medium(&ours),
                    Fingerprint::of_medium(&theirs),
                    50 + 17,
                )
            }
            Workload::Associations => {
                let ours = self.db.read(|c| Ok(associations(c)?)).expect("load");
                let theirs = associations(&self.raw).expect("load");
                (
                    Fingerprint::of_trees(&ours),
                    Fingerprint::of_trees(&theirs),
                    9 + 90 + 900,
                )
            }
        };
        assert_eq!(ours.0.len(), expected, "{:?}", self.workload);
        assert_eq!(ours, theirs, "{:?}", self.workload);
    }
}

/// The id iteration `i` of the primary-key lookup looks up: the same sequence on both sides,
/// spread over the table.
fn pk_of(i: u64) -> i64 {
    (i as i64).wrapping_mul(7_919).rem_euclid(PK_USERS) + 1
}

/// Every workload's group: strata and raw, then the check that they returned the same rows.
fn suite(c: &mut Criterion) {
    for workload in Workload::ALL {
        let sides = Sides::open(workload);
        let mut group = c.benchmark_group(workload.name());
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        let strata_id = if workload == Workload::Insert100 {
            "strata/db_write"
        } else {
            "strata/db_read"
        };
        if workload == Workload::Insert100 {
            // The table is emptied between iterations, outside the timing, on both sides.
            for strata in [true, false] {
                let id = if strata { strata_id } else { "raw/rusqlite" };
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for i in 0..iters {
                            sides.prepare(strata);
                            let start = Instant::now();
                            black_box(if strata {
                                sides.strata(i)
                            } else {
                                sides.raw(i)
                            });
                            total += start.elapsed();
                        }
                        total
                    })
                });
            }
        } else {
            let mut i = 0;
            group.bench_function(strata_id, |b| {
                b.iter(|| {
                    i += 1;
                    sides.strata(i)
                })
            });
            let mut i = 0;
            group.bench_function("raw/rusqlite", |b| {
                b.iter(|| {
                    i += 1;
                    sides.raw(i)
                })
            });
        }
        group.finish();
        sides.check();
    }
}

/// One iteration under measurement: benches/callgrind.sh counts the instructions of this
/// function only (`--toggle-collect`).
#[inline(never)]
fn measured(run: &mut dyn FnMut() -> usize) -> usize {
    run()
}

/// `--callgrind WORKLOAD SIDE ITERATIONS`: warms the case up, then runs it `ITERATIONS` times
/// through [`measured`].
fn callgrind(args: &[String]) {
    let [name, side, iterations] = args else {
        panic!("usage: diesel_suite --callgrind WORKLOAD strata|strata_rarely_traced|raw N");
    };
    let workload = Workload::ALL
        .into_iter()
        .find(|w| w.name() == name)
        .unwrap_or_else(|| panic!("unknown workload {name}"));
    let config = strata::Db::builder().in_memory();
    let (strata, config) = match side.as_str() {
        "strata" => (true, config),
        // The read path without its sampled tracing: a budget this small traces one call in
        // 1024, the most a traced call stands for.
        "strata_rarely_traced" => (true, config.trace_budget(1e-9)),
        "raw" => (false, config),
        other => panic!("unknown side {other}"),
    };
    let iterations: u64 = iterations.parse().expect("iterations");
    let sides = Sides::open_with(workload, config);
    let mut rows = 0;
    // Warm-up: statements prepared and cached, the call site's sampling stride learned.
    for i in 0..200 {
        sides.prepare(strata);
        rows += if strata {
            sides.strata(i)
        } else {
            sides.raw(i)
        };
    }
    for i in 0..iterations {
        sides.prepare(strata);
        rows += measured(&mut || {
            if strata {
                sides.strata(i)
            } else {
                sides.raw(i)
            }
        });
    }
    // The other side once, so that both hold the same rows for the check.
    sides.prepare(!strata);
    if strata {
        sides.raw(0);
    } else {
        sides.strata(0);
    }
    sides.check();
    println!("{name} {side}: {iterations} measured iterations, {rows} rows");
}

criterion_group!(benches, suite);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--callgrind") {
        callgrind(&args[at + 1..]);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
