//! The read-through entity cache on real WAL database files: no read after an acknowledged write
//! returns an older value, rules drop exactly what they should, and writes by another process
//! drop the caches within the configured bound.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::Rng;
use strata::cache::{CacheSettings, CacheStats, EntityCache, InvalidationRule};
use strata::rusqlite::{self, Connection, OptionalExtension};
use strata::{Db, Entity, Error, Repository, Result};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A file database without migrations, with `schema` applied.
fn open(dir: &tempfile::TempDir, schema: &str) -> Result<Db> {
    let db = Db::builder().path(dir.path().join("cache.db")).build()?;
    db.write(|c| Ok(c.execute_batch(schema)?))?;
    Ok(db)
}

fn one_i64(c: &Connection, sql: &str, id: i64) -> Result<Option<i64>> {
    Ok(c.prepare_cached(sql)?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

fn stats_of(db: &Db, name: &str) -> CacheStats {
    db.caches()
        .stats()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no cache named {name}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Staleness under concurrent writes.

const ROWS: i64 = 64;
const WRITERS: usize = 2;
const READERS: usize = 4;
/// Rows whose id is a multiple of this are written only through the repository (one writer,
/// so the versions it writes only go up); the others only by raw SQL.
const REPO_EVERY: i64 = 4;

/// A row of `t`, written and read through a `Repository`.
#[derive(Debug, Clone, PartialEq)]
struct Versioned {
    id: i64,
    version: i64,
}

impl Entity for Versioned {
    const TABLE: &'static str = "t";
    const COLUMNS: &'static [&'static str] = &["version"];
    fn cache() -> CacheSettings {
        CacheSettings::new("versions_repo").ttl(Duration::from_secs(3600))
    }
    fn key(&self) -> Option<i64> {
        Some(self.id)
    }
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Versioned {
            id: row.get(0)?,
            version: row.get(1)?,
        })
    }
    fn params(&self) -> Vec<&dyn rusqlite::ToSql> {
        vec![&self.version]
    }
}

/// Raw-SQL writers bump the versions of most rows, a repository writer (`update` and `upsert`)
/// those of every fourth; readers read every row both through `db.cached` on one cache and
/// through the repository's own cache. Both caches are dropped by the rules of both kinds of
/// write.
#[test]
fn no_read_returns_a_version_older_than_an_acknowledged_write() -> Result<()> {
    let target: u64 = match std::env::var("STRATA_STALENESS_READS") {
        Ok(v) => v.parse().expect("STRATA_STALENESS_READS must be a number"),
        Err(_) => 200_000,
    };
    // Hits are far cheaper than writes; without a floor on writes the reads would be over
    // before many loads had raced a write.
    let min_writes = target / 20;
    let min_repo_writes = target / 200;
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64)
         INSERT INTO t(id, version) SELECT i, 0 FROM n;",
    )?;
    let rows: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))?;
    assert_eq!(rows, ROWS);
    let cache = db.register_cache(
        EntityCache::<i64, i64>::builder("versions")
            .capacity(1024)
            .ttl(Duration::from_secs(3600)),
    )?;
    db.add_rule(InvalidationRule::rowid_key("t", "versions"))?;
    let repo = Repository::<Versioned>::new(&db)?;

    let latest: Vec<AtomicI64> = (0..=ROWS).map(|_| AtomicI64::new(0)).collect();
    let (reads, repo_reads, stale) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (writes, repo_writes) = (AtomicU64::new(0), AtomicU64::new(0));
    let done = AtomicBool::new(false);
    let start = Instant::now();
    thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for w in 0..WRITERS {
            let (db, latest, writes, done) = (&db, &latest, &writes, &done);
            handles.push(s.spawn(move || -> Result<()> {
                let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                while !done.load(Ordering::Relaxed) {
                    let id = rng.below(ROWS as u64) as i64 + 1;
                    if id % REPO_EVERY == 0 {
                        continue;
                    }
                    let version: i64 = db.write(|c| {
                        Ok(c.prepare_cached(
                            "UPDATE t SET version = version + 1 WHERE id = ?1 RETURNING version",
                        )?
                        .query_row([id], |r| r.get(0))?)
                    })?;
                    // Acknowledged: `write` has returned.
                    latest[id as usize].fetch_max(version, Ordering::SeqCst);
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        {
            let (repo, latest, repo_writes, done) = (&repo, &latest, &repo_writes, &done);
            handles.push(s.spawn(move || -> Result<()> {
                let mut rng = Rng::new(0x5851_f42d_4c95_7f2d);
                let mut versions = [0i64; ROWS as usize + 1];
                while !done.load(Ordering::Relaxed) {
                    let id = (rng.below((ROWS / REPO_EVERY) as u64) as i64 + 1) * REPO_EVERY;
                    versions[id as usize] += 1;
                    let row = Versioned {
                        id,
                        version: versions[id as usize],
                    };
                    if rng.below(2) == 0 {
                        repo.update(&row)?;
                    } else {
                        assert_eq!(repo.upsert(&row)?, id);
                    }
                    latest[id as usize].fetch_max(row.version, Ordering::SeqCst);
                    repo_writes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        for r in 0..READERS {
            let (db, cache, repo, latest) = (&db, &cache, &repo, &latest);
            let (reads, repo_reads, stale) = (&reads, &repo_reads, &stale);
            let (writes, repo_writes, done) = (&writes, &repo_writes, &done);
            handles.push(s.spawn(move || -> Result<()> {
                let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ ((r as u64 + 1) << 32));
                let result = (|| -> Result<()> {
                    while reads.load(Ordering::Relaxed) < target
                        || writes.load(Ordering::Relaxed) < min_writes
                        || repo_writes.load(Ordering::Relaxed) < min_repo_writes
                    {
                        let id = rng.below(ROWS as u64) as i64 + 1;
                        let acked = latest[id as usize].load(Ordering::SeqCst);
                        let through_repo = rng.below(2) == 0;
                        let got = if through_repo {
                            repo_reads.fetch_add(1, Ordering::Relaxed);
                            repo.get(id)?.map(|v| v.version)
                        } else {
                            db.cached(cache, &id, |c, id| {
                                one_i64(c, "SELECT version FROM t WHERE id = ?1", *id)
                            })?
                            .map(|v| *v)
                        }
                        .expect("every row exists");
                        if got < acked && stale.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!(
                                "stale read{}: row {id} version {got} < acked {acked}",
                                if through_repo {
                                    " through the repository"
                                } else {
                                    ""
                                }
                            );
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })();
                done.store(true, Ordering::Relaxed);
                result
            }));
        }
        for h in handles {
            h.join().expect("thread panicked")?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let stats = cache.stats();
    let repo_stats = repo.cache().stats();
    let (reads, repo_reads, stale, writes, repo_writes) = (
        reads.load(Ordering::Relaxed),
        repo_reads.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
        repo_writes.load(Ordering::Relaxed),
    );
    println!(
        "staleness: {reads} reads ({repo_reads} through the repository), {writes} raw-SQL \
         writes and {repo_writes} repository writes, {stale} stale in {elapsed:.2?}; db.cached \
         hit rate {:.1}% ({} hits, {} misses, {} loads, {} invalidations); repository cache \
         hit rate {:.1}% ({} hits, {} misses, {} loads, {} invalidations)",
        stats.hit_rate * 100.0,
        stats.hits,
        stats.misses,
        stats.loads,
        stats.invalidations,
        repo_stats.hit_rate * 100.0,
        repo_stats.hits,
        repo_stats.misses,
        repo_stats.loads,
        repo_stats.invalidations,
    );
    assert!(reads >= target);
    assert!(writes >= min_writes);
    assert!(repo_writes >= min_repo_writes);
    assert!(stats.invalidations > 0, "no write invalidated anything");
    assert!(
        repo_stats.invalidations > 0,
        "no write invalidated the repository's cache"
    );
    assert_eq!(
        stale, 0,
        "reads returned versions older than acknowledged writes"
    );
    // Every row's final version is what both caches serve now.
    for id in 1..=ROWS {
        let want = db.read(|c| one_i64(c, "SELECT version FROM t WHERE id = ?1", id))?;
        let got = db.cached(&cache, &id, |c, id| {
            one_i64(c, "SELECT version FROM t WHERE id = ?1", *id)
        })?;
        assert_eq!(got.map(|v| *v), want, "row {id}");
        assert_eq!(repo.get(id)?.map(|v| v.version), want, "row {id}");
        if id % REPO_EVERY == 0 {
            assert_eq!(want, Some(latest[id as usize].load(Ordering::SeqCst)));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. A value loaded before a write never lands in the cache after it.

#[test]
fn a_value_loaded_before_a_write_is_not_cached_after_it() -> Result<()> {
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         INSERT INTO t VALUES (1, 'old');",
    )?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("t"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t"))?;
    let load = |c: &Connection, id: &i64| -> Result<Option<String>> {
        Ok(c.prepare_cached("SELECT v FROM t WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    };
    let text = |v: Option<Arc<String>>| v.map(|v| (*v).clone());

    let (loaded_tx, loaded_rx) = mpsc::channel::<String>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    thread::scope(|s| -> Result<()> {
        let (db, cache) = (&db, &cache);
        let old_load = s.spawn(move || {
            db.cached(cache, &1, |c, id| {
                let v = load(c, id)?; // inside the read transaction: the old value
                loaded_tx
                    .send(v.clone().unwrap_or_default())
                    .expect("main thread waits");
                resume_rx
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| Error::closure("never resumed"))?;
                Ok(v)
            })
        });
        let seen = loaded_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the loader read");
        assert_eq!(seen, "old");
        db.write(|c| Ok(c.execute("UPDATE t SET v = 'new' WHERE id = 1", [])?))?;

        // A caller arriving now must not join the old load: it must get 'new' while the old
        // loader is still held. Run aside, so that a wrong join fails instead of hanging.
        let fresh = s.spawn(move || db.cached(cache, &1, load));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fresh.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let joined_old_load = !fresh.is_finished();
        resume_tx.send(()).expect("the old loader waits");
        assert!(
            !joined_old_load,
            "a read after the write joined a load from before it"
        );
        let fresh = fresh.join().expect("fresh reader panicked")?;
        assert_eq!(text(fresh).as_deref(), Some("new"));

        let old = old_load.join().expect("old loader panicked")?;
        assert_eq!(
            text(old).as_deref(),
            Some("old"),
            "its own caller gets what it read"
        );
        Ok(())
    })?;
    let cached = cache.get(&1).and_then(|c| c.into_value());
    assert_ne!(
        text(cached).as_deref(),
        Some("old"),
        "the old value landed after the write"
    );
    assert_eq!(text(db.cached(&cache, &1, load)?).as_deref(), Some("new"));

    // The same with nobody reloading in between: the overtaken load ('new') must not insert,
    // so the cache ends up without an entry.
    let (loaded_tx, loaded_rx) = mpsc::channel::<String>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    cache.invalidate(&1);
    thread::scope(|s| -> Result<()> {
        let (db, cache) = (&db, &cache);
        let old_load = s.spawn(move || {
            db.cached(cache, &1, |c, id| {
                let v = load(c, id)?;
                loaded_tx
                    .send(v.clone().unwrap_or_default())
                    .expect("main waits");
                resume_rx
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| Error::closure("never resumed"))?;
                Ok(v)
            })
        });
        assert_eq!(
            loaded_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("read"),
            "new"
        );
        db.write(|c| Ok(c.execute("UPDATE t SET v = 'newer' WHERE id = 1", [])?))?;
        resume_tx.send(()).expect("the old loader waits");
        let old = old_load.join().expect("old loader panicked")?;
        assert_eq!(text(old).as_deref(), Some("new"));
        Ok(())
    })?;
    let cached = cache.get(&1).and_then(|c| c.into_value());
    assert_eq!(cached, None, "a load overtaken by a write must not insert");
    assert_eq!(text(db.cached(&cache, &1, load)?).as_deref(), Some("newer"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Single flight through `db.cached`.

#[test]
fn concurrent_misses_through_db_cached_run_one_load() -> Result<()> {
    const THREADS: usize = 64;
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         INSERT INTO t VALUES (7, 49);",
    )?;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("single"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "single"))?;
    let calls = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<Option<Arc<i64>>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    db.cached(&cache, &7, |c, id| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Hold the load until every caller has missed (and so joined it), or
                        // 10 s, so that a broken single-flight fails instead of hanging.
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while cache.stats().misses < THREADS as u64 && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(1));
                        }
                        one_i64(c, "SELECT v FROM t WHERE id = ?1", *id)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("caller panicked"))
            .collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader invocations");
    for r in results {
        assert_eq!(r?.as_deref(), Some(&49));
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.misses, stats.size),
        (1, THREADS as u64, 1)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Every rule kind drops exactly what it should.

/// Values read through the caches: rows by id, groups' members, rows' labels, the count.
type Snapshot = (Vec<String>, Vec<Vec<i64>>, Vec<String>, i64);

#[test]
fn each_rule_kind_drops_exactly_its_entries() -> Result<()> {
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE items(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, label TEXT NOT NULL);
         CREATE TABLE other(x INTEGER);
         INSERT INTO items VALUES (1, 10, 'a'), (2, 10, 'b'), (3, 20, 'b'), (4, 30, 'c');",
    )?;
    let by_id = db.register_cache(EntityCache::<i64, String>::builder("by_id"))?;
    let by_grp = db.register_cache(EntityCache::<i64, Vec<i64>>::builder("by_grp"))?;
    // id -> label, tagged with the label so that a label's entries can be dropped together.
    let by_label = db.register_cache(
        EntityCache::<i64, String>::builder("by_label").tags(|_, label| vec![format!("l:{label}")]),
    )?;
    let count = db.register_cache(EntityCache::<(), i64>::builder("count"))?;
    db.add_rule(InvalidationRule::rowid_key("items", "by_id"))?;
    db.add_rule(InvalidationRule::column_key("items", "grp", "by_grp"))?;
    db.add_rule(InvalidationRule::column_tag(
        "items", "label", "by_label", "l:",
    ))?;
    db.add_rule(InvalidationRule::whole_cache("items", "count"))?;

    let label = |c: &Connection, id: &i64| -> Result<Option<String>> {
        Ok(c.prepare_cached("SELECT label FROM items WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    };
    let members = |c: &Connection, g: &i64| -> Result<Option<Vec<i64>>> {
        let mut stmt = c.prepare_cached("SELECT id FROM items WHERE grp = ?1 ORDER BY id")?;
        let ids = stmt.query_map([g], |r| r.get(0))?;
        Ok(Some(ids.collect::<rusqlite::Result<_>>()?))
    };
    let total = |c: &Connection, _: &()| -> Result<Option<i64>> {
        Ok(Some(c.query_row(
            "SELECT count(*) FROM items",
            [],
            |r| r.get(0),
        )?))
    };
    // Reads rows `ids`, groups 10, 20, 30 and the count through the caches.
    let read = |ids: &[i64]| -> Result<Snapshot> {
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for id in ids {
            values.push((*db.cached(&by_id, id, label)?.expect("row")).clone());
            labels.push((*db.cached(&by_label, id, label)?.expect("row")).clone());
        }
        let mut groups = Vec::new();
        for g in [10, 20, 30] {
            groups.push((*db.cached(&by_grp, &g, members)?.expect("group")).clone());
        }
        let n = *db.cached(&count, &(), total)?.expect("count");
        Ok((values, groups, labels, n))
    };
    let read_all = || read(&[1, 2, 3, 4]);
    // (hits, misses, invalidations) of every cache, in the order by_id, by_grp, by_label, count.
    let counters = || -> Vec<(u64, u64, u64)> {
        ["by_id", "by_grp", "by_label", "count"]
            .iter()
            .map(|n| {
                let s = stats_of(&db, n);
                (s.hits, s.misses, s.invalidations)
            })
            .collect()
    };
    let delta = |before: &[(u64, u64, u64)], after: &[(u64, u64, u64)]| -> Vec<(u64, u64, u64)> {
        before
            .iter()
            .zip(after)
            .map(|(b, a)| (a.0 - b.0, a.1 - b.1, a.2 - b.2))
            .collect()
    };

    read_all()?; // cold: everything misses and loads
    let warm = counters();
    assert_eq!(warm, vec![(0, 4, 0), (0, 3, 0), (0, 4, 0), (0, 1, 0)]);
    read_all()?;
    let c0 = counters();
    assert_eq!(
        delta(&warm, &c0),
        vec![(4, 0, 0), (3, 0, 0), (4, 0, 0), (1, 0, 0)],
        "a second pass hits everywhere"
    );

    // An unrelated write drops nothing.
    db.write(|c| Ok(c.execute("INSERT INTO other VALUES (1)", [])?))?;
    read_all()?;
    let c1 = counters();
    assert_eq!(
        delta(&c0, &c1),
        vec![(4, 0, 0), (3, 0, 0), (4, 0, 0), (1, 0, 0)],
        "a write to another table dropped entries"
    );

    // Row 1 moves from group 10 to group 20; its label stays 'a'. Drops: by_id[1]; groups 10
    // and 20 (not 30); tag l:a (row 1 only); the whole count cache.
    db.write(|c| Ok(c.execute("UPDATE items SET grp = 20 WHERE id = 1", [])?))?;
    let c2 = counters();
    assert_eq!(
        delta(&c1, &c2),
        vec![(0, 0, 1), (0, 0, 2), (0, 0, 1), (0, 0, 1)],
        "invalidations per cache after moving row 1 between groups"
    );
    assert!(by_id.get(&1).is_none() && by_id.get(&2).is_some());
    assert!(by_grp.get(&10).is_none() && by_grp.get(&20).is_none());
    assert!(by_grp.get(&30).is_some(), "group 30 was not touched");
    let c2 = counters(); // the probes above counted
    let (ids, groups, labels, n) = read_all()?;
    assert_eq!(ids, ["a", "b", "b", "c"]);
    assert_eq!(labels, ids);
    assert_eq!(groups, vec![vec![2], vec![1, 3], vec![4]]);
    assert_eq!(n, 4);
    let c3 = counters();
    assert_eq!(
        delta(&c2, &c3),
        vec![(3, 1, 0), (1, 2, 0), (3, 1, 0), (0, 1, 0)],
        "exactly the dropped entries were reloaded"
    );

    // Row 2's label changes 'b' -> 'c': tags l:b (rows 2, 3) and l:c (row 4) go; l:a stays.
    db.write(|c| Ok(c.execute("UPDATE items SET label = 'c' WHERE id = 2", [])?))?;
    let c4 = counters();
    assert_eq!(
        delta(&c3, &c4),
        vec![(0, 0, 1), (0, 0, 1), (0, 0, 3), (0, 0, 1)],
        "invalidations per cache after relabelling row 2"
    );
    assert!(by_label.get(&1).is_some());
    assert!((2..=4).all(|id| by_label.get(&id).is_none()));
    let c4 = counters(); // the probes above counted

    // A delete drops the row's entries and its group; an insert its new group. Cached now:
    // by_id 1..=4 but 2, by_grp 20 and 30, by_label 1 only, no count.
    db.write(|c| {
        c.execute("DELETE FROM items WHERE id = 4", [])?;
        Ok(c.execute("INSERT INTO items VALUES (5, 30, 'z')", [])?)
    })?;
    let c5 = counters();
    assert_eq!(
        delta(&c4, &c5),
        vec![(0, 0, 1), (0, 0, 1), (0, 0, 0), (0, 0, 0)],
        "invalidations per cache after a delete and an insert"
    );
    assert!(by_id.get(&4).is_none() && by_grp.get(&30).is_none());
    let (ids, groups, labels, n) = read(&[1, 2, 3, 5])?;
    assert_eq!(ids, ["a", "c", "b", "z"]);
    assert_eq!(labels, ids);
    assert_eq!(groups, vec![vec![2], vec![1, 3], vec![5]]);
    assert_eq!(n, 4);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Raw SQL invalidates; a rolled-back write leaves the cache correct.

#[test]
fn raw_sql_writes_invalidate_and_rolled_back_writes_do_not_corrupt() -> Result<()> {
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, v TEXT NOT NULL UNIQUE);
         INSERT INTO t VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c');",
    )?;
    let by_id = db.register_cache(EntityCache::<i64, String>::builder("by_id"))?;
    let by_grp = db.register_cache(EntityCache::<i64, Vec<i64>>::builder("by_grp"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "by_id"))?;
    db.add_rule(InvalidationRule::column_key("t", "grp", "by_grp"))?;
    let v = |id: i64| -> Result<Option<String>> {
        let got = db.cached(&by_id, &id, |c, id| {
            Ok(c.prepare_cached("SELECT v FROM t WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?)
        })?;
        Ok(got.map(|v| (*v).clone()))
    };
    let grp = |g: i64| -> Result<Vec<i64>> {
        let got = db.cached(&by_grp, &g, |c, g| {
            let mut stmt = c.prepare_cached("SELECT id FROM t WHERE grp = ?1 ORDER BY id")?;
            let ids = stmt.query_map([g], |r| r.get(0))?;
            Ok(Some(ids.collect::<rusqlite::Result<_>>()?))
        })?;
        Ok((*got.expect("a list")).clone())
    };
    let warm = || -> Result<()> {
        for id in 1..=6 {
            v(id)?;
        }
        for g in [10, 20, 30, 40] {
            grp(g)?;
        }
        Ok(())
    };
    warm()?;
    assert_eq!(v(1)?.as_deref(), Some("a"));

    // Several raw statements in one batch, none through a helper.
    db.write(|c| {
        Ok(c.execute_batch(
            "UPDATE t SET v = 'a2' WHERE id = 1;
             INSERT INTO t VALUES (4, 40, 'd');
             DELETE FROM t WHERE id = 3;",
        )?)
    })?;
    assert_eq!(v(1)?.as_deref(), Some("a2"));
    assert_eq!(v(3)?, None);
    assert_eq!(v(4)?.as_deref(), Some("d"));
    assert_eq!((grp(30)?, grp(40)?), (vec![], vec![4]));

    // A rowid change: the old key is gone, the new one exists.
    warm()?;
    db.write(|c| Ok(c.execute_batch("UPDATE t SET id = 5 WHERE id = 4")?))?;
    assert_eq!((v(4)?, v(5)?.as_deref()), (None, Some("d")));
    assert_eq!(grp(40)?, vec![5]);

    // INSERT OR REPLACE on the rowid: the replaced row's old group must go too.
    warm()?;
    db.write(|c| Ok(c.execute_batch("INSERT OR REPLACE INTO t VALUES (1, 20, 'a3')")?))?;
    assert_eq!(v(1)?.as_deref(), Some("a3"));
    assert_eq!((grp(10)?, grp(20)?), (vec![], vec![1, 2]));

    // INSERT OR REPLACE conflicting on another UNIQUE column deletes that row silently.
    warm()?;
    db.write(|c| Ok(c.execute_batch("INSERT OR REPLACE INTO t VALUES (6, 30, 'b')")?))?;
    assert_eq!(v(2)?, None, "row 2 was replaced away");
    assert_eq!(v(6)?.as_deref(), Some("b"));
    assert_eq!((grp(20)?, grp(30)?), (vec![1], vec![6]));

    // An upsert and a DELETE without WHERE (no truncate shortcut may skip the capture).
    warm()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "INSERT INTO t VALUES (6, 40, 'x') ON CONFLICT(id) DO UPDATE SET grp = 40, v = 'b2'",
        )?)
    })?;
    assert_eq!(v(6)?.as_deref(), Some("b2"));
    assert_eq!((grp(30)?, grp(40)?), (vec![], vec![5, 6]));
    warm()?;
    db.write(|c| Ok(c.execute_batch("DELETE FROM t")?))?;
    for id in 1..=6 {
        assert_eq!(v(id)?, None, "row {id} after DELETE FROM t");
    }
    assert_eq!(grp(40)?, Vec::<i64>::new());

    // A write whose closure fails is rolled back: the cached value stays right, and nothing
    // was invalidated for changes that never committed.
    db.write(|c| Ok(c.execute_batch("INSERT INTO t VALUES (1, 10, 'kept')")?))?;
    assert_eq!(v(1)?.as_deref(), Some("kept"));
    assert_eq!(grp(10)?, vec![1]);
    let before = (by_id.stats(), by_grp.stats());
    let err = db
        .write(|c| {
            c.execute_batch(
                "UPDATE t SET v = 'lost', grp = 99 WHERE id = 1; INSERT INTO t VALUES (7, 10, 'x');",
            )?;
            Err::<(), _>(Error::closure("changed my mind"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Closure(_)), "{err:?}");
    assert_eq!(by_id.stats().invalidations, before.0.invalidations);
    assert_eq!(by_grp.stats().invalidations, before.1.invalidations);
    assert_eq!(v(1)?.as_deref(), Some("kept"));
    assert_eq!(v(7)?, None);
    assert_eq!(grp(10)?, vec![1]);
    let stored: String =
        db.read(|c| Ok(c.query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))?))?;
    assert_eq!(stored, "kept");

    // A constraint failure inside the closure, propagated with `?`: the same.
    let err = db
        .write(|c| {
            c.execute("UPDATE t SET v = 'gone' WHERE id = 1", [])?;
            c.execute("INSERT INTO t VALUES (1, 10, 'dup')", [])?;
            Ok(())
        })
        .unwrap_err();
    assert!(err.is_constraint(), "{err:?}");
    assert_eq!(v(1)?.as_deref(), Some("kept"));
    Ok(())
}

#[test]
fn cached_many_loads_misses_once_and_writes_drop_them() -> Result<()> {
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("many"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "many"))?;
    let asked = std::sync::Mutex::new(Vec::new());
    let many = |keys: &[i64]| -> Result<Vec<Option<String>>> {
        let got = db.cached_many(&cache, keys, |c, missing| {
            asked.lock().expect("lock").push(missing.to_vec());
            let mut stmt = c.prepare_cached("SELECT v FROM t WHERE id = ?1")?;
            let mut rows = Vec::new();
            for id in missing {
                if let Some(v) = stmt.query_row([id], |r| r.get(0)).optional()? {
                    rows.push((*id, v));
                }
            }
            Ok(rows)
        })?;
        Ok(got.into_iter().map(|v| v.map(|v| (*v).clone())).collect())
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(many(&[1, 2, 4, 2])?, vec![s("a"), s("b"), None, s("b")]);
    assert_eq!(many(&[1, 2, 3, 4])?, vec![s("a"), s("b"), s("c"), None]);
    db.write(|c| {
        Ok(c.execute_batch("UPDATE t SET v = 'b2' WHERE id = 2; INSERT INTO t VALUES (4, 'd');")?)
    })?;
    assert_eq!(many(&[1, 2, 3, 4])?, vec![s("a"), s("b2"), s("c"), s("d")]);
    let asked = asked.into_inner().expect("lock");
    assert_eq!(asked, vec![vec![1, 2, 4], vec![3], vec![2, 4]]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Writes by another process.

const CHILD_DB: &str = "STRATA_CACHE_CHILD_DB";

#[test]
fn a_foreign_write_drops_the_caches_within_the_check_interval() -> Result<()> {
    if let Ok(path) = std::env::var(CHILD_DB) {
        // The child process: a plain connection of its own, not strata's.
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let n = conn.execute("UPDATE t SET v = 'foreign' WHERE id = 1", [])?;
        assert_eq!(n, 1);
        return Ok(());
    }
    const CHECK: Duration = Duration::from_millis(50);
    let dir = tempdir();
    let path = dir.path().join("foreign.db");
    let db = Db::builder()
        .path(&path)
        .foreign_write_check(CHECK)
        .build()?;
    db.write(|c| {
        Ok(c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             INSERT INTO t VALUES (1, 'local');",
        )?)
    })?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("t"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t"))?;
    let loads = AtomicUsize::new(0);
    let read = || -> Result<String> {
        let v = db.cached(&cache, &1, |c, id| {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(c.prepare_cached("SELECT v FROM t WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?)
        })?;
        Ok((*v.expect("row 1")).clone())
    };
    assert_eq!(read()?, "local");
    let hits = cache.stats().hits;
    // Past a check interval with no foreign write: still served from the cache.
    thread::sleep(CHECK + Duration::from_millis(10));
    assert_eq!(read()?, "local");
    assert_eq!(read()?, "local");
    assert_eq!(
        cache.stats().hits,
        hits + 2,
        "the value came from the cache"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_foreign_write_drops_the_caches_within_the_check_interval",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .output()
        .expect("run the child process");
    assert!(
        child.status.success(),
        "the child failed: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let written = Instant::now();

    // The bound: one check interval (plus slack) after the foreign commit.
    thread::sleep(CHECK + Duration::from_millis(10));
    let first = read()?;
    let mut last = first.clone();
    while last != "foreign" && written.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(5));
        last = read()?;
    }
    println!(
        "foreign write seen after {:.1?} (first read after {CHECK:?} + 10 ms: {first:?})",
        written.elapsed()
    );
    assert_eq!(last, "foreign", "the foreign write was never seen");
    assert_eq!(
        first, "foreign",
        "the first read more than one check interval after the foreign write was stale"
    );
    assert!(cache.stats().invalidations >= 1);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Bad settings and failing loaders.

#[test]
fn zero_capacity_or_ttl_in_config_is_refused() {
    for (settings, field) in [
        (CacheSettings::new("users").capacity(0), "cache.capacity"),
        (CacheSettings::new("users").ttl(Duration::ZERO), "cache.ttl"),
    ] {
        let dir = tempdir();
        let err = Db::builder()
            .path(dir.path().join("bad.db"))
            .cache(settings)
            .build()
            .unwrap_err();
        match err {
            Error::InvalidConfig { field: f, reason } => {
                assert_eq!(f, field);
                assert!(reason.contains("users"), "{reason}");
            }
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
        assert!(
            !dir.path().join("bad.db").exists(),
            "nothing may be opened on invalid settings"
        );
    }
}

#[test]
fn config_settings_override_the_registered_spec() -> Result<()> {
    let dir = tempdir();
    let db = Db::builder()
        .path(dir.path().join("cfg.db"))
        .cache(CacheSettings::new("small").capacity(2))
        .build()?;
    let cache = db.register_cache(EntityCache::<i64, i64>::builder("small").capacity(1000))?;
    assert_eq!(cache.capacity(), 2);
    Ok(())
}

#[test]
fn a_failing_loader_returns_its_error_and_caches_nothing() -> Result<()> {
    let dir = tempdir();
    let db = open(
        &dir,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t VALUES (1, 'one');",
    )?;
    let cache = db.register_cache(EntityCache::<i64, String>::builder("t"))?;
    let calls = AtomicUsize::new(0);

    let err = db
        .cached(&cache, &1, |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::closure("loader down"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "loader down");
    assert_eq!(cache.get(&1), None);
    // An SQL error inside the loader is returned as such.
    let err = db
        .cached(&cache, &1, |c, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(c.query_row("SELECT v FROM no_such_table", [], |r| r.get(0))
                .optional()?)
        })
        .unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert_eq!(cache.get(&1), None);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors, stats.size), (2, 2, 0));

    // The next call loads again and caches.
    let v = db.cached(&cache, &1, |c, id| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(
            c.query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
                .optional()?,
        )
    })?;
    assert_eq!(v.as_deref().map(String::as_str), Some("one"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(cache.get(&1).is_some());
    Ok(())
}
