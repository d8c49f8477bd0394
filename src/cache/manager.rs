//! `CacheManager`: the named caches of a `Db`, the rules that invalidate them from committed
//! changes, and the detection of writes made by other processes.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rusqlite::Connection;

use super::any::AnyCache;
use super::entity::EntityCache;
use super::foreign::{data_version, ForeignWrites};
use super::rule::{Invalidation, InvalidationRule};
use super::spec::CacheSpec;
use super::stats::CacheStats;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::ChangeSet;

/// Capacity and TTLs of a named cache, set in [`Config`](crate::Config); they override the
/// defaults of the code that registers the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub(crate) name: String,
    pub(crate) capacity: Option<usize>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) negative_ttl: Option<Duration>,
}

impl CacheSettings {
    /// Settings for the cache called `name`; each unset field keeps the registering code's value.
    pub fn new(name: impl Into<String>) -> Self {
        CacheSettings {
            name: name.into(),
            capacity: None,
            ttl: None,
            negative_ttl: None,
        }
    }

    /// The most entries. Must be at least 1. Defaults to the registering code's value.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// How long an entry lives. Must be non-zero. Defaults to the registering code's value.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long a "known absent" entry lives. Defaults to the registering code's value.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field, what: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: format!("cache {}: {what}", self.name),
            })
        };
        if self.capacity == Some(0) {
            return invalid("cache.capacity", "must be at least 1");
        }
        if self.ttl == Some(Duration::ZERO) {
            return invalid("cache.ttl", "must be non-zero");
        }
        Ok(())
    }

    fn apply<K, V>(&self, mut spec: CacheSpec<K, V>) -> CacheSpec<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        if let Some(capacity) = self.capacity {
            spec = spec.capacity(capacity);
        }
        if let Some(ttl) = self.ttl {
            spec = spec.ttl(ttl);
        }
        if let Some(ttl) = self.negative_ttl {
            spec = spec.negative_ttl(ttl);
        }
        spec
    }
}

struct Registered {
    erased: Arc<dyn AnyCache>,
    typed: Arc<dyn Any + Send + Sync>,
}

/// The named caches of a [`Db`] and their invalidation rules, as [`Db::caches`] shows them:
/// look-ups, statistics, invalidation. Caches and rules are added through the `Db`
/// ([`Db::register_cache`], [`Db::add_rule`]), the one way in.
///
/// ```compile_fail
/// # fn main() -> strata::Result<()> {
/// use strata::cache::EntityCache;
/// let db = strata::Db::open_in_memory()?;
/// // Registration is `db.register_cache`, not the manager's.
/// db.caches().register(EntityCache::<i64, String>::builder("names"))?;
/// # Ok(()) }
/// ```
///
/// Every committed [`ChangeSet`] runs through the rules of the tables it touches, synchronously
/// and before `write` returns; each invalidation first moves the generation of the shards it
/// touches, so a load that read an older snapshot cannot put its value back afterwards.
pub struct CacheManager {
    caches: RwLock<Vec<Registered>>,
    rules: RwLock<HashMap<String, Vec<InvalidationRule>>>,
    settings: Vec<CacheSettings>,
    foreign: ForeignWrites,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("caches", &self.names())
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    pub(crate) fn new(settings: Vec<CacheSettings>, foreign_check: Duration) -> Self {
        CacheManager {
            caches: RwLock::new(Vec::new()),
            rules: RwLock::new(HashMap::new()),
            settings,
            foreign: ForeignWrites::new(foreign_check),
        }
    }

    /// Builds and registers a cache; settings from the `Config` for its name override `spec`.
    /// A name may be registered once.
    pub(crate) fn register<K, V>(&self, spec: CacheSpec<K, V>) -> Result<Arc<EntityCache<K, V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let spec = match self.settings.iter().find(|s| s.name == spec.name) {
            Some(settings) => settings.apply(spec),
            None => spec,
        };
        let name = spec.name.clone();
        let cache = Arc::new(spec.build()?);
        let mut caches = self.caches.write();
        if caches.iter().any(|c| c.erased.name() == name) {
            return Err(Error::InvalidConfig {
                field: "cache",
                reason: format!("a cache named {name} is registered already"),
            });
        }
        caches.push(Registered {
            erased: Arc::clone(&cache) as Arc<dyn AnyCache>,
            typed: Arc::clone(&cache) as Arc<dyn Any + Send + Sync>,
        });
        Ok(cache)
    }

    /// The cache called `name`, if one of these key and value types is registered under it.
    pub fn get<K, V>(&self, name: &str) -> Option<Arc<EntityCache<K, V>>>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let caches = self.caches.read();
        let found = caches.iter().find(|c| c.erased.name() == name)?;
        Arc::clone(&found.typed).downcast().ok()
    }

    /// The names of the registered caches, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.caches
            .read()
            .iter()
            .map(|c| c.erased.name().to_owned())
            .collect()
    }

    /// The counters of every cache.
    pub fn stats(&self) -> Vec<CacheStats> {
        self.caches
            .read()
            .iter()
            .map(|c| c.erased.stats())
            .collect()
    }

    /// Drops every entry of every cache.
    pub fn invalidate_all(&self) {
        for cache in self.caches.read().iter() {
            cache.erased.invalidate_all();
        }
    }

    /// The rules registered for `table`.
    pub fn rules(&self, table: &str) -> Vec<InvalidationRule> {
        self.rules.read().get(table).cloned().unwrap_or_default()
    }

    fn add_rule(&self, rule: InvalidationRule) {
        self.rules
            .write()
            .entry(rule.table.clone())
            .or_default()
            .push(rule);
    }

    /// Runs a committed ChangeSet through the rules.
    pub(crate) fn apply(&self, set: &ChangeSet) {
        let rules = self.rules.read();
        if rules.is_empty() {
            return;
        }
        let mut drops = Vec::new();
        for change in &set.changes {
            if let Some(table_rules) = rules.get(&*change.table) {
                for rule in table_rules {
                    rule.apply(change, &mut drops);
                }
            }
        }
        drop(rules);
        if drops.is_empty() {
            return;
        }
        let caches = self.caches.read();
        for drop in &drops {
            let Some(cache) = caches.iter().find(|c| c.erased.name() == drop.cache()) else {
                continue;
            };
            match drop {
                Invalidation::Key { key, .. } => {
                    cache.erased.invalidate_key(&**key as &dyn Any);
                }
                Invalidation::Tag { tag, .. } => {
                    cache.erased.invalidate_tag(tag);
                }
                Invalidation::All { .. } => {
                    cache.erased.invalidate_all();
                }
            }
        }
    }
}

impl Db {
    /// The caches of this database and their rules.
    pub fn caches(&self) -> &CacheManager {
        &self.inner.caches
    }

    /// Builds and registers a cache under its spec's name; [`CacheSettings`] given to
    /// [`Config::cache`](crate::Config::cache) for that name override the spec. A name may be
    /// registered once ([`Error::InvalidConfig`](crate::Error::InvalidConfig) otherwise); look it
    /// up again with [`caches().get`](CacheManager::get).
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
    /// connection is only tried: while a local write holds it, the check waits for the next
    /// call, so the bound is `foreign_write_check` plus the longest local write transaction.
    pub(crate) fn check_foreign_writes(&self) {
        let caches = &self.inner.caches;
        if !caches.foreign.due() {
            return;
        }
        let version = self
            .inner
            .writer
            .try_with_conn(|c| data_version(c).ok())
            .flatten();
        match version {
            Some(v) if caches.foreign.moved(v) => {
                tracing::debug!(path = %self.path().display(), "foreign write: dropping caches");
                caches.invalidate_all();
            }
            Some(_) => {}
            // The writer is busy: let the next caller check.
            None => caches.foreign.last_check_ms.store(0, Ordering::Relaxed),
        }
    }

    /// Records the writer's data_version at open, so the first check has a baseline.
    pub(crate) fn init_foreign_writes(&self) -> Result<()> {
        let v = self.inner.writer.with_conn(|c| data_version(c))?;
        self.inner.caches.foreign.moved(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn db() -> Result<Db> {
        let db = Config::new().build()?;
        db.write(
            |c| Ok(c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, g INT, v TEXT)")?),
        )?;
        Ok(db)
    }

    #[test]
    fn rules_drop_keys_tags_and_whole_caches() -> Result<()> {
        let db = db()?;
        let by_id = db.register_cache(EntityCache::<i64, String>::builder("by_id"))?;
        let by_group = db.register_cache(EntityCache::<i64, Vec<i64>>::builder("by_group"))?;
        let all = db.register_cache(EntityCache::<i64, i64>::builder("count"))?;
        db.add_rule(InvalidationRule::rowid_key("t", "by_id"))?;
        db.add_rule(InvalidationRule::column_key("t", "g", "by_group"))?;
        db.add_rule(InvalidationRule::whole_cache("t", "count"))?;
        db.write(|c| Ok(c.execute_batch("INSERT INTO t VALUES (1, 10, 'a'), (2, 20, 'b')")?))?;
        by_id.insert(1, "a".into());
        by_id.insert(2, "b".into());
        by_group.insert(10, vec![1]);
        by_group.insert(20, vec![2]);
        all.insert(0, 2);

        // Moving row 1 from group 10 to group 20 touches both groups, row 1, and the count.
        db.write(|c| {
            Ok(c.execute("UPDATE t SET g = 20 WHERE id = 1", [])
                .map(drop)?)
        })?;
        assert!(by_id.get(&1).is_none());
        assert!(by_id.get(&2).is_some(), "an unchanged row stays cached");
        assert!(by_group.get(&10).is_none() && by_group.get(&20).is_none());
        assert!(all.get(&0).is_none());
        Ok(())
    }

    #[test]
    fn read_through_sees_every_returned_write() -> Result<()> {
        let db = db()?;
        let cache = db.register_cache(EntityCache::<i64, String>::builder("v"))?;
        db.add_rule(InvalidationRule::rowid_key("t", "v"))?;
        let load = |c: &Connection, id: &i64| -> Result<Option<String>> {
            let mut stmt = c.prepare_cached("SELECT v FROM t WHERE id = ?1")?;
            let mut rows = stmt.query([id])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        };
        assert_eq!(db.cached(&cache, &1, load)?, None, "absent, cached as such");
        db.write(|c| {
            Ok(c.execute("INSERT INTO t VALUES (1, 0, 'x')", [])
                .map(drop)?)
        })?;
        assert_eq!(
            db.cached(&cache, &1, load)?.as_deref().map(String::as_str),
            Some("x")
        );
        db.write(|c| {
            Ok(c.execute("UPDATE t SET v = 'y' WHERE id = 1", [])
                .map(drop)?)
        })?;
        assert_eq!(
            db.cached(&cache, &1, load)?.as_deref().map(String::as_str),
            Some("y")
        );
        Ok(())
    }

    #[test]
    fn duplicate_names_and_bad_settings_are_refused() -> Result<()> {
        let db = db()?;
        db.register_cache(EntityCache::<i64, i64>::builder("x"))?;
        assert!(db
            .register_cache(EntityCache::<i64, i64>::builder("x"))
            .is_err());
        assert!(db.caches().get::<i64, i64>("x").is_some());
        assert!(db.caches().get::<i64, String>("x").is_none(), "wrong types");
        let err = Config::new()
            .cache(CacheSettings::new("users").capacity(0))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "cache.capacity",
                ..
            }
        ));
        Ok(())
    }
}
