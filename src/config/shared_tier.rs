//! The settings of the shared cache tier (feature `redis`).

use super::Config;
use crate::cache::SharedTierSettings;

impl Config {
    /// Puts a shared cache tier in the Redis server at `url` (`redis://host:port/db`) behind
    /// the caches that opt in with [`CacheSpec::shared_tier`](crate::cache::CacheSpec::shared_tier),
    /// with every other [`SharedTierSettings`] at its default. The server may be down at open:
    /// the caches then work locally until it answers. Defaults to no shared tier.
    pub fn redis(self, url: impl Into<String>) -> Self {
        self.shared_tier(SharedTierSettings::new(url))
    }

    /// [`redis`](Config::redis) with every setting of the tier given. Defaults to no shared tier.
    pub fn shared_tier(mut self, settings: SharedTierSettings) -> Self {
        self.shared_tier = Some(settings);
        self
    }
}
