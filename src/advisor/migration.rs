//! Writing advice out as the next refinery migration file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::advise::Advice;
use crate::error::{Error, Result};

/// The migration file's name after its version.
const NAME: &str = "advised_indexes";

/// The highest migration version among refinery's files in `dir` (`V<n>__name.sql`,
/// `U<n>__name.rs`...), searched like refinery does, sub-directories included.
fn highest_version(dir: &Path) -> Result<i64> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut highest = 0i64;
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).map_err(io(&at))? {
            let path = entry.map_err(io(&at))?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if let Some(v) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(version_of)
            {
                highest = highest.max(v);
            }
        }
    }
    Ok(highest)
}

/// The version of a refinery migration file name: `[UV]<digits>__<word chars>.(sql|rs)`.
fn version_of(file: &str) -> Option<i64> {
    let stem = file
        .strip_suffix(".sql")
        .or_else(|| file.strip_suffix(".rs"))?;
    let rest = stem.strip_prefix('V').or_else(|| stem.strip_prefix('U'))?;
    let (version, name) = rest.split_once("__")?;
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    version.parse().ok()
}

/// One line of SQL comment for a statement: newlines inside it would end the comment.
fn comment_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Advice {
    /// The migration's SQL: one `CREATE INDEX` per advised index, each after comments naming
    /// the statements it serves.
    pub fn migration_sql(&self) -> String {
        let mut out = String::from(
            "-- Indexes advised by strata's index advisor: each was chosen by SQLite's planner\n\
             -- for the statements listed above it, on a copy of the schema with the live statistics.\n\
             -- Run `PRAGMA optimize` (strata: `db.optimize()`) once it is applied, so that the\n\
             -- planner has statistics for the new indexes too.\n",
        );
        for index in &self.indexes {
            out.push('\n');
            for s in &index.statements {
                out.push_str("-- serves: ");
                out.push_str(&comment_line(&s.sql));
                out.push('\n');
            }
            out.push_str(&index.create_sql);
            out.push_str(";\n");
        }
        out
    }

    /// Writes the advice as the next refinery migration in `dir`:
    /// `V<n+1>__advised_indexes.sql`, where `n` is the highest version of the migration files
    /// already there. Returns the file written, or `None` when there is nothing to advise (no
    /// empty migration is written). An existing file is never overwritten.
    pub fn advice_to_migration(&self, dir: impl AsRef<Path>) -> Result<Option<PathBuf>> {
        let dir = dir.as_ref();
        if self.indexes.is_empty() {
            return Ok(None);
        }
        if !dir.is_dir() {
            return Err(Error::MissingDirectory {
                path: dir.to_owned(),
            });
        }
        let next = highest_version(dir)?
            .checked_add(1)
            .filter(|v| i32::try_from(*v).is_ok())
            .ok_or_else(|| Error::Migration {
                version: None,
                message: format!(
                    "{}: no migration version left after i32::MAX",
                    dir.display()
                ),
                applied: Vec::new(),
            })?;
        let path = dir.join(format!("V{next}__{NAME}.sql"));
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(self.migration_sql().as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_refinery_names() -> Result<()> {
        assert_eq!(version_of("V1__schema.sql"), Some(1));
        assert_eq!(version_of("U12__x_y.rs"), Some(12));
        assert_eq!(version_of("V3_schema.sql"), None);
        assert_eq!(version_of("README.md"), None);
        assert_eq!(version_of("V2__bad-name.sql"), None);
        Ok(())
    }

    #[test]
    fn nothing_to_write_writes_nothing() -> Result<()> {
        let advice = Advice {
            indexes: Vec::new(),
            skipped: Vec::new(),
            schema_skipped: Vec::new(),
        };
        assert_eq!(advice.advice_to_migration("/nonexistent")?, None);
        Ok(())
    }

    #[test]
    fn comments_stay_on_one_line() -> Result<()> {
        assert_eq!(
            comment_line("SELECT *\n  FROM t\r\nWHERE a = 1"),
            "SELECT * FROM t WHERE a = 1"
        );
        Ok(())
    }
}
