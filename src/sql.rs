//! The SQL every connection user shares, whichever connection it runs on: quoting an
//! identifier, running a statement that returns no rows through the statement cache, rolling
//! back. The readers' transactions, the writer's groups and the features above them all use
//! these, so they sit below all of them.

use rusqlite::{CachedStatement, Connection};

use crate::error::{Error, Result};

/// Quotes an identifier that has been checked against the schema.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs a statement that returns no rows (transaction control, savepoints) through the
/// statement cache; errors carry the statement.
pub(crate) fn run_statement(conn: &Connection, sql: &str) -> Result<()> {
    execute(&mut prepare(conn, sql)?, sql)
}

/// Takes `sql` from the statement cache; errors carry the statement.
pub(crate) fn prepare<'c>(conn: &'c Connection, sql: &str) -> Result<CachedStatement<'c>> {
    conn.prepare_cached(sql)
        .map_err(|e| Error::from(e).with_sql(sql))
}

/// Executes a statement that returns no rows; `sql` is its text, for the error.
pub(crate) fn execute(statement: &mut CachedStatement<'_>, sql: &str) -> Result<()> {
    statement
        .execute([])
        .map(drop)
        .map_err(|e| Error::from(e).with_sql(sql))
}

/// Rolls back whatever transaction is open; a failure here means SQLite already rolled back.
pub(crate) fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run_statement(conn, "ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() -> Result<()> {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        Ok(())
    }

    #[test]
    fn rollback_ends_an_open_transaction_and_errors_name_the_statement() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        run_statement(&conn, "BEGIN")?;
        assert!(!conn.is_autocommit());
        rollback(&conn);
        assert!(conn.is_autocommit());
        rollback(&conn);
        let err = run_statement(&conn, "COMMIT").unwrap_err();
        assert!(err.to_string().contains("COMMIT"), "{err}");
        Ok(())
    }
}
