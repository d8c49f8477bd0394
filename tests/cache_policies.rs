//! Cache policies: refresh ahead, per-entry lifetimes, weights and the manager's memory limit,
//! prefix invalidation, the removal listener and TinyLFU admission. Time is a `ManualClock`
//! except where a repository's cache (which runs on the system clock) is refreshed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata::cache::{CacheSettings, EntityCache, InvalidationRule, ManualClock, RemovalCause};
use strata::rusqlite::{types::ToSql, Row};
use strata::{Config, Db, Entity, Error, Repository, Result};

/// Polls `done` every millisecond for at most 10 s; true once it holds. Background work
/// (the refresh thread) is waited for this way, never with a timed assertion.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}

fn text(c: &EntityCache<u32, String>, key: u32) -> Option<String> {
    c.get(&key)?.into_value().map(|v| (*v).clone())
}

#[test]
fn refresh_ahead_hands_out_the_value_and_reloads_once_in_the_background() -> Result<()> {
    let db = Db::open_in_memory()?;
    let clock = Arc::new(ManualClock::new());
    let version = Arc::new(AtomicUsize::new(1));
    let loads = Arc::new(AtomicUsize::new(0));
    let (v, l) = (Arc::clone(&version), Arc::clone(&loads));
    let cache = db.register_cache(
        EntityCache::<u32, String>::builder("refresh")
            .ttl(Duration::from_secs(10))
            .refresh_ahead(0.5)
            .clock(clock.clone())
            .loader(move |k| {
                l.fetch_add(1, Ordering::SeqCst);
                Ok(Some(format!("{k}v{}", v.load(Ordering::SeqCst))))
            }),
    )?;
    let first = cache.get_or_load(&7, |k| Ok(Some(format!("{k}v1"))))?;
    assert_eq!(first.as_deref().map(String::as_str), Some("7v1"));
    version.store(2, Ordering::SeqCst);
    clock.advance(Duration::from_secs(4));
    assert_eq!(text(&cache, 7).as_deref(), Some("7v1")); // before the refresh point
    assert_eq!(loads.load(Ordering::SeqCst), 0);

    clock.advance(Duration::from_secs(2)); // 6 s of 10: past half the lifetime
    for _ in 0..50 {
        // Every hit gets the current value at once, whatever the reload is doing.
        let seen = text(&cache, 7);
        assert!(matches!(seen.as_deref(), Some("7v1" | "7v2")), "{seen:?}");
    }
    assert!(eventually(|| text(&cache, 7).as_deref() == Some("7v2")));
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one reload for many hits");
    // The reloaded entry lives a full TTL from its reload.
    clock.advance(Duration::from_secs(4)); // where the first value would have expired
    assert_eq!(text(&cache, 7).as_deref(), Some("7v2"));
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.expirations), (2, 0));
    Ok(())
}

#[test]
fn a_refresh_overtaken_by_an_invalidation_does_not_insert() -> Result<()> {
    let db = Db::open_in_memory()?;
    let clock = Arc::new(ManualClock::new());
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let (started, started_rx) = mpsc::channel::<u32>();
    let started = Mutex::new(started);
    let cache = db.register_cache(
        EntityCache::<u32, String>::builder("guarded")
            .ttl(Duration::from_secs(10))
            .refresh_ahead(0.5)
            .clock(clock.clone())
            .loader(move |&k| {
                let _ = started.lock().map(|s| s.send(k));
                if k == 1 {
                    // Returns only after the test has invalidated key 1.
                    let _ = gate.lock().map(|g| g.recv());
                }
                Ok(Some(format!("reloaded {k}")))
            }),
    )?;
    cache.insert(1, "old 1".into());
    cache.insert(2, "old 2".into());
    clock.advance(Duration::from_secs(6));
    assert_eq!(text(&cache, 1).as_deref(), Some("old 1")); // starts the refresh of 1
    assert_eq!(
        started_rx.recv_timeout(Duration::from_secs(10)).ok(),
        Some(1)
    );
    assert!(cache.invalidate(&1)); // a write lands while the reload runs
    release.send(()).map_err(Error::closure)?;
    // The refresh thread runs one reload at a time: once 2's has started, 1's is over.
    assert_eq!(text(&cache, 2).as_deref(), Some("old 2"));
    assert_eq!(
        started_rx.recv_timeout(Duration::from_secs(10)).ok(),
        Some(2)
    );
    assert!(eventually(
        || text(&cache, 2).as_deref() == Some("reloaded 2")
    ));
    assert_eq!(cache.get(&1), None, "the stale reload was cached");
    Ok(())
}

/// A row of `notes`, for a repository's refresh.
struct Note {
    id: i64,
    text: String,
}

impl Entity for Note {
    const TABLE: &'static str = "notes";
    const COLUMNS: &'static [&'static str] = &["text"];

    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }

    fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
        Ok(Note {
            id: row.get(0)?,
            text: row.get(1)?,
        })
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![&self.text]
    }
}

#[test]
fn a_repository_get_refreshes_ahead_of_its_ttl() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::closure)?;
    let path = dir.path().join("notes.db");
    // A long TTL, a refresh point 10 ms in, and no look for other processes' writes: only a
    // refresh can show the value another connection writes behind the cache's back.
    let db = Config::new()
        .path(&path)
        .foreign_write_check(Duration::from_secs(3600))
        .cache(
            CacheSettings::new("notes")
                .ttl(Duration::from_secs(60))
                .refresh_ahead(1.0 / 6000.0),
        )
        .build()?;
    db.write(|c| {
        c.execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT NOT NULL)")?;
        Ok(())
    })?;
    let notes = Repository::<Note>::new(&db)?;
    let id = notes.insert(&Note {
        id: 0,
        text: "first".into(),
    })?;
    assert_eq!(notes.require(id)?.text, "first");
    let other = strata::rusqlite::Connection::open(&path)?;
    other.execute("UPDATE notes SET text = 'second' WHERE id = ?1", [id])?;
    assert!(eventually(|| notes
        .get(id)
        .ok()
        .flatten()
        .is_some_and(|n| n.text == "second")));
    assert!(notes.cache().stats().loads >= 2);
    Ok(())
}

#[test]
fn expire_after_gives_each_value_its_own_lifetime() -> Result<()> {
    let clock = Arc::new(ManualClock::new());
    let expired = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&expired);
    let cache: EntityCache<u32, String> = EntityCache::builder("tokens")
        .ttl(Duration::from_secs(60))
        .expire_after(|_, v: &String| {
            Duration::from_secs(if v.starts_with("error") { 10 } else { 30 })
        })
        .on_removal(move |k, _, cause| {
            if let Ok(mut seen) = seen.lock() {
                seen.push((*k, cause));
            }
        })
        .clock(clock.clone())
        .build()?;
    cache.insert(1, "healthy".into());
    cache.insert(2, "error: upstream down".into());
    clock.advance(Duration::from_secs(10));
    assert_eq!(cache.get(&2), None);
    assert!(cache.get(&1).is_some());
    clock.advance(Duration::from_secs(20));
    assert_eq!(cache.get(&1), None);
    let expired = expired
        .lock()
        .map_err(|_| Error::closure("poisoned"))?
        .clone();
    assert_eq!(
        expired,
        [(2, RemovalCause::Expired), (1, RemovalCause::Expired)]
    );
    Ok(())
}

#[test]
fn weights_bound_a_cache_and_show_in_its_stats() -> Result<()> {
    let cache: EntityCache<u32, String> = EntityCache::builder("sized")
        .capacity(1000)
        .shards(1)
        .max_bytes(100)
        .admission(false)
        .weigher(|_, v: &String| v.len())
        .build()?;
    for k in 0..10 {
        cache.insert(k, "x".repeat(20));
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.size, stats.bytes, stats.max_bytes),
        (5, 100, Some(100))
    );
    assert_eq!(stats.evictions, 5);
    assert_eq!(text(&cache, 0), None); // the least recently used left first
    assert!(text(&cache, 9).is_some());
    cache.insert(100, "y".repeat(101)); // heavier than the whole cache: refused
    assert_eq!(cache.get(&100), None);
    assert_eq!(cache.bytes(), 100);
    Ok(())
}

#[test]
fn the_memory_limit_shrinks_the_largest_cache_first_and_reports_bytes() -> Result<()> {
    let db = Config::new().cache_memory_limit(1000).build()?;
    let spec = |name: &str| {
        EntityCache::<u32, u32>::builder(name)
            .capacity(10_000)
            .weigher(|_, _| 10)
    };
    let big = db.register_cache(spec("big"))?;
    let small = db.register_cache(spec("small"))?;
    assert_eq!(db.caches().memory_limit(), Some(1000));
    for k in 0..30 {
        small.insert(k, k);
    }
    for k in 0..90 {
        big.insert(k, k);
    }
    assert!(db.caches().bytes() <= 1000, "{}", db.caches().bytes());
    assert_eq!(small.len(), 30, "the smaller cache was shrunk");
    assert!(big.len() <= 70, "{}", big.len());
    let report = db.report();
    let bytes: Vec<(String, usize)> = report
        .caches
        .iter()
        .map(|c| (c.name.clone(), c.bytes))
        .collect();
    assert_eq!(
        bytes,
        [
            ("big".to_owned(), big.len() * 10),
            ("small".to_owned(), 300)
        ]
    );
    // The bytes are what the caches hold now, in a delta of two reports too.
    let delta = db.report().delta(&report);
    assert_eq!(
        delta.caches.iter().map(|c| c.bytes).collect::<Vec<_>>(),
        [big.len() * 10, 300]
    );
    assert_eq!(db.caches().enforce_memory_limit(), 0); // already under it
    Ok(())
}

#[test]
fn invalidate_prefix_drops_only_tags_that_start_with_it() -> Result<()> {
    let cache: EntityCache<u32, String> = EntityCache::builder("tagged").build()?;
    cache.insert_tagged(1, "profile".into(), ["user:42:profile"]);
    cache.insert_tagged(2, "orders".into(), ["user:42:orders", "orders"]);
    cache.insert_tagged(3, "other user".into(), ["user:420:profile"]);
    cache.insert_tagged(4, "short".into(), ["user:4"]);
    cache.insert(5, "untagged".into());
    assert_eq!(cache.invalidate_prefix("user:42:"), 2);
    assert_eq!((text(&cache, 1), text(&cache, 2)), (None, None));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.invalidate_prefix("user:4"), 2);
    assert_eq!(cache.invalidate_prefix("user:"), 0);
    assert_eq!(cache.invalidate_tag("orders"), 0); // went with key 2
    assert_eq!(text(&cache, 5).as_deref(), Some("untagged"));
    Ok(())
}

#[test]
fn the_removal_listener_hears_every_cause_and_may_use_the_cache() -> Result<()> {
    let db = Db::open_in_memory()?;
    db.write(|c| Ok(c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")?))?;
    let clock = Arc::new(ManualClock::new());
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cell: Arc<OnceLock<Arc<EntityCache<i64, String>>>> = Arc::new(OnceLock::new());
    let (log, me) = (Arc::clone(&heard), Arc::clone(&cell));
    let cache = db.register_cache(
        EntityCache::<i64, String>::builder("t")
            .capacity(2)
            .shards(1)
            .admission(false)
            .ttl(Duration::from_secs(10))
            .clock(clock.clone())
            .on_removal(move |k, v, cause| {
                // Touches the cache from inside the listener: this must not deadlock.
                let len = me.get().map_or(0, |c| {
                    let _ = c.get(k);
                    c.len()
                });
                let v = v.value().map(|v| (**v).clone());
                if let Ok(mut log) = log.lock() {
                    log.push((*k, v, cause, len));
                }
            }),
    )?;
    cell.set(Arc::clone(&cache))
        .map_err(|_| Error::closure("set twice"))?;
    db.add_rule(InvalidationRule::rowid_key("t", "t"))?;

    cache.insert(1, "a".into());
    cache.insert(1, "b".into()); // Replaced
    cache.insert(2, "c".into());
    cache.insert(3, "d".into()); // evicts 1: Size
    assert!(cache.invalidate(&2)); // Explicit
    db.write(|c| Ok(c.execute("INSERT INTO t(id, v) VALUES (3, 'x')", [])?))?; // Write
    cache.insert(4, "e".into());
    cache.insert_absent(5);
    clock.advance(Duration::from_secs(11));
    assert_eq!(cache.get(&4), None); // Expired
    let heard = heard
        .lock()
        .map_err(|_| Error::closure("poisoned"))?
        .clone();
    let causes: Vec<(i64, Option<String>, RemovalCause)> = heard
        .iter()
        .map(|(k, v, c, _)| (*k, v.clone(), *c))
        .collect();
    assert_eq!(
        causes,
        [
            (1, Some("a".into()), RemovalCause::Replaced),
            (1, Some("b".into()), RemovalCause::Size),
            (2, Some("c".into()), RemovalCause::Explicit),
            (3, Some("d".into()), RemovalCause::Write),
            (4, Some("e".into()), RemovalCause::Expired),
        ]
    );
    assert!(RemovalCause::Size.was_evicted() && !RemovalCause::Write.was_evicted());
    assert_eq!(cache.get(&5), None); // the negative entry expired too ...
    let last = cell
        .get()
        .map(|c| c.stats().expirations)
        .unwrap_or_default();
    assert_eq!(last, 2); // ... and was told as Absent
    Ok(())
}

#[test]
fn admission_keeps_the_hot_set_through_a_scan_and_lru_does_not() -> Result<()> {
    let run = |admission: bool| -> Result<usize> {
        let cache: EntityCache<u32, u32> = EntityCache::builder("scan")
            .capacity(100)
            .shards(1)
            .admission(admission)
            .build()?;
        let get_or_insert = |k: u32| {
            if cache.get(&k).is_none() {
                cache.insert(k, k);
            }
        };
        for _ in 0..5 {
            for k in 0..50 {
                get_or_insert(k);
            }
        }
        // A scan of one-off keys, three to each hit on the hot set: to LRU a hot key has been
        // out of use for longer (200 keys) than the cache is large (100).
        for i in 0..3000 {
            if i % 4 == 0 {
                get_or_insert(i / 4 % 50);
            } else {
                get_or_insert(1000 + i);
            }
        }
        Ok((0..50).filter(|k| cache.get(k).is_some()).count())
    };
    assert_eq!(run(true)?, 50);
    assert!(run(false)? <= 25);
    Ok(())
}

#[test]
fn bad_policy_settings_are_refused() -> Result<()> {
    let field = |config: Config| match config.build() {
        Err(Error::InvalidConfig { field, .. }) => Some(field),
        _ => None,
    };
    assert_eq!(
        field(Config::new().cache(CacheSettings::new("c").refresh_ahead(1.0))),
        Some("cache.refresh_ahead")
    );
    assert_eq!(
        field(Config::new().cache(CacheSettings::new("c").max_bytes(0))),
        Some("cache.max_bytes")
    );
    assert_eq!(
        field(Config::new().cache_memory_limit(0)),
        Some("cache_memory_limit")
    );
    let spec = EntityCache::<u32, u32>::builder("c").refresh_ahead(0.0);
    assert!(matches!(
        spec.build(),
        Err(Error::InvalidConfig {
            field: "refresh_ahead",
            ..
        })
    ));
    // A Config's setting overrides the registering code's, policy fields included.
    let db = Config::new()
        .cache(CacheSettings::new("c").max_bytes(64).admission(false))
        .build()?;
    let c = db.register_cache(EntityCache::<u32, u32>::builder("c").max_bytes(1 << 20))?;
    assert_eq!(c.max_bytes(), Some(64));
    Ok(())
}
