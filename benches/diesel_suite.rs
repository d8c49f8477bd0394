//! The workloads of diesel's benchmark suite, run through strata and through raw rusqlite in the
//! same criterion group: trivial query (100 and 10 000 users), medium complex query (users LEFT
//! JOIN posts filtered by hair color, 100 users), insert 100 users in one transaction, and
//! loading associations (9 users, 90 posts, 900 comments).
//!
//! Target: every strata case within 1.1x its raw case.
//!
//! Databases: each group opens a strata in-memory `Db` (`in_memory()`, one
//! memdb shared by all of that `Db`'s connections) and creates diesel's schema and data through
//! `db.write`. A raw connection cannot open that memdb from outside strata, so the raw side gets
//! its own `Connection::open_in_memory()` with the identical schema and data and the pragmas
//! strata applies (busy_timeout 5000, synchronous NORMAL, cache_size -8192, temp_store MEMORY,
//! foreign_keys ON, a prepared statement cache of 128). Both sides run the same SQL through
//! `prepare_cached` and map rows into the same structs.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use strata::rusqlite::{self, params_from_iter, Connection, Row};

/// diesel's benchmark schema.
const SCHEMA: &str = "
    CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, hair_color TEXT);
    CREATE TABLE posts (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        title TEXT NOT NULL,
        body TEXT
    );
    CREATE TABLE comments (
        id INTEGER PRIMARY KEY,
        post_id INTEGER NOT NULL REFERENCES posts(id),
        text TEXT NOT NULL
    );
    CREATE INDEX posts_user_id ON posts(user_id);
    CREATE INDEX comments_post_id ON comments(post_id);
";

/// The trivial query: every user.
const ALL_USERS: &str = "SELECT id, name, hair_color FROM users";

/// The medium complex query: users of one hair color with their posts, if any.
const USERS_WITH_POSTS: &str = "SELECT u.id, u.name, u.hair_color, p.id, p.user_id, p.title, \
     p.body FROM users u LEFT JOIN posts p ON p.user_id = u.id WHERE u.hair_color = ?1";

/// The insert of the insert benchmark.
const INSERT_USER: &str = "INSERT INTO users (name, hair_color) VALUES (?1, ?2)";

/// One `users` row.
#[derive(Debug)]
struct User {
    /// Primary key.
    id: i64,
    /// Name.
    name: String,
    /// Hair color, if any.
    hair_color: Option<String>,
}

impl User {
    /// Maps columns `at..at + 3` of `r`.
    fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<User> {
        Ok(User {
            id: r.get(at)?,
            name: r.get(at + 1)?,
            hair_color: r.get(at + 2)?,
        })
    }
}

/// One `posts` row.
#[derive(Debug)]
struct Post {
    /// Primary key.
    id: i64,
    /// The author.
    user_id: i64,
    /// Title.
    title: String,
    /// Body, if any.
    body: Option<String>,
}

impl Post {
    /// Maps columns `at..at + 4` of `r`.
    fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Post> {
        Ok(Post {
            id: r.get(at)?,
            user_id: r.get(at + 1)?,
            title: r.get(at + 2)?,
            body: r.get(at + 3)?,
        })
    }
}

/// One `comments` row.
#[derive(Debug)]
struct Comment {
    /// Primary key.
    id: i64,
    /// The post commented on.
    post_id: i64,
    /// Text.
    text: String,
}

/// A user with their posts, each with its comments.
type UserTree = (User, Vec<(Post, Vec<Comment>)>);

/// Every field of the given users, posts and comments, in order: the strata and raw results of a
/// group are checked to be the same rows after it runs.
#[derive(Debug, Default, PartialEq)]
struct Fingerprint(Vec<String>);

impl Fingerprint {
    /// Adds a user's fields.
    fn user(&mut self, u: &User) {
        self.0
            .push(format!("u {} {} {:?}", u.id, u.name, u.hair_color));
    }

    /// Adds a post's fields.
    fn post(&mut self, p: &Post) {
        self.0
            .push(format!("p {} {} {} {:?}", p.id, p.user_id, p.title, p.body));
    }

    /// Adds a comment's fields.
    fn comment(&mut self, c: &Comment) {
        self.0.push(format!("c {} {} {}", c.id, c.post_id, c.text));
    }
}

/// A raw in-memory connection with the pragmas strata applies to its connections.
fn open_raw() -> Connection {
    let c = Connection::open_in_memory().expect("open raw connection");
    c.set_prepared_statement_cache_capacity(128);
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy_timeout");
    c.execute_batch(
        "PRAGMA synchronous=NORMAL;
         PRAGMA cache_size=-8192;
         PRAGMA temp_store=MEMORY;
         PRAGMA foreign_keys=ON;",
    )
    .expect("raw pragmas");
    c
}

/// A strata in-memory `Db` and a raw connection, both holding the schema and what `fill` writes.
fn setup(
    fill: impl Fn(&Connection) -> rusqlite::Result<()> + Send + Sync,
) -> (strata::Db, Connection) {
    let db = strata::Db::builder()
        .in_memory()
        .build()
        .expect("open strata db");
    db.write(|c| {
        c.execute_batch(SCHEMA)?;
        Ok(fill(c)?)
    })
    .expect("strata schema and data");
    let raw = open_raw();
    raw.execute_batch(SCHEMA).expect("raw schema");
    raw.execute_batch("BEGIN").expect("raw begin");
    fill(&raw).expect("raw data");
    raw.execute_batch("COMMIT").expect("raw commit");
    (db, raw)
}

/// Inserts `n` users named `User {i}`, every other one with black hair (the rest brown).
fn insert_users(c: &Connection, n: i64) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(INSERT_USER)?;
    for i in 0..n {
        let hair = if i % 2 == 0 { "black" } else { "brown" };
        stmt.execute((format!("User {i}"), hair))?;
    }
    Ok(())
}

/// The trivial query.
fn trivial(c: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = c.prepare_cached(ALL_USERS)?;
    let users = stmt
        .query_map([], |r| User::from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(users)
}

/// The medium complex query, for black-haired users.
fn medium(c: &Connection) -> rusqlite::Result<Vec<(User, Option<Post>)>> {
    let mut stmt = c.prepare_cached(USERS_WITH_POSTS)?;
    let rows = stmt
        .query_map(["black"], |r| {
            let user = User::from_row(r, 0)?;
            let post = match r.get::<_, Option<i64>>(3)? {
                Some(_) => Some(Post::from_row(r, 3)?),
                None => None,
            };
            Ok((user, post))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// `?1, ?2, ..., ?n`, for an `IN` list of `n` bound values.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loading associations: all users, their posts with one `IN` query, those posts' comments with
/// one `IN` query, assembled into trees.
fn associations(c: &Connection) -> rusqlite::Result<Vec<UserTree>> {
    let users = trivial(c)?;

    let user_ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let sql = format!(
        "SELECT id, user_id, title, body FROM posts WHERE user_id IN ({})",
        placeholders(user_ids.len())
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let posts = stmt
        .query_map(params_from_iter(&user_ids), |r| Post::from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let post_ids: Vec<i64> = posts.iter().map(|p| p.id).collect();
    let sql = format!(
        "SELECT id, post_id, text FROM comments WHERE post_id IN ({})",
        placeholders(post_ids.len())
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let comments = stmt
        .query_map(params_from_iter(&post_ids), |r| {
            Ok(Comment {
                id: r.get(0)?,
                post_id: r.get(1)?,
                text: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let mut comments_of: HashMap<i64, Vec<Comment>> = HashMap::new();
    for comment in comments {
        comments_of
            .entry(comment.post_id)
            .or_default()
            .push(comment);
    }
    let mut posts_of: HashMap<i64, Vec<(Post, Vec<Comment>)>> = HashMap::new();
    for post in posts {
        let comments = comments_of.remove(&post.id).unwrap_or_default();
        posts_of
            .entry(post.user_id)
            .or_default()
            .push((post, comments));
    }
    Ok(users
        .into_iter()
        .map(|u| {
            let posts = posts_of.remove(&u.id).unwrap_or_default();
            (u, posts)
        })
        .collect())
}

/// `trivial_query_100` and `trivial_query_10000`.
fn trivial_query(c: &mut Criterion) {
    for n in [100, 10_000] {
        let (db, raw) = setup(|c| insert_users(c, n));
        let mut group = c.benchmark_group(format!("trivial_query_{n}"));
        configure(&mut group);
        group.bench_function("strata/db_read", |b| {
            b.iter(|| black_box(db.read(|c| Ok(trivial(c)?)).expect("strata query")))
        });
        group.bench_function("raw/rusqlite", |b| {
            b.iter(|| black_box(trivial(&raw).expect("raw query")))
        });
        group.finish();
        let fingerprint = |users: Vec<User>| {
            let mut f = Fingerprint::default();
            users.iter().for_each(|u| f.user(u));
            f
        };
        let ours = fingerprint(db.read(|c| Ok(trivial(c)?)).expect("strata query"));
        let theirs = fingerprint(trivial(&raw).expect("raw query"));
        assert_eq!(ours.0.len() as i64, n);
        assert_eq!(ours, theirs);
    }
}

/// `medium_complex_query_100`: 100 users, every third one with a post.
fn medium_complex_query(c: &mut Criterion) {
    let (db, raw) = setup(|c| {
        insert_users(c, 100)?;
        c.execute(
            "INSERT INTO posts (user_id, title, body) \
             SELECT id, 'Post by ' || name, 'body' FROM users WHERE id % 3 = 0",
            [],
        )?;
        Ok(())
    });
    let mut group = c.benchmark_group("medium_complex_query_100");
    configure(&mut group);
    group.bench_function("strata/db_read", |b| {
        b.iter(|| black_box(db.read(|c| Ok(medium(c)?)).expect("strata query")))
    });
    group.bench_function("raw/rusqlite", |b| {
        b.iter(|| black_box(medium(&raw).expect("raw query")))
    });
    group.finish();
    let fingerprint = |rows: Vec<(User, Option<Post>)>| {
        let mut f = Fingerprint::default();
        for (u, p) in &rows {
            f.user(u);
            p.iter().for_each(|p| f.post(p));
        }
        f
    };
    let ours = fingerprint(db.read(|c| Ok(medium(c)?)).expect("strata query"));
    let theirs = fingerprint(medium(&raw).expect("raw query"));
    assert_eq!(ours.0.len(), 50 + 17);
    assert_eq!(ours, theirs);
}

/// `insert_100_users`: 100 inserts in one transaction; the rows are deleted between iterations,
/// outside the timing, on both sides.
fn insert_100_users(c: &mut Criterion) {
    let (db, raw) = setup(|_| Ok(()));
    let mut group = c.benchmark_group("insert_100_users");
    configure(&mut group);
    group.bench_function("strata/db_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                db.write(|c| Ok(c.execute("DELETE FROM users", [])?))
                    .expect("strata delete");
                let start = Instant::now();
                db.write(|c| Ok(insert_users(c, 100)?))
                    .expect("strata insert");
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("raw/rusqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                raw.execute("DELETE FROM users", []).expect("raw delete");
                let start = Instant::now();
                raw.execute_batch("BEGIN").expect("raw begin");
                insert_users(&raw, 100).expect("raw insert");
                raw.execute_batch("COMMIT").expect("raw commit");
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// `loading_associations`: 9 users, 10 posts each, 10 comments per post.
fn loading_associations(c: &mut Criterion) {
    let (db, raw) = setup(|c| {
        insert_users(c, 9)?;
        let mut post =
            c.prepare("INSERT INTO posts (user_id, title, body) VALUES (?1, ?2, 'body')")?;
        let mut comment = c.prepare("INSERT INTO comments (post_id, text) VALUES (?1, ?2)")?;
        for user in 1..=9_i64 {
            for p in 0..10 {
                post.execute((user, format!("Post {p} by User {user}")))?;
                let post_id = c.last_insert_rowid();
                for n in 0..10 {
                    comment.execute((post_id, format!("Comment {n} on post {post_id}")))?;
                }
            }
        }
        Ok(())
    });
    let mut group = c.benchmark_group("loading_associations");
    configure(&mut group);
    group.bench_function("strata/db_read", |b| {
        b.iter(|| black_box(db.read(|c| Ok(associations(c)?)).expect("strata load")))
    });
    group.bench_function("raw/rusqlite", |b| {
        b.iter(|| black_box(associations(&raw).expect("raw load")))
    });
    group.finish();
    let fingerprint = |trees: Vec<UserTree>| {
        let mut f = Fingerprint::default();
        for (u, posts) in &trees {
            f.user(u);
            for (p, comments) in posts {
                f.post(p);
                comments.iter().for_each(|c| f.comment(c));
            }
        }
        f
    };
    let ours = fingerprint(db.read(|c| Ok(associations(c)?)).expect("strata load"));
    let theirs = fingerprint(associations(&raw).expect("raw load"));
    assert_eq!(ours.0.len(), 9 + 90 + 900);
    assert_eq!(ours, theirs);
}

/// Every group's settings: quick, as the suite has six groups.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
}

criterion_group!(
    benches,
    trivial_query,
    medium_complex_query,
    insert_100_users,
    loading_associations
);
criterion_main!(benches);
