//! Counters of a cache and the snapshot they are reported as.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of one cache's counters, as reported by [`EntityCache::stats`].
///
/// Counters are read without stopping the cache, so a snapshot taken under load may be off by
/// the few operations that ran while it was being summed.
///
/// [`EntityCache::stats`]: crate::cache::EntityCache::stats
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheStats {
    /// The cache's name.
    pub name: String,
    /// Lookups answered from the cache, negative entries included.
    pub hits: u64,
    /// Lookups that found nothing usable (absent or expired).
    pub misses: u64,
    /// Loader calls (one per `get_or_load` leader, one per chunk of a batch load).
    pub loads: u64,
    /// Loader calls that returned an error or panicked.
    pub load_errors: u64,
    /// Entries dropped to make room for new ones, and new entries the admission filter or
    /// `max_bytes` turned away.
    pub evictions: u64,
    /// Entries found past their TTL and dropped.
    pub expirations: u64,
    /// Entries dropped by `invalidate`, `invalidate_tag` or `invalidate_all`.
    pub invalidations: u64,
    /// Entries held now (expired entries not yet looked at included).
    pub size: usize,
    /// The most entries the cache holds.
    pub capacity: usize,
    /// What the entries held weigh, as the cache's weigher counts them (by default the shallow
    /// size of key and value).
    pub bytes: usize,
    /// The most bytes the entries may weigh, if bounded.
    pub max_bytes: Option<usize>,
    /// `hits / (hits + misses)`, 0 before the first lookup.
    pub hit_rate: f64,
}

/// The counters bumped on the hit path; each shard has its own so that threads hitting different
/// shards never write the same cache line.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    pub invalidations: AtomicU64,
}

/// Counters bumped only around loads, which are rare next to hits; one set per cache.
#[derive(Debug, Default)]
pub(crate) struct LoadCounters {
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
}

/// Adds `n` to a counter; counters order nothing, so relaxed is enough.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl CacheStats {
    /// An all-zero snapshot for the cache `name`.
    pub(crate) fn empty(name: &str, capacity: usize) -> Self {
        CacheStats {
            name: name.to_owned(),
            hits: 0,
            misses: 0,
            loads: 0,
            load_errors: 0,
            evictions: 0,
            expirations: 0,
            invalidations: 0,
            size: 0,
            capacity,
            bytes: 0,
            max_bytes: None,
            hit_rate: 0.0,
        }
    }

    pub(crate) fn add_shard(&mut self, counters: &ShardCounters, size: usize, bytes: usize) {
        self.bytes += bytes;
        self.hits += read(&counters.hits);
        self.misses += read(&counters.misses);
        self.evictions += read(&counters.evictions);
        self.expirations += read(&counters.expirations);
        self.invalidations += read(&counters.invalidations);
        self.size += size;
    }

    pub(crate) fn add_loads(&mut self, counters: &LoadCounters) {
        self.loads += read(&counters.loads);
        self.load_errors += read(&counters.load_errors);
    }

    /// Computes `hit_rate` from the summed counters.
    pub(crate) fn finish(mut self) -> Self {
        let lookups = self.hits + self.misses;
        self.hit_rate = if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Result};

    #[test]
    fn hit_rate_is_zero_without_lookups_and_sums_shards() -> Result<()> {
        assert_eq!(CacheStats::empty("c", 4).finish().hit_rate, 0.0);

        let (a, b) = (ShardCounters::default(), ShardCounters::default());
        add(&a.hits, 3);
        add(&b.hits, 1);
        add(&b.misses, 4);
        let mut stats = CacheStats::empty("c", 4);
        stats.add_shard(&a, 1, 10);
        stats.add_shard(&b, 2, 20);
        let stats = stats.finish();
        assert_eq!((stats.hits, stats.misses, stats.size), (4, 4, 3));
        assert_eq!(stats.bytes, 30);
        assert_eq!(stats.hit_rate, 0.5);
        let json = serde_json::to_value(&stats).map_err(Error::closure)?;
        assert_eq!(json["name"], "c");
        Ok(())
    }
}
