//! Loading through the cache: `get_or_load` (single-flight), `get_many_or_load` and `warm`
//! (batched, chunked), all behind the stale-fill guard.

use std::collections::HashMap;
use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::entity::EntityCache;
use super::flight::{Flight, Leader};
use super::front::Found;
use super::shard::Shard;
use super::stats::add;
use crate::error::panic_error;
use crate::error::{Error, Result};

/// What a caller does after looking in the shard.
enum Role<V> {
    /// Found the entry.
    Hit(Found<V>),
    /// Runs the loader for everyone.
    Lead(Arc<Flight<V>>),
    /// Waits for a load of the same generation already running.
    Wait(Arc<Flight<V>>),
}

impl<K, V> EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The value of `key`: from the cache, or from `loader` on a miss (`Ok(None)` from the
    /// loader is cached as a negative entry).
    ///
    /// Concurrent misses on one key run one load; the others wait for it and share its value,
    /// or get [`Error::LoadFailed`] if it fails (the leader gets the loader's own error, or
    /// [`Error::Panic`] if it panicked). A failed load caches nothing. A loaded value is cached
    /// only if no invalidation ran meanwhile (see the stale-fill guard on [`EntityCache`]).
    pub fn get_or_load<F>(&self, key: &K, loader: F) -> Result<Option<Arc<V>>>
    where
        F: FnOnce(&K) -> Result<Option<V>>,
    {
        let hash = self.hash(key);
        let shard = self.shard_of(hash);
        let ticks = self.clock.ticks();
        if let Some(hit) = self.front_hit(shard, hash, key, ticks) {
            return Ok(hit.into_value());
        }
        let now = self.clock.instant_of(ticks);
        shard.prefetch_sketch(hash);
        let role = {
            let mut state = self.lock(shard);
            if let Some(found) = state.lookup(key, hash, now, &shard.counters, &shard.epoch) {
                Role::Hit(found)
            } else {
                // Read under the shard lock, before the loader runs: this is the generation the
                // load's snapshot is at least as new as.
                let generation = shard.generation();
                match state.flights.get(key) {
                    Some(flight) if flight.generation == generation => {
                        Role::Wait(Arc::clone(flight))
                    }
                    // None, or a load from before an invalidation: its value may be stale for
                    // this caller, so start a fresh one (the old leader will not unregister
                    // ours).
                    _ => {
                        let flight = Flight::new(generation);
                        state.flights.insert(key.clone(), Arc::clone(&flight));
                        Role::Lead(flight)
                    }
                }
            }
        };
        match role {
            // The front copy is taken after the lock is released: it is private to this thread.
            Role::Hit(found) => Ok(self.keep(shard, hash, key, found, now).into_value()),
            Role::Wait(flight) => flight.wait().map_err(|message| Error::LoadFailed {
                cache: self.name.clone(),
                message,
            }),
            Role::Lead(flight) => self.lead(shard, key, flight, loader),
        }
    }

    /// Runs `loader` for the flight's callers and caches its value unless the generation moved
    /// (a miss's load, or a refresh-ahead reload).
    pub(crate) fn lead<F>(
        &self,
        shard: &Shard<K, V>,
        key: &K,
        flight: Arc<Flight<V>>,
        loader: F,
    ) -> Result<Option<Arc<V>>>
    where
        F: FnOnce(&K) -> Result<Option<V>>,
    {
        let leader = Leader::new(shard, key, flight);
        add(&self.load_counters.loads, 1);
        let loaded = catch_unwind(AssertUnwindSafe(|| self.load_one(key, loader)))
            .unwrap_or_else(|payload| Err(panic_error(payload)));
        match loaded {
            Ok(value) => {
                let value = value.map(Arc::new);
                let tags = match &value {
                    Some(v) => self.tags_of(key, v),
                    None => Box::default(),
                };
                let entry = self.entry(key, value.clone(), tags, self.clock.now());
                {
                    let mut state = self.lock(shard);
                    leader.unregister(&mut state.flights);
                    if let Some(entry) = entry {
                        if shard.generation() == leader.generation() {
                            state.put(key.clone(), entry, &shard.counters, &shard.epoch);
                        }
                    }
                }
                leader.finish(Ok(value.clone()));
                Ok(value)
            }
            Err(err) => {
                add(&self.load_counters.load_errors, 1);
                leader.unregister(&mut shard.state.lock().flights);
                leader.finish(Err(err.to_string()));
                Err(err)
            }
        }
    }

    /// Runs a single-flight load: through the shared tier when the cache has one (after the
    /// generation was read, so the tier's answer is guarded like the loader's).
    fn load_one<F>(&self, key: &K, loader: F) -> Result<Option<V>>
    where
        F: FnOnce(&K) -> Result<Option<V>>,
    {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            return shared.load(key, loader);
        }
        loader(key)
    }

    /// The values of `keys`, in order (`None` for keys that do not exist). Keys not cached are
    /// passed to `loader` in chunks of at most `max_keys_per_load`, each key once; keys the
    /// loader does not return are cached as negative entries. Batch loads are not
    /// single-flight, but they are behind the stale-fill guard. On a loader error (or panic,
    /// as [`Error::Panic`]) chunks already loaded stay cached and the error is returned.
    pub fn get_many_or_load<F>(&self, keys: &[K], loader: F) -> Result<Vec<Option<Arc<V>>>>
    where
        F: FnMut(&[K]) -> Result<Vec<(K, V)>>,
    {
        let now = self.clock.now();
        let mut values = Vec::with_capacity(keys.len());
        let mut misses = Vec::new(); // positions in `keys`
        for (i, key) in keys.iter().enumerate() {
            let hit = self.lookup(key, now);
            if hit.is_none() {
                misses.push(i);
            }
            values.push(hit.and_then(|h| h.into_value()));
        }
        if misses.is_empty() {
            return Ok(values);
        }
        let mut slot_of: HashMap<&K, usize> = HashMap::with_capacity(misses.len());
        let mut unique = Vec::with_capacity(misses.len());
        for &i in &misses {
            slot_of.entry(&keys[i]).or_insert_with(|| {
                unique.push(keys[i].clone());
                unique.len() - 1
            });
        }
        let loaded = self.load_batch(&unique, loader)?;
        for i in misses {
            values[i] = loaded[slot_of[&keys[i]]].clone();
        }
        Ok(values)
    }

    /// Loads the keys among `keys` that have no fresh entry (as
    /// [`get_many_or_load`](EntityCache::get_many_or_load) would, without counting lookups);
    /// returns how many keys were passed to the loader.
    pub fn warm<F>(&self, keys: &[K], loader: F) -> Result<usize>
    where
        F: FnMut(&[K]) -> Result<Vec<(K, V)>>,
    {
        let now = self.clock.now();
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let cold: Vec<K> = keys
            .iter()
            .filter(|key| !self.shard(key).state.lock().is_fresh(key, now) && seen.insert(*key))
            .cloned()
            .collect();
        self.load_batch(&cold, loader)?;
        Ok(cold.len())
    }

    /// Loads distinct `keys` chunk by chunk and caches what each chunk returns, negative entries
    /// included, unless the key's shard generation moved during that chunk's load.
    fn load_batch<F>(&self, keys: &[K], mut loader: F) -> Result<Vec<Option<Arc<V>>>>
    where
        F: FnMut(&[K]) -> Result<Vec<(K, V)>>,
    {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.max_keys_per_load) {
            // One generation per shard rather than per key: a chunk has up to 500 keys and the
            // cache a handful of shards.
            let generations: Vec<u64> = self.shards.iter().map(Shard::generation).collect();
            add(&self.load_counters.loads, 1);
            let rows = catch_unwind(AssertUnwindSafe(|| loader(chunk)))
                .unwrap_or_else(|payload| Err(panic_error(payload)))
                .inspect_err(|_| add(&self.load_counters.load_errors, 1))?;
            let mut found: HashMap<K, Arc<V>> = rows
                .into_iter()
                .map(|(key, value)| (key, Arc::new(value)))
                .collect();
            let now = self.clock.now();
            for key in chunk {
                let value = found.remove(key);
                let tags = match &value {
                    Some(v) => self.tags_of(key, v),
                    None => Box::default(),
                };
                if let Some(entry) = self.entry(key, value.clone(), tags, now) {
                    let index = self.shard_index_of(entry.hash);
                    let shard = &self.shards[index];
                    let mut state = self.lock(shard);
                    if shard.generation() == generations[index] {
                        state.put(key.clone(), entry, &shard.counters, &shard.epoch);
                    }
                }
                values.push(value);
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cached;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    type Cache = EntityCache<u32, String>;

    fn cache() -> Result<Cache> {
        EntityCache::builder("load").capacity(1000).build()
    }

    /// Holds a loader until `n` lookups have missed: a miss and joining the flight happen in
    /// one critical section, so by then every caller has joined (no timing guesswork). Gives up
    /// after 10 s so that a broken cache fails the test instead of hanging it.
    fn until_misses(c: &Cache, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.stats().misses < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `get_or_load(&7, loader)` on `threads` threads released together.
    fn race<F>(c: &Cache, threads: usize, loader: F) -> Vec<Result<Option<Arc<String>>>>
    where
        F: Fn() -> Result<Option<String>> + Sync,
    {
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        c.get_or_load(&7, |_| loader())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("caller panicked")))
                .collect()
        })
    }

    #[test]
    fn concurrent_misses_run_one_load() -> Result<()> {
        let c = cache()?;
        let calls = AtomicUsize::new(0);
        let results = race(&c, 64, || {
            calls.fetch_add(1, Ordering::SeqCst);
            until_misses(&c, 64);
            Ok(Some("seven".to_owned()))
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for r in results {
            assert_eq!(r?.as_deref().map(String::as_str), Some("seven"));
        }
        let stats = c.stats();
        assert_eq!((stats.loads, stats.misses, stats.size), (1, 64, 1));
        Ok(())
    }

    #[test]
    fn a_failed_load_reaches_every_waiter_and_caches_nothing() -> Result<()> {
        let c = cache()?;
        let results = race(&c, 16, || {
            until_misses(&c, 16);
            Err(Error::NotFound {
                table: "users",
                key: "7".into(),
            })
        });
        let (mut original, mut shared) = (0, 0);
        for r in results {
            match r {
                Err(Error::NotFound { .. }) => original += 1,
                Err(Error::LoadFailed { cache, message }) => {
                    assert_eq!(cache, "load");
                    assert!(message.contains("no row with key 7"), "{message}");
                    shared += 1;
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
        assert_eq!((original, shared), (1, 15));
        assert_eq!(c.get(&7), None);
        assert_eq!((c.stats().loads, c.stats().load_errors), (1, 1));
        let v = c.get_or_load(&7, |_| Ok(Some("back".to_owned())))?;
        assert_eq!(v.as_deref().map(String::as_str), Some("back"));
        assert_eq!(c.stats().loads, 2);
        Ok(())
    }

    #[test]
    fn a_panicking_load_fails_every_caller_and_caches_nothing() -> Result<()> {
        let c = cache()?;
        let results = race(&c, 8, || {
            until_misses(&c, 8);
            panic!("loader exploded")
        });
        let mut panics = 0;
        for r in results {
            match r {
                Err(Error::Panic { message }) => {
                    assert_eq!(message, "loader exploded");
                    panics += 1;
                }
                Err(Error::LoadFailed { message, .. }) => {
                    assert!(message.contains("loader exploded"), "{message}")
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
        assert_eq!(panics, 1);
        assert_eq!(c.get(&7), None);
        assert!(c.shards.iter().all(|s| s.state.lock().flights.is_empty()));
        let v = c.get_or_load(&7, |_| Ok(Some("calm".to_owned())))?;
        assert_eq!(v.as_deref().map(String::as_str), Some("calm"));
        Ok(())
    }

    #[test]
    fn a_load_overtaken_by_an_invalidation_does_not_insert() -> Result<()> {
        let c = cache()?;
        let (started, resume) = (Barrier::new(2), Barrier::new(2));
        std::thread::scope(|s| -> Result<()> {
            let old = s.spawn(|| {
                c.get_or_load(&1, |_| {
                    started.wait(); // the loader has taken its snapshot
                    resume.wait(); // ... and returns after the write below
                    Ok(Some("old".to_owned()))
                })
            });
            started.wait();
            // The writer's protocol: after COMMIT, bump, then invalidate.
            c.bump_generation_all();
            c.invalidate(&1);
            // A caller arriving now must not join the old load; it loads the new value. Run
            // aside so that a cache that wrongly joins fails the test instead of hanging it.
            let fresh = s.spawn(|| c.get_or_load(&1, |_| Ok(Some("new".to_owned()))));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !fresh.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let joined_old_load = !fresh.is_finished();
            resume.wait();
            assert!(
                !joined_old_load,
                "a caller joined a load older than the write"
            );
            let fresh = fresh.join().unwrap_or_else(|_| panic!("caller panicked"))?;
            assert_eq!(fresh.as_deref().map(String::as_str), Some("new"));
            let old = old
                .join()
                .unwrap_or_else(|_| panic!("loader thread panicked"))?;
            assert_eq!(old.as_deref().map(String::as_str), Some("old")); // its caller got it
            Ok(())
        })?;
        let cached = c.get(&1).and_then(Cached::into_value);
        assert_eq!(cached.as_deref().map(String::as_str), Some("new"));

        // The same with nobody reloading: the cache ends up empty.
        std::thread::scope(|s| -> Result<()> {
            let old = s.spawn(|| {
                c.get_or_load(&2, |_| {
                    started.wait();
                    resume.wait();
                    Ok(Some("old".to_owned()))
                })
            });
            started.wait();
            c.invalidate(&2); // bumps the shard's generation itself
            resume.wait();
            assert!(old.join().unwrap_or_else(|_| panic!("panicked"))?.is_some());
            Ok(())
        })?;
        assert_eq!(c.get(&2), None);
        Ok(())
    }

    #[test]
    fn a_batch_overtaken_by_an_invalidation_does_not_insert() -> Result<()> {
        let c = cache()?;
        let (started, resume) = (Barrier::new(2), Barrier::new(2));
        std::thread::scope(|s| -> Result<()> {
            let old = s.spawn(|| {
                c.get_many_or_load(&[1, 2], |keys| {
                    started.wait();
                    resume.wait();
                    Ok(keys.iter().map(|&k| (k, format!("old{k}"))).collect())
                })
            });
            started.wait();
            c.invalidate_tag("anything"); // bumps every shard
            resume.wait();
            let values = old.join().unwrap_or_else(|_| panic!("panicked"))?;
            assert!(values.iter().all(Option::is_some));
            Ok(())
        })?;
        assert!(c.is_empty());
        Ok(())
    }

    #[test]
    fn get_many_chunks_misses_and_caches_absent_keys() -> Result<()> {
        let c: Cache = EntityCache::builder("many").max_keys_per_load(3).build()?;
        c.insert(0, "cached".into());
        let mut chunks = Vec::new();
        let keys = [0, 1, 2, 3, 4, 5, 6, 7, 2, 9];
        let even = |chunk: &[u32]| -> Vec<(u32, String)> {
            let found = chunk.iter().filter(|k| *k % 2 == 0);
            found.map(|&k| (k, format!("v{k}"))).collect()
        };
        let values = c.get_many_or_load(&keys, |chunk| {
            chunks.push(chunk.to_vec());
            Ok(even(chunk))
        })?;
        assert_eq!(chunks, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 9]]);
        let got: Vec<Option<&str>> = values.iter().map(|v| v.as_deref().map(|s| &**s)).collect();
        let (cached, v2, v4, v6) = (Some("cached"), Some("v2"), Some("v4"), Some("v6"));
        let want = vec![cached, None, v2, None, v4, None, v6, None, v2, None];
        assert_eq!(got, want);
        assert_eq!(c.get(&3), Some(Cached::Absent));

        let again = c.get_many_or_load(&keys, |_| panic!("everything is cached"))?;
        assert_eq!(again, values);
        assert_eq!(c.stats().loads, 3);
        Ok(())
    }

    #[test]
    fn a_failing_batch_returns_the_error() -> Result<()> {
        let c = cache()?;
        let err = c
            .get_many_or_load(&[1, 2], |_| Err(Error::closure("db down")))
            .unwrap_err();
        assert_eq!(err.to_string(), "db down");
        let err = c
            .get_many_or_load(&[1, 2], |_| panic!("batch exploded"))
            .unwrap_err();
        assert!(matches!(err, Error::Panic { .. }), "{err:?}");
        assert!(c.is_empty());
        assert_eq!(c.stats().load_errors, 2);
        Ok(())
    }

    #[test]
    fn warm_loads_only_what_is_missing() -> Result<()> {
        let c = cache()?;
        c.insert(1, "one".into());
        let mut asked = Vec::new();
        let n = c.warm(&[1, 2, 3, 3], |keys| {
            asked.extend_from_slice(keys);
            Ok(vec![(2, "two".to_owned())])
        })?;
        assert_eq!((n, asked), (2, vec![2, 3]));
        assert_eq!(c.get(&3), Some(Cached::Absent));
        assert!(c.get(&2).is_some_and(|v| !v.is_absent()));
        assert_eq!(c.stats().misses, 0); // warm does not count lookups
        Ok(())
    }

    #[test]
    fn absent_keys_are_not_reloaded() -> Result<()> {
        let c = cache()?;
        assert_eq!(c.get_or_load(&5, |_| Ok(None))?, None);
        assert_eq!(c.get_or_load(&5, |_| panic!("cached as absent"))?, None);
        assert_eq!(c.get(&5), Some(Cached::Absent));
        Ok(())
    }
}
