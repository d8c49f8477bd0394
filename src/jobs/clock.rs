//! The queue's clock: wall-clock milliseconds (run-at times, leases and backoffs are stored as
//! such, so every process on the machine reads them alike) that never fall behind the
//! monotonic clock.
//!
//! A wall clock set back (by hand, or NTP stepping a fast clock) would otherwise stall the
//! queue: every job enqueued before the jump would look due only once the wall clock caught up
//! again, and every lease would look held that long (measured on the unfixed queue: a job due in
//! 100 ms, the clock set back an hour, did not run). Reading `max(wall, floor)`, where the floor
//! is the wall time seen at the first reading carried forward by the monotonic clock, lets
//! delays, backoffs and leases run out at their real pace through such a jump. A clock set
//! forward is followed: leases then run out early, and a job may be claimed again while its
//! first run goes on; the lease token makes that first run's completion fail, and a handler
//! that completes in its own write ([`JobContext`](super::JobContext)) has its effects rolled
//! back with it.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use super::schema::ms;

/// The wall time at the process's first reading, and the monotonic instant it was read at.
static FLOOR: OnceLock<(i64, Instant)> = OnceLock::new();

/// Milliseconds since the Unix epoch: the wall clock, or the monotonic floor if the wall clock
/// was set back (see the module docs). A clock set before 1970 reads as 0.
pub(crate) fn now_ms() -> i64 {
    let wall = wall_ms();
    let (base, at) = *FLOOR.get_or_init(|| (wall, Instant::now()));
    read(wall, base, at.elapsed().as_millis())
}

/// The reading given the wall clock, the floor's base and the monotonic time since it.
fn read(wall: i64, base: i64, elapsed_ms: u128) -> i64 {
    let floor = base.saturating_add(i64::try_from(elapsed_ms).unwrap_or(i64::MAX));
    wall.max(floor)
}

#[cfg(not(test))]
fn wall_ms() -> i64 {
    ms(SystemTime::now())
}

/// In unit tests the wall clock can be set back (`tests::set_back`) while the queue runs.
#[cfg(test)]
fn wall_ms() -> i64 {
    ms(SystemTime::now()) - tests::SET_BACK_MS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::error::Result;
    use crate::jobs::Job;
    use crate::Db;

    /// How far the unit tests' wall clock is set back. Only ever set back: the floor keeps
    /// every other test's queue on time meanwhile, which is what is tested.
    pub(crate) static SET_BACK_MS: AtomicI64 = AtomicI64::new(0);

    #[test]
    fn a_clock_set_back_reads_the_monotonic_floor_and_a_clock_set_forward_is_followed() -> Result<()>
    {
        let base = 1_000_000;
        assert_eq!(read(base + 5, base, 5), base + 5, "in step");
        assert_eq!(
            read(base - 3_600_000, base, 250),
            base + 250,
            "set back an hour"
        );
        assert_eq!(
            read(base + 3_600_000, base, 250),
            base + 3_600_000,
            "set forward"
        );
        Ok(())
    }

    #[test]
    fn a_job_due_before_the_wall_clock_is_set_back_runs_on_time() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path().join("clock.db"))?;
        let queue = db.jobs()?;
        let before = now_ms();
        queue.enqueue(Job::new("tick", &1_i64)?.delay(Duration::from_millis(100)))?;
        SET_BACK_MS.fetch_max(3_600_000, Ordering::Relaxed);
        assert!(
            wall_ms() < before - 3_000_000,
            "the wall clock reads an hour back"
        );
        assert!(now_ms() >= before, "the queue's clock does not go back");
        let (ran, runs) = mpsc::channel();
        let pool = queue
            .workers()
            .threads(1)
            .poll_interval(Duration::from_millis(20))
            .handler("tick", move |_, n: i64| {
                let _ = ran.send(n);
                Ok(())
            })
            .start()?;
        let got = runs.recv_timeout(Duration::from_secs(10));
        let _ = pool.shutdown(Duration::from_secs(5));
        assert_eq!(got.ok(), Some(1), "the job ran despite the clock set back");
        Ok(())
    }
}
