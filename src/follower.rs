//! The follower: a background thread per `Db` that notices other processes' commits.
//!
//! With the change log it polls `PRAGMA data_version` on a read connection of its own, which
//! never waits for the writer (a writer waiting for another process's lock holds it: reading
//! through it made the median propagation 130 ms with two busy processes). When the version
//! moves it reads the new `strata_changes` entries in one read transaction and applies the
//! other instances' through the caches' rules. A commit that no entry explains is found
//! through the writer connection's `data_version`, which only other connections move: when it
//! moved between two looks but no other instance's entry was written between them, a writer
//! that does not log committed, and every cache is dropped. That look only tries the writer
//! (it waits for it once the writer has been busy for 100 ms). Without the log any move of
//! the writer's version drops every cache; that look waits for the writer between two
//! transactions rather than trying it from cache reads: under back-to-back local writes a try
//! almost never found it free, and a cache could serve another process's overwritten value for
//! over a second.
//!
//! A thread that sleeps 1 ms between looks may be woken late when every core is busy, while
//! the threads serving reads are running. So the cache reads of the `Db` help: a read that
//! finds the follower's last look older than `read_help_after` (by default twice the interval,
//! so that an idle machine leaves every look to the thread) takes the look itself (if nobody is
//! taking one), on the thread that is running anyway. Both share one state under one lock, so
//! a look is taken by one of them at a time and entries are applied once, in order. Measured
//! with two processes of 16 client threads each on 2 vCPUs, the propagation p99 did not move
//! (6.7-9.7 ms, against 6.5-8.8 ms before), so that tail is not the follower's lateness alone;
//! the help bounds the follower's own lateness whenever reads run and its thread does not.

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
    /// The change log this instance appends to, read through `conn`.
    Log {
        conn: Connection,
        log: Arc<ChangeLog>,
    },
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
    looks: Arc<Looks>,
}

/// What the thread and the helping reads share: the state with the source it reads, and when
/// the last look was taken.
struct Looks {
    state: Mutex<(State, Source)>,
    /// The coarse clock's reading (ns) at the end of the last look.
    last_look: AtomicU64,
    /// How old the last look may be before a read takes the next one (ns); `u64::MAX` for
    /// never: only the change log's looks are cheap when nothing moved (the writer-only
    /// source waits for the writer).
    help_after: u64,
}

impl Looks {
    /// Takes one look with the lock held; `may_wait` for the writer (the thread may, a read
    /// that helps must not).
    fn look(&self, state: &mut (State, Source), may_wait: bool) {
        let (state, source) = state;
        match source {
            Source::Log { conn, log } => state.follow_log(conn, log, may_wait),
            Source::Writer => state.follow_writer(),
        }
        self.last_look
            .store(crate::cache::coarse_ticks(), Ordering::Relaxed);
    }
}

impl Follower {
    /// Starts the thread; reads help once its last look is older than `help_after` (never if
    /// `None`, and never without the change log).
    pub(crate) fn start(
        follow: Follow,
        mut source: Source,
        help_after: Option<Duration>,
    ) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let following = Arc::new(Following::new());
        let mut state = State {
            follow,
            following: Arc::clone(&following),
            last_version: None,
            writer_look: None,
            others: Vec::new(),
            writer_busy_since: None,
        };
        state.first_look(&mut source);
        let interval = state.follow.interval;
        let help_after = match (&source, help_after) {
            (Source::Log { .. }, Some(after)) => {
                u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)
            }
            _ => u64::MAX,
        };
        let looks = Arc::new(Looks {
            state: Mutex::new((state, source)),
            last_look: AtomicU64::new(crate::cache::coarse_ticks()),
            help_after,
        });
        let (flag, thread_looks) = (Arc::clone(&stop), Arc::clone(&looks));
        let thread = thread::Builder::new()
            .name("strata-follower".into())
            .spawn(move || run(&thread_looks, interval, &flag))?;
        Ok(Follower {
            stop,
            thread: Some(thread),
            following,
            looks,
        })
    }

    /// Called by cache reads: takes the next look if the last one is older than `help_after`
    /// and nobody is taking one. Costs a clock read and a load when the thread is on time.
    #[inline]
    pub(crate) fn help_if_late(&self) {
        let looks = &self.looks;
        if looks.help_after == u64::MAX {
            return;
        }
        let now = crate::cache::coarse_ticks();
        let last = looks.last_look.load(Ordering::Relaxed);
        if now.saturating_sub(last) < looks.help_after {
            return;
        }
        if let Some(mut state) = looks.state.try_lock() {
            looks.look(&mut state, false);
        }
    }
}

/// The thread: a look every `interval` (reads may take more in between).
fn run(looks: &Looks, interval: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        thread::park_timeout(interval);
        if stop.load(Ordering::Acquire) {
            break;
        }
        let mut state = looks.state.lock();
        looks.look(&mut state, true);
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
    /// The writer's `data_version` and the log's newest sequence number, of one snapshot, at
    /// the last look through the writer.
    writer_look: Option<(i64, i64)>,
    /// Sequence numbers of other instances' entries read since that look.
    others: Vec<i64>,
    /// Since when the writer has been found busy.
    writer_busy_since: Option<std::time::Instant>,
}

/// How long the writer may be found busy before the look waits for it.
const WRITER_PATIENCE: Duration = Duration::from_millis(100);

/// A read of the log: the entries after a position, of one snapshot.
struct Entries {
    version: i64,
    rows: Vec<(i64, i64, i64, Vec<u8>)>,
}

impl State {
    /// The log's position this instance starts from.
    fn first_look(&mut self, source: &mut Source) {
        if let Source::Log { conn, .. } = source {
            self.writer_look = self.follow.writer.with_conn(|c| writer_look(c).ok());
            match newest(conn) {
                Ok((version, last)) => {
                    self.last_version = Some(version);
                    self.following.last_seq.store(last, Ordering::Relaxed);
                }
                Err(err) => tracing::warn!(error = %err, "strata follower: first read failed"),
            }
        }
    }

    fn follow_writer(&mut self) {
        let version = self.follow.writer.with_conn(|c| data_version(c).ok());
        if self.follow.caches.foreign_check(version) {
            tracing::debug!(path = %self.follow.path, "foreign write: dropped caches");
        }
    }

    fn follow_log(&mut self, conn: &Connection, log: &ChangeLog, may_wait: bool) {
        let Ok(version) = data_version(conn) else {
            return;
        };
        let moved = Some(version) != self.last_version;
        if !moved && self.writer_busy_since.is_none() {
            return;
        }
        // Taken before the entries are read: every entry of a commit this look counts is in
        // the read below.
        let look = self.look_through_writer(may_wait);
        let unread = look
            .is_some_and(|(_, newest)| newest > self.following.last_seq.load(Ordering::Relaxed));
        if moved || unread {
            self.read_and_apply(conn, log);
        }
        if let Some((writer_version, newest)) = look {
            if let Some((before, before_newest)) = self.writer_look {
                let explained = self
                    .others
                    .iter()
                    .any(|&seq| seq > before_newest && seq <= newest);
                if writer_version != before && !explained {
                    self.gap("a commit with no change-log entry (a writer that bypasses strata, or a schema change)");
                }
            }
            self.others.retain(|&seq| seq > newest);
            self.writer_look = Some((writer_version, newest));
        }
    }

    /// The writer's version and the log's newest entry, if the writer is free (or has been
    /// busy for [`WRITER_PATIENCE`], then waiting for it if `may_wait`).
    fn look_through_writer(&mut self, may_wait: bool) -> Option<(i64, i64)> {
        let patient = may_wait
            && self
                .writer_busy_since
                .is_some_and(|since| since.elapsed() >= WRITER_PATIENCE);
        let look = if patient {
            Some(self.follow.writer.with_conn(|c| writer_look(c).ok()))
        } else {
            self.follow.writer.try_with_conn(|c| writer_look(c).ok())
        };
        match look {
            Some(look) => {
                self.writer_busy_since = None;
                look
            }
            None => {
                self.writer_busy_since
                    .get_or_insert_with(std::time::Instant::now);
                None
            }
        }
    }

    fn read_and_apply(&mut self, conn: &Connection, log: &ChangeLog) {
        let last_seq = self.following.last_seq.load(Ordering::Relaxed);
        let entries = match read_entries(conn, last_seq) {
            Ok(entries) => entries,
            Err(err) => {
                // The table went away (dropped, or the file replaced): nothing explains the
                // commit. The version is taken again at the next tick.
                self.last_version = None;
                self.gap(&format!("the change log could not be read: {err}"));
                return;
            }
        };
        self.last_version = Some(entries.version);
        if entries.rows.is_empty() {
            return;
        }
        self.others.extend(
            entries
                .rows
                .iter()
                .filter(|row| row.1 != log.instance)
                .map(|row| row.0),
        );
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

/// The connection's `data_version` and the log's newest sequence number, of one snapshot.
fn writer_look(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    newest(conn)
}

/// The `data_version` and the newest sequence number (0 for an empty log), of one snapshot.
fn newest(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.execute_batch("BEGIN")?;
    let read = (|| {
        let version = data_version(conn)?;
        let last: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM strata_changes")?
            .query_row([], |r| r.get(0))?;
        Ok((version, last.unwrap_or(0)))
    })();
    let _ = conn.execute_batch("COMMIT");
    read
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
