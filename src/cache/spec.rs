//! `CacheSpec`: the builder every [`EntityCache`] is built from.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::cached::Cached;
use super::clock::Clock;
use super::entity::EntityCache;
use super::removal::{RemovalCause, RemovalListener};
use super::settings::CacheSettings;
use crate::error::{Error, Result};

/// Computes the tags of a value as it enters the cache.
pub(crate) type Tagger<K, V> = Box<dyn Fn(&K, &V) -> Vec<String> + Send + Sync>;

/// Weighs an entry in bytes.
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> usize + Send + Sync>;

/// Gives a value its own lifetime.
pub(crate) type ExpireAfter<K, V> = Arc<dyn Fn(&K, &V) -> Duration + Send + Sync>;

/// Loads one key, for refresh ahead.
pub(crate) type Loader<K, V> = Arc<dyn Fn(&K) -> Result<Option<V>> + Send + Sync>;

/// Shards used when none are asked for: enough that a handful of threads rarely meet on one lock.
const DEFAULT_SHARDS: usize = 16;

/// Instants far in the future overflow [`std::time::Instant`]; no cache needs a TTL near that.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Settings for an [`EntityCache`]; every setter documents its default.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// use std::time::Duration;
/// use strata::cache::EntityCache;
///
/// let users: EntityCache<i64, String> = EntityCache::builder("users")
///     .capacity(1000)
///     .ttl(Duration::from_secs(3600))
///     .build()?;
/// assert_eq!(users.stats().capacity, 1000);
/// # Ok(()) }
/// ```
pub struct CacheSpec<K, V> {
    /// Name, capacity and TTLs.
    pub(crate) sizing: CacheSettings,
    pub(crate) shards: Option<usize>,
    pub(crate) max_keys_per_load: usize,
    /// `None`: the [`SystemClock`](super::SystemClock), read inline.
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) tagger: Option<Tagger<K, V>>,
    /// Set by `shared_tier`; given its tier when the cache is registered.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<super::shared::Shared<K, V>>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) expire_after: Option<ExpireAfter<K, V>>,
    pub(crate) listener: Option<RemovalListener<K, V>>,
    pub(crate) loader: Option<Loader<K, V>>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> fmt::Debug for CacheSpec<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSpec")
            .field("name", &self.sizing.name)
            .field("capacity", &self.sizing.resolved_capacity())
            .field("ttl", &self.sizing.resolved_ttl())
            .field("negative_ttl", &self.sizing.resolved_negative_ttl())
            .field("shards", &self.shard_count())
            .field("max_keys_per_load", &self.max_keys_per_load)
            .field("tagger", &self.tagger.is_some())
            .field("weigher", &self.weigher.is_some())
            .field("expire_after", &self.expire_after.is_some())
            .field("on_removal", &self.listener.is_some())
            .field("loader", &self.loader.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheSpec<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Settings for a cache called `name` (the name appears in stats and errors), with every
    /// other setting at its default.
    pub fn new(name: impl Into<String>) -> Self {
        CacheSpec::sized(CacheSettings::new(name))
    }

    /// The spec of the cache that `settings` names and sizes, every other setting at its
    /// default; how a [`Repository`](crate::Repository) builds its entity's cache.
    pub fn sized(settings: CacheSettings) -> Self {
        CacheSpec {
            sizing: settings,
            shards: None,
            max_keys_per_load: 500,
            clock: None,
            tagger: None,
            #[cfg(feature = "redis")]
            shared: None,
            weigher: None,
            expire_after: None,
            listener: None,
            loader: None,
            _types: PhantomData,
        }
    }

    /// The most entries the cache holds; the least recently used entry of a full shard makes
    /// room. Must be at least 1. Defaults to 1000.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.sizing = self.sizing.capacity(capacity);
        self
    }

    /// How long a value stays fresh after it was cached. Must be longer than zero.
    /// Defaults to 5 min.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.sizing = self.sizing.ttl(ttl);
        self
    }

    /// How long a negative entry ("this key does not exist") stays fresh; zero turns negative
    /// caching off. Must not exceed `ttl`. Defaults to the shorter of `ttl` and 30 s.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.sizing = self.sizing.negative_ttl(ttl);
        self
    }

    /// The number of independently locked shards; a power of two, at most `capacity`.
    /// Capacity is split evenly, so LRU order holds per shard, not across the whole cache.
    /// Defaults to 16, or the largest power of two not above `capacity` when that is smaller.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The most keys passed to one call of a batch loader (`get_many_or_load`, `warm`); keeps an
    /// `IN (...)` list under SQLite's bound-variable limit. Must be at least 1. Defaults to 500.
    pub fn max_keys_per_load(mut self, keys: usize) -> Self {
        self.max_keys_per_load = keys;
        self
    }

    /// The clock TTLs are measured with, e.g. a [`ManualClock`](super::ManualClock) in tests.
    /// Defaults to [`SystemClock`](super::SystemClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Computes the tags of every value that enters the cache through a loader or
    /// [`insert`](EntityCache::insert), so that [`invalidate_tag`](EntityCache::invalidate_tag)
    /// reaches loaded values too. Defaults to no tags.
    pub fn tags(mut self, tagger: impl Fn(&K, &V) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.tagger = Some(Box::new(tagger));
        self
    }

    /// The most bytes the entries may weigh together (see [`weigher`](CacheSpec::weigher)).
    /// Must be at least 1. Defaults to no bound.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.sizing = self.sizing.max_bytes(bytes);
        self
    }

    /// Weighs every entry as it enters the cache, in bytes: what `max_bytes`, the manager's
    /// memory limit and [`CacheStats::bytes`](super::CacheStats::bytes) count. Defaults to the
    /// shallow size of the key and value (`size_of::<K>() + size_of::<V>()`).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Gives each value its own lifetime, computed as it enters the cache (e.g. 30 s for a
    /// healthy result, 10 s for an error); used instead of `ttl` for values (negative entries
    /// keep `negative_ttl`). A zero lifetime caches nothing. Defaults to `ttl` for every value.
    pub fn expire_after(
        mut self,
        lifetime: impl Fn(&K, &V) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.expire_after = Some(Arc::new(lifetime));
        self
    }

    /// Tells `listener` of every entry that leaves the cache, with why (a negative entry's
    /// value is [`Cached::Absent`]). Called after the shard lock is released, on the thread
    /// that removed the entry, so it may use the cache; it should be quick. Defaults to none.
    pub fn on_removal(
        mut self,
        listener: impl Fn(&K, &Cached<V>, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The cache's own loader of one key, which [`refresh_ahead`](CacheSpec::refresh_ahead)
    /// reloads with (a [`Repository`](crate::Repository) sets its own). Defaults to none.
    pub fn loader(
        mut self,
        loader: impl Fn(&K) -> Result<Option<V>> + Send + Sync + 'static,
    ) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// See [`CacheSettings::refresh_ahead`]. Must be in (0, 1). Defaults to off.
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.sizing = self.sizing.refresh_ahead(fraction);
        self
    }

    /// See [`CacheSettings::admission`]. Defaults to on.
    pub fn admission(mut self, on: bool) -> Self {
        self.sizing = self.sizing.admission(on);
        self
    }

    /// Checks the settings; [`build`](CacheSpec::build) calls this first.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: format!("cache {}: {reason}", self.sizing.name),
            })
        };
        let capacity = self.sizing.resolved_capacity();
        let ttl = self.sizing.resolved_ttl();
        if capacity == 0 {
            return invalid("capacity", "must be at least 1");
        }
        if ttl.is_zero() {
            return invalid("ttl", "must be longer than zero");
        }
        if ttl > MAX_TTL {
            return invalid("ttl", "must be at most 10 years");
        }
        if self.sizing.resolved_negative_ttl() > ttl {
            return invalid("negative_ttl", "must not exceed ttl");
        }
        if let Some(shards) = self.shards {
            if !shards.is_power_of_two() {
                return invalid("shards", "must be a power of two (and at least 1)");
            }
            if shards > capacity {
                return invalid("shards", "must not exceed capacity");
            }
        }
        if self.max_keys_per_load == 0 {
            return invalid("max_keys_per_load", "must be at least 1");
        }
        if self.sizing.max_bytes == Some(0) {
            return invalid("max_bytes", "must be at least 1");
        }
        if self
            .sizing
            .refresh_ahead
            .is_some_and(|f| !(f > 0.0 && f < 1.0))
        {
            return invalid("refresh_ahead", "must be between 0 and 1, both excluded");
        }
        Ok(())
    }

    /// Validates the settings and builds the cache.
    pub fn build(self) -> Result<EntityCache<K, V>> {
        self.validate()?;
        Ok(EntityCache::from_spec(self))
    }
}

impl<K, V> CacheSpec<K, V> {
    /// The spec with every capacity and TTL that `overrides` sets taken from it.
    pub(crate) fn overridden_by(mut self, overrides: &CacheSettings) -> Self {
        self.sizing = self.sizing.overridden_by(overrides);
        self
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.unwrap_or_else(|| {
            // Largest power of two not above capacity, so that every shard holds an entry.
            let fit = match self.sizing.resolved_capacity() {
                0 => 1,
                c => 1 << c.ilog2(),
            };
            DEFAULT_SHARDS.min(fit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Spec = CacheSpec<u64, u64>;

    fn refused(spec: Spec) -> Option<&'static str> {
        match spec.build() {
            Err(Error::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn zero_capacity_and_zero_ttl_are_refused() -> Result<()> {
        assert_eq!(refused(Spec::new("c").capacity(0)), Some("capacity"));
        assert_eq!(refused(Spec::new("c").ttl(Duration::ZERO)), Some("ttl"));
        assert_eq!(refused(Spec::new("c").ttl(Duration::MAX)), Some("ttl"));
        let err = Spec::new("users").capacity(0).validate().unwrap_err();
        assert!(err.to_string().contains("users"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_shards_and_chunks_are_refused() -> Result<()> {
        assert_eq!(refused(Spec::new("c").shards(0)), Some("shards"));
        assert_eq!(refused(Spec::new("c").shards(3)), Some("shards"));
        assert_eq!(
            refused(Spec::new("c").capacity(4).shards(8)),
            Some("shards")
        );
        assert_eq!(
            refused(Spec::new("c").max_keys_per_load(0)),
            Some("max_keys_per_load")
        );
        assert_eq!(
            refused(
                Spec::new("c")
                    .ttl(Duration::from_secs(1))
                    .negative_ttl(Duration::from_secs(2))
            ),
            Some("negative_ttl")
        );
        Ok(())
    }

    #[test]
    fn defaults_fit_the_capacity() -> Result<()> {
        assert_eq!(Spec::new("c").shard_count(), 16);
        assert_eq!(Spec::new("c").capacity(12).shard_count(), 8);
        assert_eq!(Spec::new("c").capacity(1).shard_count(), 1);
        assert_eq!(
            Spec::new("c").sizing.resolved_negative_ttl(),
            Duration::from_secs(30)
        );
        let short = Spec::new("c").ttl(Duration::from_secs(5));
        assert_eq!(short.sizing.resolved_negative_ttl(), Duration::from_secs(5));
        Spec::new("c").capacity(1).build()?;
        Ok(())
    }
}
