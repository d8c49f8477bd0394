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
            refresher: Arc::new(Refresher::default()),
            budget: None,
        }
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
                true
            }
            Some(_) => false,
            None => {
                self.foreign.last_check_ms.store(0, Ordering::Relaxed);
                false
            }
        }
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
