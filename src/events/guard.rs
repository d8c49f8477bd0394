//! Keeps a write closure from switching off what the group relies on.
//!
//! A write closure gets the writer connection itself, on which anyone can replace a hook or
//! run `COMMIT`. Two things make that visible instead of silent:
//!
//! - every hook strata installs carries a [`Sentinel`]: rusqlite (or SQLite, for a function)
//!   drops a hook's closure when the hook is replaced or removed, and the sentinel's drop marks
//!   the part as gone. Checking costs one atomic swap per closure; re-installing (which makes
//!   SQLite re-prepare every statement) happens only after a closure removed something.
//! - while a closure runs, the authorizer refuses BEGIN, COMMIT, ROLLBACK and strata's own
//!   savepoint, and the commit hook turns a COMMIT that got past it into a rollback. Both
//!   record what was refused. The group's own transaction statements are cached under texts
//!   of their own, so a closure's `prepare_cached("COMMIT")` is prepared anew and meets the
//!   authorizer too.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::hooks::{AuthAction, Authorization, TransactionOperation};
use rusqlite::Connection;

use super::Capture;
use std::cell::Cell;

use crate::error::{Error, Result};

/// The savepoint each queued call of a write group runs in; write closures may not touch it.
pub(crate) const SAVEPOINT_NAME: &str = "strata_write";

thread_local! {
    /// True while this thread runs a write closure.
    static IN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread runs a write closure: the writer's authorizer and commit hook refuse
/// transaction control meanwhile.
pub(crate) fn in_write_closure() -> bool {
    IN_WRITE.with(Cell::get)
}

/// Marks this thread as running a write closure (or no longer, with `false`).
pub(crate) fn set_in_write_closure(inside: bool) {
    IN_WRITE.with(|w| w.set(inside));
}

/// A part strata keeps on the writer connection; one bit each in [`Guard::removed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Authorizer = 1,
    UpdateHook = 2,
    CommitHook = 4,
    CaptureFunction = 8,
}

impl Part {
    const ALL: [Part; 4] = [
        Part::Authorizer,
        Part::UpdateHook,
        Part::CommitHook,
        Part::CaptureFunction,
    ];

    fn name(self) -> &'static str {
        match self {
            Part::Authorizer => "authorizer",
            Part::UpdateHook => "update hook",
            Part::CommitHook => "commit hook",
            Part::CaptureFunction => "change capture function",
        }
    }
}

/// What the writer's hooks saw a closure do.
#[derive(Default)]
pub(crate) struct Guard {
    /// Parts whose closures were dropped (bits of [`Part`]).
    removed: Arc<AtomicU8>,
    /// The first transaction-control statement refused since the last check.
    refused: Arc<Mutex<Option<String>>>,
}

impl Guard {
    /// A sentinel to move into the hook installed for `part`.
    pub(super) fn sentinel(&self, part: Part) -> Sentinel {
        Sentinel {
            removed: Arc::clone(&self.removed),
            part,
        }
    }

    /// Forgets the removal of `part` that strata itself just made (the update hook goes off when
    /// the last subscription is gone): only a closure's removal is tampering.
    pub(super) fn removed_by_strata(&self, part: Part) {
        self.removed.fetch_and(!(part as u8), Ordering::AcqRel);
    }

    /// A handle the hooks record refusals through.
    pub(super) fn refusals(&self) -> Refusals {
        Refusals(Arc::clone(&self.refused))
    }
}

/// Marks its part as removed when the hook holding it is dropped.
pub(super) struct Sentinel {
    removed: Arc<AtomicU8>,
    part: Part,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.removed.fetch_or(self.part as u8, Ordering::AcqRel);
    }
}

/// Where the authorizer and the commit hook record what they refused.
pub(super) struct Refusals(Arc<Mutex<Option<String>>>);

impl Refusals {
    fn record(&self, statement: String) {
        self.0.lock().get_or_insert(statement);
    }

    /// The authorizer's answer for `action`: transaction control is refused while a write
    /// closure runs; anything else is `None` (for the other rules to decide).
    pub(super) fn authorize(&self, action: &AuthAction<'_>) -> Option<Authorization> {
        let statement = match action {
            AuthAction::Transaction { operation } => transaction_statement(*operation).to_owned(),
            AuthAction::Savepoint {
                operation,
                savepoint_name,
            } if savepoint_name.eq_ignore_ascii_case(SAVEPOINT_NAME) => {
                format!("{} {savepoint_name}", savepoint_statement(*operation))
            }
            _ => return None,
        };
        if !in_write_closure() {
            return None;
        }
        self.record(statement);
        Some(Authorization::Deny)
    }

    /// The commit hook's answer: true (turn the COMMIT into a rollback) while a closure runs.
    pub(super) fn veto_commit(&self) -> bool {
        let inside = in_write_closure();
        if inside {
            self.record("COMMIT".to_owned());
        }
        inside
    }
}

/// The statement an authorizer's transaction operation stands for (SQLite reports COMMIT and
/// END as an operation rusqlite does not name).
fn transaction_statement(operation: TransactionOperation) -> &'static str {
    match operation {
        TransactionOperation::Begin => "BEGIN",
        TransactionOperation::Rollback => "ROLLBACK",
        _ => "COMMIT",
    }
}

/// The statement an authorizer's savepoint operation stands for.
fn savepoint_statement(operation: TransactionOperation) -> &'static str {
    match operation {
        TransactionOperation::Begin => "SAVEPOINT",
        TransactionOperation::Rollback => "ROLLBACK TO",
        _ => "RELEASE",
    }
}

impl Capture {
    /// After a write closure ran on the writer connection `conn`: puts back any part it
    /// removed, then tells whether it may keep its changes. An error names what it did.
    pub(crate) fn check_closure(&self, conn: &Connection) -> Result<()> {
        let refused = self.guard.refused.lock().take();
        let removed = self.guard.removed.swap(0, Ordering::AcqRel);
        if removed != 0 {
            let mut first = None;
            for part in Part::ALL.into_iter().filter(|p| removed & *p as u8 != 0) {
                if let Err(err) = self.reinstall(conn, part) {
                    // Tried again after the next closure rather than left off.
                    self.guard.removed.fetch_or(part as u8, Ordering::AcqRel);
                    return Err(err);
                }
                first.get_or_insert(part);
            }
            let hook = first.expect("a bit was set").name();
            return Err(Error::HookTampered { hook });
        }
        match refused {
            Some(statement) => Err(Error::TransactionControl { statement }),
            None => Ok(()),
        }
    }

    fn reinstall(&self, conn: &Connection, part: Part) -> Result<()> {
        match part {
            Part::Authorizer => self.install_authorizer(conn),
            Part::UpdateHook => self.install_hook(conn),
            Part::CommitHook => self.install_commit_hook(conn),
            Part::CaptureFunction => self.install_function(conn),
        }
    }
}
