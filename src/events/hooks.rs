//! The writer connection's capture hooks: the update hook (every changed row, once someone
//! subscribes), the authorizer that keeps `DELETE FROM t` row by row (and refuses transaction
//! control to write closures), the commit hook that backs it, and the scalar function the TEMP
//! triggers of watched tables call with old and new values. Each carries a sentinel that reports
//! its removal (see `guard.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{Action, AuthAction, AuthContext, Authorization};
use rusqlite::types::Value;
use rusqlite::Connection;

use super::guard::Part;
use super::watch::CAPTURE_FN;
use super::{Capture, Change, ChangeKind, Values};
use crate::error::Result;

impl Capture {
    pub(super) fn install_hook(&self, conn: &Connection) -> Result<()> {
        let buffer = Arc::clone(&self.buffer);
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut last: Option<Arc<str>> = None;
        let sentinel = self.guard.sentinel(Part::UpdateHook);
        conn.update_hook(Some(move |action: Action, db: &str, table: &str, rowid| {
            let _held = &sentinel;
            let kind = match action {
                Action::SQLITE_INSERT => ChangeKind::Insert,
                Action::SQLITE_UPDATE => ChangeKind::Update,
                Action::SQLITE_DELETE => ChangeKind::Delete,
                _ => return,
            };
            if db != "main" {
                return;
            }
            // Bulk writes change one table row after row: compare with the last name before
            // hashing it.
            let table = match &last {
                Some(t) if &**t == table => Arc::clone(t),
                _ => {
                    let t = match names.get(table) {
                        Some(t) => Arc::clone(t),
                        None => {
                            let t: Arc<str> = Arc::from(table);
                            names.insert(table.to_owned(), Arc::clone(&t));
                            t
                        }
                    };
                    last = Some(Arc::clone(&t));
                    t
                }
            };
            buffer.lock().push(Change {
                table,
                kind,
                rowid,
                old: None,
                new: None,
            });
        }))?;
        Ok(())
    }

    pub(super) fn install_authorizer(&self, conn: &Connection) -> Result<()> {
        // `DELETE FROM t` without WHERE would use the truncate optimization, which skips the
        // update hook; answering IGNORE for deletes keeps the delete but disables the shortcut.
        // Only user tables of `main`: schema tables are deleted from by DROP statements, and
        // DROP TABLE itself asks for a DELETE of the table it drops, right after asking for the
        // drop; an IGNORE there would silently turn the DROP into a no-op.
        let mut dropping = String::new();
        let sentinel = self.guard.sentinel(Part::Authorizer);
        let refusals = self.guard.refusals();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let _held = &sentinel;
            if let Some(answer) = refusals.authorize(&ctx.action) {
                return answer;
            }
            match ctx.action {
                AuthAction::DropTable { table_name }
                | AuthAction::DropView {
                    view_name: table_name,
                } => {
                    table_name.clone_into(&mut dropping);
                    Authorization::Allow
                }
                AuthAction::Delete { table_name }
                    if ctx.database_name == Some("main") && !table_name.starts_with("sqlite_") =>
                {
                    if table_name == dropping {
                        dropping.clear();
                        Authorization::Allow
                    } else {
                        Authorization::Ignore
                    }
                }
                _ => Authorization::Allow,
            }
        }))?;
        Ok(())
    }

    pub(super) fn install_commit_hook(&self, conn: &Connection) -> Result<()> {
        // Not needed for capture: it stops a COMMIT that a write closure ran past the
        // authorizer (which it could only do after removing it), and its sentinel tells when a
        // closure's own commit hook (one that vetoes commits, say) replaced it.
        let sentinel = self.guard.sentinel(Part::CommitHook);
        let refusals = self.guard.refusals();
        conn.commit_hook(Some(move || {
            let _held = &sentinel;
            refusals.veto_commit()
        }))?;
        Ok(())
    }

    pub(super) fn install_function(&self, conn: &Connection) -> Result<()> {
        let buffer = Arc::clone(&self.buffer);
        let watches = Arc::clone(&self.watches);
        let sentinel = self.guard.sentinel(Part::CaptureFunction);
        conn.create_scalar_function(
            CAPTURE_FN,
            -1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
            move |ctx| {
                let _held = &sentinel;
                let id: i64 = ctx.get(0)?;
                let op: i64 = ctx.get(1)?;
                let old_rowid: Option<i64> = ctx.get(2)?;
                let new_rowid: Option<i64> = ctx.get(3)?;
                let watches = watches.read();
                let watch = usize::try_from(id)
                    .ok()
                    .and_then(|id| watches.get(id))
                    .ok_or_else(|| {
                        rusqlite::Error::UserFunctionError("unknown capture id".into())
                    })?;
                let n = watch.columns.len();
                let values = |from: usize| -> rusqlite::Result<Values> {
                    let values = (from..from + n)
                        .map(|i| ctx.get::<Value>(i))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Values {
                        columns: Arc::clone(&watch.columns),
                        values,
                    })
                };
                let mut buffer = buffer.lock();
                let mut buffer = Recorder(&mut buffer);
                let change = |kind, rowid, old, new| Change {
                    table: Arc::clone(&watch.table),
                    kind,
                    rowid,
                    old,
                    new,
                };
                match (op, old_rowid, new_rowid) {
                    (1, _, Some(new)) => {
                        buffer.push(change(ChangeKind::Insert, new, None, Some(values(4 + n)?)))
                    }
                    (2, Some(old), Some(new)) => {
                        let (before, after) = (values(4)?, values(4 + n)?);
                        if old != new {
                            // A rowid change is a move: the old key is gone.
                            buffer.push(change(
                                ChangeKind::Delete,
                                old,
                                Some(before.clone()),
                                None,
                            ));
                        }
                        buffer.push(change(ChangeKind::Update, new, Some(before), Some(after)));
                    }
                    (3, Some(old), _) => {
                        buffer.push(change(ChangeKind::Delete, old, Some(values(4)?), None))
                    }
                    _ => {}
                }
                Ok(Value::Null)
            },
        )?;
        Ok(())
    }
}

/// Pushes trigger-captured changes, replacing the update hook's entry for the same row: the hook
/// fires for the row first, then its AFTER trigger. The hook's entry is kept for rows a trigger
/// does not see (a watched table dropped and created again without its triggers).
struct Recorder<'a>(&'a mut Vec<Change>);

impl Recorder<'_> {
    /// How far back the hook's entry may be: cascaded changes of other tables can come between.
    const LOOK_BACK: usize = 16;

    fn push(&mut self, change: Change) {
        let from_hook = self.0.iter().rev().take(Self::LOOK_BACK).position(|c| {
            c.old.is_none()
                && c.new.is_none()
                && c.rowid == change.rowid
                && c.kind == change.kind
                && c.table == change.table
        });
        match from_hook {
            Some(back) => {
                let at = self.0.len() - 1 - back;
                self.0[at] = change;
            }
            None => self.0.push(change),
        }
    }
}
