//! Entity caches: sharded, TTL-bound, single-flight caches of rows by key, kept consistent
//! with every committed write by [`InvalidationRule`]s and a stale-fill guard.
//!
//! * [`EntityCache`] holds values of one type by key; [`CacheSpec`] builds it and
//!   [`Db::register_cache`](crate::Db::register_cache) registers it; [`CacheManager`] (from
//!   [`Db::caches`](crate::Db::caches)) looks caches up, counts and clears them.
//! * [`CacheSettings`] overrides a cache's size or TTLs from the [`Config`](crate::Config).
//! * [`InvalidationRule`] maps a table's changes to [`Invalidation`]s of a cache.
//! * [`Cached`] tells "known absent" from a value; a plain miss is `None`.
//! * [`Clock`] is the source of time for TTLs; [`ManualClock`] drives it in tests.
//! * [`AnyCache`] erases `K` and `V` so that caches of different types live in one registry.
//! * [`CacheSettings`] is what sizes a cache (capacity and TTLs), for a spec, an entity's
//!   repository or a `Config` override alike.
//! * [`CacheStats`] is the serializable snapshot of a cache's counters.
//! * `shared` (feature `redis`) puts a Redis tier shared by the processes of a service behind
//!   the caches that opt in.
//! * [`RemovalCause`] tells an [`on_removal`](CacheSpec::on_removal) listener why an entry
//!   left.

mod any;
mod budget;
mod cached;
mod clock;
mod entity;
mod flight;
mod foreign;
mod front;
mod invalidate;
mod load;
mod locked;
mod lookup;
mod manager;
mod refresh;
mod removal;
mod rule;
mod settings;
mod shard;
#[cfg(feature = "redis")]
pub mod shared;
mod sketch;
mod spec;
mod stats;

pub(crate) use clock::coarse_ticks;
pub(crate) use foreign::data_version;

pub use any::AnyCache;
pub use cached::Cached;
pub use clock::{Clock, ManualClock, SystemClock};
pub use entity::EntityCache;
pub use manager::CacheManager;
pub use removal::RemovalCause;
pub use rule::{Invalidation, InvalidationRule};
pub use settings::CacheSettings;
#[cfg(feature = "redis")]
pub use shared::{SharedTier, SharedTierSettings, SharedTierStats};
pub use spec::CacheSpec;
pub use stats::CacheStats;
