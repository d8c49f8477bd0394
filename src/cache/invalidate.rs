//! Invalidation: by key, tag, tag prefix or all, each behind the stale-fill guard and each
//! telling the removal listener why.

use std::hash::Hash;

use super::entity::EntityCache;
use super::removal::RemovalCause;
use super::stats::add;

impl<K, V> EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Drops the entry for `key` after bumping its shard's generation (so that a load of it in
    /// progress does not insert); true when there was an entry.
    pub fn invalidate(&self, key: &K) -> bool {
        self.invalidate_by(key, RemovalCause::Explicit)
    }

    /// Drops every entry tagged `tag`; returns how many. Bumps every shard's generation first,
    /// since a load whose value would carry the tag may be running in any shard.
    pub fn invalidate_tag(&self, tag: &str) -> usize {
        self.invalidate_tag_by(tag, RemovalCause::Explicit)
    }

    /// Drops every entry with a tag that starts with `prefix` (`"user:42:"` drops
    /// `"user:42:profile"` and `"user:42:orders"`); returns how many. Bumps every shard's
    /// generation first, like [`invalidate_tag`](EntityCache::invalidate_tag).
    ///
    /// Each shard keeps its tags in an ordered map (tag → keys), so this visits only the tags
    /// that start with `prefix`: O(log tags + matches) per shard, never a scan of the entries.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        self.bump_generation_all();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let n = self
                .lock(shard)
                .remove_prefix(prefix, &shard.epoch, RemovalCause::Explicit);
            add(&shard.counters.invalidations, n as u64);
            removed += n;
        }
        removed
    }

    /// Drops every entry after bumping every shard's generation; returns how many.
    pub fn invalidate_all(&self) -> usize {
        self.invalidate_all_by(RemovalCause::Explicit)
    }

    /// [`invalidate`](EntityCache::invalidate), telling the listener `cause`.
    pub(crate) fn invalidate_by(&self, key: &K, cause: RemovalCause) -> bool {
        let shard = self.shard(key);
        shard.bump_generation();
        let removed = self.lock(shard).remove(key, &shard.epoch, cause);
        add(&shard.counters.invalidations, u64::from(removed));
        removed
    }

    /// [`invalidate_tag`](EntityCache::invalidate_tag), telling the listener `cause`.
    pub(crate) fn invalidate_tag_by(&self, tag: &str, cause: RemovalCause) -> usize {
        self.bump_generation_all();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let n = self.lock(shard).remove_tag(tag, &shard.epoch, cause);
            add(&shard.counters.invalidations, n as u64);
            removed += n;
        }
        removed
    }

    /// [`invalidate_all`](EntityCache::invalidate_all), telling the listener `cause`.
    pub(crate) fn invalidate_all_by(&self, cause: RemovalCause) -> usize {
        self.bump_generation_all();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let n = self.lock(shard).clear(&shard.epoch, cause);
            add(&shard.counters.invalidations, n as u64);
            removed += n;
        }
        removed
    }

    /// Moves every shard's generation, so that no load that started before this call inserts
    /// its value. A writer calls it after COMMIT and before invalidating (see the type's docs).
    pub fn bump_generation_all(&self) {
        for shard in self.shards.iter() {
            shard.bump_generation();
        }
    }

    /// Evicts the least recently used entries, shard by shard, until `bytes` are freed or the
    /// cache is empty; returns the bytes freed (the manager's `memory_limit`).
    pub(crate) fn shrink(&self, bytes: usize) -> usize {
        let share = bytes.div_ceil(self.shards.len()).max(1);
        let mut freed = 0;
        loop {
            let before = freed;
            for shard in self.shards.iter() {
                if freed >= bytes {
                    return freed;
                }
                freed += self.lock(shard).shrink(
                    share.min(bytes - freed),
                    &shard.counters,
                    &shard.epoch,
                );
            }
            if freed == before {
                return freed;
            }
        }
    }
}
