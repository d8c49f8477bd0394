//! One queued `write` call and how its caller waits for the leader.

use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::error::Result;

/// A queued write: a closure borrowed from the stack of the caller waiting for it.
pub(super) type Work<'a> = Box<dyn FnOnce(&Connection) -> Result<()> + Send + 'a>;

/// What the leader tells a waiting caller.
pub(super) enum Signal {
    /// Your closure ran and its transaction ended with this result.
    Done(Result<()>),
    /// You lead the next group.
    Lead,
}

/// A waiting caller has not gone to sleep (yet).
const SPINNING: u8 = 0;
/// A waiting caller sleeps in `thread::park` and needs an unpark.
const PARKED: u8 = 1;
/// The signal is in place.
const SIGNALLED: u8 = 2;

/// A caller waiting for the leader: its closure, and the hand-off of the outcome.
pub(super) struct Job {
    /// The caller's closure, taken by the leader that runs it.
    pub(super) work: Mutex<Option<Work<'static>>>,
    /// What the leader tells the caller; set before `state` becomes SIGNALLED.
    pub(super) signal: Mutex<Option<Signal>>,
    /// SPINNING, PARKED or SIGNALLED.
    state: AtomicU8,
    /// The waiting caller, to unpark if it went to sleep.
    thread: Thread,
}

impl Job {
    /// A job for `work`, waited for by the current thread.
    pub(super) fn new(work: Work<'static>) -> Self {
        Job {
            work: Mutex::new(Some(work)),
            signal: Mutex::new(None),
            state: AtomicU8::new(SPINNING),
            thread: thread::current(),
        }
    }

    /// Hands `signal` to the caller, waking it only if it sleeps.
    pub(super) fn finish(&self, signal: Signal) {
        *self.signal.lock() = Some(signal);
        // A caller still spinning sees the state and needs no wake-up: waking a sleeping thread
        // costs microseconds (an IPI on a VM), more than the whole job.
        if self.state.swap(SIGNALLED, Ordering::AcqRel) == PARKED {
            self.thread.unpark();
        }
    }

    /// Waits for the signal: yields the CPU for up to `spin`, then sleeps.
    pub(super) fn wait(&self, spin: Duration) -> Signal {
        let started = Instant::now();
        while self.state.load(Ordering::Acquire) != SIGNALLED {
            if started.elapsed() >= spin {
                if self
                    .state
                    .compare_exchange(SPINNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    while self.state.load(Ordering::Acquire) != SIGNALLED {
                        thread::park();
                    }
                }
                break;
            }
            thread::yield_now();
        }
        self.signal
            .lock()
            .take()
            .expect("a signalled job holds its signal")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn job() -> Arc<Job> {
        Arc::new(Job::new(Box::new(|_| Ok(()))))
    }

    fn is_lead(signal: Signal) -> bool {
        matches!(signal, Signal::Lead)
    }

    #[test]
    fn a_signal_given_before_the_wait_is_not_lost() -> Result<()> {
        let job = job();
        job.finish(Signal::Lead);
        assert!(is_lead(job.wait(Duration::ZERO)));
        Ok(())
    }

    #[test]
    fn a_spinning_caller_gets_the_signal() -> Result<()> {
        let job = job();
        let leader = Arc::clone(&job);
        let handle = thread::spawn(move || leader.finish(Signal::Done(Ok(()))));
        let signal = job.wait(Duration::from_secs(5));
        handle.join().expect("leader thread");
        assert!(matches!(signal, Signal::Done(Ok(()))));
        Ok(())
    }

    #[test]
    fn a_parked_caller_is_woken() -> Result<()> {
        let job = job();
        let leader = Arc::clone(&job);
        let handle = thread::spawn(move || {
            // Long enough for the caller to be asleep most runs; correct either way.
            thread::sleep(Duration::from_millis(20));
            leader.finish(Signal::Lead);
        });
        let signal = job.wait(Duration::ZERO);
        handle.join().expect("leader thread");
        assert!(is_lead(signal));
        Ok(())
    }
}
