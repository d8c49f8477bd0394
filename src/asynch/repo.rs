//! `AsyncRepository`: a [`Repository`] for async callers.

use std::sync::Arc;

use rusqlite::types::Value;

use super::AsyncDb;
use crate::error::Result;
use crate::repo::{Entity, Repository};

/// A [`Repository`] for async callers: `get` and `get_many` are answered on the calling task
/// when the cache holds every key asked for; misses, writes and queries run on a reader thread
/// (writes go through the group-commit writer from there). Cheap to clone.
pub struct AsyncRepository<E: Entity> {
    adb: AsyncDb,
    repo: Repository<E>,
}

impl<E: Entity> Clone for AsyncRepository<E> {
    fn clone(&self) -> Self {
        AsyncRepository {
            adb: self.adb.clone(),
            repo: self.repo.clone(),
        }
    }
}

impl<E: Entity> std::fmt::Debug for AsyncRepository<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRepository")
            .field("repo", &self.repo)
            .finish()
    }
}

impl<E: Entity> AsyncRepository<E> {
    /// The async face of `repo`, running on `adb`'s threads (both on the same `Db`).
    pub fn new(adb: AsyncDb, repo: Repository<E>) -> Self {
        AsyncRepository { adb, repo }
    }

    /// The synchronous repository.
    pub fn sync(&self) -> &Repository<E> {
        &self.repo
    }

    /// [`Repository::get`]: a cache hit without a hop.
    pub async fn get(&self, id: i64) -> Result<Option<Arc<E>>> {
        if let Some(hit) = self.adb.cache_hit(self.repo.cache(), &id) {
            return Ok(hit.into_value());
        }
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.get(id)).await
    }

    /// [`Repository::get_many`]: without a hop when every key is a hit.
    pub async fn get_many(&self, ids: Vec<i64>) -> Result<Vec<Option<Arc<E>>>> {
        if let Some(hits) = self.adb.cache_hits(self.repo.cache(), &ids) {
            return Ok(hits);
        }
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.get_many(&ids)).await
    }

    /// [`Repository::insert`].
    pub async fn insert(&self, value: E) -> Result<i64> {
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.insert(&value)).await
    }

    /// [`Repository::update`].
    pub async fn update(&self, value: E) -> Result<()> {
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.update(&value)).await
    }

    /// [`Repository::upsert`].
    pub async fn upsert(&self, value: E) -> Result<i64> {
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.upsert(&value)).await
    }

    /// [`Repository::delete`].
    pub async fn delete(&self, id: i64) -> Result<bool> {
        let repo = self.repo.clone();
        self.adb.run(move |_| repo.delete(id)).await
    }

    /// [`Repository::query_entities`]: `sql` with positional `params`, each row an entity.
    pub async fn query(&self, sql: impl Into<String>, params: Vec<Value>) -> Result<Vec<E>> {
        let (repo, sql) = (self.repo.clone(), sql.into());
        self.adb
            .run(move |_| repo.query_entities(&sql, rusqlite::params_from_iter(params)))
            .await
    }
}
