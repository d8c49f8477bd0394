//! The per-thread read front of an [`EntityCache`](super::EntityCache): copies of entries this
//! thread hit recently, served without taking a shard lock.
//!
//! The front is an addition to the design's shards of `Mutex<LruCache>`, which stay the only
//! source of truth: the front never holds an entry the shards did not hand out, and every copy
//! is checked against its shard's [`Epoch`] before it is served.
//!
//! Why it exists: a hit in a shard writes shared cache lines (the lock word, the LRU list, the
//! counters), so two threads hitting one cache pull those lines from each other's core and do
//! not go faster than one. A front hit writes only lines of its own thread and reads the epoch,
//! a line both cores keep shared as long as the shard does not change. One shared write is
//! left, and no cache can drop it while it hands out `Arc<V>`: the count of the value's `Arc`,
//! so threads that hit the same keys still pass those lines between them.
//!
//! Why it is never stale: every change to a shard's map (insert, replace, remove, invalidation,
//! eviction, expiry, clear) bumps the shard's epoch with the shard lock held. A copy is taken
//! under that lock too, with the epoch of that moment, so a copy whose epoch is still current
//! was taken after the shard's last change: it is what the shard holds now. A `get` that
//! starts after an invalidation returned loads the bumped epoch (the bump came before the
//! return) and falls back to the shard. Expiry is checked on every front hit against the
//! entry's own deadline. The generation of the stale-fill guard needs no part here: a load
//! that the guard stops never reaches the shard, so never a front.
//!
//! What it costs: a front keeps up to [`FRONT_CAPACITY`] values alive per thread and cache,
//! also after they left the shard, until the thread replaces them; the shared LRU learns of
//! front hits only every [`PROMOTE_EVERY`] hits of an entry, which keeps a hot entry from being
//! evicted without writing the shared list on every hit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

use super::cached::Cached;

/// The most entries one thread's front of one cache holds (and never more than the cache's
/// capacity): enough for a request handler's working set, small enough that a service with
/// many threads and caches does not hold much memory in fronts.
pub(crate) const FRONT_CAPACITY: usize = 2048;

/// A front hit of an entry tells the shared LRU once every this many hits: rarely enough that
/// the shared list costs little per hit, often enough that a hot entry stays near its head.
pub(crate) const PROMOTE_EVERY: u32 = 64;

/// A full front is emptied after refusing this many copies per slot: twice its size in shard
/// hits it could not keep shows its copies no longer match what the thread reads.
const REFUSALS_PER_SLOT: usize = 2;

/// The version of one shard's map, on its own cache line: written only when the map changes,
/// read on every front hit.
#[derive(Debug, Default)]
pub(crate) struct Epoch(CachePadded<AtomicU64>);

impl Epoch {
    /// The current version. Acquire pairs with [`bump`](Epoch::bump): a reader that sees the
    /// new version also sees everything the changer did before it.
    #[inline]
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the map changed; called with the shard lock held.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// A hit as the shard handed it out: what a front needs to keep a copy.
pub(crate) struct Found<V> {
    pub value: Cached<V>,
    pub expires_at: Instant,
    /// When a hit should start a background reload (refresh ahead).
    pub refresh_at: Option<Instant>,
    /// The shard's epoch, read under the lock that found the entry.
    pub epoch: u64,
}

/// A front hit.
pub(crate) struct FrontHit<V> {
    pub value: Cached<V>,
    /// True when this hit should be passed on to the shared LRU.
    pub promote: bool,
    /// The entry's refresh time in ticks, when it has come (refresh ahead).
    pub refresh_due: Option<u64>,
}

/// One thread's copy of an entry, keyed in the front by the key's hash. Its times are in the
/// cache clock's ticks, compared on every hit without `Instant` arithmetic.
struct Slot<K, V> {
    key: K,
    value: Cached<V>,
    expires_at: u64,
    /// `u64::MAX` for none.
    refresh_at: u64,
    epoch: u64,
    hits: u32,
}

/// Keys of the front's map are the cache's own key hashes, already well mixed: hashing them
/// again would only cost time on the hit path.
#[derive(Default)]
struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else rather than drop it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One thread's front.
struct Local<K, V> {
    slots: HashMap<u64, Slot<K, V>, BuildHasherDefault<PassHasher>>,
    /// Copies refused since the front was last full and emptied.
    refused: usize,
}

impl<K, V> Default for Local<K, V> {
    fn default() -> Self {
        Local {
            slots: HashMap::default(),
            refused: 0,
        }
    }
}

/// One thread's front and its hit counter, found with one thread-local lookup.
struct Own<K, V> {
    local: RefCell<Local<K, V>>,
    /// Written by its thread only; read by any thread for the stats.
    hits: AtomicU64,
}

// SAFETY: `ThreadLocal` gives a thread its own `Own` through `get`/`get_or`; another thread
// reaches it only through `iter` (in `Front::hits`), which reads the atomic `hits` and never
// the `RefCell`, so the `RefCell` is only ever used by its own thread.
unsafe impl<K: Send, V: Send + Sync> Sync for Own<K, V> {}

/// The fronts of every thread that used one cache.
pub(crate) struct Front<K: Send, V: Send + Sync> {
    /// Padded so that two threads' fronts never share the line of their `RefCell` flag.
    locals: ThreadLocal<CachePadded<Own<K, V>>>,
    capacity: usize,
}

impl<K: Eq + Clone + Send, V: Send + Sync> Front<K, V> {
    /// Fronts of at most `min(cache_capacity, FRONT_CAPACITY)` entries per thread.
    pub fn new(cache_capacity: usize) -> Self {
        Front {
            locals: ThreadLocal::new(),
            capacity: cache_capacity.min(FRONT_CAPACITY),
        }
    }

    /// This thread's copy of `key` if it is still what the shard holds (same `epoch`) and
    /// fresh at `now` (in ticks); counts the hit. A copy found out of date is dropped, making room for
    /// a current one.
    #[inline]
    pub fn get(&self, hash: u64, key: &K, now: u64, epoch: &Epoch) -> Option<FrontHit<V>> {
        let own = self.locals.get()?;
        // `try_borrow_mut`: a key type whose `Eq` calls back into this cache gets a miss, not
        // a panic.
        let mut local = own.local.try_borrow_mut().ok()?;
        let slot = local.slots.get_mut(&hash)?;
        if slot.key != *key {
            return None; // another key with the same hash: leave it
        }
        if slot.epoch != epoch.current() || now >= slot.expires_at {
            local.slots.remove(&hash);
            return None;
        }
        slot.hits = slot.hits.wrapping_add(1);
        let hit = FrontHit {
            value: slot.value.clone(),
            promote: slot.hits % PROMOTE_EVERY == 0,
            refresh_due: (now >= slot.refresh_at).then_some(slot.refresh_at),
        };
        drop(local);
        // Only this thread writes its counter, so a plain load and store is exact and avoids
        // a locked read-modify-write on the hit path.
        let hits = &own.hits;
        hits.store(hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Some(hit)
    }

    /// Keeps a copy of a hit the shard handed out, if there is room; `ticks` turns its times
    /// into the cache clock's ticks.
    pub fn fill(&self, hash: u64, key: &K, found: &Found<V>, ticks: impl Fn(Instant) -> u64) {
        let own = self.locals.get_or(|| {
            CachePadded::new(Own {
                local: RefCell::new(Local::default()),
                hits: AtomicU64::new(0),
            })
        });
        let Ok(mut local) = own.local.try_borrow_mut() else {
            return;
        };
        if local.slots.len() >= self.capacity && !local.slots.contains_key(&hash) {
            // A full front whose copies still serve is worth keeping: refilling it on every
            // miss costs more than it saves when a thread's keys outnumber it. Only after
            // many refused copies is it dropped whole for the thread's current keys.
            local.refused += 1;
            if local.refused < self.capacity.saturating_mul(REFUSALS_PER_SLOT) {
                return;
            }
            local.slots.clear();
            local.refused = 0;
        }
        local.slots.insert(
            hash,
            Slot {
                key: key.clone(),
                value: found.value.clone(),
                expires_at: ticks(found.expires_at),
                refresh_at: found.refresh_at.map_or(u64::MAX, &ticks),
                epoch: found.epoch,
                hits: 0,
            },
        );
    }

    /// Front hits of every thread so far. Exact once the counting threads' hits happen before
    /// the call (same thread, or joined).
    pub fn hits(&self) -> u64 {
        self.locals
            .iter()
            .map(|own| own.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Entries in this thread's front (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.locals
            .get()
            .map_or(0, |own| own.local.borrow().slots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{EntityCache, ManualClock};
    use crate::{Error, Result};
    use std::sync::Arc;
    use std::time::Duration;

    fn text(c: &EntityCache<u32, String>, key: u32) -> Option<String> {
        c.get(&key)?.into_value().map(|v| (*v).clone())
    }

    fn found(v: u32, epoch: &Epoch, at: Instant) -> Found<u32> {
        Found {
            value: Cached::Value(Arc::new(v)),
            expires_at: at + Duration::from_secs(10),
            refresh_at: None,
            epoch: epoch.current(),
        }
    }

    /// The tests' tick line: nanoseconds since the first call.
    fn ticks(at: Instant) -> u64 {
        static ZERO: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let zero = *ZERO.get_or_init(|| Instant::now() - Duration::from_secs(1));
        at.saturating_duration_since(zero).as_nanos() as u64
    }

    fn value(hit: Option<FrontHit<u32>>) -> Option<u32> {
        hit.and_then(|h| h.value.into_value()).map(|v| *v)
    }

    #[test]
    fn a_copy_is_served_until_its_epoch_moves_or_it_expires() -> Result<()> {
        let (front, epoch, now) = (
            Front::<u32, u32>::new(100),
            Epoch::default(),
            Instant::now(),
        );
        assert!(front.get(1, &1, ticks(now), &epoch).is_none());
        front.fill(1, &1, &found(10, &epoch, now), ticks);
        assert_eq!(value(front.get(1, &1, ticks(now), &epoch)), Some(10));
        assert!(front.get(1, &2, ticks(now), &epoch).is_none()); // same hash, other key
        assert!(front
            .get(1, &1, ticks(now + Duration::from_secs(10)), &epoch)
            .is_none());
        epoch.bump();
        assert!(front.get(1, &1, ticks(now), &epoch).is_none());
        assert_eq!(front.hits(), 1);
        Ok(())
    }

    #[test]
    fn an_epoch_bumped_on_another_thread_is_seen_by_every_front() -> Result<()> {
        let (front, epoch, now) = (
            Front::<u32, u32>::new(100),
            Epoch::default(),
            Instant::now(),
        );
        std::thread::scope(|s| {
            let fill = || {
                front.fill(7, &7, &found(70, &epoch, now), ticks);
                value(front.get(7, &7, ticks(now), &epoch))
            };
            let filled = [s.spawn(fill), s.spawn(fill)].map(|h| h.join().ok().flatten());
            assert_eq!(filled, [Some(70), Some(70)]);
        });
        std::thread::scope(|s| {
            s.spawn(|| epoch.bump()); // the invalidating writer
        });
        std::thread::scope(|s| {
            let get = || front.get(7, &7, ticks(now), &epoch).is_none();
            let missed = [s.spawn(get), s.spawn(get)].map(|h| h.join().unwrap_or(false));
            assert_eq!(missed, [true, true]);
        });
        assert_eq!(front.hits(), 2); // summed over the threads
        Ok(())
    }

    #[test]
    fn promotion_is_asked_every_few_hits_and_a_full_front_refuses_then_starts_over() -> Result<()> {
        let (front, epoch, now) = (Front::<u32, u32>::new(2), Epoch::default(), Instant::now());
        front.fill(1, &1, &found(1, &epoch, now), ticks);
        let promotions = (0..PROMOTE_EVERY * 2)
            .filter_map(|_| front.get(1, &1, ticks(now), &epoch))
            .filter(|hit| hit.promote)
            .count();
        assert_eq!(promotions, 2);
        front.fill(2, &2, &found(2, &epoch, now), ticks);
        front.fill(2, &2, &found(2, &epoch, now), ticks); // a refill does not count against capacity
        assert_eq!(front.len(), 2);
        for _ in 1..2 * REFUSALS_PER_SLOT {
            front.fill(3, &3, &found(3, &epoch, now), ticks); // refused: the front is full
        }
        assert!(front.get(3, &3, ticks(now), &epoch).is_none());
        assert_eq!(front.len(), 2);
        front.fill(3, &3, &found(3, &epoch, now), ticks); // one refusal too many: start over
        assert_eq!(front.len(), 1);
        assert_eq!(value(front.get(3, &3, ticks(now), &epoch)), Some(3));
        // A copy found out of date leaves the front.
        front.fill(4, &4, &found(4, &epoch, now), ticks);
        epoch.bump();
        assert!(front.get(4, &4, ticks(now), &epoch).is_none());
        assert_eq!(front.len(), 1);
        Ok(())
    }

    #[test]
    fn front_copies_never_outlive_a_change_and_hits_count_on_every_thread() -> Result<()> {
        let clock = Arc::new(ManualClock::new());
        let c: EntityCache<u32, String> = EntityCache::builder("front")
            .capacity(10)
            .ttl(Duration::from_secs(60))
            .clock(clock.clone())
            .build()?;
        c.insert(1, "one".into());
        let c = &c;
        std::thread::scope(|s| -> Result<()> {
            // A reader whose front holds key 1 (the second get is a front hit) ...
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (back, done) = std::sync::mpsc::channel::<Vec<Option<String>>>();
            s.spawn(move || {
                let mut seen = vec![text(c, 1), text(c, 1)];
                for () in rx {
                    seen.push(text(c, 1));
                    let _ = back.send(seen.clone());
                }
            });
            // ... sees every change made on this thread once the change has returned.
            let step = |change: &dyn Fn()| -> Result<Vec<Option<String>>> {
                change();
                tx.send(()).map_err(Error::closure)?;
                done.recv().map_err(Error::closure)
            };
            step(&|| {})?;
            step(&|| {
                c.insert(1, "uno".into());
            })?;
            step(&|| {
                c.invalidate(&1);
            })?;
            step(&|| {
                c.insert(1, "eins".into());
            })?;
            step(&|| {
                c.invalidate_all();
            })?;
            step(&|| {
                c.insert(1, "één".into());
            })?;
            let seen = step(&|| clock.advance(Duration::from_secs(60)))?;
            let want = [
                Some("one"),
                Some("one"),
                Some("one"),
                Some("uno"),
                None,
                Some("eins"),
            ];
            let want: Vec<_> = want.into_iter().chain([None, Some("één"), None]).collect();
            assert_eq!(seen.iter().map(Option::as_deref).collect::<Vec<_>>(), want);
            Ok(())
        })?;
        let stats = c.stats(); // the reader's front hits are in, exactly: it has been joined
        assert_eq!((stats.hits, stats.misses, stats.expirations), (6, 3, 1));
        Ok(())
    }
}
