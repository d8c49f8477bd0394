//! The entity cache: sharded, TTL-bound, single-flight caches of database rows by key, kept
//! consistent with writes by invalidation and the stale-fill guard.
//!
//! * [`EntityCache`] holds values of one type by key; [`CacheSpec`] builds it.
//! * [`Cached`] tells "known absent" from a value; a plain miss is `None`.
//! * [`Clock`] is the source of time for TTLs; [`ManualClock`] drives it in tests.
//! * [`AnyCache`] erases `K` and `V` so that caches of different types live in one registry.
//! * [`CacheSettings`] is what sizes a cache (capacity and TTLs), for a spec, an entity's
//!   repository or a `Config` override alike.
//! * [`CacheStats`] is the serializable snapshot of a cache's counters.
//! * [`CacheManager`] holds a `Db`'s named caches and the [`InvalidationRule`]s that drop their
//!   entries from committed changes.

mod any;
mod cached;
mod clock;
mod entity;
mod flight;
mod foreign;
mod front;
mod load;
mod manager;
mod rule;
mod settings;
mod shard;
mod spec;
mod stats;

pub(crate) use foreign::data_version;

pub use any::AnyCache;
pub use cached::Cached;
pub use clock::{Clock, ManualClock, SystemClock};
pub use entity::EntityCache;
pub use manager::CacheManager;
pub use rule::{Invalidation, InvalidationRule};
pub use settings::CacheSettings;
pub use spec::CacheSpec;
pub use stats::CacheStats;
