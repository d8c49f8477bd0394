//! An async API for tokio services: [`AsyncDb`] (feature `tokio`).
//!
//! Everything an `AsyncDb` does against the database runs on threads strata owns, never on
//! the runtime's worker threads and never through `spawn_blocking`: reads on reader threads
//! that take calls from one shared bounded queue (a slow query holds up no other read), writes
//! on one writer thread that hands every write queued meanwhile to the group-commit writer as
//! one transaction, each write in a savepoint of its own. Outcomes come back on a oneshot
//! channel. Cache hits are answered on the calling task, without any hop.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> strata::Result<()> {
//! let adb = strata::AsyncDb::new(strata::Db::open_in_memory()?);
//! adb.write(|c| Ok(c.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")?))
//!     .await?;
//! let id = adb
//!     .write(|c| {
//!         c.execute("INSERT INTO notes (body) VALUES (?1)", ["hello"])?;
//!         Ok(c.last_insert_rowid())
//!     })
//!     .await?;
//! let body: String = adb
//!     .read(move |c| Ok(c.query_row("SELECT body FROM notes WHERE id = ?1", [id], |r| r.get(0))?))
//!     .await?;
//! assert_eq!(body, "hello");
//! adb.close(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # Cancellation
//!
//! Dropping a call's future (a `select!` that took another branch, a timeout, an aborted
//! task, a client that hung up) has these effects, and no others:
//!
//! * **Not started yet**: the call is skipped; its closure never runs.
//! * **A read that runs**: the statement running at that moment is interrupted
//!   (`sqlite3_interrupt`), and so is every statement it starts afterwards (a progress handler
//!   watches the cancel flag); its read transaction is rolled back and its reader goes back to
//!   the pool clean. Its result is discarded.
//! * **A write taken into a group** (the writer thread took it off the queue): it runs to its
//!   end, committed or rolled back with its group as usual, and its result is discarded. A
//!   write is never half applied.
//! * Other calls ([`AsyncDb::run`] and what is built on it: cache misses, repositories, the
//!   [`AsyncTracker`]'s operations, `apply`, `optimize`, `health`, `advise`) run to their end
//!   once started.
//!
//! A transaction is never held across an `.await`: each call is one closure, run whole.
//!
//! # Backpressure and shutdown
//!
//! Both queues are bounded ([`AsyncConfig`]): when one is full, callers wait for a place
//! (without blocking a runtime thread) for up to `queue_wait`, then get [`Error::QueueFull`].
//! Dropping the last `AsyncDb` clone lets the queued calls finish and joins the threads (the
//! dropping thread waits for that); [`AsyncDb::close`] does it explicitly, awaiting the threads
//! up to a deadline. Calls after a close get [`Error::Closed`]. The `Db` itself closes when its
//! last handle drops, as usual.

use std::hash::Hash;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::advisor::{Advice, AdviseOptions, Health, MaintenanceReport};
use crate::batch::{Batch, BatchReport};
use crate::cache::{Cached, EntityCache};
use crate::db::Db;
use crate::error::{Error, Result};

mod cancel;
mod idle;
mod lanes;
mod reply;
mod repo;
mod settings;
mod stream;
mod tracker;

use cancel::{CancelOnDrop, Ticket};
use lanes::{Lanes, ReadCall};
use reply::InFlight;

pub use repo::AsyncRepository;
pub use settings::AsyncConfig;
pub use stream::ChangeStream;
pub use tracker::AsyncTracker;

/// An async handle to a [`Db`], for tokio services (see the [module docs](self) for where
/// each call runs, cancellation, backpressure and shutdown).
///
/// Cheap to clone, `Send + Sync`; clones share the threads and queues.
#[derive(Clone)]
pub struct AsyncDb {
    shared: Arc<Shared>,
}

struct Shared {
    db: Db,
    lanes: Lanes,
    settings: settings::Settings,
    /// Calls queued for or running on the reader threads (see [`reply`]).
    reads_in_flight: AtomicUsize,
}

impl std::fmt::Debug for AsyncDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDb")
            .field("db", &self.shared.db)
            .field("settings", &self.shared.settings)
            .finish()
    }
}

impl From<Db> for AsyncDb {
    fn from(db: Db) -> Self {
        AsyncDb::new(db)
    }
}

impl AsyncDb {
    /// An `AsyncDb` over `db` with the default [`AsyncConfig`]: as many reader threads as the
    /// reader pool has readers, one writer thread.
    pub fn new(db: Db) -> AsyncDb {
        let settings = AsyncConfig::default()
            .settings(&db)
            .expect("the default settings are valid for every Db");
        AsyncDb::start(db, settings)
    }

    /// An [`AsyncConfig`] to set options on; finish with [`AsyncConfig::build`].
    pub fn builder() -> AsyncConfig {
        AsyncConfig::default()
    }

    fn start(db: Db, settings: settings::Settings) -> AsyncDb {
        let lanes = Lanes::start(&db, &settings);
        AsyncDb {
            shared: Arc::new(Shared {
                db,
                lanes,
                settings,
                reads_in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// The `Db`, for synchronous code (and for the calls that touch no connection: caches,
    /// reports, statistics).
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// [`Db::read`] on a reader thread: `f` runs inside one read transaction on a read-only
    /// connection. Dropping the future cancels the read (see the module docs).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let ticket = Arc::new(Ticket::default());
        let running = Arc::clone(&ticket);
        self.on_reader(ticket, move |db| db.read(|c| running.run(c, f)))
            .await
    }

    /// Runs any synchronous strata operation on a reader thread, for what has no async
    /// counterpart of its own (the expense tracker's operations, a `Repository` method, ...).
    /// `f` may read and write through the `Db` it is given. Skipped if dropped before it
    /// starts; runs to its end once started.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> strata::Result<()> {
    /// use strata::domain::{ExpenseTracker, User};
    /// let tracker = ExpenseTracker::open_in_memory()?;
    /// let adb = strata::AsyncDb::new(tracker.db().clone());
    /// let users = tracker.users.clone();
    /// let ada = User { id: 0, email: "ada@example.com".into(), name: "Ada".into(), created_at: 0 };
    /// let id = adb.run(move |_| users.insert(&ada)).await?;
    /// assert!(id > 0);
    /// # Ok(()) }
    /// ```
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.on_reader(Arc::new(Ticket::default()), f).await
    }

    async fn on_reader<T, F>(&self, ticket: Arc<Ticket>, f: F) -> Result<T>
    where
        F: FnOnce(&Db) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.shared;
        let permit = shared.lanes.reads.place(&shared.settings).await?;
        let (reply, outcome) = oneshot::channel();
        let call: ReadCall = Box::new(move |db: &Db| {
            let _ = reply.send(f(db));
        });
        let mut guard = CancelOnDrop(Some(Arc::clone(&ticket)));
        let in_flight = InFlight::enter(&shared.reads_in_flight);
        shared.lanes.reads.push(permit, call, ticket)?;
        let outcome = reply::wait(outcome, in_flight, shared.settings.reply_spin).await;
        guard.disarm();
        outcome.ok_or(Error::Closed)?
    }

    /// [`Db::write`] from the writer thread: `f` runs inside the group transaction, in a
    /// savepoint of its own, together with every write queued meanwhile; the result comes
    /// after COMMIT, once the caches saw the change. An error or panic in `f` rolls back `f`'s
    /// changes only. Dropping the future before the writer thread took the call skips it;
    /// after, the write runs to its end and its result is discarded.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.shared;
        shared.db.check_writable()?;
        let permit = shared.lanes.writes.place(&shared.settings).await?;
        let (reply, outcome) = oneshot::channel();
        let call = lanes::write_call(f, reply);
        let ticket = Arc::new(Ticket::default());
        let mut guard = CancelOnDrop(Some(Arc::clone(&ticket)));
        shared.lanes.writes.push(permit, call, ticket)?;
        let outcome = outcome.await;
        guard.disarm();
        outcome.map_err(|_| Error::Closed)?
    }

    /// [`Db::cached`]: a hit is answered on the calling task; a miss is loaded by `load` on a
    /// reader thread (single-flight with every other loader of the key, sync or async).
    pub async fn cached<K, V, L>(
        &self,
        cache: &Arc<EntityCache<K, V>>,
        key: K,
        load: L,
    ) -> Result<Option<Arc<V>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
        L: FnOnce(&Connection, &K) -> Result<Option<V>> + Send + 'static,
    {
        if let Some(hit) = self.cache_hit(cache, &key) {
            return Ok(hit.into_value());
        }
        let cache = Arc::clone(cache);
        self.run(move |db| db.cached(&cache, &key, load)).await
    }

    /// [`Db::cached_many`]: answered on the calling task when every key is a hit; otherwise the
    /// whole call goes to a reader thread, which loads only the misses.
    pub async fn cached_many<K, V, L>(
        &self,
        cache: &Arc<EntityCache<K, V>>,
        keys: Vec<K>,
        load: L,
    ) -> Result<Vec<Option<Arc<V>>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
        L: FnMut(&Connection, &[K]) -> Result<Vec<(K, V)>> + Send + 'static,
    {
        if let Some(hits) = self.cache_hits(cache, &keys) {
            return Ok(hits);
        }
        let cache = Arc::clone(cache);
        self.run(move |db| db.cached_many(&cache, &keys, load))
            .await
    }

    /// `key`'s entry if the cache holds it, after the look for other processes' writes that a
    /// sync `cached` makes. A miss is not counted here: the reader thread's load counts it.
    pub(crate) fn cache_hit<K, V>(&self, cache: &EntityCache<K, V>, key: &K) -> Option<Cached<V>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.shared.db.check_foreign_writes();
        cache.lookup_hit(key)
    }

    /// Every key's entry, or `None` as soon as one is missing.
    pub(crate) fn cache_hits<K, V>(
        &self,
        cache: &EntityCache<K, V>,
        keys: &[K],
    ) -> Option<Vec<Option<Arc<V>>>>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        self.shared.db.check_foreign_writes();
        keys.iter()
            .map(|k| cache.lookup_hit(k).map(Cached::into_value))
            .collect()
    }

    /// The async repository of `E` (see [`Repository::new`](crate::Repository::new)).
    pub async fn repository<E: crate::Entity>(&self) -> Result<AsyncRepository<E>> {
        let repo = self.run(|db| crate::Repository::<E>::new(db)).await?;
        Ok(AsyncRepository::new(self.clone(), repo))
    }

    /// [`Db::apply`] on a reader thread (its chunks go through the writer as usual).
    pub async fn apply(&self, batch: Batch) -> Result<BatchReport> {
        self.run(move |db| db.apply(&batch)).await
    }

    /// [`Db::optimize`] on a reader thread.
    pub async fn optimize(&self) -> Result<MaintenanceReport> {
        self.run(|db| db.optimize()).await
    }

    /// [`Db::health`] on a reader thread.
    pub async fn health(&self) -> Result<Health> {
        self.run(|db| Ok(db.health())).await
    }

    /// [`Db::advise`] on a reader thread.
    pub async fn advise(&self, options: AdviseOptions) -> Result<Advice> {
        self.run(move |db| db.advise(options)).await
    }

    /// The [`ChangeSet`](crate::events::ChangeSet)s committed from now on, as a `Stream` (see
    /// [`Db::subscribe`]).
    pub fn subscribe(&self) -> ChangeStream {
        ChangeStream::new(self.shared.db.subscribe())
    }

    /// Closes this `AsyncDb` and every clone: calls waiting for a place and later calls get
    /// [`Error::Closed`], the calls already queued run, and the threads end. Returns `true`
    /// once every thread has ended, `false` if `deadline` passed first (they end later on
    /// their own). Needs the runtime's time driver.
    pub async fn close(&self, deadline: Duration) -> bool {
        let threads = self.shared.lanes.stop();
        if threads.is_empty() {
            return true;
        }
        let (done, joined) = oneshot::channel();
        // Joining blocks: a thread of our own does it, never a runtime thread.
        std::thread::Builder::new()
            .name("strata-async-close".into())
            .spawn(move || {
                for thread in threads {
                    let _ = thread.join();
                }
                let _ = done.send(());
            })
            .expect("spawning a strata thread");
        matches!(tokio::time::timeout(deadline, joined).await, Ok(Ok(())))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.lanes.is_own_thread() {
            // The last handle went away inside a call on one of our threads (a closure that
            // held a clone): that thread cannot join itself, so the stop and the joins happen
            // on a thread of their own.
            let lanes = std::mem::replace(&mut self.lanes, Lanes::none());
            std::thread::spawn(move || {
                for thread in lanes.stop() {
                    let _ = thread.join();
                }
            });
            return;
        }
        for thread in self.lanes.stop() {
            let _ = thread.join();
        }
    }
}
