//! Time as a cache sees it, injectable so that TTL tests advance time instead of sleeping.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The source of "now" for TTL checks.
///
/// A cache asks its clock once per access, so an implementation must be cheap: the hit path
/// budget is tens of nanoseconds.
pub trait Clock: Send + Sync {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// The monotonic system clock ([`Instant::now`]); the default of every cache.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until told to move; for tests of TTL expiry.
///
/// ```
/// # fn main() -> strata::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use strata::cache::{Cached, EntityCache, ManualClock};
///
/// let clock = Arc::new(ManualClock::new());
/// let cache: EntityCache<u64, String> = EntityCache::builder("users")
///     .ttl(Duration::from_secs(60))
///     .clock(clock.clone())
///     .build()?;
/// cache.insert(1, "Ada".to_owned());
/// clock.advance(Duration::from_secs(61));
/// assert!(cache.get(&1).is_none()); // expired
/// # Ok(()) }
/// ```
pub struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock reading the instant it was created until [`advance`](ManualClock::advance)d.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `by`; a step past what [`Instant`] can represent is ignored.
    pub fn advance(&self, by: Duration) {
        let mut elapsed = self.elapsed.lock();
        let next = elapsed.saturating_add(by);
        if self.start.checked_add(next).is_some() {
            *elapsed = next;
        }
    }

    /// How far the clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        // `advance` keeps `start + elapsed` representable, so this cannot fail.
        self.start.checked_add(self.elapsed()).unwrap_or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn manual_clock_moves_only_when_advanced() -> Result<()> {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        assert_eq!(clock.elapsed(), Duration::from_secs(5));
        Ok(())
    }

    #[test]
    fn system_clock_does_not_go_backwards() -> Result<()> {
        let a = SystemClock.now();
        assert!(SystemClock.now() >= a);
        Ok(())
    }
}
