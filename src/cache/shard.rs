//! One shard of an [`EntityCache`](super::EntityCache): an LRU map behind a TinyLFU admission
//! filter, its tag index, the loads in flight, a generation, the epoch of the per-thread fronts
//! and the counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;

use super::cached::Cached;
use super::flight::Flight;
use super::front::{Epoch, Found};
use super::removal::{Removal, RemovalCause};
use super::sketch::{FrequencySketch, SketchLines};
use super::stats::{add, ShardCounters};

/// A cached value, or the knowledge that the key has none.
pub(crate) struct Entry<V> {
    /// `None` for a negative entry.
    pub value: Option<Arc<V>>,
    pub expires_at: Instant,
    /// When a hit starts a background reload (refresh ahead); `None` without one.
    pub refresh_at: Option<Instant>,
    /// Kept in the entry so that evicting or removing it can unindex it without a scan; an empty
    /// boxed slice does not allocate, so untagged entries pay nothing.
    pub tags: Box<[Box<str>]>,
    /// The key's cache hash, kept so that the admission filter can weigh an eviction victim
    /// without hashing its key again.
    pub hash: u64,
    /// What the weigher said the entry costs, in bytes.
    pub weight: usize,
}

impl<V> Entry<V> {
    fn found(&self, epoch: &Epoch) -> Found<V> {
        Found {
            value: self.cached(),
            expires_at: self.expires_at,
            refresh_at: self.refresh_at,
            epoch: epoch.current(),
        }
    }

    fn cached(&self) -> Cached<V> {
        match &self.value {
            Some(value) => Cached::Value(Arc::clone(value)),
            None => Cached::Absent,
        }
    }

    fn into_cached(self) -> Cached<V> {
        match self.value {
            Some(value) => Cached::Value(value),
            None => Cached::Absent,
        }
    }
}

/// How many of a full shard's least recently used entries the admission filter looks at to
/// pick a victim (the least frequent of them): more than one brings the policy closer to LFU
/// on skewed traffic, for a short walk of the LRU list on an insert into a full shard. Each
/// look costs a sketch read (~70 instructions): 16 cost 1,100 instructions an insert, a third
/// of a cache miss's own cost. On the hit-ratio traces (examples/hit_ratio.rs) 4 gave 33.20%,
/// 66.22%, 89.90% and 43.17% against 16's 33.27%, 66.29%, 89.94% and 42.52% (8: between).
const VICTIM_SAMPLE: usize = 4;

/// What admitting a new key into a full shard takes.
enum Admission<K> {
    /// Room enough, or admission off: least recently used entries make room.
    Room,
    /// Evict this key first.
    Evict(K),
    /// The new key stays out.
    Refuse,
}

/// How a shard is bounded and what it keeps track of, from the cache's spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most entries.
    pub capacity: usize,
    /// The most bytes, as weighed (`usize::MAX` without a bound).
    pub max_bytes: usize,
    /// Whether a frequency sketch decides who stays when the shard is full.
    pub admission: bool,
    /// Whether removals are recorded for a listener.
    pub notify: bool,
}

/// A shard, aligned to its own cache lines so that threads working on different shards never
/// write the same line (the lock word and the hit counters live here).
#[repr(align(128))]
pub(crate) struct Shard<K, V> {
    pub state: Mutex<ShardState<K, V>>,
    /// Bumped by every invalidation before it removes anything; a load that saw an older value
    /// before calling its loader does not insert (the stale-fill guard).
    generation: AtomicU64,
    pub counters: ShardCounters,
    /// Moves with every change to the map, under the lock (see the `front` module); padded
    /// apart from the lock and counters so that front hits read a line nobody writes.
    pub epoch: Epoch,
    /// Where the admission sketch's counters lie, if admission is on.
    sketch_lines: Option<SketchLines>,
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    pub fn new(limits: Limits) -> Self {
        let sketch = limits
            .admission
            .then(|| FrequencySketch::new(limits.capacity));
        let sketch_lines = sketch.as_ref().map(FrequencySketch::lines);
        Shard {
            state: Mutex::new(ShardState {
                // Unbounded with no preallocation: a generous capacity costs nothing until it
                // fills, and `put` evicts by itself so that the tag index sees every eviction.
                lru: LruCache::unbounded_with_hasher(lru::DefaultHasher::default()),
                sketch,
                limits,
                bytes: 0,
                tags: BTreeMap::new(),
                flights: HashMap::new(),
                pending: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            counters: ShardCounters::default(),
            epoch: Epoch::default(),
            sketch_lines,
        }
    }

    /// Asks for the cache line of `hash`'s sketch counters, before the lock that counts them.
    #[inline]
    pub fn prefetch_sketch(&self, hash: u64) {
        if let Some(lines) = &self.sketch_lines {
            lines.prefetch(hash);
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

pub(crate) struct ShardState<K, V> {
    lru: LruCache<K, Entry<V>>,
    limits: Limits,
    /// The TinyLFU admission filter: a new key takes the place of the least recently used one
    /// only if it was asked for more often lately. `None` when admission is off (plain LRU).
    sketch: Option<FrequencySketch>,
    /// The weights of the entries held.
    bytes: usize,
    /// tag → keys carrying it in this shard. Chosen over scanning the entries on
    /// `invalidate_tag` because tag invalidations run on every write to a watched table and a
    /// scan would hold each shard lock for O(capacity); the index costs a key clone per tag on
    /// insert, i.e. on the miss path only. Ordered, so that `invalidate_prefix` visits only the
    /// tags that start with the prefix: O(log tags + matches), never a scan.
    tags: BTreeMap<Box<str>, HashSet<K>>,
    /// Loads in progress in this shard (single-flight), keyed by the key being loaded.
    pub flights: HashMap<K, Arc<Flight<V>>>,
    /// Removals the listener has not been told of yet; the cache drains them after releasing
    /// the lock, so that a listener that uses the cache cannot deadlock.
    pub pending: Vec<Removal<K, V>>,
}

impl<K: Hash + Eq + Clone, V> ShardState<K, V> {
    /// The fresh entry for `key`, marked most recently used; an expired entry is dropped and
    /// reported as a miss. Every lookup, hit or miss, counts towards the key's frequency.
    pub fn lookup(
        &mut self,
        key: &K,
        hash: u64,
        now: Instant,
        counters: &ShardCounters,
        epoch: &Epoch,
    ) -> Option<Found<V>> {
        if let Some(sketch) = &mut self.sketch {
            sketch.increment(hash);
        }
        match self.lru.get(key) {
            Some(entry) if now < entry.expires_at => {
                add(&counters.hits, 1);
                return Some(entry.found(epoch));
            }
            Some(_) => {
                self.take(key, epoch, RemovalCause::Expired);
                add(&counters.expirations, 1);
            }
            None => {}
        }
        add(&counters.misses, 1);
        None
    }

    /// Marks `key` most recently used, for hits served by a front (one call stands for many
    /// hits, so it counts once towards the frequency: enough to keep a hot key admitted).
    pub fn promote(&mut self, key: &K, hash: u64) {
        if let Some(sketch) = &mut self.sketch {
            sketch.increment(hash);
        }
        self.lru.promote(key);
    }

    /// Whether `key` has a fresh entry; neither counted nor promoted (for `warm`).
    pub fn is_fresh(&self, key: &K, now: Instant) -> bool {
        self.lru.peek(key).is_some_and(|e| now < e.expires_at)
    }

    /// Whether `key`'s entry is fresh and past its refresh point.
    pub fn refresh_due(&self, key: &K, now: Instant) -> bool {
        self.lru
            .peek(key)
            .is_some_and(|e| now < e.expires_at && e.refresh_at.is_some_and(|at| now >= at))
    }

    /// Inserts or replaces the entry for `key`. A new key of a full shard first has to pass the
    /// admission filter against the least recently used entry (when admission is on); then
    /// least recently used entries make room. Returns whether the entry went in.
    pub fn put(
        &mut self,
        key: K,
        entry: Entry<V>,
        counters: &ShardCounters,
        epoch: &Epoch,
    ) -> bool {
        let replaced = self.take(&key, epoch, RemovalCause::Replaced);
        let victim = if replaced {
            None
        } else {
            match self.admit(&entry) {
                Admission::Room => None,
                Admission::Evict(victim) => Some(victim),
                Admission::Refuse => {
                    add(&counters.evictions, 1);
                    self.record(key, entry.into_cached(), RemovalCause::Size);
                    return false;
                }
            }
        };
        // Bumped before the map changes: no front copies anything while the lock is held, so
        // the bump covers the whole change, also one cut short by a panic in `Hash` or `Clone`.
        epoch.bump();
        if let Some(victim) = victim {
            if let Some((victim, old)) = self.lru.pop_entry(&victim) {
                self.unindex(&victim, &old.tags);
                self.bytes -= old.weight;
                add(&counters.evictions, 1);
                self.record(victim, old.into_cached(), RemovalCause::Size);
            }
        }
        while !self.lru.is_empty()
            && (self.lru.len() >= self.limits.capacity
                || self.bytes.saturating_add(entry.weight) > self.limits.max_bytes)
        {
            self.evict_lru(counters);
        }
        for tag in &entry.tags {
            match self.tags.get_mut(&**tag) {
                Some(keys) => {
                    keys.insert(key.clone());
                }
                None => {
                    self.tags.insert(tag.clone(), HashSet::from([key.clone()]));
                }
            }
        }
        self.bytes += entry.weight;
        self.lru.push(key, entry);
        true
    }

    /// Whether a new entry may take a place: always while there is room (LRU eviction makes
    /// it); in a full shard only if it fits at all and, with admission on, its key was asked
    /// for more often lately than the victim: the least often asked for of the
    /// [`VICTIM_SAMPLE`] least recently used entries (ties keep the incumbent, which is what
    /// keeps a scan out).
    fn admit(&self, entry: &Entry<V>) -> Admission<K> {
        if entry.weight > self.limits.max_bytes {
            return Admission::Refuse;
        }
        let full = self.lru.len() >= self.limits.capacity
            || self.bytes.saturating_add(entry.weight) > self.limits.max_bytes;
        let Some(sketch) = self.sketch.as_ref().filter(|_| full) else {
            return Admission::Room;
        };
        let victim = self
            .lru
            .iter()
            .rev()
            .take(VICTIM_SAMPLE)
            .map(|(key, e)| (sketch.frequency(e.hash), key))
            .min_by_key(|(frequency, _)| *frequency);
        match victim {
            Some((frequency, key)) if sketch.frequency(entry.hash) > frequency => {
                Admission::Evict(key.clone())
            }
            Some(_) => Admission::Refuse,
            None => Admission::Room,
        }
    }

    /// Evicts the least recently used entry; returns its weight (0 when the shard is empty).
    fn evict_lru(&mut self, counters: &ShardCounters) -> usize {
        let Some((key, entry)) = self.lru.pop_lru() else {
            return 0;
        };
        self.unindex(&key, &entry.tags);
        self.bytes -= entry.weight;
        add(&counters.evictions, 1);
        let weight = entry.weight;
        self.record(key, entry.into_cached(), RemovalCause::Size);
        weight
    }

    /// Evicts least recently used entries until `bytes` are freed or the shard is empty; returns
    /// the bytes freed (for the manager's `memory_limit`).
    pub fn shrink(&mut self, bytes: usize, counters: &ShardCounters, epoch: &Epoch) -> usize {
        let mut freed = 0;
        if bytes > 0 && !self.lru.is_empty() {
            epoch.bump();
        }
        while freed < bytes && !self.lru.is_empty() {
            freed += self.evict_lru(counters);
        }
        freed
    }

    /// Drops the entry for `key`; true when there was one.
    pub fn remove(&mut self, key: &K, epoch: &Epoch, cause: RemovalCause) -> bool {
        self.take(key, epoch, cause)
    }

    fn take(&mut self, key: &K, epoch: &Epoch, cause: RemovalCause) -> bool {
        match self.lru.pop_entry(key) {
            Some((key, entry)) => {
                epoch.bump();
                self.unindex(&key, &entry.tags);
                self.bytes -= entry.weight;
                self.record(key, entry.into_cached(), cause);
                true
            }
            None => false,
        }
    }

    /// Drops every entry tagged `tag`; returns how many.
    pub fn remove_tag(&mut self, tag: &str, epoch: &Epoch, cause: RemovalCause) -> usize {
        let Some(keys) = self.tags.remove(tag) else {
            return 0;
        };
        keys.iter()
            .filter(|key| self.take(key, epoch, cause))
            .count()
    }

    /// Drops every entry with a tag that starts with `prefix`; returns how many. Walks only the
    /// matching part of the ordered tag index.
    pub fn remove_prefix(&mut self, prefix: &str, epoch: &Epoch, cause: RemovalCause) -> usize {
        let tags: Vec<Box<str>> = self
            .tags
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(tag, _)| tag.starts_with(prefix))
            .map(|(tag, _)| tag.clone())
            .collect();
        tags.iter()
            .map(|tag| self.remove_tag(tag, epoch, cause))
            .sum()
    }

    /// Drops every entry (loads in flight are left to the generation check); returns how many.
    pub fn clear(&mut self, epoch: &Epoch, cause: RemovalCause) -> usize {
        let n = self.lru.len();
        if n > 0 {
            epoch.bump();
        }
        if self.limits.notify {
            while let Some((key, entry)) = self.lru.pop_lru() {
                self.record(key, entry.into_cached(), cause);
            }
        }
        self.lru.clear();
        self.tags.clear();
        self.bytes = 0;
        n
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// The weights of the entries held, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn record(&mut self, key: K, value: Cached<V>, cause: RemovalCause) {
        if self.limits.notify {
            self.pending.push(Removal { key, value, cause });
        }
    }

    fn unindex(&mut self, key: &K, tags: &[Box<str>]) {
        for tag in tags {
            if let Some(keys) = self.tags.get_mut(&**tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.tags.remove(&**tag);
                }
            }
        }
    }

    /// Keys from least to most recently used (tests).
    #[cfg(test)]
    pub fn keys_lru_first(&self) -> Vec<K> {
        self.lru.iter().rev().map(|(k, _)| k.clone()).collect()
    }

    /// Number of distinct tags indexed (tests: the index must not leak).
    #[cfg(test)]
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use std::time::Duration;

    fn entry(v: u32, at: Instant, tags: &[&str]) -> Entry<u32> {
        Entry {
            value: Some(Arc::new(v)),
            expires_at: at + Duration::from_secs(10),
            refresh_at: None,
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
            hash: u64::from(v),
            weight: 1,
        }
    }

    fn limits(capacity: usize, admission: bool) -> Limits {
        Limits {
            capacity,
            max_bytes: usize::MAX,
            admission,
            notify: true,
        }
    }

    #[test]
    fn eviction_and_removal_keep_the_tag_index_clean() -> Result<()> {
        let shard = Shard::<u32, u32>::new(limits(2, false));
        let now = Instant::now();
        let mut st = shard.state.lock();
        st.put(1, entry(1, now, &["a", "b"]), &shard.counters, &shard.epoch);
        st.put(2, entry(2, now, &["b"]), &shard.counters, &shard.epoch);
        st.put(3, entry(3, now, &[]), &shard.counters, &shard.epoch); // evicts 1
        assert_eq!(st.keys_lru_first(), vec![2, 3]);
        assert_eq!(st.tag_count(), 1); // "a" went with key 1
        st.put(2, entry(20, now, &["c"]), &shard.counters, &shard.epoch); // replace: not an eviction
        assert_eq!(st.tag_count(), 1);
        assert_eq!(st.remove_tag("c", &shard.epoch, RemovalCause::Explicit), 1);
        assert_eq!(st.tag_count(), 0);
        assert_eq!(shard.counters.evictions.load(Ordering::Relaxed), 1);
        // Every change moved the epoch; a lookup or a removal of nothing did not.
        let epoch = shard.epoch.current();
        assert!(st
            .lookup(&3, 3, now, &shard.counters, &shard.epoch)
            .is_some());
        assert!(!st.remove(&9, &shard.epoch, RemovalCause::Explicit));
        assert_eq!(shard.epoch.current(), epoch);
        assert!(st.remove(&3, &shard.epoch, RemovalCause::Explicit));
        assert!(shard.epoch.current() > epoch);
        let causes: Vec<_> = st.pending.iter().map(|r| (r.key, r.cause)).collect();
        assert_eq!(
            causes,
            [
                (1, RemovalCause::Size),
                (2, RemovalCause::Replaced),
                (2, RemovalCause::Explicit),
                (3, RemovalCause::Explicit)
            ]
        );
        Ok(())
    }

    #[test]
    fn admission_keeps_a_frequent_key_against_a_newcomer() -> Result<()> {
        let shard = Shard::<u32, u32>::new(limits(2, true));
        let now = Instant::now();
        let mut st = shard.state.lock();
        for k in [1, 2] {
            st.put(k, entry(k, now, &[]), &shard.counters, &shard.epoch);
            for _ in 0..3 {
                st.lookup(&k, u64::from(k), now, &shard.counters, &shard.epoch);
            }
        }
        // 3 was asked for once: it does not displace 1 (asked for 3 times).
        st.lookup(&3, 3, now, &shard.counters, &shard.epoch);
        assert!(!st.put(3, entry(3, now, &[]), &shard.counters, &shard.epoch));
        assert_eq!(st.keys_lru_first(), vec![1, 2]);
        // Asked for more often than 1, it does.
        for _ in 0..4 {
            st.lookup(&3, 3, now, &shard.counters, &shard.epoch);
        }
        assert!(st.put(3, entry(3, now, &[]), &shard.counters, &shard.epoch));
        assert_eq!(st.keys_lru_first(), vec![2, 3]);
        Ok(())
    }

    #[test]
    fn weights_bound_the_shard_and_prefixes_drop_only_their_tags() -> Result<()> {
        let shard = Shard::<u32, u32>::new(Limits {
            max_bytes: 10,
            ..limits(100, false)
        });
        let now = Instant::now();
        let mut st = shard.state.lock();
        for k in 1..=4 {
            let tag = format!("user:{k}:");
            let e = Entry {
                weight: 4,
                ..entry(k, now, &[&tag])
            };
            st.put(k, e, &shard.counters, &shard.epoch);
        }
        assert_eq!((st.len(), st.bytes()), (2, 8));
        let big = Entry {
            weight: 11,
            ..entry(9, now, &[])
        };
        assert!(!st.put(9, big, &shard.counters, &shard.epoch));
        let e = Entry {
            weight: 4,
            ..entry(12, now, &["user:12:a"])
        };
        st.put(12, e, &shard.counters, &shard.epoch);
        assert_eq!(st.keys_lru_first(), vec![4, 12]); // 3 made room for 12
        assert_eq!(
            st.remove_prefix("user:1", &shard.epoch, RemovalCause::Explicit),
            1
        );
        assert_eq!(st.keys_lru_first(), vec![4]);
        assert_eq!(
            st.remove_prefix("user:4:", &shard.epoch, RemovalCause::Explicit),
            1
        );
        assert_eq!((st.len(), st.bytes(), st.tag_count()), (0, 0, 0));
        Ok(())
    }
}
