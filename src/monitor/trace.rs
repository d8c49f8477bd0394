//! Capture: SQLite's trace hook, on while a caller's closure runs.
//!
//! `read` and the writer run the caller's closure through [`Monitor::watch`], which registers
//! SQLite's trace hook on the closure's connection and takes it off afterwards, so statements
//! outside closures (BEGIN/COMMIT, savepoints, migrations, strata's maintenance) are neither
//! counted nor slowed down: with the profile event on, SQLite reads the clock at the start and
//! end of every statement. The hook's context is a [`Scope`] on `watch`'s stack: the runs in
//! flight on that connection, its slow statements, and the monitor. A connection is used by one
//! thread at a time and the hook runs on that thread, so the scope needs neither a lock nor a
//! thread-local.
//!
//! The hook is registered through `rusqlite::ffi` rather than `Connection::trace_v2`: rusqlite's
//! wrapper takes a plain `fn` (no context), converts the SQL text to UTF-8 on every statement
//! start and hides the statement's address, which then costs a second conversion to tell
//! interleaved statements apart. Measured on a 2.5 µs primary-key lookup, the wrapper with an
//! empty callback already spent 5-7% of the 10% budget; the raw hook identifies a statement by
//! its address and reads the text once, when the statement ends.
//!
//! SQLite's own profile duration has millisecond resolution (it uses the VFS clock), useless
//! for microsecond statements; so a statement's start is taken at the `STMT` event (fired by
//! its first step) and its end at the `PROFILE` event (completion or reset), both from the
//! calibrated TSC through `quanta` (~8 ns a read where the OS clock costs 20-60 ns).

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Duration;

use rusqlite::ffi;
use rusqlite::Connection;

use super::queries::Execution;
use super::sampling::{Plan, Site, TracedRun};
use super::Monitor;

/// Statements in flight on one connection at once: a query per row of another makes two.
/// Past this the oldest run is forgotten (not counted).
const MAX_IN_FLIGHT: usize = 8;

const EVENTS: c_uint = ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_PROFILE | ffi::SQLITE_TRACE_ROW;

/// A statement run that started and has not finished.
#[derive(Clone, Copy)]
struct InFlight {
    stmt: *mut ffi::sqlite3_stmt,
    /// Raw clock ticks, see [`Monitor::clock`].
    start: u64,
    rows: u64,
    fullscan_steps: c_int,
    sorts: c_int,
    autoindexes: c_int,
    fresh: bool,
}

const IDLE: InFlight = InFlight {
    stmt: ptr::null_mut(),
    start: 0,
    rows: 0,
    fullscan_steps: 0,
    sorts: 0,
    autoindexes: 0,
    fresh: false,
};

/// The runs in flight, inline: a scope costs no allocation.
struct Runs {
    runs: [InFlight; MAX_IN_FLIGHT],
    len: usize,
}

impl Runs {
    fn position(&self, stmt: *mut ffi::sqlite3_stmt) -> Option<usize> {
        self.runs[..self.len].iter().rposition(|r| r.stmt == stmt)
    }

    fn push(&mut self, run: InFlight) {
        if self.len == MAX_IN_FLIGHT {
            self.runs.copy_within(1.., 0);
            self.len -= 1;
        }
        self.runs[self.len] = run;
        self.len += 1;
    }

    fn take(&mut self, i: usize) -> InFlight {
        let run = self.runs[i];
        self.len -= 1;
        self.runs[i] = self.runs[self.len];
        run
    }
}

/// A slow statement waiting for its scope to end, when its plan can be taken safely.
pub(crate) struct Pending {
    pub(crate) sql: String,
    pub(crate) params: usize,
    pub(crate) duration: Duration,
}

/// The trace hook's context while one closure runs on one connection.
struct Scope<'a> {
    monitor: &'a Monitor,
    runs: RefCell<Runs>,
    pending: RefCell<Vec<Pending>>,
    checks_due: Cell<bool>,
    /// A new trend window began or a regression was found: cut the caches' windows and fire.
    trend_due: Cell<bool>,
    /// What each run counts for (see `sampling`).
    weight: u64,
    /// Runs finished and rows returned, for the sampler's cost estimate.
    statements: Cell<u64>,
    rows: Cell<u64>,
}

/// Registers the hook for a scope and, when dropped (also while unwinding), takes it off and
/// finishes the scope's slow statements.
struct Registration<'a> {
    conn: &'a Connection,
    scope: &'a Scope<'a>,
}

impl Monitor {
    /// Runs `f`, a closure of call site `site`, counting the statements it runs on `conn`
    /// (which must be the connection `f` works on and in no other scope) if the sampler picks
    /// this call.
    pub(crate) fn watch<T>(&self, conn: &Connection, site: Site, f: impl FnOnce() -> T) -> T {
        if !self.enabled {
            return f();
        }
        let weight = match self.sampler.plan(site) {
            Plan::Traced { weight } => weight,
            Plan::Untraced => {
                let start = self.clock.raw();
                let output = f();
                let nanos = self.clock.delta_as_nanos(start, self.clock.raw());
                let slow = Duration::from_nanos(nanos) >= self.slow_query_threshold;
                self.sampler.untraced(site, nanos, slow);
                return output;
            }
        };
        let scope = Scope {
            monitor: self,
            runs: RefCell::new(Runs {
                runs: [IDLE; MAX_IN_FLIGHT],
                len: 0,
            }),
            pending: RefCell::new(Vec::new()),
            checks_due: Cell::new(false),
            trend_due: Cell::new(false),
            weight,
            statements: Cell::new(0),
            rows: Cell::new(0),
        };
        let start = self.clock.raw();
        let output = {
            let _registration = Registration::new(conn, &scope);
            f()
        };
        let run = TracedRun {
            nanos: self.clock.delta_as_nanos(start, self.clock.raw()),
            statements: scope.statements.get(),
            rows: scope.rows.get(),
        };
        self.sampler.traced(site, run);
        output
    }
}

impl<'a> Registration<'a> {
    fn new(conn: &'a Connection, scope: &'a Scope<'a>) -> Self {
        // SAFETY: the handle is the live connection `conn` borrows. SQLite keeps the callback
        // and its context until they are replaced; `Drop` replaces them before `scope`, which
        // outlives this registration, goes away.
        unsafe {
            ffi::sqlite3_trace_v2(
                conn.handle(),
                EVENTS,
                Some(on_trace),
                ptr::from_ref(scope).cast_mut().cast(),
            );
        }
        Registration { conn, scope }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `new`; off first, so the plans below are not traced.
        unsafe {
            ffi::sqlite3_trace_v2(self.conn.handle(), 0, None, ptr::null_mut());
        }
        let monitor = self.scope.monitor;
        let pending = self.scope.pending.take();
        // Unwinding from a panic: no SQL and no callbacks, only the log.
        let unwinding = std::thread::panicking();
        if !pending.is_empty() {
            let conn = (!unwinding).then_some(self.conn);
            monitor.slow.record(conn, pending, &monitor.alerts);
        }
        if self.scope.checks_due.get() && !unwinding {
            monitor.run_checks();
        } else if self.scope.trend_due.get() && !unwinding {
            monitor.trend_upkeep();
        }
    }
}

unsafe extern "C" fn on_trace(
    event: c_uint,
    ctx: *mut c_void,
    p: *mut c_void,
    _x: *mut c_void,
) -> c_int {
    // SAFETY: `ctx` is the scope registered by a live `Registration` (see `Registration::new`)
    // and the hook runs on the thread that runs the scope's closure; for the three events
    // registered, `p` is the statement, valid for the duration of the callback.
    let scope = unsafe { &*ctx.cast::<Scope<'_>>() };
    let stmt = p.cast::<ffi::sqlite3_stmt>();
    // Nothing may unwind into SQLite.
    let _ = catch_unwind(AssertUnwindSafe(|| match event {
        ffi::SQLITE_TRACE_STMT => scope.started(stmt),
        ffi::SQLITE_TRACE_ROW => scope.row(stmt),
        ffi::SQLITE_TRACE_PROFILE => scope.finished(stmt),
        _ => {}
    }));
    0
}

fn status(stmt: *mut ffi::sqlite3_stmt, op: c_int) -> c_int {
    // SAFETY: `stmt` is the statement of the current trace event.
    unsafe { ffi::sqlite3_stmt_status(stmt, op, 0) }
}

/// The growth of a cumulative statement counter during one run.
fn grown(now: c_int, before: c_int) -> u64 {
    u64::from((now as u32).wrapping_sub(before as u32))
}

impl Scope<'_> {
    fn started(&self, stmt: *mut ffi::sqlite3_stmt) {
        let Ok(mut runs) = self.runs.try_borrow_mut() else {
            return;
        };
        // A trigger program reports the statement that fired it, already in flight.
        if runs.position(stmt).is_some() {
            return;
        }
        runs.push(InFlight {
            stmt,
            start: self.monitor.clock.raw(),
            rows: 0,
            fullscan_steps: status(stmt, ffi::SQLITE_STMTSTATUS_FULLSCAN_STEP),
            sorts: status(stmt, ffi::SQLITE_STMTSTATUS_SORT),
            autoindexes: status(stmt, ffi::SQLITE_STMTSTATUS_AUTOINDEX),
            // SQLite counts a run only after this event: 0 means the statement never ran
            // before, i.e. it was just prepared.
            fresh: status(stmt, ffi::SQLITE_STMTSTATUS_RUN) == 0,
        });
    }

    fn row(&self, stmt: *mut ffi::sqlite3_stmt) {
        if let Ok(mut runs) = self.runs.try_borrow_mut() {
            if let Some(i) = runs.position(stmt) {
                runs.runs[i].rows += 1;
            }
        }
    }

    fn finished(&self, stmt: *mut ffi::sqlite3_stmt) {
        let monitor = self.monitor;
        let end = monitor.clock.raw();
        let run = {
            let Ok(mut runs) = self.runs.try_borrow_mut() else {
                return;
            };
            // A run whose start was not seen (a statement re-prepared after a schema change
            // reruns without a start event) is not counted: its duration is unknown.
            let Some(i) = runs.position(stmt) else {
                return;
            };
            runs.take(i)
        };
        let nanos = monitor.clock.delta_as_nanos(run.start, end);
        let window = monitor.window_at(end);
        let execution = Execution {
            nanos,
            rows: run.rows,
            fullscan_steps: grown(
                status(stmt, ffi::SQLITE_STMTSTATUS_FULLSCAN_STEP),
                run.fullscan_steps,
            ),
            sorts: grown(status(stmt, ffi::SQLITE_STMTSTATUS_SORT), run.sorts),
            autoindexes: grown(
                status(stmt, ffi::SQLITE_STMTSTATUS_AUTOINDEX),
                run.autoindexes,
            ),
            fresh: run.fresh,
            weight: self.weight,
            window,
        };
        self.statements.set(self.statements.get() + 1);
        self.rows.set(self.rows.get() + run.rows);
        // SAFETY: `stmt` is the statement of the current trace event; its text lives as long
        // as the statement, and a prepared statement always has one.
        let sql = unsafe { CStr::from_ptr(ffi::sqlite3_sql(stmt)) }.to_bytes();
        if monitor.queries.record(sql, &execution) | monitor.new_window(window) {
            self.trend_due.set(true);
        }
        crate::advisor::nplusone::record(stmt as usize, sql);
        let duration = Duration::from_nanos(nanos);
        if duration >= monitor.slow_query_threshold {
            monitor.slow.note();
            if let Ok(mut pending) = self.pending.try_borrow_mut() {
                // More than the ring holds would only push each other out of it.
                if pending.len() >= monitor.slow.capacity() {
                    pending.remove(0);
                }
                pending.push(Pending {
                    sql: String::from_utf8_lossy(sql).into_owned(),
                    // SAFETY: as above.
                    params: unsafe { ffi::sqlite3_bind_parameter_count(stmt) }.max(0) as usize,
                    duration,
                });
            }
        }
        if monitor.checks_due(end) {
            self.checks_due.set(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn run(n: usize) -> InFlight {
        InFlight {
            stmt: n as *mut ffi::sqlite3_stmt,
            ..IDLE
        }
    }

    #[test]
    fn runs_forget_the_oldest_when_full() -> Result<()> {
        let mut runs = Runs {
            runs: [IDLE; MAX_IN_FLIGHT],
            len: 0,
        };
        for n in 1..=MAX_IN_FLIGHT + 1 {
            runs.push(run(n));
        }
        assert_eq!(runs.len, MAX_IN_FLIGHT);
        assert_eq!(runs.position(run(1).stmt), None, "the oldest went");
        let i = runs.position(run(2).stmt).expect("in flight");
        assert_eq!(runs.take(i).stmt, run(2).stmt);
        assert_eq!(runs.len, MAX_IN_FLIGHT - 1);
        assert!(runs.position(run(MAX_IN_FLIGHT + 1).stmt).is_some());
        Ok(())
    }
}
