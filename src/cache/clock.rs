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

/// The system's monotonic clock read at its coarse resolution; the default of every cache.
///
/// On Linux it reads `CLOCK_MONOTONIC_COARSE`: the time of the kernel's last tick (1-4 ms
/// apart), a few loads from the vDSO page, where [`Instant::now`] reads the TSC and costs
/// 25-40 ns on a virtual machine: more than the rest of a cache hit. Deadlines are therefore
/// kept to within one tick, which is far finer than any cache lifetime. Elsewhere it is
/// [`Instant::now`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        coarse_now()
    }
}

/// The clock of one cache: the system clock read inline (the hit path pays no dynamic call),
/// or one set by the cache's spec.
#[derive(Clone, Default)]
pub(crate) struct CacheClock(Option<std::sync::Arc<dyn Clock>>);

impl CacheClock {
    pub(crate) fn new(clock: Option<std::sync::Arc<dyn Clock>>) -> Self {
        CacheClock(clock)
    }

    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match &self.0 {
            None => coarse_now(),
            Some(clock) => clock.now(),
        }
    }
}

impl fmt::Debug for CacheClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "CacheClock(set)"
        } else {
            "CacheClock(system)"
        })
    }
}

/// [`SystemClock`]'s reading, for the parts of strata that keep time on a hit path.
#[inline]
pub(crate) fn coarse_now() -> Instant {
    coarse::now()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod coarse {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// An `Instant` and the coarse clock's reading (ns) taken together: a later coarse reading
    /// is turned into an `Instant` by adding how far the coarse clock moved since.
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();

    fn read_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE exists on every
        // Linux since 2.6.32 and cannot fail with a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    }

    #[inline]
    pub(super) fn now() -> Instant {
        let &(at, base) = BASE.get_or_init(|| (Instant::now(), read_ns()));
        // The coarse clock is monotonic, so this never goes backwards; `saturating_sub` only
        // guards against a kernel that would break that promise.
        at + Duration::from_nanos(read_ns().saturating_sub(base))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod coarse {
    pub(super) fn now() -> std::time::Instant {
        std::time::Instant::now()
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

    #[test]
    fn system_clock_keeps_pace_within_a_tick() -> Result<()> {
        // A tick is at most 10 ms (HZ=100); the two clocks may differ by one tick, not more.
        let tick = Duration::from_millis(10);
        let (coarse0, fine0) = (SystemClock.now(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let (coarse1, fine1) = (SystemClock.now(), Instant::now());
        let (coarse, fine) = (coarse1 - coarse0, fine1 - fine0);
        assert!(
            coarse + 2 * tick >= fine,
            "coarse {coarse:?}, fine {fine:?}"
        );
        assert!(
            coarse <= fine + 2 * tick,
            "coarse {coarse:?}, fine {fine:?}"
        );
        Ok(())
    }
}
