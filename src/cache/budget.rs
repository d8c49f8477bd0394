//! The manager-wide memory limit: what the caches of one manager weigh together, and the
//! shrink that brings them back under the limit, largest (then coldest) cache first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use super::any::AnyCache;

/// After passing the limit, caches shrink this much below it (a 16th), so that a cache at the
/// limit does not shrink again on every insert.
const HEADROOM_DIVISOR: usize = 16;

/// The bytes every cache of a manager holds, against a limit.
pub(crate) struct MemoryBudget {
    limit: usize,
    /// Kept current by every change under a shard lock; resynchronised with the caches' own
    /// sums by each shrink.
    used: AtomicUsize,
    /// Set while one thread shrinks, so that others go on instead of shrinking too.
    shrinking: AtomicBool,
    caches: RwLock<Vec<Weak<dyn AnyCache>>>,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            shrinking: AtomicBool::new(false),
            caches: RwLock::new(Vec::new()),
        })
    }

    /// Counts a cache in.
    pub fn track(&self, cache: Weak<dyn AnyCache>) {
        self.caches.write().push(cache);
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Notes that a shard went from `before` to `after` bytes; past the limit, shrinks the
    /// caches (on this thread, no lock held, unless another thread is at it).
    pub fn changed(&self, before: usize, after: usize) {
        let used = if after > before {
            self.used.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            let less = before - after;
            // Saturating: a shrink may have resynchronised the sum meanwhile.
            let prev = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(less))
                })
                .unwrap_or(0);
            prev.saturating_sub(less)
        };
        if used > self.limit {
            self.shrink();
        }
    }

    /// Brings the caches under the limit (less a headroom) if they are over it: takes from
    /// the largest cache down to the size of the next largest, ties going to the one with the
    /// lower hit rate, until the sum fits. Returns the bytes freed.
    pub fn shrink(&self) -> usize {
        if self.shrinking.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let target = self.limit - self.limit / HEADROOM_DIVISOR;
        let caches: Vec<Arc<dyn AnyCache>> = self
            .caches
            .read()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut freed = 0;
        loop {
            let mut sizes: Vec<(usize, f64, usize)> = caches
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let stats = c.stats();
                    (stats.bytes, stats.hit_rate, i)
                })
                .collect();
            let total: usize = sizes.iter().map(|s| s.0).sum();
            self.used.store(total, Ordering::Relaxed);
            // A shrink starts only over the limit, and then goes on to the headroom under it.
            if total <= target || (freed == 0 && total <= self.limit) {
                break;
            }
            sizes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)));
            let excess = total - target;
            let (largest, _, index) = sizes[0];
            let next = sizes.get(1).map_or(0, |s| s.0);
            let share = excess.div_ceil(sizes.len());
            let take = excess.min((largest - next).max(share));
            let got = caches[index].shrink_bytes(take);
            if got == 0 {
                break;
            }
            freed += got;
        }
        self.shrinking.store(false, Ordering::Release);
        freed
    }
}
