//! How a lane's idle threads wait for the next call: one looks for it (spins, yielding the
//! CPU), the others sleep, and a caller wakes a sleeper only when nobody is looking.
//!
//! Why not the channel's own blocking receive: a send on a channel with blocked receivers wakes
//! one of them on every call, even while another thread is spinning and takes the call itself a
//! moment later. On 2 vCPUs that wake-up (a futex call on the caller's path, then a third
//! runnable thread) doubled a lone caller's round trip: one reader thread answered a
//! primary-key read in 5.6-5.8 µs, four in 11.8-15.3 µs.
//!
//! No call is left waiting: a caller queues its call before it looks at the spinner flag, and a
//! spinner clears the flag before it looks at the queue a last time (both with sequentially
//! consistent fences), so either the caller sees no spinner and wakes a sleeper, or the
//! spinner sees the call. A sleeper counts itself (under the lock the caller takes to wake it)
//! before it looks at the queue once more, and the caller reads that count after queueing, so
//! either the caller sees the sleeper and wakes it, or the sleeper sees the call; a caller that
//! sees no sleeper takes no lock.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::{Condvar, Mutex};

/// How long the spinning thread keeps looking for the next call before it sleeps: a sleeping
/// thread needs a wake-up, which on a VM costs 20-40 µs, more than a lookup.
const SPIN: Duration = Duration::from_micros(50);

/// A sleeper looks at its queue again after this long even if nobody woke it: a guard against
/// a lost wake-up, never the way calls are found.
const NAP: Duration = Duration::from_millis(100);

/// The idle threads of one lane.
#[derive(Default)]
pub(super) struct Idle {
    /// A thread is looking for the next call.
    spinning: AtomicBool,
    /// Threads asleep, or about to look at the queue a last time before they sleep.
    sleepers: AtomicUsize,
    /// Held by a sleeper from its last look until it waits, and by a caller that wakes it.
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Idle {
    /// Called after a call was queued: wakes a sleeper unless a thread is looking already.
    pub(super) fn queued(&self) {
        fence(Ordering::SeqCst);
        if !self.spinning.load(Ordering::SeqCst) {
            self.wake_one();
        }
    }

    fn wake_one(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _sleep = self.sleep.lock();
            self.wake.notify_one();
        }
    }

    /// Wakes every sleeper (stop).
    pub(super) fn wake_all(&self) {
        let _sleep = self.sleep.lock();
        self.wake.notify_all();
    }

    /// The next message of `rx`; `None` once it is disconnected. Only one thread of a lane
    /// spins at a time: several spinning threads would take the cores from the callers they
    /// are about to answer (measured on 2 cores: four spinning readers more than doubled a
    /// one-caller round trip).
    pub(super) fn next<M>(&self, rx: &Receiver<M>) -> Option<M> {
        if self
            .spinning
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let started = Instant::now();
            loop {
                match rx.try_recv() {
                    Ok(message) => {
                        self.spinning.store(false, Ordering::SeqCst);
                        return Some(self.pass_on(rx, message));
                    }
                    Err(TryRecvError::Disconnected) => {
                        self.spinning.store(false, Ordering::SeqCst);
                        return None;
                    }
                    Err(TryRecvError::Empty) if started.elapsed() >= SPIN => break,
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
            self.spinning.store(false, Ordering::SeqCst);
            fence(Ordering::SeqCst);
        }
        self.sleep(rx).map(|message| self.pass_on(rx, message))
    }

    /// Waits asleep for a message (looked for once more after registering as a sleeper).
    fn sleep<M>(&self, rx: &Receiver<M>) -> Option<M> {
        loop {
            match rx.try_recv() {
                Ok(message) => return Some(message),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let mut sleep = self.sleep.lock();
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let found = match rx.try_recv() {
                Ok(message) => Some(Some(message)),
                Err(TryRecvError::Disconnected) => Some(None),
                Err(TryRecvError::Empty) => {
                    self.wake.wait_for(&mut sleep, NAP);
                    None
                }
            };
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if let Some(found) = found {
                return found;
            }
        }
    }

    /// A thread that took a call while more wait wakes a sleeper for them: the callers that
    /// queued them saw a spinner and woke nobody.
    fn pass_on<M>(&self, rx: &Receiver<M>, message: M) -> M {
        if !rx.is_empty() {
            self.wake_one();
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use std::sync::Arc;

    #[test]
    fn every_call_is_taken_by_spinners_and_sleepers_alike() -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<u32>(1024);
        let idle = Arc::new(Idle::default());
        let taken = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (rx, idle, taken) = (rx.clone(), Arc::clone(&idle), Arc::clone(&taken));
                std::thread::spawn(move || {
                    while let Some(n) = idle.next(&rx) {
                        taken.fetch_add(n, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // Bursts and pauses, so that calls meet a spinner, sleepers, or both.
        for round in 0..200u32 {
            for _ in 0..(round % 7) {
                tx.send(1).map_err(crate::Error::closure)?;
                idle.queued();
            }
            if round % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let sent: u32 = (0..200u32).map(|r| r % 7).sum();
        let deadline = Instant::now() + Duration::from_secs(10);
        while taken.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(taken.load(Ordering::SeqCst), sent);
        drop(tx);
        idle.wake_all();
        for t in threads {
            t.join()
                .map_err(|_| crate::Error::closure("a thread panicked"))?;
        }
        Ok(())
    }
}
