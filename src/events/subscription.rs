//! `Subscription`: a bounded queue of the ChangeSets committed since [`Db::subscribe`]. A
//! subscriber that does not keep up loses the oldest sets, not the writer's memory, and is told
//! how many it lost.
//!
//! [`Db::subscribe`]: crate::Db::subscribe

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Capture, ChangeSet};
use crate::error::RecvError;

/// The ChangeSets a subscription holds by default before it drops the oldest.
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

struct Queue {
    sets: VecDeque<Arc<ChangeSet>>,
    /// Sets dropped since the last receive, because the queue was full.
    missed: u64,
    /// The `Db` is gone: nothing more will come.
    closed: bool,
}

/// The queue the writer pushes to and a [`Subscription`] receives from.
pub(super) struct Slot {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
}

impl Slot {
    pub(super) fn new(capacity: usize) -> Slot {
        Slot {
            queue: Mutex::new(Queue {
                sets: VecDeque::new(),
                missed: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `set`, dropping the oldest set when full: the writer never waits for a
    /// subscriber.
    pub(super) fn push(&self, set: &Arc<ChangeSet>) {
        let mut queue = self.queue.lock();
        if queue.sets.len() >= self.capacity {
            queue.sets.pop_front();
            queue.missed += 1;
        }
        queue.sets.push_back(Arc::clone(set));
        drop(queue);
        self.ready.notify_one();
    }

    /// Nothing more will be pushed.
    pub(super) fn close(&self) {
        self.queue.lock().closed = true;
        self.ready.notify_all();
    }
}

/// The [`ChangeSet`]s of the transactions committed since [`Db::subscribe`], in commit order,
/// held in a bounded queue (see [`Config::subscription_capacity`]).
///
/// When the queue is full the oldest set is dropped; the next receive then returns
/// [`RecvError::Lagged`] with the number dropped, and the one after it the oldest set still
/// held. Dropping the last `Subscription` of a `Db` turns the capture of every changed row off
/// again from the next transaction on.
///
/// [`Db::subscribe`]: crate::Db::subscribe
/// [`Config::subscription_capacity`]: crate::Config::subscription_capacity
pub struct Subscription {
    slot: Arc<Slot>,
    capture: Weak<Capture>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.slot.queue.lock();
        f.debug_struct("Subscription")
            .field("waiting", &queue.sets.len())
            .field("missed", &queue.missed)
            .field("capacity", &self.slot.capacity)
            .field("closed", &queue.closed)
            .finish()
    }
}

impl Subscription {
    pub(super) fn new(slot: Arc<Slot>, capture: Weak<Capture>) -> Subscription {
        Subscription { slot, capture }
    }

    /// The next ChangeSet, waiting for one as long as it takes. Errors: [`RecvError::Lagged`],
    /// [`RecvError::Closed`].
    pub fn recv(&self) -> Result<Arc<ChangeSet>, RecvError> {
        self.receive(Wait::Forever)
    }

    /// The next ChangeSet if one is waiting. Errors: [`RecvError::Lagged`],
    /// [`RecvError::Empty`], [`RecvError::Closed`].
    pub fn try_recv(&self) -> Result<Arc<ChangeSet>, RecvError> {
        self.receive(Wait::No)
    }

    /// The next ChangeSet, waiting for one at most `timeout`. Errors: [`RecvError::Lagged`],
    /// [`RecvError::Timeout`], [`RecvError::Closed`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Arc<ChangeSet>, RecvError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.receive(Wait::Until(deadline)),
            None => self.receive(Wait::Forever),
        }
    }

    /// A blocking iterator: each item is what [`recv`](Subscription::recv) returns, a lag
    /// included; it ends when the database is closed.
    pub fn iter(&self) -> impl Iterator<Item = Result<Arc<ChangeSet>, RecvError>> + '_ {
        std::iter::from_fn(|| match self.recv() {
            Err(RecvError::Closed) => None,
            other => Some(other),
        })
    }

    /// The ChangeSets waiting now, without blocking. It ends at the first gap: a lag is left
    /// for the next receive to report.
    pub fn try_iter(&self) -> impl Iterator<Item = Arc<ChangeSet>> + '_ {
        std::iter::from_fn(|| {
            let mut queue = self.slot.queue.lock();
            if queue.missed > 0 {
                return None;
            }
            queue.sets.pop_front()
        })
    }

    /// The most ChangeSets held before the oldest is dropped.
    pub fn capacity(&self) -> usize {
        self.slot.capacity
    }

    fn receive(&self, wait: Wait) -> Result<Arc<ChangeSet>, RecvError> {
        let mut queue = self.slot.queue.lock();
        loop {
            if queue.missed > 0 {
                return Err(RecvError::Lagged(std::mem::take(&mut queue.missed)));
            }
            if let Some(set) = queue.sets.pop_front() {
                return Ok(set);
            }
            if queue.closed {
                return Err(RecvError::Closed);
            }
            match wait {
                Wait::No => return Err(RecvError::Empty),
                Wait::Forever => self.slot.ready.wait(&mut queue),
                Wait::Until(deadline) => {
                    if self.slot.ready.wait_until(&mut queue, deadline).timed_out()
                        && queue.sets.is_empty()
                        && queue.missed == 0
                        && !queue.closed
                    {
                        return Err(RecvError::Timeout);
                    }
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(capture) = self.capture.upgrade() {
            capture.unsubscribe(&self.slot);
        }
    }
}

#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(Instant),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::Db;

    fn db(capacity: usize) -> Result<Db> {
        let db = Db::builder().subscription_capacity(capacity).build()?;
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))?;
        Ok(db)
    }

    fn insert(db: &Db, x: i64) -> Result<()> {
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES (?1)", [x]).map(drop)?))
    }

    #[test]
    fn a_full_subscription_drops_the_oldest_and_reports_how_many() -> Result<()> {
        let db = db(3)?;
        let sub = db.subscribe();
        for x in 0..5 {
            insert(&db, x)?;
        }
        assert_eq!(sub.try_iter().count(), 0, "try_iter stops at the gap");
        assert_eq!(sub.try_recv(), Err(RecvError::Lagged(2)));
        let seqs: Vec<u64> = sub.try_iter().map(|set| set.seq).collect();
        assert_eq!(seqs, [3, 4, 5], "the newest three, in order");
        assert_eq!(sub.try_recv(), Err(RecvError::Empty));
        insert(&db, 5)?;
        assert_eq!(sub.recv()?.seq, 6, "no lag reported twice");
        Ok(())
    }

    #[test]
    fn the_last_subscription_dropped_turns_every_row_capture_off() -> Result<()> {
        let db = db(8)?;
        let capture = &db.inner.writer.capture;
        let first = db.subscribe();
        let second = db.subscribe();
        insert(&db, 1)?;
        assert!(capture.hooked());
        assert_eq!(capture.last_seq(), 1);
        drop(first);
        insert(&db, 2)?;
        assert!(capture.hooked(), "one subscription is left");
        assert_eq!(second.try_iter().count(), 2);
        drop(second);
        insert(&db, 3)?;
        assert!(
            !capture.hooked(),
            "nobody subscribes: the update hook is off"
        );
        assert_eq!(
            capture.last_seq(),
            2,
            "an unwatched table's write published nothing"
        );
        // And on again for a new subscriber.
        let third = db.subscribe();
        insert(&db, 4)?;
        assert!(capture.hooked());
        assert_eq!(third.try_recv()?.changes.len(), 1);
        Ok(())
    }

    #[test]
    fn subscribing_while_others_unsubscribe_never_loses_the_hook() -> Result<()> {
        let db = db(4)?;
        std::thread::scope(|s| -> Result<()> {
            let churn = s.spawn(|| {
                for _ in 0..300 {
                    drop(db.subscribe());
                }
            });
            for x in 0..100 {
                insert(&db, x)?;
            }
            churn.join().expect("no panic");
            Ok(())
        })?;
        let kept = db.subscribe();
        insert(&db, -1)?;
        let set = kept.recv_timeout(Duration::from_secs(5))?;
        assert_eq!(set.changes.len(), 1);
        assert!(db.inner.writer.capture.hooked());
        Ok(())
    }

    #[test]
    fn receivers_learn_of_timeouts_and_of_the_closed_database() -> Result<()> {
        let db = db(8)?;
        let sub = db.subscribe();
        assert_eq!(
            sub.recv_timeout(Duration::from_millis(10)),
            Err(RecvError::Timeout)
        );
        insert(&db, 1)?;
        drop(db);
        let sets: Vec<_> = sub.iter().collect::<std::result::Result<_, _>>()?;
        assert_eq!(sets.len(), 1, "what was sent is still received");
        assert_eq!(sub.recv(), Err(RecvError::Closed));
        Ok(())
    }

    #[test]
    fn zero_capacity_is_refused() {
        let err = crate::Config::new().subscription_capacity(0).validate();
        assert!(matches!(
            err,
            Err(crate::Error::InvalidConfig {
                field: "subscription_capacity",
                ..
            })
        ));
    }
}
