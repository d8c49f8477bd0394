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
/// or one set by the cache's spec; with its readings also as "ticks", nanoseconds since a
/// base instant, which a hit compares without `Instant` arithmetic.
#[derive(Clone)]
pub(crate) struct CacheClock {
    clock: Option<std::sync::Arc<dyn Clock>>,
    /// Tick 0: the coarse clock's base for the system clock, the set clock's reading when the
    /// cache was made otherwise (a clock never goes backwards, so no later reading is before).
    base: Instant,
}

impl CacheClock {
    pub(crate) fn new(clock: Option<std::sync::Arc<dyn Clock>>) -> Self {
        let base = match &clock {
            None => coarse::base(),
            Some(clock) => clock.now(),
        };
        CacheClock { clock, base }
    }

    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match &self.clock {
            None => coarse_now(),
            Some(clock) => clock.now(),
        }
    }

    /// [`now`](Self::now) in ticks.
    #[inline]
    pub(crate) fn ticks(&self) -> u64 {
        match &self.clock {
            None => coarse::ticks(),
            Some(clock) => self.ticks_of(clock.now()),
        }
    }

    /// The instant of `ticks`: a reading in ticks turned back, without reading the clock again.
    pub(crate) fn instant_of(&self, ticks: u64) -> Instant {
        self.base + std::time::Duration::from_nanos(ticks)
    }

    /// `at` in ticks; an instant before tick 0 is tick 0.
    pub(crate) fn ticks_of(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// [`SystemClock`]'s reading in nanoseconds since a process-wide base: an integer to compare,
/// for the parts of strata that keep time on a hit path.
#[inline]
pub(crate) fn coarse_ticks() -> u64 {
    coarse::ticks()
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

    #[inline]
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
    fn base_pair() -> (Instant, u64) {
        *BASE.get_or_init(|| (Instant::now(), read_ns()))
    }

    pub(super) fn base() -> Instant {
        base_pair().0
    }

    /// Nanoseconds the coarse clock moved since the base. It is monotonic, so this never goes
    /// backwards; `saturating_sub` only guards against a kernel that would break that promise.
    #[inline]
    pub(super) fn ticks() -> u64 {
        read_ns().saturating_sub(base_pair().1)
    }

    #[inline]
    pub(super) fn now() -> Instant {
        base() + Duration::from_nanos(ticks())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod coarse {
    use std::sync::OnceLock;
    use std::time::Instant;

    static BASE: OnceLock<Instant> = OnceLock::new();

    pub(super) fn base() -> Instant {
        *BASE.get_or_init(Instant::now)
    }

    pub(super) fn ticks() -> u64 {
        u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn now() -> Instant {
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
