//! Single-flight: one load per cold key, whose outcome every concurrent caller shares.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::shard::Shard;

/// What waiters receive: the loaded value, or the leader's error as text (`Error` is not
/// `Clone`; the leader keeps the original).
pub(crate) type Outcome<V> = Result<Option<Arc<V>>, String>;

/// A load in progress, registered in its shard while the leader runs the loader.
pub(crate) struct Flight<V> {
    /// The shard generation the load started under. A caller that finds a newer generation
    /// must not join: the load may have read a snapshot older than the write that bumped it.
    pub generation: u64,
    outcome: Mutex<Option<Outcome<V>>>,
    done: Condvar,
}

impl<V> Flight<V> {
    pub fn new(generation: u64) -> Arc<Self> {
        Arc::new(Flight {
            generation,
            outcome: Mutex::new(None),
            done: Condvar::new(),
        })
    }

    /// Publishes the outcome and wakes every waiter; only the first completion counts.
    pub fn complete(&self, outcome: Outcome<V>) {
        let mut slot = self.outcome.lock();
        if slot.is_none() {
            *slot = Some(outcome);
            self.done.notify_all();
        }
    }

    /// Blocks until the leader completes the flight. The leader completes it on every path,
    /// panics included (see [`Leader`]), so this cannot hang.
    pub fn wait(&self) -> Outcome<V> {
        let mut slot = self.outcome.lock();
        loop {
            if let Some(outcome) = slot.as_ref() {
                return outcome.clone();
            }
            self.done.wait(&mut slot);
        }
    }
}

/// The leader of a flight. Dropping it without [`finish`](Leader::finish) (a panic in the
/// key's own `Hash`, `Eq` or `Clone`, or in a tag function) still unregisters the flight and
/// fails it, so that waiters never hang.
pub(crate) struct Leader<'a, K: Hash + Eq, V> {
    shard: &'a Shard<K, V>,
    key: &'a K,
    flight: Arc<Flight<V>>,
    finished: bool,
}

impl<'a, K: Hash + Eq, V> Leader<'a, K, V> {
    pub fn new(shard: &'a Shard<K, V>, key: &'a K, flight: Arc<Flight<V>>) -> Self {
        Leader {
            shard,
            key,
            flight,
            finished: false,
        }
    }

    /// The shard generation the load started under.
    pub fn generation(&self) -> u64 {
        self.flight.generation
    }

    /// Removes the flight from its shard unless a newer load has replaced it. Done before the
    /// outcome is published, so that no caller joins a flight that is already over.
    pub fn unregister(&self, flights: &mut HashMap<K, Arc<Flight<V>>>) {
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(self.key);
        }
    }

    /// Hands the outcome to the waiters; the flight must already be unregistered.
    pub fn finish(mut self, outcome: Outcome<V>) {
        self.flight.complete(outcome);
        self.finished = true;
    }
}

impl<K: Hash + Eq, V> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.unregister(&mut self.shard.state.lock().flights);
            self.flight
                .complete(Err("the load was abandoned by a panic".to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn waiters_get_the_first_outcome() -> Result<()> {
        let flight = Flight::<u32>::new(7);
        assert_eq!(flight.generation, 7);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| flight.wait());
            flight.complete(Ok(Some(Arc::new(1))));
            flight.complete(Err("late".into()));
            assert_eq!(waiter.join().ok(), Some(Ok(Some(Arc::new(1)))));
        });
        assert_eq!(flight.wait(), Ok(Some(Arc::new(1))));
        Ok(())
    }
}
