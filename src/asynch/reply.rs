//! Waiting for a reader thread's reply: a lone call looks for it on its own thread for a
//! moment before it suspends its task.
//!
//! Why: a suspended task is resumed by waking the runtime's worker thread, which parked when
//! it ran out of tasks; on a VM that wake-up costs 5-40 µs, several times the primary-key read
//! the call waited for (1.5-2 µs). A reader thread that is not busy answers within a few
//! microseconds, so a caller with nothing else in flight gets its reply sooner by looking for
//! it. With other calls in flight the runtime has other tasks to run (and the reader threads
//! need the cores), so the call suspends at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot::{self, error::TryRecvError};

/// A call counted in flight on the reader threads until dropped.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub(super) fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }

    /// True when this is the only call in flight.
    fn alone(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 1
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reply on `rx`: looked for for up to `spin` while `in_flight` is the only call, else (or
/// then) awaited; `None` if the sender went away without one.
pub(super) async fn wait<T>(
    mut rx: oneshot::Receiver<T>,
    in_flight: InFlight<'_>,
    spin: Duration,
) -> Option<T> {
    if !spin.is_zero() && in_flight.alone() {
        let started = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(reply) => return Some(reply),
                // A receiver that saw `Closed` must not be awaited.
                Err(TryRecvError::Closed) => return None,
                // Another call came in: the runtime has work, leave the thread to it.
                Err(TryRecvError::Empty) if !in_flight.alone() || started.elapsed() >= spin => {
                    break
                }
                // Yield rather than spin: should the reader thread share this core, it runs.
                Err(TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn a_lone_call_finds_a_reply_sent_while_it_looks() -> Result<()> {
        let count = AtomicUsize::new(0);
        let (tx, rx) = oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            tx.send(7).ok();
        });
        let reply = block_on(wait(rx, InFlight::enter(&count), Duration::from_secs(5)));
        sender.join().ok();
        assert_eq!(reply, Some(7));
        assert_eq!(count.load(Ordering::Relaxed), 0, "the guard left the count");
        Ok(())
    }

    #[test]
    fn a_dropped_sender_ends_the_look_at_once() -> Result<()> {
        let count = AtomicUsize::new(0);
        let (tx, rx) = oneshot::channel::<u32>();
        drop(tx);
        let started = Instant::now();
        let reply = block_on(wait(rx, InFlight::enter(&count), Duration::from_secs(30)));
        assert!(reply.is_none());
        assert!(started.elapsed() < Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn with_other_calls_in_flight_it_awaits() -> Result<()> {
        let count = AtomicUsize::new(0);
        let _other = InFlight::enter(&count);
        let (tx, rx) = oneshot::channel();
        let mine = InFlight::enter(&count);
        assert!(!mine.alone());
        tx.send(3).ok();
        assert_eq!(block_on(wait(rx, mine, Duration::from_secs(1))), Some(3));
        assert_eq!(count.load(Ordering::Relaxed), 1);
        Ok(())
    }
}
