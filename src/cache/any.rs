//! `AnyCache`: caches of different key and value types behind one trait object.

use std::any::Any;
use std::hash::Hash;

use super::entity::EntityCache;
use super::removal::RemovalCause;
use super::rule::Invalidation;
use super::stats::CacheStats;

/// The type-erased face of an [`EntityCache`], so that one registry (the cache manager, the
/// report) can hold caches of different `K` and `V` as `Arc<dyn AnyCache>`.
pub trait AnyCache: Send + Sync {
    /// The cache's name.
    fn name(&self) -> &str;

    /// Drops the entry for `key` (see [`EntityCache::invalidate`]); false when `key` is not of
    /// the cache's key type, in which case nothing is done.
    fn invalidate_key(&self, key: &dyn Any) -> bool;

    /// Drops every entry tagged `tag`; returns how many.
    fn invalidate_tag(&self, tag: &str) -> usize;

    /// Drops every entry; returns how many.
    fn invalidate_all(&self) -> usize;

    /// Moves every shard generation (see the stale-fill guard on [`EntityCache`]).
    fn bump_generation_all(&self);

    /// A snapshot of the counters.
    fn stats(&self) -> CacheStats;

    /// Applies an invalidation that a committed write caused (the removal listener hears
    /// [`RemovalCause::Write`]); returns how many entries were dropped. An invalidation of
    /// another cache's name is applied all the same: the caller picks the cache.
    fn invalidate_for_write(&self, invalidation: &Invalidation) -> usize;

    /// Evicts least recently used entries until `bytes` (as weighed) are freed or the cache is
    /// empty; returns the bytes freed. The manager's memory limit shrinks caches with it.
    fn shrink_bytes(&self, bytes: usize) -> usize;

    /// The cache itself, for downcasting back to `EntityCache<K, V>`.
    fn as_any(&self) -> &dyn Any;
}

impl<K, V> AnyCache for EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn name(&self) -> &str {
        EntityCache::name(self)
    }

    fn invalidate_key(&self, key: &dyn Any) -> bool {
        match key.downcast_ref::<K>() {
            Some(key) => {
                self.invalidate(key);
                true
            }
            None => false,
        }
    }

    fn invalidate_tag(&self, tag: &str) -> usize {
        EntityCache::invalidate_tag(self, tag)
    }

    fn invalidate_all(&self) -> usize {
        EntityCache::invalidate_all(self)
    }

    fn bump_generation_all(&self) {
        EntityCache::bump_generation_all(self)
    }

    fn stats(&self) -> CacheStats {
        EntityCache::stats(self)
    }

    fn invalidate_for_write(&self, invalidation: &Invalidation) -> usize {
        let cause = RemovalCause::Write;
        match invalidation {
            Invalidation::Key { key, .. } => match (&**key as &dyn Any).downcast_ref::<K>() {
                Some(key) => usize::from(self.invalidate_by(key, cause)),
                None => 0,
            },
            Invalidation::Tag { tag, .. } => self.invalidate_tag_by(tag, cause),
            Invalidation::All { .. } => self.invalidate_all_by(cause),
        }
    }

    fn shrink_bytes(&self, bytes: usize) -> usize {
        self.shrink(bytes)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use std::sync::Arc;

    #[test]
    fn caches_of_different_types_share_one_handle() -> Result<()> {
        let users: Arc<EntityCache<i64, String>> = Arc::new(EntityCache::builder("users").build()?);
        let days: Arc<EntityCache<(i64, u32), u64>> =
            Arc::new(EntityCache::builder("days").build()?);
        users.insert_tagged(1, "Ada".into(), ["user:1"]);
        days.insert_tagged((1, 20), 5, ["user:1"]);
        days.insert((2, 20), 7);
        let all: Vec<Arc<dyn AnyCache>> = vec![users.clone(), days.clone()];

        assert_eq!(
            all.iter()
                .map(|c| c.invalidate_tag("user:1"))
                .sum::<usize>(),
            2
        );
        assert!(all[1].invalidate_key(&(2_i64, 20_u32)));
        assert!(days.is_empty());
        assert!(!all[0].invalidate_key(&"not an i64"));
        assert_eq!(all[0].stats().name, "users");
        let typed = all[0].as_any().downcast_ref::<EntityCache<i64, String>>();
        assert!(typed.is_some());
        Ok(())
    }
}
