//! The follower: a background thread per `Db` that notices other processes' commits.
//!
//! It polls the writer connection's `PRAGMA data_version`, which only other connections'
//! commits move, so this instance's own commits never wake it. When it moves, it reads the new
//! `strata_changes` entries in one read transaction on the same connection (so that the
//! version and the entries are of one snapshot) and applies the other instances' entries
//! through the caches' rules; a move that no other instance's entry explains is a commit that
//! did not log (a writer that bypasses strata, a schema change), and drops every cache.
//! Without the log any move drops every cache. Either way it waits for the writer between two
//! transactions rather than trying it from cache reads: under back-to-back local writes a try
//! almost never found it free, and a cache could serve another process's overwritten value
//! for over a second.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rusqlite::Connection;

use crate::cache::{data_version, CacheManager};
use crate::events::ChangeSet;
use crate::instances::codec;
use crate::instances::log::{now_us, ChangeLog};
use crate::monitor::{Alert, Monitor};
use crate::writer::Writer;

/// What the follower counts, for the report.
pub(crate) struct Following {
    pub(crate) applied: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) last_gap: Mutex<Option<String>>,
    pub(crate) last_seq: AtomicI64,
    /// Microseconds from an entry's write to its application here.
    pub(crate) propagation: Mutex<Histogram<u64>>,
}

impl Following {
    fn new() -> Self {
        Following {
            applied: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            last_gap: Mutex::new(None),
            last_seq: AtomicI64::new(0),
            propagation: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            ),
        }
    }
}

/// What the thread follows.
pub(crate) enum Source {
    /// The change log this instance appends to.
    Log { log: Arc<ChangeLog> },
    /// Only the writer's `data_version`: any foreign commit drops every cache.
    Writer,
}

/// The handles the thread works with.
pub(crate) struct Follow {
    pub(crate) interval: Duration,
    pub(crate) caches: Arc<CacheManager>,
    pub(crate) writer: Arc<Writer>,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) path: String,
}

/// The running thread; stopped and joined on drop.
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(crate) following: Arc<Following>,
}

impl Follower {
    pub(crate) fn start(follow: Follow, source: Source) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let following = Arc::new(Following::new());
        let state = State {
            follow,
            following: Arc::clone(&following),
            last_version: None,
        };
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("strata-follower".into())
            .spawn(move || state.run(source, &flag))?;
        Ok(Follower {
            stop,
            thread: Some(thread),
            following,
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

struct State {
    follow: Follow,
    following: Arc<Following>,
    last_version: Option<i64>,
}

/// A read of the log: the entries after a position, of one snapshot.
struct Entries {
    version: i64,
    rows: Vec<(i64, i64, i64, Vec<u8>)>,
}

impl State {
    fn run(mut self, mut source: Source, stop: &AtomicBool) {
        if let Source::Log { .. } = &source {
            // One snapshot: a commit between the version and the position would be missed.
            let start = self.follow.writer.with_conn(|c| {
                c.execute_batch("BEGIN")?;
                let read = (|| {
                    let version = data_version(c)?;
                    let last: Option<i64> =
                        c.query_row("SELECT max(seq) FROM strata_changes", [], |r| r.get(0))?;
                    Ok::<_, rusqlite::Error>((version, last.unwrap_or(0)))
                })();
                let _ = c.execute_batch("COMMIT");
                read
            });
            match start {
                Ok((version, last)) => {
                    self.last_version = Some(version);
                    self.following.last_seq.store(last, Ordering::Relaxed);
                }
                Err(err) => tracing::warn!(error = %err, "strata follower: first read failed"),
            }
        }
        while !stop.load(Ordering::Acquire) {
            thread::park_timeout(self.follow.interval);
            if stop.load(Ordering::Acquire) {
                break;
            }
            match &mut source {
                Source::Log { log } => self.follow_log(log),
                Source::Writer => self.follow_writer(),
            }
        }
    }

    fn follow_writer(&mut self) {
        let version = self.follow.writer.with_conn(|c| data_version(c).ok());
        if self.follow.caches.foreign_check(version) {
            tracing::debug!(path = %self.follow.path, "foreign write: dropped caches");
        }
    }

    fn follow_log(&mut self, log: &ChangeLog) {
        let last_seq = self.following.last_seq.load(Ordering::Relaxed);
        let last_version = self.last_version;
        let read = self.follow.writer.with_conn(|c| {
            if data_version(c).ok() == last_version {
                return Ok(None);
            }
            read_entries(c, last_seq).map(Some)
        });
        let entries = match read {
            Ok(Some(entries)) => entries,
            Ok(None) => return,
            Err(err) => {
                // The table went away (dropped, or the file replaced): nothing explains the
                // commit. The version is taken again at the next tick.
                self.last_version = None;
                self.gap(&format!("the change log could not be read: {err}"));
                return;
            }
        };
        self.last_version = Some(entries.version);
        if !entries.rows.iter().any(|row| row.1 != log.instance) {
            self.gap("a commit with no change-log entry (a writer that bypasses strata, or a schema change)");
            if let Some(row) = entries.rows.last() {
                self.following.last_seq.store(row.0, Ordering::Relaxed);
            }
            return;
        }
        let mut sets = Vec::new();
        let mut gap = None;
        if entries.rows[0].0 != last_seq + 1 {
            gap = Some(format!(
                "the change log was pruned past this instance's position ({last_seq}, next {})",
                entries.rows[0].0
            ));
        }
        let now = now_us();
        let mut delays = Vec::new();
        for (seq, instance, at_us, blob) in &entries.rows {
            self.following.last_seq.store(*seq, Ordering::Relaxed);
            // An empty entry explains a commit that changed no rows (`PRAGMA optimize`).
            if *instance == log.instance || gap.is_some() || blob.is_empty() {
                continue;
            }
            match codec::decode(blob) {
                Some(changes)
                    if changes.iter().any(|c| {
                        c.old.is_none()
                            && c.new.is_none()
                            && self.follow.caches.needs_values(&c.table)
                    }) =>
                {
                    gap = Some(format!(
                        "change-log entry {seq} lacks column values a rule here reads (the \
                         instance that wrote it has no rule on that table)"
                    ));
                }
                Some(changes) => {
                    sets.push(ChangeSet {
                        seq: u64::try_from(*seq).unwrap_or(0),
                        changes,
                    });
                    delays.push(now.saturating_sub(*at_us).max(1));
                }
                None => gap = Some(format!("change-log entry {seq} could not be decoded")),
            }
        }
        if let Some(reason) = gap {
            self.gap(&reason);
            return;
        }
        for set in &sets {
            self.follow.caches.apply(set);
        }
        self.following
            .applied
            .fetch_add(sets.len() as u64, Ordering::Relaxed);
        let mut histogram = self.following.propagation.lock();
        for delay in delays {
            let _ = histogram.record(u64::try_from(delay).unwrap_or(1));
        }
    }

    fn gap(&self, reason: &str) {
        self.follow.caches.invalidate_all();
        self.following.gaps.fetch_add(1, Ordering::Relaxed);
        *self.following.last_gap.lock() = Some(reason.to_owned());
        tracing::warn!(path = %self.follow.path, reason, "strata: change-log gap, dropped every cache");
        self.follow.monitor.alerts.fire(Alert::ChangeLogGap {
            reason: reason.to_owned(),
        });
    }
}

/// The entries after `after`, and the `data_version` of the same snapshot.
fn read_entries(conn: &Connection, after: i64) -> rusqlite::Result<Entries> {
    conn.execute_batch("BEGIN")?;
    let read = (|| {
        let version = data_version(conn)?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, instance, at_us, changes FROM strata_changes WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([after], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Entries { version, rows })
    })();
    let _ = conn.execute_batch("COMMIT");
    read
}
