//! One shard of an [`EntityCache`](super::EntityCache): an LRU map, its tag index, the loads in
//! flight, a generation, the epoch of the per-thread fronts and the counters.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;

use super::cached::Cached;
use super::flight::Flight;
use super::front::{Epoch, Found};
use super::stats::{add, ShardCounters};

/// A cached value, or the knowledge that the key has none.
pub(crate) struct Entry<V> {
    /// `None` for a negative entry.
    pub value: Option<Arc<V>>,
    pub expires_at: Instant,
    /// Kept in the entry so that evicting or removing it can unindex it without a scan; an empty
    /// boxed slice does not allocate, so untagged entries pay nothing.
    pub tags: Box<[Box<str>]>,
}

impl<V> Entry<V> {
    fn found(&self, epoch: &Epoch) -> Found<V> {
        Found {
            value: match &self.value {
                Some(value) => Cached::Value(Arc::clone(value)),
                None => Cached::Absent,
            },
            expires_at: self.expires_at,
            epoch: epoch.current(),
        }
    }
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
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    pub fn new(capacity: usize) -> Self {
        Shard {
            state: Mutex::new(ShardState {
                // Unbounded with no preallocation: a generous capacity costs nothing until it
                // fills, and `put` evicts by itself so that the tag index sees every eviction.
                lru: LruCache::unbounded_with_hasher(lru::DefaultHasher::default()),
                capacity,
                tags: HashMap::new(),
                flights: HashMap::new(),
            }),
            generation: AtomicU64::new(0),
            counters: ShardCounters::default(),
            epoch: Epoch::default(),
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
    capacity: usize,
    /// tag → keys carrying it in this shard. Chosen over scanning the entries on
    /// `invalidate_tag` because tag invalidations run on every write to a watched table and a
    /// scan would hold each shard lock for O(capacity); the index costs a key clone per tag on
    /// insert, i.e. on the miss path only.
    tags: HashMap<Box<str>, HashSet<K>>,
    /// Loads in progress in this shard (single-flight), keyed by the key being loaded.
    pub flights: HashMap<K, Arc<Flight<V>>>,
}

impl<K: Hash + Eq + Clone, V> ShardState<K, V> {
    /// The fresh entry for `key`, marked most recently used; an expired entry is dropped and
    /// reported as a miss.
    pub fn lookup(
        &mut self,
        key: &K,
        now: Instant,
        counters: &ShardCounters,
        epoch: &Epoch,
    ) -> Option<Found<V>> {
        match self.lru.get(key) {
            Some(entry) if now < entry.expires_at => {
                add(&counters.hits, 1);
                return Some(entry.found(epoch));
            }
            Some(_) => {
                self.remove(key, epoch);
                add(&counters.expirations, 1);
            }
            None => {}
        }
        add(&counters.misses, 1);
        None
    }

    /// Marks `key` most recently used, for a hit served by a front; not counted.
    pub fn promote(&mut self, key: &K) {
        self.lru.promote(key);
    }

    /// Whether `key` has a fresh entry; neither counted nor promoted (for `warm`).
    pub fn is_fresh(&self, key: &K, now: Instant) -> bool {
        self.lru.peek(key).is_some_and(|e| now < e.expires_at)
    }

    /// Inserts or replaces the entry for `key`, evicting the least recently used entry of a
    /// full shard.
    pub fn put(&mut self, key: K, entry: Entry<V>, counters: &ShardCounters, epoch: &Epoch) {
        // Bumped first: no front copies anything while the lock is held, so the bump covers
        // the whole change, also one cut short by a panic in the key's `Hash` or `Clone`.
        epoch.bump();
        if !self.take(&key, epoch) && self.lru.len() >= self.capacity {
            if let Some((old_key, old)) = self.lru.pop_lru() {
                self.unindex(&old_key, &old.tags);
                add(&counters.evictions, 1);
            }
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
        self.lru.push(key, entry);
    }

    /// Drops the entry for `key`; true when there was one.
    pub fn remove(&mut self, key: &K, epoch: &Epoch) -> bool {
        self.take(key, epoch)
    }

    fn take(&mut self, key: &K, epoch: &Epoch) -> bool {
        match self.lru.pop(key) {
            Some(entry) => {
                epoch.bump();
                self.unindex(key, &entry.tags);
                true
            }
            None => false,
        }
    }

    /// Drops every entry tagged `tag`; returns how many.
    pub fn remove_tag(&mut self, tag: &str, epoch: &Epoch) -> usize {
        let Some(keys) = self.tags.remove(tag) else {
            return 0;
        };
        keys.iter().filter(|key| self.take(key, epoch)).count()
    }

    /// Drops every entry (loads in flight are left to the generation check); returns how many.
    pub fn clear(&mut self, epoch: &Epoch) -> usize {
        let n = self.lru.len();
        if n > 0 {
            epoch.bump();
        }
        self.lru.clear();
        self.tags.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.lru.len()
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
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
        }
    }

    #[test]
    fn eviction_and_removal_keep_the_tag_index_clean() -> Result<()> {
        let shard = Shard::<u32, u32>::new(2);
        let now = Instant::now();
        let mut st = shard.state.lock();
        st.put(1, entry(1, now, &["a", "b"]), &shard.counters, &shard.epoch);
        st.put(2, entry(2, now, &["b"]), &shard.counters, &shard.epoch);
        st.put(3, entry(3, now, &[]), &shard.counters, &shard.epoch); // evicts 1
        assert_eq!(st.keys_lru_first(), vec![2, 3]);
        assert_eq!(st.tag_count(), 1); // "a" went with key 1
        st.put(2, entry(20, now, &["c"]), &shard.counters, &shard.epoch); // replace: not an eviction
        assert_eq!(st.tag_count(), 1);
        assert_eq!(st.remove_tag("c", &shard.epoch), 1);
        assert_eq!(st.tag_count(), 0);
        assert_eq!(shard.counters.evictions.load(Ordering::Relaxed), 1);
        // Every change moved the epoch; a lookup or a removal of nothing did not.
        let epoch = shard.epoch.current();
        assert!(st.lookup(&3, now, &shard.counters, &shard.epoch).is_some());
        assert!(!st.remove(&9, &shard.epoch));
        assert_eq!(shard.epoch.current(), epoch);
        assert!(st.remove(&3, &shard.epoch));
        assert!(shard.epoch.current() > epoch);
        Ok(())
    }
}
