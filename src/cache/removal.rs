//! Why an entry left a cache, and the listener told of it.

use std::sync::Arc;

use serde::Serialize;

use super::cached::Cached;

/// Why an entry left the cache, as an [`on_removal`](super::CacheSpec::on_removal) listener is
/// told (moka's names).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RemovalCause {
    /// Its lifetime (the TTL, the negative TTL or `expire_after`'s) ran out.
    Expired,
    /// Evicted to keep the cache within its capacity, `max_bytes` or the manager's
    /// `memory_limit`, or refused by the admission filter.
    Size,
    /// Invalidated by a committed write (an [`InvalidationRule`](super::InvalidationRule), or
    /// a write by another process).
    Write,
    /// Invalidated by hand (`invalidate`, `invalidate_tag`, `invalidate_prefix`,
    /// `invalidate_all`).
    Explicit,
    /// Replaced by a new value for the same key.
    Replaced,
}

impl RemovalCause {
    /// True when the cache removed the entry by itself (expiry or size), not a caller or a
    /// write: moka's `was_evicted`.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Size)
    }
}

/// The listener of a cache's removals.
pub(crate) type RemovalListener<K, V> = Arc<dyn Fn(&K, &Cached<V>, RemovalCause) + Send + Sync>;

/// A removal recorded under a shard lock, told to the listener after the lock is released.
pub(crate) struct Removal<K, V> {
    pub key: K,
    pub value: Cached<V>,
    pub cause: RemovalCause,
}
