//! Files that become read-only while a `Db` has them open.
//!
//! Tests run as root here, where `chmod` does not stop a write. The immutable attribute does
//! (`chattr +i`, on ext4, xfs, btrfs): the kernel refuses the write with `EPERM` even to root
//! and even through a descriptor opened before, which is what a service meets when an operator
//! or a full filesystem remounted read-only takes the files away. Where the attribute is not
//! available (another filesystem, no chattr, no CAP_LINUX_IMMUTABLE), the test says so and
//! returns.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::{Db, Error, Result};

/// Files made immutable, made mutable again when dropped (a test that fails must not leave a
/// temp directory nobody can remove).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Option<Immutable> {
        let mut guard = Immutable(Vec::new());
        for path in paths {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            guard.0.push(path.clone());
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn insert(db: &Db, id: i64) -> Result<()> {
    db.write(|c| {
        c.execute("INSERT INTO t(id, v) VALUES (?1, randomblob(100))", [id])?;
        Ok(())
    })
}

fn count(db: &Db) -> Result<i64> {
    db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
}

#[test]
fn files_made_read_only_after_open_fail_writes_typed_and_recover() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ro.db");
    let db = Db::open(&path)?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")?))?;
    insert(&db, 1)?;

    // The directory turns read-only: nothing new can be created in it, but the WAL and the
    // shared memory exist for as long as the `Db` is open, so writes go on.
    let Some(read_only_dir) = Immutable::set(&[dir.path().to_owned()]) else {
        eprintln!("chattr +i is not available here: nothing to test");
        return Ok(());
    };
    for id in 2..=20 {
        insert(&db, id)?;
    }
    assert_eq!(count(&db)?, 20);
    let reopened = Db::open(dir.path().join("other.db"));
    assert!(
        matches!(reopened, Err(Error::ReadOnly { .. })),
        "{reopened:?}"
    );

    // The files themselves turn read-only: a write fails, typed and naming the database.
    let files = Immutable::set(&[path.clone(), with_suffix(&path, "-wal")]).expect("chattr");
    let err = insert(&db, 21).expect_err("a write to an immutable WAL");
    let cause = match &err {
        Error::GroupFailed { source } => source.as_ref(),
        other => other,
    };
    assert!(
        matches!(cause, Error::ReadOnly { path: p } if p == &path),
        "{err:?}"
    );
    // Reads go on.
    assert_eq!(count(&db)?, 20);
    for id in 22..30 {
        assert!(insert(&db, id).is_err());
    }

    // Writable again: the same `Db` writes, and what failed is not there.
    drop(files);
    drop(read_only_dir);
    insert(&db, 100)?;
    assert_eq!(count(&db)?, 21);
    let check: String =
        db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))?;
    assert_eq!(check, "ok");
    Ok(())
}
