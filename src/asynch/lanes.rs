//! The threads an `AsyncDb` owns and the bounded queues that feed them: reader threads that
//! share one read queue (a slow call holds up only its own thread), and one writer thread that
//! hands what is queued to the group-commit writer as one call.
//!
//! A queue's bound is a semaphore whose permits async callers await (backpressure without a
//! blocked runtime thread); the permit travels with the call and is given back when a thread
//! takes the call off the queue, so a queue never holds more calls than it has permits.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::idle::Idle;
use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::cancel::Ticket;
use super::settings::Settings;
use crate::advisor::nplusone::{NPlusOne, Scope, ScopeKind};
use crate::db::Db;
use crate::error::{panic_error, Error, Result};

/// What a reader thread runs: the call with the `Db` (it checks a reader out itself).
pub(super) type ReadCall = Box<dyn FnOnce(&Db) + Send>;

/// What the writer thread runs inside the group transaction: the caller's closure, returning
/// how to tell the caller once the transaction has ended (committed or not).
/// The flag says whether the closure succeeded (for the write counters).
pub(super) type WriteCall = Box<dyn FnOnce(&Db, &Connection) -> (bool, Finish) + Send>;

/// Tells a write's caller the outcome once its transaction ended: `Ok` if it committed, the
/// shared cause if it did not.
pub(super) type Finish = Box<dyn FnOnce(std::result::Result<(), Arc<Error>>) + Send>;

/// A queued call with its place and its caller's ticket (a call whose caller has gone is
/// skipped), or the signal for a thread to stop once the calls before it are done.
pub(super) enum Message<C> {
    Call(OwnedSemaphorePermit, C, Arc<Ticket>),
    Stop,
}

/// One bounded queue: the permits callers await, the channel the threads take calls from.
pub(super) struct Queue<C> {
    name: &'static str,
    permits: Arc<Semaphore>,
    sender: Sender<Message<C>>,
    idle: Arc<Idle>,
}

impl<C> Drop for Queue<C> {
    fn drop(&mut self) {
        // The channel disconnects with this sender: sleepers must look and see it.
        self.idle.wake_all();
    }
}

impl<C> Queue<C> {
    fn new(name: &'static str, capacity: usize) -> (Self, Receiver<Message<C>>) {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let queue = Queue {
            name,
            permits: Arc::new(Semaphore::new(capacity)),
            sender,
            idle: Arc::new(Idle::default()),
        };
        (queue, receiver)
    }

    /// A place in the queue: at once if one is free, else awaited for up to `settings`'
    /// `queue_wait` ([`Error::QueueFull`]); [`Error::Closed`] once the queue is closed.
    pub(super) async fn place(&self, settings: &Settings) -> Result<OwnedSemaphorePermit> {
        use tokio::sync::TryAcquireError;
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {}
        }
        let started = Instant::now();
        let wait = Arc::clone(&self.permits).acquire_owned();
        match tokio::time::timeout(settings.queue_wait, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Error::Closed),
            Err(_elapsed) => Err(Error::QueueFull {
                queue: self.name,
                waited: started.elapsed(),
            }),
        }
    }

    /// Queues `call` with its place. Never waits: the place guarantees room. A call queued
    /// after the threads stopped is dropped with the channel, and its caller sees the oneshot
    /// closed ([`Error::Closed`]).
    pub(super) fn push(
        &self,
        permit: OwnedSemaphorePermit,
        call: C,
        ticket: Arc<Ticket>,
    ) -> Result<()> {
        self.sender
            .try_send(Message::Call(permit, call, ticket))
            .map_err(|_| Error::Closed)?;
        self.idle.queued();
        Ok(())
    }

    /// No more places: waiting and later callers get [`Error::Closed`]; the calls already
    /// queued still run.
    fn close(&self) {
        self.permits.close();
    }
}

/// The threads and queues of one `AsyncDb`.
pub(super) struct Lanes {
    pub(super) reads: Queue<ReadCall>,
    pub(super) writes: Queue<WriteCall>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    ids: Vec<ThreadId>,
    reader_threads: usize,
}

impl Lanes {
    pub(super) fn start(db: &Db, settings: &Settings) -> Lanes {
        let (reads, read_rx) = Queue::new("read", settings.read_queue);
        let (writes, write_rx) = Queue::new("write", settings.write_queue);
        let mut threads = Vec::with_capacity(settings.reader_threads + 1);
        for n in 0..settings.reader_threads {
            let (db, rx, idle) = (db.clone(), read_rx.clone(), Arc::clone(&reads.idle));
            threads.push(spawn(format!("strata-async-read-{n}"), move || {
                read_loop(&db, &rx, &idle)
            }));
        }
        let (db, max_batch, idle) = (db.clone(), settings.max_batch, Arc::clone(&writes.idle));
        threads.push(spawn("strata-async-write".into(), move || {
            write_loop(&db, &write_rx, max_batch, &idle)
        }));
        Lanes {
            reads,
            writes,
            ids: threads.iter().map(|t| t.thread().id()).collect(),
            threads: Mutex::new(threads),
            reader_threads: settings.reader_threads,
        }
    }

    /// Lanes with no threads, left in place of the real ones when those are stopped elsewhere.
    pub(super) fn none() -> Lanes {
        Lanes {
            reads: Queue::new("read", 1).0,
            writes: Queue::new("write", 1).0,
            threads: Mutex::new(Vec::new()),
            ids: Vec::new(),
            reader_threads: 0,
        }
    }

    /// Closes the queues and tells every thread to stop after the calls queued before; returns
    /// the threads to join (none if another caller already took them).
    pub(super) fn stop(&self) -> Vec<JoinHandle<()>> {
        let threads = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return threads;
        }
        self.reads.close();
        self.writes.close();
        // Blocking sends: a full queue drains as the threads work, and the stops queue behind
        // the calls already there, so those finish first.
        for _ in 0..self.reader_threads {
            let _ = self.reads.sender.send(Message::Stop);
            self.reads.idle.queued();
        }
        let _ = self.writes.sender.send(Message::Stop);
        self.writes.idle.queued();
        threads
    }

    /// Whether the current thread is one of these lanes' threads (which must not join itself).
    pub(super) fn is_own_thread(&self) -> bool {
        self.ids.contains(&thread::current().id())
    }
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name)
        .spawn(body)
        .expect("spawning a strata thread")
}

fn read_loop(db: &Db, rx: &Receiver<Message<ReadCall>>, idle: &Idle) {
    while let Some(Message::Call(permit, call, ticket)) = idle.next(rx) {
        // The place is free as soon as the call is off the queue.
        drop(permit);
        if ticket.cancelled() {
            continue;
        }
        // A panicking call is caught inside (its closure runs under `Db::read`'s catch); this
        // catch only keeps the thread alive should the plumbing itself panic.
        let _ = catch_unwind(AssertUnwindSafe(|| call(db)));
    }
}

fn write_loop(db: &Db, rx: &Receiver<Message<WriteCall>>, max_batch: usize, idle: &Idle) {
    let mut batch: Vec<WriteCall> = Vec::with_capacity(max_batch);
    loop {
        let mut stop = !take(idle.next(rx), &mut batch);
        // Everything queued meanwhile joins this transaction: the group commit of async callers.
        while !stop && batch.len() < max_batch {
            match rx.try_recv() {
                Ok(message) => stop = !take(Some(message), &mut batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => stop = true,
            }
        }
        if !batch.is_empty() {
            run_batch(db, &mut batch);
        }
        if stop {
            return;
        }
    }
}

/// Adds a received call to `batch` unless its caller has gone; false for a stop (or a closed
/// channel).
fn take(message: Option<Message<WriteCall>>, batch: &mut Vec<WriteCall>) -> bool {
    match message {
        Some(Message::Call(permit, call, ticket)) => {
            drop(permit);
            if !ticket.cancelled() {
                batch.push(call);
            }
            true
        }
        Some(Message::Stop) | None => false,
    }
}

/// Runs the queued writes as one call of the group-commit writer, each in a savepoint of its
/// own (a failing closure rolls back only its own changes), and tells every caller once the
/// transaction has ended: the outcome is told only after COMMIT and after the caches saw the
/// ChangeSet, like `Db::write`'s return.
fn run_batch(db: &Db, batch: &mut Vec<WriteCall>) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
    let mut succeeded = 0u64;
    let calls = std::mem::take(batch);
    let outcome = db.write(|c| {
        for call in calls {
            // A call catches its closure's panic itself; a panic here would be strata's own
            // plumbing, and dropping the call tells its caller `Closed`.
            if let Ok((ok, finish)) = catch_unwind(AssertUnwindSafe(|| call(db, c))) {
                succeeded += u64::from(ok);
                finishes.push(finish);
            }
        }
        Ok(())
    });
    count(db, finishes.len() as u64, succeeded, outcome.is_ok());
    let shared = outcome.err().map(|err| match err {
        Error::GroupFailed { source } => source,
        other => Arc::new(other),
    });
    for finish in finishes {
        finish(shared.as_ref().map_or(Ok(()), |e| Err(Arc::clone(e))));
    }
}

/// The writer counted the batch as one call of its group; the monitoring report counts the
/// writes in it: each call as written or failed, and the batch's size as a group size.
fn count(db: &Db, calls: u64, succeeded: u64, committed: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &db.inner.writer.counters;
    let (writes, failed) = if committed {
        (succeeded, calls - succeeded)
    } else {
        (0, calls)
    };
    // The batch itself, already counted once on the side of its outcome.
    let batch = if committed {
        &counters.writes
    } else {
        &counters.failed_writes
    };
    counters.writes.fetch_add(writes, Relaxed);
    counters.failed_writes.fetch_add(failed, Relaxed);
    batch.fetch_sub(1, Relaxed);
    counters.max_group.fetch_max(calls, Relaxed);
}

const SAVEPOINT: &str = "SAVEPOINT strata_async";
const RELEASE: &str = "RELEASE strata_async";
const ROLLBACK_TO: &str = "ROLLBACK TO strata_async";

fn statement(c: &Connection, sql: &str) -> Result<()> {
    c.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Wraps a caller's write closure for the writer thread: it runs in a savepoint of its own,
/// rolled back if the closure fails, panics, ran transaction control or replaced strata's hooks
/// (checked after each closure, as `Db::write` does, so that one closure's misdeed fails only
/// that closure). Each call is its own N+1 scope, as a sync `write` is: the same statement
/// run once by each of many queued writes is no N+1. The caller is told once the transaction
/// ended: its closure's error if it failed, else the transaction's failure if it did not
/// commit, else the value.
pub(super) fn write_call<T, F>(f: F, reply: tokio::sync::oneshot::Sender<Result<T>>) -> WriteCall
where
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    Box::new(move |db: &Db, c: &Connection| {
        let alert = |w: &NPlusOne| db.n_plus_one_alert(w);
        let scope = Scope::enter(&db.inner.advisor.n_plus_one, ScopeKind::Write, &alert);
        let out = statement(c, SAVEPOINT).and_then(|()| {
            let out =
                catch_unwind(AssertUnwindSafe(|| f(c))).unwrap_or_else(|p| Err(panic_error(p)));
            let out = db.inner.writer.capture.check_closure(c).and(out);
            if out.is_err() {
                let _ = statement(c, ROLLBACK_TO);
            }
            statement(c, RELEASE).and(out)
        });
        drop(scope);
        let ok = out.is_ok();
        let finish: Finish = Box::new(move |ended: std::result::Result<(), Arc<Error>>| {
            let outcome = match (out, ended) {
                (Err(err), _) => Err(err),
                (Ok(_), Err(source)) => Err(Error::GroupFailed { source }),
                (Ok(value), Ok(())) => Ok(value),
            };
            // The caller may have gone: its write ran to its end all the same.
            let _ = reply.send(outcome);
        });
        (ok, finish)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_texts_name_one_savepoint() -> Result<()> {
        for text in [SAVEPOINT, RELEASE, ROLLBACK_TO] {
            assert!(text.ends_with(" strata_async"), "{text}");
        }
        Ok(())
    }
}
