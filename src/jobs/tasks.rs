//! Async handlers (feature `tokio`): a handler's future runs on a tokio runtime, while its job
//! is claimed, leased, completed, retried or buried on the pool's own threads, as for a sync
//! handler.
//!
//! A worker thread that takes a job of an async kind spawns the handler's future on the
//! runtime and waits for it, parked; then it records the outcome through the same code as a
//! sync handler's. So the database work of the queue never runs on a runtime thread, the
//! pool's [`threads`](WorkerPoolBuilder::threads) bound the futures in flight, the
//! [`concurrency`](WorkerPoolBuilder::concurrency) limits, notifications and stats hold as
//! they are, and [`WorkerPool::shutdown`](super::WorkerPool::shutdown) waits for running
//! futures the way it waits for running sync handlers.
//!
//! A handler that needs the database uses an `AsyncDb`: see
//! [`WorkerPoolBuilder::async_handler`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::runtime::Handle;

use super::context::JobContext;
use super::worker::{Failure, Handler, WorkerPoolBuilder};
use crate::error::{panic_error, Error, Result};

type BoxFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// An async handler as registered: deserializes the payload and makes the future.
pub(crate) type AsyncRun =
    Arc<dyn Fn(Arc<JobContext>, &str) -> std::result::Result<BoxFuture, Failure> + Send + Sync>;

impl WorkerPoolBuilder {
    /// Runs jobs of `kind` with an async `handler` (feature `tokio`): given the job's context
    /// and its payload deserialized into `T`, it returns the future that runs the job, on the
    /// pool's [`runtime`](Self::runtime). Failures are handled as for
    /// [`handler`](Self::handler): a payload that does not deserialize goes to the dead letters,
    /// an error or a panic of the future retries the job until its `max_attempts`, and so does
    /// a future the runtime drops unfinished (it shut down).
    ///
    /// Each running future holds one of the pool's [`threads`](Self::threads), which waits for
    /// it without using the CPU, then records its outcome: the queue's own database work stays
    /// on strata's threads, and the [`concurrency`](Self::concurrency) limits, notifications,
    /// stats and [`WorkerPool::shutdown`](super::WorkerPool::shutdown) treat it as a sync
    /// handler's run.
    ///
    /// A handler that needs the database uses an [`AsyncDb`](crate::AsyncDb) (whose calls run on
    /// strata's threads too): make one for the service and move a clone into the handler, rather
    /// than one per job (each starts threads). To commit the handler's effects with the job's
    /// completion, move the context (an `Arc`: clone it if the future needs it afterwards) into
    /// an `AsyncDb::write` closure that calls [`JobContext::complete_in`]. The context's own
    /// [`db`](JobContext::db) and [`heartbeat`](JobContext::heartbeat) block the calling
    /// thread: a future does not call them directly (the pool renews its leases anyway).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> strata::Result<()> {
    /// use std::time::Duration;
    /// use strata::jobs::Job;
    ///
    /// let db = strata::Db::open_in_memory()?;
    /// db.write(|c| Ok(c.execute_batch("CREATE TABLE mails (id INTEGER PRIMARY KEY, sent INT)")?))?;
    /// let adb = strata::AsyncDb::new(db.clone());
    /// let queue = db.jobs()?;
    /// db.write(|c| {
    ///     c.execute("INSERT INTO mails (id, sent) VALUES (1, 0)", [])?;
    ///     queue.enqueue_in(c, Job::new("send_mail", &1_i64)?)?;
    ///     Ok(())
    /// })?;
    ///
    /// let mut workers = queue.workers().threads(16).async_handler("send_mail", move |ctx, id: i64| {
    ///     let adb = adb.clone();
    ///     async move {
    ///         tokio::time::sleep(Duration::from_millis(1)).await; // the mail server's reply
    ///         // The mail's state and the job's completion commit together.
    ///         adb.write(move |c| {
    ///             c.execute("UPDATE mails SET sent = 1 WHERE id = ?1", [id])?;
    ///             ctx.complete_in(c)
    ///         })
    ///         .await
    ///     }
    /// });
    /// let completed = workers.completed();
    /// let pool = workers.start()?; // takes the current runtime
    /// let done = tokio::task::spawn_blocking(move || completed.recv_timeout(Duration::from_secs(10)))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(done.map(|d| d.kind).ok().as_deref(), Some("send_mail"));
    /// // Shutting down blocks while it waits for running handlers: not on a runtime thread.
    /// tokio::task::spawn_blocking(move || pool.shutdown(Duration::from_secs(5))).await.unwrap();
    /// # Ok(()) }
    /// ```
    pub fn async_handler<T, F, Fut>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned,
        F: Fn(Arc<JobContext>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let run: AsyncRun = Arc::new(move |ctx: Arc<JobContext>, payload: &str| {
            let value: T =
                serde_json::from_str(payload).map_err(|e| Failure::Payload(e.to_string()))?;
            Ok(Box::pin(handler(ctx, value)) as BoxFuture)
        });
        self.handlers.insert(kind.into(), Handler::Async(run));
        self
    }

    /// The tokio runtime async handlers run on. Defaults to the runtime
    /// [`start`](Self::start) is called in; a pool with async handlers started outside of one,
    /// without this, fails to start with [`Error::InvalidConfig`] (`runtime`).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The runtime the pool's async handlers run on, `None` if it has none.
    pub(crate) fn resolve_runtime(&self) -> Result<Option<Handle>> {
        let has_async = self
            .handlers
            .values()
            .any(|h| matches!(h, Handler::Async(_)));
        if !has_async {
            return Ok(None);
        }
        if let Some(runtime) = &self.runtime {
            return Ok(Some(runtime.clone()));
        }
        Handle::try_current()
            .map(Some)
            .map_err(|e| Error::InvalidConfig {
                field: "runtime",
                reason: format!(
                    "async handlers need a tokio runtime: start the pool in one or give it \
                     with `runtime(handle)` ({e})"
                ),
            })
    }
}

/// Runs `handler`'s future for `ctx`'s job on `runtime`, waiting for it on this (a pool's)
/// thread; a panic of the handler or its future is a failed run.
pub(crate) fn run(
    runtime: &Handle,
    handler: &AsyncRun,
    ctx: &Arc<JobContext>,
) -> std::result::Result<(), Failure> {
    let (handler, ctx) = (Arc::clone(handler), Arc::clone(ctx));
    // The handler is called in the task, so that a panic while making the future is caught
    // like one while polling it.
    let task = runtime.spawn(async move {
        let future = handler(Arc::clone(&ctx), &ctx.job.payload)?;
        future.await.map_err(|e| Failure::Handler(e.to_string()))
    });
    match runtime.block_on(task) {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(Failure::Handler(panic_error(e.into_panic()).to_string())),
        Err(_) => Err(Failure::Handler(
            "the tokio runtime shut down before the handler finished".into(),
        )),
    }
}
