//! `SharedTierSettings`: where the shared tier's Redis is and how patiently strata talks to it.

use std::time::Duration;

use crate::error::{Error, Result};

/// How to reach the shared tier's Redis server and when to give up on it; given to
/// [`Config::shared_tier`](crate::Config::shared_tier) (or built by
/// [`Config::redis`](crate::Config::redis) from a URL alone).
///
/// The timeouts are short on purpose: the tier only saves work, so a Redis that answers late
/// costs more than the database it stands in front of. A call that times out or fails marks
/// the tier down; reads and writes go on from the local cache and the database, and the tier
/// is tried again after a backoff.
///
/// ```
/// use std::time::Duration;
/// use strata::cache::SharedTierSettings;
///
/// let settings = SharedTierSettings::new("redis://127.0.0.1:6379/")
///     .prefix("billing")
///     .io_timeout(Duration::from_millis(20));
/// assert!(settings.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTierSettings {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_idle: usize,
}

impl Default for SharedTierSettings {
    fn default() -> Self {
        SharedTierSettings {
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "strata".to_owned(),
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(50),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_idle: 16,
        }
    }
}

impl SharedTierSettings {
    /// Settings for the Redis server at `url` (`redis://host:port/db`), every other field at its
    /// default.
    pub fn new(url: impl Into<String>) -> Self {
        SharedTierSettings::default().url(url)
    }

    /// The server's URL. Defaults to `redis://127.0.0.1:6379/`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The first part of every key strata writes, so that several services (or test runs)
    /// share one server without meeting. Defaults to `strata`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long opening a connection may take. Defaults to 100 ms.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call (a send or a reply) may take before the tier is marked down.
    /// Defaults to 50 ms.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// The wait before the first reconnection attempt after a failure; each failed attempt
    /// doubles it up to `max_backoff`. Defaults to 100 ms.
    pub fn min_backoff(mut self, backoff: Duration) -> Self {
        self.min_backoff = backoff;
        self
    }

    /// The longest wait between reconnection attempts. Defaults to 5 s.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// The most idle connections kept open; a thread that finds none opens one. Defaults
    /// to 16.
    pub fn max_idle(mut self, connections: usize) -> Self {
        self.max_idle = connections;
        self
    }

    /// Checks the settings: a URL that parses, non-zero timeouts, `min_backoff` not above
    /// `max_backoff`, a prefix without `:` (strata's separator).
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if let Err(err) = redis::Client::open(self.url.as_str()) {
            return invalid("redis.url", format!("{}: {err}", self.url));
        }
        if self.prefix.is_empty() || self.prefix.contains(':') {
            return invalid("redis.prefix", "must be non-empty, without ':'".into());
        }
        if self.connect_timeout.is_zero() || self.io_timeout.is_zero() {
            return invalid("redis.timeout", "must be non-zero".into());
        }
        if self.min_backoff.is_zero() || self.min_backoff > self.max_backoff {
            return invalid(
                "redis.backoff",
                "min_backoff must be non-zero and at most max_backoff".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_by_field() -> Result<()> {
        let field = |s: SharedTierSettings| match s.validate() {
            Err(Error::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        };
        assert_eq!(
            field(SharedTierSettings::new("nope://x")),
            Some("redis.url")
        );
        assert_eq!(
            field(SharedTierSettings::default().prefix("a:b")),
            Some("redis.prefix")
        );
        assert_eq!(
            field(SharedTierSettings::default().io_timeout(Duration::ZERO)),
            Some("redis.timeout")
        );
        assert_eq!(
            field(SharedTierSettings::default().min_backoff(Duration::from_secs(10))),
            Some("redis.backoff")
        );
        SharedTierSettings::default().validate()
    }
}
