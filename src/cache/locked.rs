//! `Locked`: a shard's state under its lock, which tells the removal listener and the memory
//! budget what changed once the lock is released.

use std::hash::Hash;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

use parking_lot::MutexGuard;

use super::entity::EntityCache;
use super::shard::{Shard, ShardState};

/// A shard lock held for a cache. On drop it releases the lock first and only then calls the
/// removal listener with what was removed meanwhile, so that a listener that reads or writes
/// the cache cannot deadlock on the shard; then it passes the change in bytes to the memory
/// budget, which may shrink caches (also with no lock held).
pub(crate) struct Locked<'a, K: Hash + Eq + Clone + Send + Sync + 'static, V: Send + Sync + 'static>
{
    cache: &'a EntityCache<K, V>,
    guard: ManuallyDrop<MutexGuard<'a, ShardState<K, V>>>,
    bytes_before: usize,
}

impl<'a, K, V> Locked<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub fn new(cache: &'a EntityCache<K, V>, shard: &'a Shard<K, V>) -> Self {
        let guard = shard.state.lock();
        let bytes_before = guard.bytes();
        Locked {
            cache,
            guard: ManuallyDrop::new(guard),
            bytes_before,
        }
    }
}

impl<K, V> Deref for Locked<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    type Target = ShardState<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl<K, V> DerefMut for Locked<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl<K, V> Drop for Locked<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn drop(&mut self) {
        let pending = if self.guard.pending.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut self.guard.pending)
        };
        let bytes_after = self.guard.bytes();
        // SAFETY: the guard is dropped exactly once, here, and not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        // Not while unwinding from a panic under the lock: a listener that panicked too would
        // abort the process.
        if let Some(listener) = self
            .cache
            .listener
            .as_ref()
            .filter(|_| !std::thread::panicking())
        {
            for removal in pending {
                listener(&removal.key, &removal.value, removal.cause);
            }
        }
        if bytes_after != self.bytes_before {
            if let Some(budget) = self.cache.budget.get() {
                budget.changed(self.bytes_before, bytes_after);
            }
        }
    }
}
