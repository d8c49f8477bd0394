//! A loop of `users.get` cache misses (each key invalidated right before its get), or of the
//! same lookup on a plain rusqlite connection, for counting instructions per call with
//! valgrind's callgrind: `user_gets MODE N` with MODE `uncached`, `raw` or `invalidate` (the
//! invalidation alone); run two N and take the difference, so that setup cancels.

use strata::domain::{ExpenseTracker, User};
use strata::rusqlite::Connection;
use strata::Result;

const USERS: i64 = 10_000;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "uncached".into());
    let n: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().map_err(strata::Error::closure)?;
    let path = dir.path().join("users.db");
    let t = ExpenseTracker::open(&path)?;
    let users: Vec<User> = (1..=USERS)
        .map(|i| User {
            id: 0,
            email: format!("user{i}@example.com"),
            name: format!("User {i}"),
            created_at: i,
        })
        .collect();
    t.users.insert_many(&users)?;
    let raw = Connection::open(&path)?;
    raw.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8192;")?;
    let cache = t.users.cache();
    let mut sum = 0i64;
    for i in 0..n {
        let id = i % USERS + 1;
        match mode.as_str() {
            "raw" => {
                // The same row into the same struct, as a service would map it.
                let user = raw
                    .prepare_cached("SELECT id, email, name, created_at FROM users WHERE id = ?1")?
                    .query_row([id], |r| {
                        Ok(User {
                            id: r.get(0)?,
                            email: r.get(1)?,
                            name: r.get(2)?,
                            created_at: r.get(3)?,
                        })
                    })?;
                sum += user.id;
            }
            "invalidate" => {
                cache.invalidate(&id);
            }
            _ => {
                cache.invalidate(&id);
                sum += t.users.get(id)?.map_or(0, |u| u.id);
            }
        }
    }
    println!("{mode}: {n} calls, sum {sum}");
    Ok(())
}
