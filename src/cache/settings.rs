//! `CacheSettings`: what sizes a cache (its capacity, bytes and TTLs, refresh ahead and
//! admission), wherever they are set: in a
//! [`CacheSpec`](super::CacheSpec), by an [`Entity`](crate::Entity) for its repository's
//! cache, or in a [`Config`](crate::Config), which overrides the other two by name.

use std::time::Duration;

use crate::error::{Error, Result};

/// The capacity of a cache that sets none.
const DEFAULT_CAPACITY: usize = 1000;

/// The TTL of a cache that sets none.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The longest default negative TTL: a "known absent" entry is refreshed sooner than a value,
/// since the row may be inserted any moment.
const MAX_DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// The name, capacity, byte bound, TTLs, refresh ahead and admission of a cache; a field left
/// unset keeps the default (or, in a [`Config`](crate::Config), the value of the code that
/// registers the cache).
///
/// ```
/// use std::time::Duration;
/// use strata::cache::CacheSettings;
///
/// let users = CacheSettings::new("users")
///     .capacity(5000)
///     .max_bytes(64 << 20)
///     .ttl(Duration::from_secs(60))
///     .refresh_ahead(0.8);
/// assert_eq!(users.name(), "users");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub(crate) name: String,
    pub(crate) capacity: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) refresh_ahead: Option<f64>,
    pub(crate) admission: Option<bool>,
}

impl CacheSettings {
    /// Settings for the cache called `name`, every other field unset.
    pub fn new(name: impl Into<String>) -> Self {
        CacheSettings {
            name: name.into(),
            capacity: None,
            max_bytes: None,
            ttl: None,
            negative_ttl: None,
            refresh_ahead: None,
            admission: None,
        }
    }

    /// The most bytes the entries may weigh together, as the cache's weigher
    /// ([`CacheSpec::weigher`](super::CacheSpec::weigher)) counts them; split evenly over the
    /// shards like the capacity. Must be at least 1. Defaults to no bound (in a `Config`: to the
    /// registering code's value).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Refresh ahead: a hit on a value older than this fraction of its lifetime returns the
    /// value at once and starts one background reload, so that a key in steady use never
    /// expires under its callers. Works where the cache has a loader of its own (a
    /// [`Repository`](crate::Repository)'s cache, or a spec with
    /// [`loader`](super::CacheSpec::loader)) and is registered with a `Db`. Must be in
    /// (0, 1). Defaults to off (in a `Config`: to the registering code's value).
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(fraction);
        self
    }

    /// Whether a new key must have been asked for more often lately than the entry it would
    /// evict to get a place in a full shard (TinyLFU admission: a 4-bit count-min sketch with
    /// aging in front of the LRU order); off is plain LRU. Defaults to on (in a `Config`: to
    /// the registering code's value).
    pub fn admission(mut self, on: bool) -> Self {
        self.admission = Some(on);
        self
    }

    /// The most entries. Must be at least 1. Defaults to 1000 (in a `Config`: to the
    /// registering code's value).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// How long an entry lives. Must be non-zero. Defaults to 5 min (in a `Config`: to the
    /// registering code's value).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long a "known absent" entry lives; zero turns negative caching off. Defaults to the
    /// shorter of `ttl` and 30 s (in a `Config`: to the registering code's value).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The capacity, set or default.
    pub(crate) fn resolved_capacity(&self) -> usize {
        self.capacity.unwrap_or(DEFAULT_CAPACITY)
    }

    /// Whether admission is on, set or default.
    pub(crate) fn resolved_admission(&self) -> bool {
        self.admission.unwrap_or(true)
    }

    /// The TTL, set or default.
    pub(crate) fn resolved_ttl(&self) -> Duration {
        self.ttl.unwrap_or(DEFAULT_TTL)
    }

    /// The negative TTL, set or default.
    pub(crate) fn resolved_negative_ttl(&self) -> Duration {
        self.negative_ttl
            .unwrap_or_else(|| self.resolved_ttl().min(MAX_DEFAULT_NEGATIVE_TTL))
    }

    /// These settings with every field that `overrides` sets taken from it (the name kept).
    pub(crate) fn overridden_by(self, overrides: &CacheSettings) -> Self {
        CacheSettings {
            name: self.name,
            capacity: overrides.capacity.or(self.capacity),
            max_bytes: overrides.max_bytes.or(self.max_bytes),
            ttl: overrides.ttl.or(self.ttl),
            negative_ttl: overrides.negative_ttl.or(self.negative_ttl),
            refresh_ahead: overrides.refresh_ahead.or(self.refresh_ahead),
            admission: overrides.admission.or(self.admission),
        }
    }

    /// Checks the fields a `Config` sets; the cache checks the resolved values when it is
    /// built.
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
        if self.max_bytes == Some(0) {
            return invalid("cache.max_bytes", "must be at least 1");
        }
        if self.refresh_ahead.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
            return invalid(
                "cache.refresh_ahead",
                "must be between 0 and 1, both excluded",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_resolve_to_the_defaults_and_overrides_win() -> Result<()> {
        let plain = CacheSettings::new("c");
        assert_eq!(plain.resolved_capacity(), DEFAULT_CAPACITY);
        assert_eq!(plain.resolved_ttl(), DEFAULT_TTL);
        assert_eq!(plain.resolved_negative_ttl(), MAX_DEFAULT_NEGATIVE_TTL);
        let short = CacheSettings::new("c").ttl(Duration::from_secs(5));
        assert_eq!(short.resolved_negative_ttl(), Duration::from_secs(5));

        let code = CacheSettings::new("users")
            .capacity(10)
            .ttl(Duration::from_secs(60));
        let config = CacheSettings::new("ignored").capacity(20);
        let merged = code.overridden_by(&config);
        assert_eq!(merged.name(), "users");
        assert_eq!(merged.resolved_capacity(), 20);
        assert_eq!(merged.resolved_ttl(), Duration::from_secs(60));
        Ok(())
    }
}
