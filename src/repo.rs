//! `Entity` and `Repository<E>`: read-through cached CRUD for one table.
//!
//! A repository never invalidates by hand: it registers an invalidation rule for its table, so
//! every committed change to a row — through the repository, a `Batch`, or raw SQL in
//! `db.write` — drops that row's cache entry before the write returns.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, Row};

use crate::batch::{Batch, BatchReport};
use crate::cache::{CacheSettings, CacheSpec, EntityCache, InvalidationRule};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::sql::quote_ident;

/// A row type stored in one table whose key is the table's `INTEGER PRIMARY KEY` (its rowid).
///
/// ```
/// use strata::rusqlite::{types::ToSql, Row};
///
/// struct Note { id: i64, text: String }
///
/// impl strata::Entity for Note {
///     const TABLE: &'static str = "notes";
///     const COLUMNS: &'static [&'static str] = &["text"];
///     fn key(&self) -> Option<i64> { (self.id != 0).then_some(self.id) }
///     fn from_row(row: &Row<'_>) -> strata::rusqlite::Result<Self> {
///         Ok(Note { id: row.get(0)?, text: row.get(1)? })
///     }
///     fn params(&self) -> Vec<&dyn ToSql> { vec![&self.text] }
/// }
/// ```
pub trait Entity: Send + Sync + Sized + 'static {
    /// The table.
    const TABLE: &'static str;
    /// The key column, an `INTEGER PRIMARY KEY`. Defaults to `id`.
    const KEY: &'static str = "id";
    /// The other columns, in the order of [`params`](Entity::params).
    const COLUMNS: &'static [&'static str];

    /// The name, capacity and TTLs of the repository's cache; a [`Config`](crate::Config)
    /// setting of the same name overrides them. Defaults to a cache named after the table, of
    /// 1000 entries for 10 minutes.
    fn cache() -> CacheSettings {
        CacheSettings::new(Self::TABLE)
            .capacity(1000)
            .ttl(Duration::from_secs(600))
    }

    /// The key, or `None` for a value not inserted yet (the database assigns one).
    fn key(&self) -> Option<i64>;
    /// Builds a value from a row holding the key column and then [`COLUMNS`](Entity::COLUMNS).
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
    /// The values of [`COLUMNS`](Entity::COLUMNS), bound as parameters.
    fn params(&self) -> Vec<&dyn ToSql>;
}

/// The SQL of one entity's statements, built once from its constants.
struct Statements {
    select: String,
    select_many: String,
    insert: String,
    update: String,
    upsert: String,
    delete: String,
}

impl Statements {
    fn new<E: Entity>() -> Self {
        let table = quote_ident(E::TABLE);
        let key = quote_ident(E::KEY);
        let cols: Vec<String> = E::COLUMNS.iter().map(|c| quote_ident(c)).collect();
        let all = std::iter::once(key.clone())
            .chain(cols.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ");
        let placeholders = (1..=cols.len() + 1)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sets = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let excluded = cols
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Statements {
            select: format!("SELECT {all} FROM {table} WHERE {key} = ?1"),
            select_many: format!(
                "SELECT {all} FROM {table} WHERE {key} IN (SELECT value FROM json_each(?1))"
            ),
            insert: format!("INSERT INTO {table} ({all}) VALUES ({placeholders})"),
            update: format!("UPDATE {table} SET {sets} WHERE {key} = ?1"),
            upsert: format!(
                "INSERT INTO {table} ({all}) VALUES ({placeholders}) \
                 ON CONFLICT ({key}) DO UPDATE SET {excluded}"
            ),
            delete: format!("DELETE FROM {table} WHERE {key} = ?1"),
        }
    }
}

/// Read-through cached CRUD for one [`Entity`] type. Cheap to clone.
pub struct Repository<E: Entity> {
    db: Db,
    cache: Arc<EntityCache<i64, E>>,
    sql: Arc<Statements>,
}

impl<E: Entity> Clone for Repository<E> {
    fn clone(&self) -> Self {
        Repository {
            db: self.db.clone(),
            cache: Arc::clone(&self.cache),
            sql: Arc::clone(&self.sql),
        }
    }
}

impl<E: Entity> std::fmt::Debug for Repository<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("table", &E::TABLE)
            .field("cache", &self.cache.name())
            .finish()
    }
}

impl<E: Entity> Repository<E> {
    /// The repository of `E` on `db`: registers its cache (named and sized by [`Entity::cache`]) and the
    /// rule that drops a row's entry when the row changes. A second repository of the same
    /// entity on one `Db` shares the first one's cache.
    pub fn new(db: &Db) -> Result<Self> {
        let settings = E::cache();
        let sql = Arc::new(Statements::new::<E>());
        let cache = match db.caches().get::<i64, E>(settings.name()) {
            Some(cache) => cache,
            None => {
                let name = settings.name().to_owned();
                // The cache's own loader, for refresh ahead: it holds the database weakly, so
                // that the cache (which the database owns) does not keep it open.
                let (weak, reload_sql) = (Arc::downgrade(&db.inner), Arc::clone(&sql));
                let spec = CacheSpec::sized(settings).loader(move |id: &i64| {
                    let db = Db {
                        inner: weak.upgrade().ok_or(Error::Closed)?,
                    };
                    db.read_one(|c| select_one::<E>(c, &reload_sql.select, *id))
                });
                let cache = db.register_cache(spec)?;
                db.add_rule(InvalidationRule::rowid_key(E::TABLE, &name))?;
                cache
            }
        };
        Ok(Repository {
            db: db.clone(),
            cache,
            sql,
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The repository's cache.
    pub fn cache(&self) -> &Arc<EntityCache<i64, E>> {
        &self.cache
    }

    /// The row with key `id`, through the cache; `Ok(None)` if there is none.
    pub fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        let sql = &self.sql.select;
        self.db
            .cached_one(&self.cache, &id, |c, id| select_one::<E>(c, sql, *id))
    }

    /// The row with key `id`, or [`Error::NotFound`].
    pub fn require(&self, id: i64) -> Result<Arc<E>> {
        self.get(id)?.ok_or_else(|| Error::NotFound {
            table: E::TABLE,
            key: id.to_string(),
        })
    }

    /// The rows of `ids`, in that order (`None` for missing keys); the misses are read with one
    /// `IN` query per chunk.
    pub fn get_many(&self, ids: &[i64]) -> Result<Vec<Option<Arc<E>>>> {
        let sql = &self.sql.select_many;
        self.db.cached_many(&self.cache, ids, |c, missing| {
            // One bound JSON array instead of one variable per key: no variable limit, and one
            // prepared statement for every chunk size.
            let list = serde_json::to_string(missing).map_err(Error::closure)?;
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([list], |row| {
                let value = E::from_row(row)?;
                Ok((row.get::<_, i64>(0)?, value))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Inserts `value` and returns its key (assigned by the database when `value.key()` is
    /// `None`).
    pub fn insert(&self, value: &E) -> Result<i64> {
        self.write_returning_key(&self.sql.insert, value)
    }

    /// Updates the row with `value`'s key; [`Error::NotFound`] if there is none.
    pub fn update(&self, value: &E) -> Result<()> {
        let key = value.key().ok_or_else(|| Error::NotFound {
            table: E::TABLE,
            key: "(none)".into(),
        })?;
        let sql = &self.sql.update;
        let changed = self
            .db
            .write(|c| execute_with_key(c, sql, &Some(key), value))
            .map_err(name_table::<E>)?;
        if changed == 0 {
            return Err(Error::NotFound {
                table: E::TABLE,
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// Inserts `value`, or updates the row with its key if there is one; returns the key.
    pub fn upsert(&self, value: &E) -> Result<i64> {
        self.write_returning_key(&self.sql.upsert, value)
    }

    fn write_returning_key(&self, sql: &str, value: &E) -> Result<i64> {
        self.db
            .write(|c| {
                let key = value.key();
                execute_with_key(c, sql, &key, value)?;
                Ok(key.unwrap_or_else(|| c.last_insert_rowid()))
            })
            .map_err(name_table::<E>)
    }

    /// Deletes the row with key `id`; false if there was none.
    pub fn delete(&self, id: i64) -> Result<bool> {
        let sql = &self.sql.delete;
        self.db
            .write(|c| Ok(c.prepare_cached(sql)?.execute([id])? > 0))
            .map_err(name_table::<E>)
    }

    /// Inserts many values through a [`Batch`] with its defaults (chunks of 1000 rows per
    /// transaction, multi-row inserts, per-row failures reported); see [`insert_many_with`].
    ///
    /// [`insert_many_with`]: Repository::insert_many_with
    pub fn insert_many(&self, values: &[E]) -> Result<BatchReport> {
        self.insert_many_with(Batch::new(), values)
    }

    /// Inserts many values through `batch` (whose options apply: `all_or_nothing`, `dry_run`,
    /// `max_batch`, ...).
    pub fn insert_many_with(&self, mut batch: Batch, values: &[E]) -> Result<BatchReport> {
        let columns: Vec<&str> = std::iter::once(E::KEY)
            .chain(E::COLUMNS.iter().copied())
            .collect();
        for value in values {
            let key = value.key();
            let mut params: Vec<&dyn ToSql> = Vec::with_capacity(columns.len());
            params.push(&key);
            params.extend(value.params());
            batch.insert(E::TABLE, &columns, params.as_slice());
        }
        self.db.apply(&batch)
    }

    /// Runs a list query on a reader: `sql` with `params`, each row mapped by `map`.
    pub fn query<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.db.read(|c| {
            let mut stmt = c
                .prepare_cached(sql)
                .map_err(|e| Error::from(e).with_sql(sql))?;
            let rows = stmt.query_map(params, map)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Like [`query`](Repository::query), mapping each row with [`Entity::from_row`].
    pub fn query_entities(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<E>> {
        self.query(sql, params, E::from_row)
    }
}

/// Binds the key (NULL lets SQLite assign one) and the entity's columns, and executes.
fn execute_with_key<E: Entity>(
    c: &Connection,
    sql: &str,
    key: &Option<i64>,
    value: &E,
) -> Result<usize> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(E::COLUMNS.len() + 1);
    params.push(key);
    params.extend(value.params());
    let mut stmt = c.prepare_cached(sql)?;
    Ok(stmt.execute(params.as_slice())?)
}

/// SQLite's foreign-key message names no table; the repository knows which one was written.
fn name_table<E: Entity>(mut err: Error) -> Error {
    if let Error::Constraint {
        table: table @ None,
        ..
    } = &mut err
    {
        *table = Some(E::TABLE.to_owned());
    }
    err
}

/// The row of `E` with key `id`, read with its primary-key `SELECT`.
fn select_one<E: Entity>(c: &Connection, sql: &str, id: i64) -> Result<Option<E>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query([id])?;
    Ok(match rows.next()? {
        Some(row) => Some(E::from_row(row)?),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[derive(Debug, Clone, PartialEq)]
    struct Note {
        id: i64,
        text: String,
    }

    impl Entity for Note {
        const TABLE: &'static str = "notes";
        const COLUMNS: &'static [&'static str] = &["text"];
        fn key(&self) -> Option<i64> {
            (self.id != 0).then_some(self.id)
        }
        fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
            Ok(Note {
                id: row.get(0)?,
                text: row.get(1)?,
            })
        }
        fn params(&self) -> Vec<&dyn ToSql> {
            vec![&self.text]
        }
    }

    fn repo() -> Result<Repository<Note>> {
        let db = Config::new().build()?;
        db.write(|c| {
            Ok(c.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")?)
        })?;
        Repository::new(&db)
    }

    #[test]
    fn crud_round_trip() -> Result<()> {
        let notes = repo()?;
        let id = notes.insert(&Note {
            id: 0,
            text: "a".into(),
        })?;
        assert_eq!(
            notes.get(id)?.as_deref().map(|n| n.text.as_str()),
            Some("a")
        );
        notes.update(&Note {
            id,
            text: "b".into(),
        })?;
        assert_eq!(
            notes.require(id)?.text,
            "b",
            "the update dropped the cached 'a'"
        );
        assert_eq!(
            notes.upsert(&Note {
                id,
                text: "c".into()
            })?,
            id
        );
        assert_eq!(notes.require(id)?.text, "c");
        assert!(notes.delete(id)?);
        assert!(notes.get(id)?.is_none());
        assert!(!notes.delete(id)?);
        assert!(matches!(
            notes.update(&Note {
                id,
                text: "x".into()
            }),
            Err(Error::NotFound { table: "notes", .. })
        ));
        Ok(())
    }

    #[test]
    fn get_many_keeps_order_and_reports_missing() -> Result<()> {
        let notes = repo()?;
        let a = notes.insert(&Note {
            id: 0,
            text: "a".into(),
        })?;
        let b = notes.insert(&Note {
            id: 0,
            text: "b".into(),
        })?;
        notes.get(a)?; // one of them cached already
        let got = notes.get_many(&[b, 999, a])?;
        let texts: Vec<Option<&str>> = got
            .iter()
            .map(|n| n.as_deref().map(|n| n.text.as_str()))
            .collect();
        assert_eq!(texts, [Some("b"), None, Some("a")]);
        Ok(())
    }

    #[test]
    fn insert_many_goes_through_a_batch() -> Result<()> {
        let notes = repo()?;
        let many: Vec<Note> = (0..2500)
            .map(|i| Note {
                id: 0,
                text: format!("n{i}"),
            })
            .collect();
        let report = notes.insert_many(&many)?;
        assert_eq!((report.applied, report.chunks), (2500, 3));
        let n: i64 = notes
            .db()
            .read(|c| Ok(c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?))?;
        assert_eq!(n, 2500);
        Ok(())
    }

    #[test]
    fn raw_sql_writes_invalidate_too() -> Result<()> {
        let notes = repo()?;
        let id = notes.insert(&Note {
            id: 0,
            text: "a".into(),
        })?;
        notes.get(id)?;
        notes.db().write(|c| {
            Ok(
                c.execute("UPDATE notes SET text = 'raw' WHERE id = ?1", [id])
                    .map(drop)?,
            )
        })?;
        assert_eq!(notes.require(id)?.text, "raw");
        Ok(())
    }
}
