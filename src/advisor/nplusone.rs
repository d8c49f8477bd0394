//! N+1 detection: one statement run many times inside one `read` or `write` scope is usually a
//! loop of point queries that one `IN (...)` or join would answer.
//!
//! Each scope has a counting frame on a thread-local stack ([`Scope::enter`]); every
//! statement executed on the thread is counted in the innermost frame ([`record`]); when the
//! scope ends, a statement counted more than the threshold becomes an [`NPlusOne`] warning.
//! Frames are pushed when the first statement is counted: statements are seen only in traced
//! (sampled) calls, and an untraced `read` should pay for its scope no more than a counter.
//! The per-statement event comes from the monitor: it calls [`record`] with each statement's
//! SQL text.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use parking_lot::Mutex;

/// How many recent warnings a `Db` keeps.
const KEPT: usize = 64;

/// Which kind of scope a warning comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ScopeKind {
    /// A `db.read` closure.
    Read,
    /// A `db.write` closure.
    Write,
}

/// One statement run more than `n_plus_one_threshold` times in one scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NPlusOne {
    /// The statement.
    pub sql: String,
    /// How many times it ran in the scope.
    pub calls: u64,
    /// The threshold it passed.
    pub threshold: usize,
    /// The scope it ran in.
    pub scope: ScopeKind,
}

/// The per-`Db` side: the threshold and the recent warnings.
#[derive(Debug)]
pub(crate) struct Detector {
    threshold: usize,
    recent: Mutex<VecDeque<NPlusOne>>,
}

impl Detector {
    pub(crate) fn new(threshold: usize) -> Self {
        Detector {
            threshold,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Logs and keeps a warning; `alert` raises it through `Config::on_alert`.
    fn report(&self, warning: NPlusOne, alert: &dyn Fn(&NPlusOne)) {
        alert(&warning);
        tracing::warn!(
            sql = %warning.sql,
            calls = warning.calls,
            threshold = warning.threshold,
            "N+1 query: one statement ran {} times in one {:?} scope; \
             one IN (...) query or a join would answer it at once",
            warning.calls,
            warning.scope,
        );
        let mut recent = self.recent.lock();
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(warning);
    }

    pub(crate) fn recent(&self) -> Vec<NPlusOne> {
        self.recent.lock().iter().cloned().collect()
    }
}

/// One counting frame: statement text to count. A short list, not a map: a scope runs a
/// handful of distinct statements, and this is on the path of every statement, where hashing
/// the SQL text would cost more than comparing a pointer.
#[derive(Default)]
struct Frame {
    counts: Vec<Counted>,
}

struct Counted {
    /// The prepared statement last seen with this text: a cached statement keeps its address,
    /// so the common case is one pointer comparison.
    stmt: usize,
    sql: Vec<u8>,
    calls: u64,
}

/// Distinct statements one frame counts; a scope running more is not a loop of one statement.
const MAX_DISTINCT: usize = 256;

thread_local! {
    /// The frames of the open scopes that counted something: frame `i` belongs to the scope at
    /// depth `i + 1`; the scopes deeper than the stack have counted nothing yet.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    /// How many scopes are open on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// A counting scope on this thread; ends (and reports) when dropped.
pub(crate) struct Scope<'a> {
    detector: &'a Detector,
    kind: ScopeKind,
    alert: &'a dyn Fn(&NPlusOne),
    /// This scope's depth (1 for the outermost); 0 if the thread is being torn down.
    depth: usize,
}

impl<'a> Scope<'a> {
    /// Starts counting statements on this thread until the scope drops.
    pub(crate) fn enter(
        detector: &'a Detector,
        kind: ScopeKind,
        alert: &'a dyn Fn(&NPlusOne),
    ) -> Scope<'a> {
        // `try_with`: during thread teardown the stack may be gone; counting is best effort.
        let depth = DEPTH
            .try_with(|d| {
                d.set(d.get() + 1);
                d.get()
            })
            .unwrap_or(0);
        Scope {
            detector,
            kind,
            alert,
            depth,
        }
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        if self.depth == 0 {
            return;
        }
        let _ = DEPTH.try_with(|d| d.set(self.depth - 1));
        let depth = self.depth;
        let frame = FRAMES
            .try_with(|f| {
                let mut frames = f.try_borrow_mut().ok()?;
                // This scope's frame exists only if it (or a deeper scope) counted something.
                if frames.len() >= depth {
                    frames.truncate(depth);
                    frames.pop()
                } else {
                    None
                }
            })
            .ok()
            .flatten();
        let Some(frame) = frame else {
            return;
        };
        let threshold = self.detector.threshold;
        let mut found: Vec<(String, u64)> = frame
            .counts
            .into_iter()
            .filter(|c| c.calls > threshold as u64)
            .map(|c| (String::from_utf8_lossy(&c.sql).into_owned(), c.calls))
            .collect();
        found.sort();
        for (sql, calls) in found {
            self.detector.report(
                NPlusOne {
                    sql,
                    calls,
                    threshold,
                    scope: self.kind,
                },
                self.alert,
            );
        }
    }
}

/// Counts one execution of `sql` (run by the prepared statement at address `stmt`) in the
/// innermost scope of this thread (no-op outside any scope). The monitor's per-statement event
/// calls this.
pub(crate) fn record(stmt: usize, sql: &[u8]) {
    let _ = FRAMES.try_with(|f| {
        let Ok(mut frames) = f.try_borrow_mut() else {
            return;
        };
        let depth = DEPTH.try_with(Cell::get).unwrap_or(0);
        if depth == 0 {
            return;
        }
        // The frames of the scopes that had counted nothing yet, this one's last.
        frames.resize_with(depth, Frame::default);
        let Some(frame) = frames.last_mut() else {
            return;
        };
        if let Some(c) = frame
            .counts
            .iter_mut()
            .find(|c| c.stmt == stmt && c.sql == sql)
        {
            c.calls += 1;
        } else if let Some(c) = frame.counts.iter_mut().find(|c| c.sql == sql) {
            // The same text through another statement (prepared anew each time).
            c.stmt = stmt;
            c.calls += 1;
        } else if frame.counts.len() < MAX_DISTINCT {
            frame.counts.push(Counted {
                stmt,
                sql: sql.to_vec(),
                calls: 1,
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    #[test]
    fn loop_of_point_queries_warns_once() -> Result<()> {
        let d = Detector::new(20);
        {
            let _scope = Scope::enter(&d, ScopeKind::Read, &|_| {});
            for _ in 0..25 {
                record(0, b"SELECT * FROM users WHERE id = ?1");
            }
            record(0, b"SELECT * FROM categories WHERE user_id = ?1");
        }
        let warnings = d.recent();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].sql, "SELECT * FROM users WHERE id = ?1");
        assert_eq!(warnings[0].calls, 25);
        assert_eq!(warnings[0].scope, ScopeKind::Read);
        Ok(())
    }

    #[test]
    fn one_in_query_and_spread_calls_do_not_warn() -> Result<()> {
        let d = Detector::new(20);
        {
            let _scope = Scope::enter(&d, ScopeKind::Read, &|_| {});
            record(
                0,
                b"SELECT * FROM users WHERE id IN (SELECT value FROM json_each(?1))",
            );
        }
        // 20 calls is the threshold itself, and calls in separate scopes do not add up.
        for _ in 0..3 {
            let _scope = Scope::enter(&d, ScopeKind::Write, &|_| {});
            for _ in 0..20 {
                record(0, b"UPDATE users SET name = ?1 WHERE id = ?2");
            }
        }
        // Outside any scope nothing is counted.
        for _ in 0..100 {
            record(0, b"SELECT 1");
        }
        assert!(d.recent().is_empty());
        Ok(())
    }

    #[test]
    fn nested_scopes_count_separately() -> Result<()> {
        let d = Detector::new(2);
        {
            let _outer = Scope::enter(&d, ScopeKind::Write, &|_| {});
            record(0, b"a");
            {
                let _inner = Scope::enter(&d, ScopeKind::Read, &|_| {});
                for _ in 0..3 {
                    record(0, b"b");
                }
            }
            record(0, b"a");
        }
        let warnings = d.recent();
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            (warnings[0].sql.as_str(), warnings[0].scope),
            ("b", ScopeKind::Read)
        );
        Ok(())
    }
}
