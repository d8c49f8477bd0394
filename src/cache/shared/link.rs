//! `Shared`: what ties one cache to the tier: how its keys and values are encoded, the
//! namespaces of a key, the read path L1 → Redis → loader, and the invalidations a commit sends.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::script::{self, Names};
use super::tier::{Lookup, Op, SharedTier};
use crate::cache::entity::EntityCache;
use crate::cache::rule::Invalidation;
use crate::error::Result;

/// The namespaces of a key (see [`CacheSpec::shared_namespaces`](crate::cache::CacheSpec::shared_namespaces)).
pub(crate) type Namespaces<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// The least time a key's or namespace's counter outlives its last bump: well past any load
/// that could still carry its old version.
const MIN_COUNTER_TTL: Duration = Duration::from_secs(3600);

/// The tier side of one cache: set up by the spec (which knows the types serialize), given its
/// tier and TTLs when the cache is registered on a `Db` with a tier.
pub(crate) struct Shared<K, V> {
    key: fn(&K) -> Option<String>,
    encode: fn(&V) -> Option<Vec<u8>>,
    decode: fn(&[u8]) -> Option<V>,
    pub(crate) namespaces: Option<Namespaces<K>>,
    tier: Option<Arc<SharedTier>>,
    cache: String,
    ttl: Duration,
    negative_ttl: Duration,
}

fn encode_key<K: Serialize>(key: &K) -> Option<String> {
    serde_json::to_string(key).ok()
}

fn encode_value<V: Serialize>(value: &V) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}

fn decode_value<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
    serde_json::from_slice(bytes).ok()
}

/// A stored entry is `v` and the value's JSON, or `-` alone for "known absent".
const ABSENT: &[u8] = b"-";
/// The first byte of a stored value.
const VALUE: u8 = b'v';

impl<K, V> Shared<K, V>
where
    K: Serialize,
    V: Serialize + DeserializeOwned,
{
    /// The tier side of a cache of serializable keys and values, JSON-encoded.
    pub(crate) fn json() -> Self {
        Shared {
            key: encode_key::<K>,
            encode: encode_value::<V>,
            decode: decode_value::<V>,
            namespaces: None,
            tier: None,
            cache: String::new(),
            ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
        }
    }
}

impl<K, V> Shared<K, V> {
    /// Ties the cache called `cache` to `tier`, with its TTLs.
    pub(crate) fn attach(
        &mut self,
        tier: Arc<SharedTier>,
        cache: &str,
        ttl: Duration,
        negative_ttl: Duration,
    ) {
        self.tier = Some(tier);
        self.cache = cache.to_owned();
        self.ttl = ttl;
        self.negative_ttl = negative_ttl;
    }

    /// The names of `key`, or `None` when the cache has no tier or the key does not encode.
    fn names(&self, key: &K) -> Option<(&SharedTier, Names)> {
        let tier = self.tier.as_deref()?;
        let encoded = (self.key)(key)?;
        let namespaces = match &self.namespaces {
            Some(f) => f(key),
            None => Vec::new(),
        };
        Some((
            tier,
            Names::new(tier.prefix(), &self.cache, &encoded, &namespaces),
        ))
    }

    /// How long a counter lives past its last bump: past every value written under it.
    fn counter_ttl_ms(&self) -> u64 {
        let ttl = (self.ttl * 2).max(MIN_COUNTER_TTL);
        ttl.as_millis().min(u128::from(u64::MAX)) as u64
    }

    /// `key`'s value: from the tier, else from `loader` (and then stored in the tier if no
    /// invalidation ran meanwhile). The caller runs this after reading its local generation.
    pub(crate) fn load<F>(&self, key: &K, loader: F) -> Result<Option<V>>
    where
        F: FnOnce(&K) -> Result<Option<V>>,
    {
        let Some((tier, names)) = self.names(key) else {
            return loader(key);
        };
        let versions = match tier.lookup(&names) {
            Lookup::Hit(bytes, versions) => match self.decode_entry(&bytes) {
                Some(value) => return Ok(value),
                // Written by another version of the service: load and overwrite it.
                None => Some(versions),
            },
            Lookup::Miss(versions) => Some(versions),
            Lookup::Unavailable => None,
        };
        let value = loader(key)?;
        if let Some(versions) = versions {
            let (bytes, ttl) = match &value {
                Some(v) => match (self.encode)(v) {
                    Some(json) => ([&[VALUE][..], &json].concat(), self.ttl),
                    None => return Ok(value),
                },
                None => (ABSENT.to_vec(), self.negative_ttl),
            };
            if !ttl.is_zero() {
                tier.fill(&names, &versions, &bytes, ttl);
            }
        }
        Ok(value)
    }

    fn decode_entry(&self, bytes: &[u8]) -> Option<Option<V>> {
        match bytes.split_first()? {
            (&VALUE, json) => (self.decode)(json).map(Some),
            _ if bytes == ABSENT => Some(None),
            _ => None,
        }
    }
}

impl<K: 'static, V> Shared<K, V> {
    /// Appends what `drop` asks of the tier.
    fn plan(&self, drop: &Invalidation, ops: &mut Vec<Op>) {
        let Some(tier) = self.tier.as_deref() else {
            return;
        };
        match drop {
            Invalidation::Key { key, .. } => {
                if let Some(key) = (**key).downcast_ref::<K>() {
                    self.plan_key(key, ops);
                }
            }
            Invalidation::Tag { tag, .. } => ops.push(Op::Bump {
                counter: script::namespace(tier.prefix(), &self.cache, tag),
                ttl_ms: Some(self.counter_ttl_ms()),
            }),
            Invalidation::All { .. } => ops.push(Op::Bump {
                counter: script::cache_version(tier.prefix(), &self.cache),
                ttl_ms: None,
            }),
        }
    }

    fn plan_key(&self, key: &K, ops: &mut Vec<Op>) {
        if let Some((_, names)) = self.names(key) {
            ops.push(Op::DropKey {
                names,
                ttl_ms: self.counter_ttl_ms(),
            });
        }
    }

    fn send(&self, ops: &[Op]) {
        if let Some(tier) = &self.tier {
            tier.invalidate(ops);
        }
    }
}

/// The type-erased side the cache manager sends a commit's invalidations through.
pub(crate) trait SharedDrops: Send + Sync {
    /// Appends what `drop` asks of the tier.
    fn plan(&self, drop: &Invalidation, ops: &mut Vec<Op>);
    /// The tier the ops go to.
    fn tier(&self) -> Option<&Arc<SharedTier>>;
}

impl<K: Send + Sync + 'static, V: Send + Sync> SharedDrops for Shared<K, V> {
    fn plan(&self, drop: &Invalidation, ops: &mut Vec<Op>) {
        Shared::plan(self, drop, ops)
    }

    fn tier(&self) -> Option<&Arc<SharedTier>> {
        self.tier.as_ref()
    }
}

/// Sends the tier's part of a commit's invalidations, before the local caches drop theirs:
/// a local load that starts between the two then either finds the tier already invalidated
/// or has its local fill refused by the generation bump that follows.
pub(crate) fn invalidate(drops: &[(&dyn SharedDrops, &Invalidation)]) {
    let mut ops = Vec::new();
    let mut tier = None;
    for (shared, drop) in drops {
        shared.plan(drop, &mut ops);
        tier = tier.or(shared.tier());
    }
    if let Some(tier) = tier {
        // Every shared cache of a `Db` uses the `Db`'s one tier.
        tier.invalidate(&ops);
    }
}

impl<K, V> EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The tier side of this cache, for the manager, if it is shared.
    pub(crate) fn shared_drops(&self) -> Option<Arc<dyn SharedDrops>> {
        let shared = self.shared.as_ref()?;
        Some(Arc::clone(shared) as Arc<dyn SharedDrops>)
    }

    /// Whether this cache reads and fills a shared tier.
    pub fn is_shared(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.tier.is_some())
    }

    /// Drops `key` from the shared tier (for every process), then from this cache
    /// ([`invalidate`](EntityCache::invalidate)). Commits do this themselves through the
    /// rules; this is for changes the rules do not see.
    pub fn shared_invalidate(&self, key: &K) -> bool {
        if let Some(shared) = &self.shared {
            let mut ops = Vec::new();
            shared.plan_key(key, &mut ops);
            shared.send(&ops);
        }
        self.invalidate(key)
    }

    /// Bumps the namespace `namespace` in the shared tier, which drops every key whose
    /// [`shared_namespaces`](crate::cache::CacheSpec::shared_namespaces) include it (for every
    /// process), then drops the entries tagged `namespace` from this cache. Returns how many
    /// local entries it dropped.
    pub fn shared_invalidate_tag(&self, namespace: &str) -> usize {
        if let Some(shared) = &self.shared {
            let mut ops = Vec::new();
            shared.plan(
                &Invalidation::Tag {
                    cache: Arc::from(self.name()),
                    tag: namespace.to_owned(),
                },
                &mut ops,
            );
            shared.send(&ops);
        }
        self.invalidate_tag(namespace)
    }

    /// Bumps this cache's version in the shared tier (for every process), then drops every
    /// local entry; returns how many.
    pub fn shared_invalidate_all(&self) -> usize {
        if let Some(shared) = &self.shared {
            let mut ops = Vec::new();
            let all = Invalidation::All {
                cache: Arc::from(self.name()),
            };
            shared.plan(&all, &mut ops);
            shared.send(&ops);
        }
        self.invalidate_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_bytes_are_a_miss() -> Result<()> {
        let shared = Shared::<(i64, String), Vec<i64>>::json();
        assert_eq!((shared.key)(&(1, "d".into())).as_deref(), Some("[1,\"d\"]"));
        let bytes = [
            &[VALUE][..],
            &(shared.encode)(&vec![-1, 2]).unwrap_or_default(),
        ]
        .concat();
        assert_eq!(shared.decode_entry(&bytes), Some(Some(vec![-1, 2])));
        assert_eq!(shared.decode_entry(ABSENT), Some(None));
        assert_eq!(shared.decode_entry(b"v{not json"), None);
        assert_eq!(shared.decode_entry(b""), None);
        Ok(())
    }
}
