//! Cancellation of a read whose future was dropped: skipped if it has not started, interrupted
//! (SQLite's `sqlite3_interrupt`, through rusqlite's `InterruptHandle`) if it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, InterruptHandle};

use crate::error::Result;

/// VM steps between two looks at the cancel flag while a read's closure runs (a few µs).
const PROGRESS_STEPS: std::ffi::c_int = 4_000;

/// Shared by a read's future and the reader thread that runs it.
#[derive(Default)]
pub(super) struct Ticket {
    cancelled: AtomicBool,
    /// The connection's interrupt handle while the closure runs, and only then: an interrupt
    /// must never reach the next call on the same connection.
    running: Mutex<Option<InterruptHandle>>,
}

impl Ticket {
    /// The caller has gone.
    pub(super) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Marks the read cancelled and interrupts its closure if it is running.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(handle) = self.running.lock().as_ref() {
            handle.interrupt();
        }
    }

    /// Runs `f` on `c` interruptibly: the handle is published before the flag is looked at
    /// again, so a cancel either sees the handle or is seen here.
    ///
    /// `sqlite3_interrupt` is a no-op while no statement runs, so a cancel that lands between
    /// two statements of the closure would be lost; a progress handler that reads the flag
    /// every few thousand VM steps interrupts the statements that start after it.
    pub(super) fn run<T>(
        self: &Arc<Self>,
        c: &Connection,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        *self.running.lock() = Some(c.get_interrupt_handle());
        let ticket = Arc::clone(self);
        let watched = c.progress_handler(PROGRESS_STEPS, Some(move || ticket.cancelled()));
        let out = if self.cancelled() {
            Err(interrupted())
        } else {
            watched.map_err(crate::Error::from).and_then(|()| f(c))
        };
        let _ = c.progress_handler(0, None::<fn() -> bool>);
        // Taken under the lock: once this returns, no interrupt for this call can land.
        self.running.lock().take();
        out
    }
}

/// The error of a read cancelled before its closure ran (nobody receives it).
fn interrupted() -> crate::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
        None,
    )
    .into()
}

/// Cancels its ticket when dropped armed: the future holding it was dropped before its outcome
/// came.
pub(super) struct CancelOnDrop(pub(super) Option<Arc<Ticket>>);

impl CancelOnDrop {
    /// The outcome came: nothing to cancel.
    pub(super) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(ticket) = self.0.take() {
            ticket.cancel();
        }
    }
}
