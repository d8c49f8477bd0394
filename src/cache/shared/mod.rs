//! The shared cache tier: a Redis server that the processes of a service share, behind the
//! local caches that opt in (feature `redis`).
//!
//! * [`SharedTierSettings`] says where the server is and how patient to be with it;
//!   [`Config::redis`](crate::Config::redis) and [`Config::shared_tier`](crate::Config::shared_tier)
//!   give it to a `Db`.
//! * [`CacheSpec::shared_tier`](crate::cache::CacheSpec::shared_tier) opts a cache in, and
//!   [`CacheSpec::shared_namespaces`](crate::cache::CacheSpec::shared_namespaces) groups its keys
//!   for tag and prefix invalidation.
//! * [`SharedTier`] is the connection and its health; [`SharedTierStats`] its counters, from
//!   [`CacheManager::shared_tier`](crate::cache::CacheManager::shared_tier).
//!
//! A read goes L1 (the local [`EntityCache`](crate::cache::EntityCache)) → Redis → loader. A
//! commit's invalidations reach Redis before the local caches and before `write` returns. Keys
//! carry versions that every invalidation bumps, and a fill is a compare-and-set on the
//! versions its lookup read, so no load that read an older snapshot overwrites a newer
//! invalidation (see the `script` module's layout).
//!
//! # Why synchronous connections
//!
//! The core is synchronous: a load runs on the caller's thread (or one of strata's reader
//! threads under [`AsyncDb`](crate)), and the commit-time invalidation runs on the writer's
//! thread before `write` returns. redis-rs's synchronous connection, with socket timeouts,
//! serves exactly that with one round trip and no hand-off. Its async connection would need a
//! tokio runtime that strata owns (the `tokio` feature never starts one for the caller) and a
//! thread hop per call both ways, which costs about as much as the loopback round trip it
//! waits for. So the tier uses a small pool of synchronous connections and no tokio.

mod link;
mod script;
mod settings;
mod spec;
mod tier;

pub(crate) use link::{invalidate, Shared, SharedDrops};
pub use settings::SharedTierSettings;
pub(crate) use tier::TierEvent;
pub use tier::{SharedTier, SharedTierStats};
