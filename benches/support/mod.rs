//! What the benches share: where their databases live, and the raw rusqlite connection every
//! strata case is measured against.

// Each bench binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use strata::rusqlite::Connection;

/// A fresh directory for databases beside the build output, on the same disk a service's
/// database would be (the system temp dir may be a tmpfs, where fsync costs nothing).
pub fn scratch() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).expect("target dir");
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// Whether a raw connection checkpoints the WAL itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawCheckpoint {
    /// SQLite's default: a COMMIT that leaves the WAL at 1000 pages or more runs a PASSIVE
    /// checkpoint inside that COMMIT, on the caller's thread. What a user of plain rusqlite gets.
    Auto,
    /// `PRAGMA wal_autocheckpoint=0`: no COMMIT checkpoints, as no strata COMMIT does (strata's
    /// writer replaces the auto-checkpoint with a background thread). During a measurement this
    /// raw connection checkpoints never, so its WAL grows; it isolates the commit path itself.
    Off,
}

impl RawCheckpoint {
    /// Both variants, in the order the write benches report them.
    pub const BOTH: [RawCheckpoint; 2] = [RawCheckpoint::Auto, RawCheckpoint::Off];

    /// The bench id part naming the variant.
    pub fn label(self) -> &'static str {
        match self {
            RawCheckpoint::Auto => "autocheckpoint",
            RawCheckpoint::Off => "no_autocheckpoint",
        }
    }
}

/// The baseline of every file bench: a raw rusqlite connection in WAL mode with the pragmas
/// strata applies to every connection by default (busy_timeout, `synchronous` as given —
/// "NORMAL" or "FULL" — cache_size, temp_store, mmap_size, foreign_keys, journal_size_limit,
/// trusted_schema) and a prepared-statement cache of 128. Not applied: strata's role pragmas
/// (`query_only` on readers, `recursive_triggers` on the writer) and its refusal of
/// double-quoted string literals in DML, none of which changes what the benches run. The WAL
/// is checkpointed as `checkpoint` says; strata never checkpoints inside a COMMIT.
pub fn open_raw_with(path: &Path, synchronous: &str, checkpoint: RawCheckpoint) -> Connection {
    let c = Connection::open(path).expect("open raw connection");
    c.set_prepared_statement_cache_capacity(128);
    c.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy_timeout");
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert!(mode.eq_ignore_ascii_case("wal"));
    c.execute_batch(&format!(
        "PRAGMA synchronous={synchronous};
         PRAGMA cache_size=-8192;
         PRAGMA temp_store=MEMORY;
         PRAGMA mmap_size=0;
         PRAGMA foreign_keys=ON;
         PRAGMA journal_size_limit=67108864;
         PRAGMA trusted_schema=OFF;"
    ))
    .expect("raw pragmas");
    if checkpoint == RawCheckpoint::Off {
        c.execute_batch("PRAGMA wal_autocheckpoint=0")
            .expect("wal_autocheckpoint");
    }
    c
}

/// [`open_raw_with`] with SQLite's default auto-checkpoint: the read benches' baseline (a reader
/// never checkpoints).
pub fn open_raw(path: &Path, synchronous: &str) -> Connection {
    open_raw_with(path, synchronous, RawCheckpoint::Auto)
}

/// Rows in the `users` table of the lookup benches.
pub const USERS: i64 = 10_000;

/// Ids drawn uniformly from `1..=USERS`; every case of a group starts from the same seed, so
/// the strata case and its raw baseline look up the same sequence of ids.
pub struct Ids(rand::rngs::Xoshiro256PlusPlus);

impl Ids {
    /// The sequence from its fixed seed.
    pub fn new() -> Self {
        Ids(rand::SeedableRng::seed_from_u64(0x2545_f491))
    }

    /// The next id in `1..=USERS`.
    pub fn next_id(&mut self) -> i64 {
        rand::RngExt::random_range(&mut self.0, 1..=USERS)
    }
}

/// Fills the expense tracker's `users` table with `USERS` rows, ids `1..=USERS`.
pub fn seed_users(db: &strata::Db) {
    db.write(|c| {
        let mut stmt =
            c.prepare("INSERT INTO users (email, name, created_at) VALUES (?1, ?2, ?3)")?;
        for i in 1..=USERS {
            stmt.execute((
                format!("user{i}@example.com"),
                format!("User {i}"),
                1_700_000_000 + i,
            ))?;
        }
        Ok(())
    })
    .expect("seed users");
}
