//! Refresh ahead: a hit on an entry past its refresh point hands out the value and queues one
//! reload on the manager's refresh thread.
//!
//! Why one thread per manager, not one per reload nor the caller's: a reload is a primary-key
//! read of tens of microseconds, a burst of due keys would otherwise start a burst of threads,
//! and the caller must not wait. The thread is not woken by the caller either: it looks at its
//! queue every [`POLL`]. A first version woke it through a channel, and on the 2-core load test
//! the woken thread often ran its reload on the caller's core before the caller went on, which
//! took get_user's p99 from 21 to 51 µs. The queue is bounded; a reload that does not fit is
//! dropped (the entry stays until it expires, and the next hit asks again).

use std::hash::Hash;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::entity::EntityCache;
use super::flight::Flight;
use super::shard::Shard;

/// Reloads waiting for the refresh thread, at most.
const QUEUE: usize = 1024;

/// How often the refresh thread looks for reloads: short next to any TTL worth refreshing
/// ahead of, long enough that an idle thread costs nothing measurable.
const POLL: Duration = Duration::from_millis(5);

type Job = Box<dyn FnOnce() + Send>;

/// The queue the callers fill and the refresh thread drains.
#[derive(Default)]
struct Queue {
    jobs: Mutex<Vec<Job>>,
    /// Set when the manager is dropped: the thread runs what is queued and ends.
    closed: AtomicBool,
}

/// The refresh thread of a manager, started by the first reload.
#[derive(Default)]
pub(crate) struct Refresher {
    queue: Arc<Queue>,
    thread: Mutex<Option<Thread>>,
}

impl Refresher {
    /// Queues `job`; false when the queue is full or the thread could not start.
    fn submit(&self, job: Job) -> bool {
        let mut thread = self.thread.lock();
        if thread.is_none() {
            let queue = Arc::clone(&self.queue);
            let started = std::thread::Builder::new()
                .name("strata-cache-refresh".into())
                .spawn(move || loop {
                    std::thread::park_timeout(POLL);
                    let closed = queue.closed.load(Ordering::Acquire);
                    let jobs = std::mem::take(&mut *queue.jobs.lock());
                    for job in jobs {
                        // A panicking loader is already turned into an error by the load
                        // path; this keeps the thread alive whatever else happens.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                    if closed {
                        return;
                    }
                });
            match started {
                Ok(handle) => *thread = Some(handle.thread().clone()),
                Err(_) => return false,
            }
        }
        let mut jobs = self.queue.jobs.lock();
        if jobs.len() >= QUEUE {
            return false;
        }
        jobs.push(job);
        true
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().as_ref() {
            thread.unpark();
        }
    }
}

/// What a registered cache needs to refresh: the manager's thread and a weak handle on itself
/// for the queued reload (weak, so that a queued reload does not keep a dropped cache alive).
pub(crate) struct Link<K: Send, V: Send + Sync> {
    pub refresher: Arc<Refresher>,
    pub cache: Weak<EntityCache<K, V>>,
}

impl<K, V> EntityCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Connects a registered cache to its manager's refresh thread.
    pub(crate) fn attach_refresher(self: &Arc<Self>, refresher: &Arc<Refresher>) {
        let _ = self.link.set(Link {
            refresher: Arc::clone(refresher),
            cache: Arc::downgrade(self),
        });
    }

    /// Starts a reload of `key` if its entry is past `refresh_at` and none runs: registers a
    /// flight (so that callers who miss meanwhile join it, and a second hit does not start
    /// another) under the current generation, and queues the reload.
    pub(crate) fn refresh_if_due(
        &self,
        shard: &Shard<K, V>,
        key: &K,
        refresh_at: Option<Instant>,
        now: Instant,
    ) {
        if refresh_at.is_none_or(|at| now < at) {
            return;
        }
        let (Some(link), Some(loader)) = (self.link.get(), &self.loader) else {
            return;
        };
        let flight = {
            let mut state = shard.state.lock();
            let generation = shard.generation();
            // A front copy may be older than the shard's entry, already refreshed.
            if state.flights.contains_key(key) || !state.refresh_due(key, now) {
                return;
            }
            let flight = Flight::new(generation);
            state.flights.insert(key.clone(), Arc::clone(&flight));
            flight
        };
        let job: Job = {
            let (cache, key, loader, flight) = (
                link.cache.clone(),
                key.clone(),
                Arc::clone(loader),
                Arc::clone(&flight),
            );
            Box::new(move || match cache.upgrade() {
                Some(cache) => {
                    let shard = cache.shard(&key);
                    // The outcome reaches any waiter through the flight; the refresh itself
                    // has no caller to hand an error to (it is counted in `load_errors`).
                    let _ = cache.lead(shard, &key, flight, |k| loader(k));
                }
                None => flight.complete(Err("the cache was dropped".to_owned())),
            })
        };
        if !link.refresher.submit(job) {
            let mut state = shard.state.lock();
            if state
                .flights
                .get(key)
                .is_some_and(|f| Arc::ptr_eq(f, &flight))
            {
                state.flights.remove(key);
            }
            drop(state);
            flight.complete(Err("the refresh queue is full".to_owned()));
        }
    }
}
