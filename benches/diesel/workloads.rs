//! diesel's benchmark workloads, the same code for both sides: every function takes the
//! connection it runs on (inside `db.read`/`db.write` for strata, a plain connection for raw).

use std::collections::HashMap;

use strata::rusqlite::{self, params_from_iter, Connection, Row};

/// diesel's benchmark schema.
pub const SCHEMA: &str = "
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
pub const ALL_USERS: &str = "SELECT id, name, hair_color FROM users";

/// The medium complex query: users of one hair color with their posts, if any.
pub const USERS_WITH_POSTS: &str = "SELECT u.id, u.name, u.hair_color, p.id, p.user_id, p.title, \
     p.body FROM users u LEFT JOIN posts p ON p.user_id = u.id WHERE u.hair_color = ?1";

/// The primary-key lookup.
pub const USER_BY_ID: &str = "SELECT id, name, hair_color FROM users WHERE id = ?1";

/// One user's insert, for the data of the read workloads.
pub const INSERT_USER: &str = "INSERT INTO users (name, hair_color) VALUES (?1, ?2)";

/// One `users` row.
#[derive(Debug)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Hair color, if any.
    pub hair_color: Option<String>,
}

impl User {
    /// Maps columns `at..at + 3` of `r`.
    pub fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<User> {
        Ok(User {
            id: r.get(at)?,
            name: r.get(at + 1)?,
            hair_color: r.get(at + 2)?,
        })
    }
}

/// One `posts` row.
#[derive(Debug)]
pub struct Post {
    /// Primary key.
    pub id: i64,
    /// The author.
    pub user_id: i64,
    /// Title.
    pub title: String,
    /// Body, if any.
    pub body: Option<String>,
}

impl Post {
    /// Maps columns `at..at + 4` of `r`.
    pub fn from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Post> {
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
pub struct Comment {
    /// Primary key.
    pub id: i64,
    /// The post commented on.
    pub post_id: i64,
    /// Text.
    pub text: String,
}

/// A user with their posts, each with its comments.
pub type UserTree = (User, Vec<(Post, Vec<Comment>)>);

/// Every field of the given users, posts and comments, in order: the strata and raw results of a
/// group are checked to be the same rows after it runs.
#[derive(Debug, Default, PartialEq)]
pub struct Fingerprint(pub Vec<String>);

impl Fingerprint {
    /// Adds a user's fields.
    pub fn user(&mut self, u: &User) {
        self.0
            .push(format!("u {} {} {:?}", u.id, u.name, u.hair_color));
    }

    /// Adds a post's fields.
    pub fn post(&mut self, p: &Post) {
        self.0
            .push(format!("p {} {} {} {:?}", p.id, p.user_id, p.title, p.body));
    }

    /// Adds a comment's fields.
    pub fn comment(&mut self, c: &Comment) {
        self.0.push(format!("c {} {} {}", c.id, c.post_id, c.text));
    }
}

/// Inserts `n` users named `User {i}`, every other one with black hair (the rest brown).
pub fn insert_users(c: &Connection, n: i64) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(INSERT_USER)?;
    for i in 0..n {
        let hair = if i % 2 == 0 { "black" } else { "brown" };
        stmt.execute((format!("User {i}"), hair))?;
    }
    Ok(())
}

/// The insert benchmark's statement: `n` users in one multi-row INSERT, as diesel's
/// `insert_into(users).values(&vec)` runs it.
pub fn insert_many_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2))
        .collect();
    format!(
        "INSERT INTO users (name, hair_color) VALUES {}",
        rows.join(", ")
    )
}

/// The rows of the insert benchmark: diesel's `User {i}`, hair color black for even `i`.
pub fn new_users(n: usize) -> Vec<(String, Option<&'static str>)> {
    (0..n)
        .map(|i| (format!("User {i}"), (i % 2 == 0).then_some("black")))
        .collect()
}

/// Inserts `users` with one statement of [`insert_many_sql`].
pub fn insert_many(
    c: &Connection,
    sql: &str,
    users: &[(String, Option<&str>)],
) -> rusqlite::Result<usize> {
    let mut stmt = c.prepare_cached(sql)?;
    for (i, (name, hair)) in users.iter().enumerate() {
        stmt.raw_bind_parameter(2 * i + 1, name)?;
        stmt.raw_bind_parameter(2 * i + 2, hair)?;
    }
    stmt.raw_execute()
}

/// The primary-key lookup of user `id`.
pub fn user_by_id(c: &Connection, id: i64) -> rusqlite::Result<User> {
    c.prepare_cached(USER_BY_ID)?
        .query_row([id], |r| User::from_row(r, 0))
}

/// The data of `medium_complex_query_100`: 100 users, every third one with a post.
pub fn fill_medium(c: &Connection) -> rusqlite::Result<()> {
    insert_users(c, 100)?;
    c.execute(
        "INSERT INTO posts (user_id, title, body) \
         SELECT id, 'Post by ' || name, 'body' FROM users WHERE id % 3 = 0",
        [],
    )?;
    Ok(())
}

/// The data of `loading_associations`: 9 users, 10 posts each, 10 comments per post.
pub fn fill_associations(c: &Connection) -> rusqlite::Result<()> {
    insert_users(c, 9)?;
    let mut post = c.prepare("INSERT INTO posts (user_id, title, body) VALUES (?1, ?2, 'body')")?;
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
}

/// The trivial query.
pub fn trivial(c: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = c.prepare_cached(ALL_USERS)?;
    let users = stmt
        .query_map([], |r| User::from_row(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(users)
}

/// The medium complex query, for black-haired users.
pub fn medium(c: &Connection) -> rusqlite::Result<Vec<(User, Option<Post>)>> {
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
pub fn associations(c: &Connection) -> rusqlite::Result<Vec<UserTree>> {
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

impl Fingerprint {
    /// The fingerprint of users.
    pub fn of_users(users: &[User]) -> Fingerprint {
        let mut f = Fingerprint::default();
        users.iter().for_each(|u| f.user(u));
        f
    }

    /// The fingerprint of the medium query's rows.
    pub fn of_medium(rows: &[(User, Option<Post>)]) -> Fingerprint {
        let mut f = Fingerprint::default();
        for (u, p) in rows {
            f.user(u);
            p.iter().for_each(|p| f.post(p));
        }
        f
    }

    /// The fingerprint of user trees.
    pub fn of_trees(trees: &[UserTree]) -> Fingerprint {
        let mut f = Fingerprint::default();
        for (u, posts) in trees {
            f.user(u);
            for (p, comments) in posts {
                f.post(p);
                comments.iter().for_each(|c| f.comment(c));
            }
        }
        f
    }
}
