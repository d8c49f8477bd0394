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
use super::budget::MemoryBudget;
use super::entity::EntityCache;
use super::foreign::{data_version, ForeignWrites};
use super::refresh::Refresher;
use super::rule::{Invalidation, InvalidationRule};
use super::settings::CacheSettings;
use super::spec::CacheSpec;
use super::stats::CacheStats;
use crate::error::{Error, Result};
use crate::events::ChangeSet;

struct Registered {
    erased: Arc<dyn AnyCache>,
    typed: Arc<dyn Any + Send + Sync>,
    /// The cache's side of the shared tier, if it has one.
    #[cfg(feature = "redis")]
    shared: Option<Arc<dyn super::shared::SharedDrops>>,
}

/// The named caches of a [`Db`](crate::Db) and their invalidation rules, as
/// [`Db::caches`](crate::Db::caches) shows them: look-ups, statistics, invalidation. Caches and
/// rules are added through the `Db` ([`Db::register_cache`](crate::Db::register_cache),
/// [`Db::add_rule`](crate::Db::add_rule)), the one way in.
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
    #[cfg(feature = "redis")]
    shared_tier: Option<Arc<super::shared::SharedTier>>,
    /// Set by a foreign-write drop when a tier is behind the caches: when to drop once more
    /// (`ForeignWrites::now_ms`; 0 for none; see `foreign_check`).
    #[cfg(feature = "redis")]
    redrop_at_ms: std::sync::atomic::AtomicU64,
    /// The one thread that runs every cache's refresh-ahead reloads.
    refresher: Arc<Refresher>,
    budget: Option<Arc<MemoryBudget>>,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("caches", &self.names())
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    /// Records the writer's data_version at open, so the first check has a baseline. The
    /// writer's own commits never move it, so this may run before the migrations.
    pub(crate) fn init_foreign_writes(&self, writer: &Connection) -> Result<()> {
        self.foreign.moved(data_version(writer)?);
        Ok(())
    }

    pub(crate) fn new(settings: Vec<CacheSettings>, foreign_check: Duration) -> Self {
        CacheManager {
            caches: RwLock::new(Vec::new()),
            rules: RwLock::new(HashMap::new()),
            settings,
            foreign: ForeignWrites::new(foreign_check),
            #[cfg(feature = "redis")]
            shared_tier: None,
            #[cfg(feature = "redis")]
            redrop_at_ms: std::sync::atomic::AtomicU64::new(0),
            refresher: Arc::new(Refresher::default()),
            budget: None,
        }
    }

    /// Puts `tier` behind the caches registered from now on that opt in.
    #[cfg(feature = "redis")]
    pub(crate) fn set_shared_tier(&mut self, tier: Arc<super::shared::SharedTier>) {
        self.shared_tier = Some(tier);
    }

    /// The shared tier (Redis) behind the caches that opt in, if the `Db` has one.
    #[cfg(feature = "redis")]
    pub fn shared_tier(&self) -> Option<&Arc<super::shared::SharedTier>> {
        self.shared_tier.as_ref()
    }

    /// The manager with a bound on what its caches weigh together; set before any cache is
    /// registered.
    pub(crate) fn with_memory_limit(mut self, limit: Option<usize>) -> Self {
        self.budget = limit.map(MemoryBudget::new);
        self
    }

    /// The bound on what every cache of this manager weighs together, if one was set
    /// ([`Config::cache_memory_limit`](crate::Config::cache_memory_limit)).
    pub fn memory_limit(&self) -> Option<usize> {
        self.budget.as_ref().map(|b| b.limit())
    }

    /// What every cache weighs together, as their weighers count.
    pub fn bytes(&self) -> usize {
        self.stats().iter().map(|s| s.bytes).sum()
    }

    /// Shrinks the caches under the memory limit now, if they are over it (it also happens
    /// by itself when an insert passes it); returns the bytes freed.
    pub fn enforce_memory_limit(&self) -> usize {
        self.budget.as_ref().map_or(0, |b| b.shrink())
    }

    /// True when the look for writes by other processes is due (at most once per
    /// `foreign_write_check`), and claims it for the caller.
    pub(crate) fn foreign_check_due(&self) -> bool {
        self.foreign.due()
    }

    /// Takes the writer's `PRAGMA data_version` and drops every cache if another process
    /// committed since the last one; true if it did. `None` (the writer was busy) leaves the
    /// check to the next caller.
    pub(crate) fn foreign_check(&self, data_version: Option<i64>) -> bool {
        match data_version {
            Some(v) if self.foreign.moved(v) => {
                self.invalidate_all_for_write();
                // The other process drops the shared tier's entries after its COMMIT, so a
                // reload right after this drop may still find the old value there: drop once
                // more when that invalidation must have landed or failed (one call, bounded by
                // the tier's I/O timeout; a failed one marks that process's tier down). The
                // follower thread checks every few milliseconds, so "the next check" alone
                // would come too soon.
                #[cfg(feature = "redis")]
                if let Some(tier) = &self.shared_tier {
                    let after = tier.io_timeout().as_millis() as u64;
                    let at = self.foreign.now_ms().saturating_add(after).max(1);
                    self.redrop_at_ms.store(at, Ordering::Relaxed);
                }
                true
            }
            #[cfg(feature = "redis")]
            Some(_) if self.redrop_due() => {
                self.invalidate_all_for_write();
                true
            }
            Some(_) => false,
            None => {
                self.foreign.last_check_ms.store(0, Ordering::Relaxed);
                false
            }
        }
    }

    /// True once, when the drop a foreign write scheduled for a shared tier is due.
    #[cfg(feature = "redis")]
    fn redrop_due(&self) -> bool {
        let at = self.redrop_at_ms.load(Ordering::Relaxed);
        at != 0
            && self.foreign.now_ms() >= at
            && self
                .redrop_at_ms
                .compare_exchange(at, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Builds and registers a cache; settings from the `Config` for its name override `spec`.
    /// A name may be registered once.
    pub(crate) fn register<K, V>(&self, spec: CacheSpec<K, V>) -> Result<Arc<EntityCache<K, V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let spec = match self.settings.iter().find(|s| s.name == spec.sizing.name) {
            Some(settings) => spec.overridden_by(settings),
            None => spec,
        };
        let name = spec.sizing.name.clone();
        #[cfg(feature = "redis")]
        let spec = self.attach_shared_tier(spec);
        let cache = Arc::new(spec.build()?);
        let mut caches = self.caches.write();
        if caches.iter().any(|c| c.erased.name() == name) {
            return Err(Error::InvalidConfig {
                field: "cache",
                reason: format!("a cache named {name} is registered already"),
            });
        }
        cache.attach_refresher(&self.refresher);
        if let Some(budget) = &self.budget {
            let erased = Arc::clone(&cache) as Arc<dyn AnyCache>;
            budget.track(Arc::downgrade(&erased));
            let _ = cache.budget.set(Arc::clone(budget));
        }
        caches.push(Registered {
            erased: Arc::clone(&cache) as Arc<dyn AnyCache>,
            typed: Arc::clone(&cache) as Arc<dyn Any + Send + Sync>,
            #[cfg(feature = "redis")]
            shared: cache.shared_drops(),
        });
        Ok(cache)
    }

    /// Gives a spec that opted in the tier and its resolved TTLs; without a tier it stays local.
    #[cfg(feature = "redis")]
    fn attach_shared_tier<K, V>(&self, mut spec: CacheSpec<K, V>) -> CacheSpec<K, V> {
        match (&self.shared_tier, spec.shared.as_mut()) {
            (Some(tier), Some(shared)) => shared.attach(
                Arc::clone(tier),
                &spec.sizing.name,
                spec.sizing.resolved_ttl(),
                spec.sizing.resolved_negative_ttl(),
            ),
            _ => spec.shared = None,
        }
        spec
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

    /// Drops every entry of every cache for a write of another process.
    fn invalidate_all_for_write(&self) {
        for cache in self.caches.read().iter() {
            let all = Invalidation::All {
                cache: Arc::from(cache.erased.name()),
            };
            cache.erased.invalidate_for_write(&all);
        }
    }

    /// The rules registered for `table`.
    pub fn rules(&self, table: &str) -> Vec<InvalidationRule> {
        self.rules.read().get(table).cloned().unwrap_or_default()
    }

    pub(crate) fn add_rule(&self, rule: InvalidationRule) {
        self.rules
            .write()
            .entry(rule.table.clone())
            .or_default()
            .push(rule);
    }

    /// Whether a change to `table` that carries no column values (another instance wrote it
    /// without watching the table) would leave a rule of this manager without what it reads.
    pub(crate) fn needs_values(&self, table: &str) -> bool {
        self.rules
            .read()
            .get(table)
            .is_some_and(|rules| rules.iter().any(|r| !r.columns.is_empty()))
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
        #[cfg(feature = "redis")]
        if self.shared_tier.is_some() {
            let shared: Vec<_> = drops
                .iter()
                .filter_map(|drop| {
                    let cache = caches.iter().find(|c| c.erased.name() == drop.cache())?;
                    Some((&**cache.shared.as_ref()?, drop))
                })
                .collect();
            super::shared::invalidate(&shared);
        }
        for drop in &drops {
            let Some(cache) = caches.iter().find(|c| c.erased.name() == drop.cache()) else {
                continue;
            };
            cache.erased.invalidate_for_write(drop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::Db;
    use rusqlite::Connection;

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
