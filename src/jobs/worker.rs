//! Worker pools: the builder that registers handlers per kind, and the running pool's handle
//! (notifications, shutdown).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;

use super::context::JobContext;
use super::queue::{Queue, Waker};
use super::store::Claimed;
use crate::error::{Error, Result};

/// What a registered handler returns to the worker: the payload's own failure is told apart,
/// because retrying cannot fix it.
pub(crate) enum Failure {
    /// The payload does not deserialize into the handler's type.
    Payload(String),
    /// The handler returned an error.
    Handler(String),
}

/// A sync handler as registered: deserializes the payload and runs the job.
pub(crate) type SyncRun =
    Arc<dyn Fn(&JobContext, &str) -> std::result::Result<(), Failure> + Send + Sync>;

/// A registered handler: a closure run on a worker thread, or (feature `tokio`) one that
/// makes a future to run on the pool's runtime.
#[derive(Clone)]
pub(crate) enum Handler {
    Sync(SyncRun),
    #[cfg(feature = "tokio")]
    Async(super::tasks::AsyncRun),
}

/// What a pool does with a claimable job of a kind it has no handler for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownKind {
    /// Leave it waiting for a pool (maybe another process's) that handles the kind: the pool
    /// never claims it.
    #[default]
    Leave,
    /// Claim it and move it to the dead letters at once, with the reason
    /// `no handler for kind …`.
    DeadLetter,
}

/// A job that completed, sent to [`WorkerPool::completed`] receivers.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// The job's id.
    pub id: i64,
    /// The job's kind.
    pub kind: String,
    /// The run that completed it (1 for the first).
    pub attempt: u32,
    /// The handler's run time.
    pub run_time: Duration,
}

/// A run that failed, sent to [`WorkerPool::errors`] receivers.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    /// The job's id.
    pub id: i64,
    /// The job's kind.
    pub kind: String,
    /// The run that failed (1 for the first).
    pub attempt: u32,
    /// The handler's error, the panic message, or why the job could not run.
    pub error: String,
    /// When the job runs again, or `None` if it went to the dead letters.
    pub retry_at: Option<SystemTime>,
}

/// The settings of a pool, from its builder.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) threads: usize,
    pub(crate) prefetch: usize,
    pub(crate) queues: Option<String>,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) unknown: UnknownKind,
    pub(crate) limits: HashMap<String, usize>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) recurring: Vec<super::Recurring>,
}

/// Registers handlers and settings; [`WorkerPoolBuilder::start`] starts the threads. From
/// [`Queue::workers`].
pub struct WorkerPoolBuilder {
    queue: Queue,
    settings: Settings,
    queues: Vec<String>,
    pub(crate) handlers: HashMap<String, Handler>,
    completed: Vec<SyncSender<Completed>>,
    errors: Vec<SyncSender<JobError>>,
    /// The runtime async handlers run on; `None` takes the current one at start.
    #[cfg(feature = "tokio")]
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

impl Queue {
    /// A builder for a pool of worker threads working this database's jobs.
    pub fn workers(&self) -> WorkerPoolBuilder {
        WorkerPoolBuilder {
            queue: self.clone(),
            settings: Settings {
                threads: 4,
                prefetch: 4,
                queues: None,
                lease: Duration::from_secs(30),
                poll_interval: Duration::from_secs(1),
                backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(3600),
                unknown: UnknownKind::Leave,
                limits: HashMap::new(),
                shutdown_timeout: Duration::from_secs(10),
                recurring: Vec::new(),
            },
            queues: Vec::new(),
            handlers: HashMap::new(),
            completed: Vec::new(),
            errors: Vec::new(),
            #[cfg(feature = "tokio")]
            runtime: None,
        }
    }
}

impl WorkerPoolBuilder {
    /// Runs jobs of `kind` with `handler`, given the job's context and its payload
    /// deserialized into `T`. A payload that does not deserialize goes to the dead letters with
    /// serde's error; a handler error or panic retries the job (see
    /// [`backoff`](Self::backoff)) until its `max_attempts`, then buries it.
    pub fn handler<T, F>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned,
        F: Fn(&JobContext, T) -> Result<()> + Send + Sync + 'static,
    {
        let run = Handler::Sync(Arc::new(move |ctx: &JobContext, payload: &str| {
            let value: T =
                serde_json::from_str(payload).map_err(|e| Failure::Payload(e.to_string()))?;
            handler(ctx, value).map_err(|e| Failure::Handler(e.to_string()))
        }));
        self.handlers.insert(kind.into(), run);
        self
    }

    /// Worker threads: at most this many handlers run at once, sync or async (each running
    /// async handler's future holds a thread, which waits for it and records its outcome).
    /// Defaults to 4.
    pub fn threads(mut self, threads: usize) -> Self {
        self.settings.threads = threads.max(1);
        self
    }

    /// Jobs claimed ahead of free threads, so that one claim serves several runs. Defaults to
    /// 4.
    pub fn prefetch(mut self, jobs: usize) -> Self {
        self.settings.prefetch = jobs;
        self
    }

    /// Works only `queue` (call again for more). Defaults to every queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// How long a claim holds a job: a pool that dies loses its jobs' leases, which expire
    /// after this and are run again. The pool extends the leases of its jobs every third of
    /// this. Defaults to 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.max(Duration::from_millis(3));
        self
    }

    /// How often the pool looks for jobs when nothing wakes it: jobs enqueued by other
    /// processes, expired leases. Jobs enqueued by this process wake it at commit, and delayed
    /// jobs at their run time. Defaults to 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The wait before the first retry; each further retry doubles it, up to `max`, and a
    /// random jitter takes off up to half. Defaults to 1 s and 1 h.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.settings.backoff = first;
        self.settings.max_backoff = max.max(first);
        self
    }

    /// At most `limit` jobs of `kind` run at once in this pool. Defaults to no limit but the
    /// threads.
    pub fn concurrency(mut self, kind: impl Into<String>, limit: usize) -> Self {
        self.settings.limits.insert(kind.into(), limit.max(1));
        self
    }

    /// What to do with jobs of kinds without a handler. Defaults to [`UnknownKind::Leave`].
    pub fn unknown_kinds(mut self, policy: UnknownKind) -> Self {
        self.settings.unknown = policy;
        self
    }

    /// How long dropping the pool waits for running handlers (see
    /// [`WorkerPool::shutdown`]). Defaults to 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// Fires `schedule` at the start of each of its slots (once per slot across every pool
    /// and process; see [`Recurring`](super::Recurring)). Defaults to no schedules.
    pub fn recurring(mut self, schedule: super::Recurring) -> Self {
        self.settings.recurring.push(schedule);
        self
    }

    /// A receiver of every job the pool will complete, subscribed before it starts, so that
    /// none is missed (see [`WorkerPool::completed`]).
    pub fn completed(&mut self) -> Receiver<Completed> {
        let (tx, rx) = sync_channel(NOTIFICATION_CAPACITY);
        self.completed.push(tx);
        rx
    }

    /// A receiver of every failed run of the pool, subscribed before it starts (see
    /// [`WorkerPool::errors`]).
    pub fn errors(&mut self) -> Receiver<JobError> {
        let (tx, rx) = sync_channel(NOTIFICATION_CAPACITY);
        self.errors.push(tx);
        rx
    }

    /// Starts the worker threads and the dispatcher. With no handler and
    /// [`UnknownKind::Leave`] the pool could never run anything: [`Error::InvalidConfig`].
    pub fn start(mut self) -> Result<WorkerPool> {
        if self.handlers.is_empty() && self.settings.unknown == UnknownKind::Leave {
            return Err(Error::InvalidConfig {
                field: "workers",
                reason: "no handler registered".into(),
            });
        }
        #[cfg(feature = "tokio")]
        let runtime = self.resolve_runtime()?;
        if !self.queues.is_empty() {
            self.settings.queues = Some(serde_json::to_string(&self.queues).unwrap_or_default());
        }
        let pool = Arc::new(PoolInner {
            queue: self.queue,
            kinds: serde_json::to_string(&self.handlers.keys().collect::<Vec<_>>())
                .unwrap_or_default(),
            handlers: self.handlers,
            settings: self.settings,
            waker: Arc::new(Waker::default()),
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
            completed: Mutex::new(self.completed),
            errors: Mutex::new(self.errors),
            #[cfg(feature = "tokio")]
            runtime,
        });
        pool.queue.shared.add_waker(&pool.waker);
        let mut threads = Vec::with_capacity(pool.settings.threads + 1);
        for i in 0..pool.settings.threads {
            let p = Arc::clone(&pool);
            threads.push(spawn(format!("strata-job-{i}"), move || p.work_loop())?);
        }
        let p = Arc::clone(&pool);
        let dispatcher = spawn("strata-jobs".into(), move || p.dispatch_loop())?;
        Ok(WorkerPool {
            pool,
            dispatcher: Some(dispatcher),
            threads,
        })
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| Error::Io {
            path: name.into(),
            source,
        })
}

/// What the pool's threads share.
pub(crate) struct PoolInner {
    pub(crate) queue: Queue,
    pub(crate) settings: Settings,
    pub(crate) handlers: HashMap<String, Handler>,
    /// JSON array of the handled kinds, for the claim.
    pub(crate) kinds: String,
    /// The dispatcher sleeps here: enqueue commits, resumes and finished runs wake it.
    pub(crate) waker: Arc<Waker>,
    pub(crate) state: Mutex<PoolState>,
    /// Worker threads sleep here until a claimed job is ready.
    pub(crate) work: Condvar,
    pub(crate) completed: Mutex<Vec<SyncSender<Completed>>>,
    pub(crate) errors: Mutex<Vec<SyncSender<JobError>>>,
    /// Where async handlers' futures run; set when the pool has async handlers.
    #[cfg(feature = "tokio")]
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

/// A run whose handler succeeded, waiting for its completion to commit.
pub(crate) struct Finished {
    pub(crate) id: i64,
    pub(crate) token: i64,
    pub(crate) kind: String,
    pub(crate) attempt: u32,
    pub(crate) run_time: Duration,
}

#[derive(Default)]
pub(crate) struct PoolState {
    /// Claimed jobs no thread has started.
    pub(crate) ready: VecDeque<Claimed>,
    /// Jobs a thread runs: id to lease token.
    pub(crate) running: HashMap<i64, i64>,
    /// Claimed jobs (ready or running) per kind, for the concurrency limits.
    pub(crate) per_kind: HashMap<String, usize>,
    /// Runs to complete in the dispatcher's next write.
    pub(crate) finished: Vec<Finished>,
    pub(crate) stopping: bool,
    /// Jobs the dispatcher claimed while the pool was stopping and handed straight back.
    pub(crate) released_late: usize,
}

/// A running pool of worker threads. Dropping it shuts it down (see
/// [`WorkerPool::shutdown`]).
pub struct WorkerPool {
    pool: Arc<PoolInner>,
    dispatcher: Option<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Notifications a receiver may hold before further ones are dropped (a receiver nobody reads
/// must not grow without bound).
const NOTIFICATION_CAPACITY: usize = 4096;

/// What [`WorkerPool::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shutdown {
    /// Claimed jobs no handler had started, handed back to the queue.
    pub released: usize,
    /// Handlers still running at the deadline: their jobs stay leased, and run again once the
    /// lease expires unless the handler completes them first.
    pub abandoned: usize,
}

impl WorkerPool {
    /// A receiver of every job this pool completes from now on (up to 4096 unread; further
    /// ones are dropped). Jobs that were waiting when the pool started may complete before
    /// this is called: subscribe on the builder ([`WorkerPoolBuilder::completed`]) to see
    /// every one.
    pub fn completed(&self) -> Receiver<Completed> {
        let (tx, rx) = sync_channel(NOTIFICATION_CAPACITY);
        self.pool.completed.lock().push(tx);
        rx
    }

    /// A receiver of every failed run of this pool from now on: handler errors, panics,
    /// payloads that do not deserialize, unknown kinds (up to 4096 unread). Subscribe on the
    /// builder ([`WorkerPoolBuilder::errors`]) to see the failures of the first runs too.
    pub fn errors(&self) -> Receiver<JobError> {
        let (tx, rx) = sync_channel(NOTIFICATION_CAPACITY);
        self.pool.errors.lock().push(tx);
        rx
    }

    /// Stops claiming, hands claimed jobs that no handler started back to the queue, and
    /// waits up to `timeout` for running handlers to finish. Handlers still running then are
    /// left to finish on their own threads; their jobs stay leased and are run again after the
    /// lease expires unless they complete first.
    pub fn shutdown(mut self, timeout: Duration) -> Shutdown {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> Shutdown {
        let unstarted: Vec<Claimed> = {
            let mut state = self.pool.state.lock();
            state.stopping = true;
            state.ready.drain(..).collect()
        };
        self.pool.work.notify_all();
        self.pool.waker.wake();
        let released = self.pool.release(&unstarted);
        let deadline = Instant::now() + timeout;
        let mut abandoned = 0;
        let workers = self.threads.drain(..).map(|h| (h, true));
        for (handle, runs_handlers) in workers.chain(self.dispatcher.take().map(|h| (h, false))) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else if runs_handlers {
                abandoned += 1;
            }
        }
        self.pool.flush_finished();
        let released = released + self.pool.state.lock().released_late;
        Shutdown {
            released,
            abandoned,
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if self.dispatcher.is_some() {
            let timeout = self.pool.settings.shutdown_timeout;
            self.stop(timeout);
        }
    }
}
