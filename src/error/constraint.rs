//! Which kind of constraint refused a write, from SQLite's extended result code.

use rusqlite::ffi;

/// The kind of constraint that refused a write, from SQLite's extended result code (the
/// message says the same in prose only).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintKind {
    /// A UNIQUE constraint or unique index (`SQLITE_CONSTRAINT_UNIQUE`).
    Unique,
    /// A PRIMARY KEY, including a duplicate rowid (`SQLITE_CONSTRAINT_PRIMARYKEY`).
    PrimaryKey,
    /// A FOREIGN KEY, immediate or deferred to COMMIT (`SQLITE_CONSTRAINT_FOREIGNKEY`).
    ForeignKey,
    /// A NOT NULL column (`SQLITE_CONSTRAINT_NOTNULL`).
    NotNull,
    /// A CHECK constraint (`SQLITE_CONSTRAINT_CHECK`).
    Check,
    /// A trigger's `RAISE(ABORT | FAIL | ROLLBACK, ...)` (`SQLITE_CONSTRAINT_TRIGGER`).
    Trigger,
    /// Any other extended code of SQLITE_CONSTRAINT (given as is).
    Other(i32),
}

impl ConstraintKind {
    /// The kind for one of SQLite's extended result codes of SQLITE_CONSTRAINT.
    pub fn from_extended_code(code: i32) -> Self {
        match code {
            ffi::SQLITE_CONSTRAINT_UNIQUE => ConstraintKind::Unique,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_ROWID => {
                ConstraintKind::PrimaryKey
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ConstraintKind::ForeignKey,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ConstraintKind::NotNull,
            ffi::SQLITE_CONSTRAINT_CHECK => ConstraintKind::Check,
            ffi::SQLITE_CONSTRAINT_TRIGGER => ConstraintKind::Trigger,
            other => ConstraintKind::Other(other),
        }
    }

    /// SQLite names `table.column` in the messages of these kinds only: a CHECK message names
    /// the constraint or its expression, a trigger's RAISE any text, a foreign key nothing.
    pub(super) fn names_table(self) -> bool {
        matches!(
            self,
            ConstraintKind::Unique | ConstraintKind::PrimaryKey | ConstraintKind::NotNull
        )
    }
}

/// SQLite names the table in UNIQUE, PRIMARY KEY and NOT NULL messages ("UNIQUE constraint
/// failed: users.email"). Only those (see [`ConstraintKind::names_table`]): a dot in a CHECK
/// expression or a RAISE message is not a table's.
pub(super) fn table_of(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("failed: ")?;
    let (table, _) = rest.split_once('.')?;
    Some(table.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::{Error, Result};

    /// The error of `sql` on a connection with foreign keys on and a small schema.
    fn violation(sql: &str) -> Result<Error> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p(id INTEGER PRIMARY KEY, code TEXT UNIQUE, name TEXT NOT NULL,
                            n INT CHECK (n > 0));
             CREATE TABLE c(p_id INTEGER REFERENCES p(id));
             INSERT INTO p VALUES (1, 'a', 'x', 1);",
        )?;
        Ok(conn.execute(sql, []).map(drop).unwrap_err().into())
    }

    #[test]
    fn each_violation_maps_to_its_kind_with_the_sqlite_error_as_source() -> Result<()> {
        let cases = [
            (
                "INSERT INTO p VALUES (2, 'a', 'y', 1)",
                ConstraintKind::Unique,
                ffi::SQLITE_CONSTRAINT_UNIQUE,
            ),
            (
                "INSERT INTO p VALUES (1, 'b', 'y', 1)",
                ConstraintKind::PrimaryKey,
                ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
            ),
            (
                "INSERT INTO c VALUES (99)",
                ConstraintKind::ForeignKey,
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
            ),
            (
                "INSERT INTO p VALUES (2, 'b', NULL, 1)",
                ConstraintKind::NotNull,
                ffi::SQLITE_CONSTRAINT_NOTNULL,
            ),
            (
                "INSERT INTO p VALUES (2, 'b', 'y', 0)",
                ConstraintKind::Check,
                ffi::SQLITE_CONSTRAINT_CHECK,
            ),
        ];
        for (sql, expected, code) in cases {
            let err = violation(sql)?;
            assert_eq!(err.constraint_kind(), Some(expected), "{sql}: {err:?}");
            assert!(err.is_constraint());
            let source = err
                .source()
                .and_then(|s| s.downcast_ref::<rusqlite::Error>())
                .unwrap_or_else(|| panic!("{sql}: no rusqlite source in {err:?}"));
            match source {
                rusqlite::Error::SqliteFailure(e, _) => assert_eq!(e.extended_code, code, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(violation(cases[0].0)?.is_unique_violation());
        assert!(
            violation(cases[1].0)?.is_unique_violation(),
            "a duplicate key"
        );
        assert!(violation(cases[2].0)?.is_foreign_key_violation());
        assert!(violation(cases[3].0)?.is_not_null_violation());
        assert!(violation(cases[4].0)?.is_check_violation());
        assert!(!violation(cases[2].0)?.is_unique_violation());
        Ok(())
    }

    #[test]
    fn a_copy_for_another_caller_keeps_kind_and_extended_code() -> Result<()> {
        let err = violation("INSERT INTO c VALUES (99)")?;
        let copy = err.duplicate();
        assert!(copy.is_foreign_key_violation());
        let code = copy
            .source()
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .and_then(|e| match e {
                rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
                _ => None,
            });
        assert_eq!(code, Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY));
        Ok(())
    }

    #[test]
    fn constraint_names_its_table() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t(a UNIQUE); INSERT INTO t VALUES (1);")?;
        let err: Error = conn
            .execute("INSERT INTO t VALUES (1)", [])
            .unwrap_err()
            .into();
        match err {
            Error::Constraint { table, .. } => assert_eq!(table.as_deref(), Some("t")),
            other => panic!("expected Constraint, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn check_and_trigger_messages_name_no_table() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(
            "CREATE TABLE p(a REAL CHECK (a > 0.5)); CREATE TABLE g(x);
             CREATE TRIGGER t BEFORE INSERT ON g BEGIN SELECT RAISE(ABORT, 'no: g.x'); END;",
        )?;
        for sql in ["INSERT INTO p VALUES (0.1)", "INSERT INTO g VALUES (1)"] {
            let err: Error = conn.execute(sql, []).unwrap_err().into();
            assert!(
                matches!(err, Error::Constraint { table: None, .. }),
                "{sql}: {err:?}"
            );
        }
        let err: Error = conn
            .execute("INSERT INTO g VALUES (1)", [])
            .unwrap_err()
            .into();
        assert_eq!(err.constraint_kind(), Some(ConstraintKind::Trigger));
        Ok(())
    }
}
