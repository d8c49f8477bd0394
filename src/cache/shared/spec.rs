//! The spec's side of the tier: a cache opts in where its types are known to serialize.

use std::hash::Hash;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::link::{Namespaces, Shared};
use crate::cache::spec::CacheSpec;

impl<K, V> CacheSpec<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + Serialize + 'static,
    V: Send + Sync + Serialize + DeserializeOwned + 'static,
{
    /// Puts the shared tier (Redis) behind this cache when the `Db` it is registered on has one
    /// ([`Config::redis`](crate::Config::redis)); keys and values are stored as JSON. A miss
    /// reads the tier before the loader, and a loaded value is stored there for the cache's TTL
    /// (negative entries for its negative TTL), unless an invalidation ran meanwhile. Commits
    /// drop the tier's entries before `write` returns.
    ///
    /// For values that are expensive to compute (aggregations, searches), not for rows: a
    /// loopback Redis round trip costs more than a SQLite primary-key read. Without a tier on
    /// the `Db` the cache is local only. Defaults to local only.
    pub fn shared_tier(mut self) -> Self {
        if self.shared.is_none() {
            self.shared = Some(Shared::json());
        }
        self
    }

    /// The namespaces of a key, which [`shared_tier`](CacheSpec::shared_tier) implies: dropping
    /// the tag `ns` (by a rule's [`Invalidation::Tag`](crate::cache::Invalidation::Tag) or
    /// [`EntityCache::shared_invalidate_tag`](crate::cache::EntityCache::shared_invalidate_tag))
    /// bumps the namespace's version in the tier, which drops all its keys for every process
    /// at once, with no scan. They are also the local cache's tags unless the spec sets
    /// [`tags`](CacheSpec::tags). Defaults to none.
    pub fn shared_namespaces(
        mut self,
        namespaces: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        let namespaces: Namespaces<K> = Arc::new(namespaces);
        if self.tagger.is_none() {
            let tags = Arc::clone(&namespaces);
            self = self.tags(move |key, _| tags(key));
        }
        let mut shared = self.shared.take().unwrap_or_else(Shared::json);
        shared.namespaces = Some(namespaces);
        self.shared = Some(shared);
        self
    }
}
