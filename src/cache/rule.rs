//! Invalidation rules: how a committed change to a table maps to cache entries to drop.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use rusqlite::types::Value;

use crate::events::Change;

/// What one change asks a cache to drop.
pub enum Invalidation {
    /// One key (of the cache's key type; a key of another type is ignored).
    Key {
        /// The cache's name.
        cache: Arc<str>,
        /// The key.
        key: Box<dyn Any + Send>,
    },
    /// Every entry carrying a tag.
    Tag {
        /// The cache's name.
        cache: Arc<str>,
        /// The tag.
        tag: String,
    },
    /// The whole cache.
    All {
        /// The cache's name.
        cache: Arc<str>,
    },
}

impl fmt::Debug for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalidation::Key { cache, .. } => write!(f, "Key({cache})"),
            Invalidation::Tag { cache, tag } => write!(f, "Tag({cache}, {tag})"),
            Invalidation::All { cache } => write!(f, "All({cache})"),
        }
    }
}

impl Invalidation {
    /// The cache this invalidation is for.
    pub fn cache(&self) -> &str {
        match self {
            Invalidation::Key { cache, .. }
            | Invalidation::Tag { cache, .. }
            | Invalidation::All { cache } => cache,
        }
    }
}

type MapFn = dyn Fn(&Change, &mut Vec<Invalidation>) + Send + Sync;

/// Maps a [`Change`] on one table to the cache entries it makes stale. Several rules may watch
/// one table. Rules run synchronously after COMMIT, before `write` returns.
#[derive(Clone)]
pub struct InvalidationRule {
    pub(crate) table: String,
    pub(crate) columns: Vec<String>,
    map: Arc<MapFn>,
}

impl fmt::Debug for InvalidationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationRule")
            .field("table", &self.table)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl InvalidationRule {
    /// A rule of your own: `map` receives every change to `table`, with the old and new values
    /// of `columns` (which strata captures for this table), and pushes what to drop.
    pub fn new(
        table: &str,
        columns: &[&str],
        map: impl Fn(&Change, &mut Vec<Invalidation>) + Send + Sync + 'static,
    ) -> Self {
        InvalidationRule {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            map: Arc::new(map),
        }
    }

    /// The changed row's rowid is the key (`i64`) of its entry in `cache`.
    pub fn rowid_key(table: &str, cache: &str) -> Self {
        let cache: Arc<str> = Arc::from(cache);
        Self::new(table, &[], move |change, out| {
            out.push(Invalidation::Key {
                cache: Arc::clone(&cache),
                key: Box::new(change.rowid),
            })
        })
    }

    /// Each value `column` had before and after the change is a key (`i64`) in `cache`: e.g. a
    /// category's `user_id` keys the cache of that user's categories.
    pub fn column_key(table: &str, column: &str, cache: &str) -> Self {
        let cache: Arc<str> = Arc::from(cache);
        let col = column.to_owned();
        Self::new(table, &[column], move |change, out| {
            for value in change.values(&col) {
                if let Value::Integer(key) = value {
                    out.push(Invalidation::Key {
                        cache: Arc::clone(&cache),
                        key: Box::new(*key),
                    });
                }
            }
        })
    }

    /// Each value `column` had before and after the change names the tag `{prefix}{value}`
    /// to drop in `cache`.
    pub fn column_tag(table: &str, column: &str, cache: &str, prefix: &str) -> Self {
        let cache: Arc<str> = Arc::from(cache);
        let (col, prefix) = (column.to_owned(), prefix.to_owned());
        Self::new(table, &[column], move |change, out| {
            for value in change.values(&col) {
                let tag = match value {
                    Value::Integer(i) => format!("{prefix}{i}"),
                    Value::Text(t) => format!("{prefix}{t}"),
                    Value::Real(r) => format!("{prefix}{r}"),
                    Value::Null | Value::Blob(_) => continue,
                };
                out.push(Invalidation::Tag {
                    cache: Arc::clone(&cache),
                    tag,
                });
            }
        })
    }

    /// Any change to `table` drops all of `cache`.
    pub fn whole_cache(table: &str, cache: &str) -> Self {
        let cache: Arc<str> = Arc::from(cache);
        Self::new(table, &[], move |_, out| {
            out.push(Invalidation::All {
                cache: Arc::clone(&cache),
            })
        })
    }

    /// The table the rule watches.
    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn apply(&self, change: &Change, out: &mut Vec<Invalidation>) {
        (self.map)(change, out)
    }
}
