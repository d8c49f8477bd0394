//! The caches of a `Db`: registration, rules, read-through, and the look for writes by other
//! processes before a cached value is served.

use std::hash::Hash;
use std::sync::Arc;

use rusqlite::Connection;

use super::Db;
use crate::cache::{data_version, CacheManager, CacheSpec, EntityCache, InvalidationRule};
use crate::error::Result;

impl Db {
    /// The caches of this database and their rules.
    pub fn caches(&self) -> &CacheManager {
        &self.inner.caches
    }

    /// Builds and registers a cache under its spec's name; [`CacheSettings`](crate::cache::CacheSettings) given to
    /// [`Config::cache`](crate::Config::cache) for that name override the spec. A name may be
    /// registered once ([`Error::InvalidConfig`](crate::Error::InvalidConfig) otherwise); look it
    /// up again with [`caches().get`](CacheManager::get). This is the one way to register a
    /// cache.
    ///
    /// ```
    /// # fn main() -> strata::Result<()> {
    /// use strata::cache::EntityCache;
    /// let db = strata::Db::open_in_memory()?;
    /// let names = db.register_cache(EntityCache::<i64, String>::builder("names"))?;
    /// assert!(db.register_cache(EntityCache::<i64, String>::builder("names")).is_err());
    /// assert!(db.caches().get::<i64, String>("names").is_some_and(|c| std::sync::Arc::ptr_eq(&c, &names)));
    /// # Ok(()) }
    /// ```
    pub fn register_cache<K, V>(&self, spec: CacheSpec<K, V>) -> Result<Arc<EntityCache<K, V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.inner.caches.register(spec)
    }

    /// Adds an invalidation rule: the columns it reads are captured for its table from now on.
    pub fn add_rule(&self, rule: InvalidationRule) -> Result<()> {
        let columns: Vec<&str> = rule.columns.iter().map(String::as_str).collect();
        // Captured even with no columns, so that the rule sees a change per row from the
        // triggers, which fire for every row where the update hook may not.
        self.watch(&rule.table, &columns)?;
        self.inner.caches.add_rule(rule);
        Ok(())
    }

    /// Read-through: `key`'s value from `cache`, or loaded by `load` inside one `read` on a miss
    /// (single-flight, guarded against stale fills). `Ok(None)` from `load` is cached as absent.
    ///
    /// Before a value is served, writes by other processes are looked for at most every
    /// `foreign_write_check` (see [`Config::foreign_write_check`](crate::Config::foreign_write_check)).
    pub fn cached<K, V>(
        &self,
        cache: &EntityCache<K, V>,
        key: &K,
        load: impl FnOnce(&Connection, &K) -> Result<Option<V>>,
    ) -> Result<Option<Arc<V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.cached_via(cache, key, load, true)
    }

    /// [`cached`](Db::cached) for a loader that runs exactly one statement: it runs outside an
    /// explicit read transaction (one statement is one snapshot).
    pub(crate) fn cached_one<K, V>(
        &self,
        cache: &EntityCache<K, V>,
        key: &K,
        load: impl FnOnce(&Connection, &K) -> Result<Option<V>>,
    ) -> Result<Option<Arc<V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.cached_via(cache, key, load, false)
    }

    fn cached_via<K, V>(
        &self,
        cache: &EntityCache<K, V>,
        key: &K,
        load: impl FnOnce(&Connection, &K) -> Result<Option<V>>,
        scoped: bool,
    ) -> Result<Option<Arc<V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.check_foreign_writes();
        cache.get_or_load(key, |k| {
            let run = |c: &Connection| load(c, k);
            if scoped {
                self.read(run)
            } else {
                self.read_one(run)
            }
        })
    }

    /// Read-through for many keys: the misses are loaded by `load` (in chunks of the cache's
    /// `max_keys_per_load`, each inside one `read`); results come in key order.
    pub fn cached_many<K, V>(
        &self,
        cache: &EntityCache<K, V>,
        keys: &[K],
        mut load: impl FnMut(&Connection, &[K]) -> Result<Vec<(K, V)>>,
    ) -> Result<Vec<Option<Arc<V>>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.check_foreign_writes();
        cache.get_many_or_load(keys, |missing| self.read(|c| load(c, missing)))
    }

    /// Drops every cache if another process committed since the last check. The writer
    /// connection is only tried: while a local write holds it, the check is left to the next
    /// call, or to the follower thread, which waits for the writer between two transactions
    /// every `foreign_write_check`.
    pub(crate) fn check_foreign_writes(&self) {
        let caches = &self.inner.caches;
        // With several instances the change log's follower sees other processes' commits;
        // a read helps it when its thread is late.
        if self.inner.writer.log.is_some() {
            if let Some(follower) = &self.inner.follower {
                follower.help_if_late();
            }
            return;
        }
        if !caches.foreign_check_due() {
            return;
        }
        let version = self
            .inner
            .writer
            .try_with_conn(|c| data_version(c).ok())
            .flatten();
        if caches.foreign_check(version) {
            tracing::debug!(path = %self.path().display(), "foreign write: dropped caches");
        }
    }
}
