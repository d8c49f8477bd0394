//! The maintenance commands: `migrate`, `advise`, `optimize`, `health`.
//!
//! Each checks its arguments first (a missing file is an error, never created), then calls the
//! library: migrations, the advisor (on a read-only `Db`), maintenance, the file health check.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use sqlparser::dialect::SQLiteDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

use strata::advisor::AdviseOptions;
use strata::{Db, Error, Result};

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOutcome {
    /// The database.
    pub path: PathBuf,
    /// The schema version before (`None`: no migration history, or a new file).
    pub before: Option<i32>,
    /// The schema version after.
    pub after: Option<i32>,
}

impl std::fmt::Display for MigrateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |v: Option<i32>| v.map_or("none".to_owned(), |v| format!("V{v}"));
        if self.before == self.after {
            write!(
                f,
                "{}: up to date at {}",
                self.path.display(),
                v(self.after)
            )
        } else {
            write!(
                f,
                "{}: migrated from {} to {}",
                self.path.display(),
                v(self.before),
                v(self.after)
            )
        }
    }
}

/// Opens (creating if missing) the database at `path` and applies the expense tracker's
/// migrations.
pub fn migrate(path: &Path) -> Result<MigrateOutcome> {
    let before = if path.is_file() {
        version_read_only(path).unwrap_or(None)
    } else {
        None
    };
    let db = Db::builder()
        .path(path)
        .migrations(strata::domain::migrations())
        .build()?;
    Ok(MigrateOutcome {
        path: path.to_owned(),
        before,
        after: db.schema_version()?,
    })
}

/// The schema version of an existing file, read without writing anything.
fn version_read_only(path: &Path) -> Result<Option<i32>> {
    Db::builder()
        .path(path)
        .readers(1)
        .read_only()
        .build()?
        .schema_version()
}

/// Refuses a path that is not an existing file: the inspecting commands never create one.
pub fn require_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::IsDirectory {
            path: path.to_owned(),
        });
    }
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Refuses a path that is not an existing directory.
pub fn require_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        return Err(Error::MissingDirectory {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The statements of an SQL file, each as SQLite would run it: split where SQLite's own
/// `sqlite3_complete` says a statement ends, comments blanked, trimmed, empty ones dropped.
///
/// SQLite decides rather than sqlparser because sqlparser's SQLite dialect refuses
/// `CREATE TRIGGER` outright (and several other SQLite forms the advisor rewrites before
/// parsing): only SQLite's tokenizer knows that the `;` between a trigger's `BEGIN` and `END`
/// do not end it, and a file of statements SQLite accepts must split whatever sqlparser parses.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (at, _) in sql.match_indices(';') {
        if is_complete(&sql[start..=at]) {
            push_statement(&mut out, &sql[start..at]);
            start = at + 1;
        }
    }
    push_statement(&mut out, &sql[start..]);
    out
}

/// Whether `sql` ends with the `;` of a complete statement, by SQLite's tokenizer: not inside
/// a literal, a quoted name, a comment, or an unfinished `CREATE TRIGGER`.
fn is_complete(sql: &str) -> bool {
    // A NUL byte would end the text early for SQLite: such a chunk never counts as complete.
    let Ok(text) = std::ffi::CString::new(sql) else {
        return false;
    };
    // SAFETY: `text` is NUL-terminated and lives across the call, which only reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) == 1 }
}

fn push_statement(out: &mut Vec<String>, chunk: &str) {
    let text = without_comments(chunk);
    let text = text.trim();
    if !text.is_empty() {
        out.push(text.to_owned());
    }
}

/// `chunk` with each comment replaced by a space: a workload file's notes above a statement
/// are no part of it. Text that sqlparser's tokenizer refuses is kept whole (SQLite skips its
/// comments anyway).
fn without_comments(chunk: &str) -> Cow<'_, str> {
    let Ok(tokens) = Tokenizer::new(&SQLiteDialect {}, chunk).tokenize_with_location() else {
        return Cow::Borrowed(chunk);
    };
    let mut cursor = Cursor::new(chunk);
    let mut out = String::with_capacity(chunk.len());
    let mut kept = 0;
    for token in &tokens {
        if let Token::Whitespace(
            Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
        ) = token.token
        {
            let (Some(from), Some(to)) = (
                cursor.offset(token.span.start),
                cursor.offset(token.span.end),
            ) else {
                return Cow::Borrowed(chunk);
            };
            out.push_str(&chunk[kept..from]);
            out.push(' ');
            kept = to;
        }
    }
    out.push_str(&chunk[kept..]);
    Cow::Owned(out)
}

/// Byte offsets of the tokenizer's locations (1-based line, 1-based column counted in chars),
/// found walking forward through the text once.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    len: usize,
    at: (u64, u64),
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            chars: text.char_indices().peekable(),
            len: text.len(),
            at: (1, 1),
        }
    }

    /// The byte offset of `location`; `None` when it lies behind the cursor or past the text.
    fn offset(&mut self, location: Location) -> Option<usize> {
        let wanted = (location.line, location.column);
        while self.at < wanted {
            let (_, c) = self.chars.next()?;
            self.at = if c == '\n' {
                (self.at.0 + 1, 1)
            } else {
                (self.at.0, self.at.1 + 1)
            };
        }
        (self.at == wanted).then(|| self.chars.peek().map_or(self.len, |(i, _)| *i))
    }
}

/// Reads the statements of a workload file; a file without any is [`Error::InvalidFile`].
pub fn read_workload(path: &Path) -> Result<Vec<String>> {
    require_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let statements = split_statements(&text);
    if statements.is_empty() {
        return Err(Error::InvalidFile {
            path: path.to_owned(),
            reason: "no SQL statements in the workload file".into(),
        });
    }
    Ok(statements)
}

/// `strata advise`: prints index advice for the database at `db` (opened read-only, never
/// migrated), for the statements of `workload` when given (planned only, never executed),
/// and writes the advice as the next migration file into `write_migration` when given.
pub fn advise(
    db: &Path,
    workload: Option<&Path>,
    write_migration: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    require_file(db)?;
    let statements = workload.map(read_workload).transpose()?;
    if let Some(dir) = write_migration {
        require_dir(dir)?;
    }
    let path = db;
    let db = Db::builder().path(path).read_only().build()?;
    let advice = match &statements {
        Some(statements) => db.advise(AdviseOptions::new().queries(statements))?,
        None => db.advise(AdviseOptions::new())?,
    };
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if advice.indexes.is_empty() {
        let why = if statements.is_some() {
            "every statement of the workload is served by an index"
        } else {
            "nothing observed in this process: pass --workload FILE.sql"
        };
        writeln!(out, "no index advice: {why}").map_err(io)?;
    }
    for index in &advice.indexes {
        writeln!(out, "{};", index.create_sql).map_err(io)?;
        for served in &index.statements {
            writeln!(
                out,
                "    -- serves: {}",
                served.sql.split_whitespace().collect::<Vec<_>>().join(" ")
            )
            .map_err(io)?;
        }
    }
    for skipped in &advice.skipped {
        writeln!(out, "skipped: {skipped:?}").map_err(io)?;
    }
    if let Some(dir) = write_migration {
        match advice.advice_to_migration(dir)? {
            Some(file) => writeln!(out, "wrote {}", file.display()).map_err(io)?,
            None => writeln!(out, "no migration written: no advice").map_err(io)?,
        }
    }
    Ok(())
}

/// `strata optimize`: runs `PRAGMA optimize` and a WAL checkpoint on the database at `db` and
/// prints what was done.
pub fn optimize(db: &Path, out: &mut dyn Write) -> Result<()> {
    require_file(db)?;
    let path = db;
    let db = Db::builder().path(path).build()?;
    let report = db.optimize()?;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    writeln!(out, "ran: {}", report.ran.join(", ")).map_err(io)?;
    if !report.analyzed.is_empty() {
        writeln!(out, "analyzed: {}", report.analyzed.join(", ")).map_err(io)?;
    }
    let bytes = |b: Option<u64>| b.map_or_else(|| "none".to_owned(), |b| format!("{b} bytes"));
    writeln!(
        out,
        "WAL: {} before, {} after; checkpoint: {} of {} frames{}",
        bytes(report.wal_bytes_before),
        bytes(report.wal_bytes_after),
        report.checkpoint.checkpointed_frames,
        report.checkpoint.log_frames,
        if report.checkpoint.busy {
            " (busy)"
        } else {
            ""
        }
    )
    .map_err(io)?;
    Ok(())
}

/// `strata health`: checks the database at `db` and prints the findings; `Ok(true)` only when
/// it is healthy (the command's exit code is 0 only then). A file strata would refuse to open
/// (corrupt, not a database) is reported as unhealthy, not as an error.
pub fn health(db: &Path, out: &mut dyn Write) -> Result<bool> {
    require_file(db)?;
    let health = strata::advisor::health_check(db);
    let io = |source| Error::Io {
        path: db.to_owned(),
        source,
    };
    writeln!(
        out,
        "{}: {}",
        db.display(),
        if health.ok { "healthy" } else { "NOT healthy" }
    )
    .map_err(io)?;
    for problem in &health.problems {
        writeln!(out, "  problem: {problem}").map_err(io)?;
    }
    if !health.quick_check.is_empty() {
        writeln!(out, "  quick_check: {}", health.quick_check.join("; ")).map_err(io)?;
    }
    if let Some(wal) = health.wal_bytes {
        writeln!(out, "  WAL: {wal} bytes").map_err(io)?;
    }
    match health.schema_version {
        Some(v) => writeln!(out, "  schema: V{v}").map_err(io)?,
        None => writeln!(out, "  schema: no migration history").map_err(io)?,
    }
    Ok(health.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql =
            "SELECT 'a;b' FROM t; -- c; d\nSELECT \"x;\" FROM [u;v] /* ; */ WHERE y = 1;\n;  ";
        assert_eq!(
            split_statements(sql),
            [
                "SELECT 'a;b' FROM t",
                "SELECT \"x;\" FROM [u;v]   WHERE y = 1"
            ]
        );
        assert!(split_statements(" ; -- only a comment\n").is_empty());
        assert_eq!(split_statements("SELECT 1 -- no semicolon"), ["SELECT 1"]);
    }

    /// A trigger's body holds `;`s that do not end it: the trigger is one statement, and every
    /// statement runs in SQLite as split.
    #[test]
    fn a_trigger_is_one_statement() -> Result<()> {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);
            CREATE TABLE log (id INTEGER, what TEXT);
            -- keep a log
            CREATE TRIGGER t_log AFTER INSERT ON t
            BEGIN
                INSERT INTO log VALUES (new.id, 'insert; one');
                UPDATE t SET n = n + 1 WHERE id = new.id;
            END;
            INSERT INTO t (id, n) VALUES (1, 0);";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 4, "{statements:#?}");
        assert!(statements[2].starts_with("CREATE TRIGGER t_log"));
        assert!(statements[2].ends_with("END"), "{}", statements[2]);
        let conn = rusqlite::Connection::open_in_memory()?;
        for statement in &statements {
            conn.execute_batch(statement)?;
        }
        let logged: (i64, String) = conn.query_row("SELECT id, what FROM log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        assert_eq!(logged, (1, "insert; one".to_owned()));
        let n: i64 = conn.query_row("SELECT n FROM t WHERE id = 1", [], |r| r.get(0))?;
        assert_eq!(n, 1);
        Ok(())
    }

    #[test]
    fn migrate_reports_versions() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let path = dir.path().join("m.db");
        let first = migrate(&path)?;
        assert_eq!((first.before, first.after), (None, Some(2)));
        assert!(first.to_string().contains("migrated from none to V2"));
        let again = migrate(&path)?;
        assert_eq!((again.before, again.after), (Some(2), Some(2)));
        assert!(again.to_string().contains("up to date at V2"));
        let err = migrate(&dir.path().join("no/such/dir/m.db")).unwrap_err();
        assert!(matches!(err, Error::MissingDirectory { .. }));
        Ok(())
    }

    #[test]
    fn inspecting_commands_never_create_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::closure)?;
        let path = dir.path().join("none.db");
        let mut sink = Vec::new();
        assert!(matches!(
            health(&path, &mut sink),
            Err(Error::MissingFile { .. })
        ));
        assert!(matches!(
            optimize(&path, &mut sink),
            Err(Error::MissingFile { .. })
        ));
        assert!(matches!(
            advise(&path, None, None, &mut sink),
            Err(Error::MissingFile { .. })
        ));
        assert!(!path.exists());
        let empty = dir.path().join("empty.sql");
        std::fs::write(&empty, "-- nothing\n").map_err(Error::closure)?;
        assert!(matches!(
            read_workload(&empty),
            Err(Error::InvalidFile { .. })
        ));
        Ok(())
    }
}
