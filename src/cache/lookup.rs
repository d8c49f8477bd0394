//! The read path of an [`EntityCache`]: a `get` looks in this thread's front first, then in
//! the key's shard, and keeps a copy of a shard hit in the front.

use std::hash::Hash;
use std::time::Instant;

use super::cached::Cached;
use super::entity::EntityCache;
use super::front::Found;
use super::shard::Shard;

impl<K, V> EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// What the cache knows about `key`: `None` when it knows nothing (never cached, evicted,
    /// expired or invalidated), [`Cached::Absent`] for a fresh negative entry.
    pub fn get(&self, key: &K) -> Option<Cached<V>> {
        let hash = self.hash(key);
        let shard = self.shard_of(hash);
        // The front first, timed in ticks: the `Instant` is only needed past it.
        let now = self.clock.ticks();
        if let Some(hit) = self.front_hit(shard, hash, key, now) {
            return Some(hit);
        }
        self.shard_lookup(shard, hash, key, self.clock.instant_of(now))
    }

    /// What the cache holds for `key` at `now`, counted as a hit or a miss: from this thread's
    /// front, else from the key's shard (keeping a copy of a hit in the front).
    pub(crate) fn lookup(&self, key: &K, now: Instant) -> Option<Cached<V>> {
        let hash = self.hash(key);
        let shard = self.shard_of(hash);
        if let Some(hit) = self.front_hit(shard, hash, key, self.clock.ticks_of(now)) {
            return Some(hit);
        }
        self.shard_lookup(shard, hash, key, now)
    }

    fn shard_lookup(
        &self,
        shard: &Shard<K, V>,
        hash: u64,
        key: &K,
        now: Instant,
    ) -> Option<Cached<V>> {
        shard.prefetch_sketch(hash);
        let found = self
            .lock(shard)
            .lookup(key, hash, now, &shard.counters, &shard.epoch)?;
        Some(self.keep(shard, hash, key, found, now))
    }

    /// [`lookup`](Self::lookup) that counts a hit but not a miss, for a caller that goes on to
    /// a counted lookup on a miss: the async API looks on the calling task first, then loads
    /// on a reader thread, and a miss must be counted once.
    #[cfg(feature = "tokio")]
    pub(crate) fn lookup_hit(&self, key: &K) -> Option<Cached<V>> {
        let hash = self.hash(key);
        let shard = self.shard_of(hash);
        let ticks = self.clock.ticks();
        if let Some(hit) = self.front_hit(shard, hash, key, ticks) {
            return Some(hit);
        }
        let now = self.clock.instant_of(ticks);
        let found = {
            let mut state = self.lock(shard);
            if !state.is_fresh(key, now) {
                return None;
            }
            state.lookup(key, hash, now, &shard.counters, &shard.epoch)?
        };
        Some(self.keep(shard, hash, key, found, now))
    }

    /// This thread's front copy of `key`, if still current and fresh at `now` (in the clock's
    /// ticks); passes every few hits of an entry on to its shard's LRU order and starts a due
    /// refresh.
    #[inline]
    pub(crate) fn front_hit(
        &self,
        shard: &Shard<K, V>,
        hash: u64,
        key: &K,
        now: u64,
    ) -> Option<Cached<V>> {
        let hit = self.front.get(hash, key, now, &shard.epoch)?;
        if hit.promote {
            shard.state.lock().promote(key, hash);
        }
        // Checked here, inline: the hit path pays a test of `None`, not a call.
        if let Some(at) = hit.refresh_due {
            let at = self.clock.instant_of(at);
            self.refresh_if_due(shard, key, Some(at), self.clock.instant_of(now));
        }
        Some(hit.value)
    }

    /// Copies a hit the shard handed out into this thread's front and starts a due refresh;
    /// returns its value. Called with the shard lock released.
    pub(crate) fn keep(
        &self,
        shard: &Shard<K, V>,
        hash: u64,
        key: &K,
        found: Found<V>,
        now: Instant,
    ) -> Cached<V> {
        self.front
            .fill(hash, key, &found, |at| self.clock.ticks_of(at));
        if found.refresh_at.is_some() {
            self.refresh_if_due(shard, key, found.refresh_at, now);
        }
        found.value
    }
}
