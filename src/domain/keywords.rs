//! Keywords: shared suggestions of a category name for words found in descriptions.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Row;

use super::tracker::ExpenseTracker;
use crate::cache::CacheSettings;
use crate::error::{Error, Result};
use crate::repo::Entity;

/// A keyword and the category name it suggests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyword {
    /// The key; 0 for a keyword not inserted yet.
    pub id: i64,
    /// The word, unique without regard to ASCII case.
    pub keyword: String,
    /// The category name suggested for descriptions containing the word.
    pub category_name: String,
    /// Higher wins when several keywords of one description disagree.
    pub weight: i64,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

impl Entity for Keyword {
    const TABLE: &'static str = "keywords";
    const COLUMNS: &'static [&'static str] = &["keyword", "category_name", "weight", "created_at"];
    // The `keywords` cache is the one by word (see `suggest_category`).
    fn cache() -> CacheSettings {
        CacheSettings::new("keywords_by_id")
            .capacity(1000)
            .ttl(Duration::from_secs(3600))
    }

    fn key(&self) -> Option<i64> {
        (self.id != 0).then_some(self.id)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Keyword {
            id: row.get(0)?,
            keyword: row.get(1)?,
            category_name: row.get(2)?,
            weight: row.get(3)?,
            created_at: row.get(4)?,
        })
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        vec![
            &self.keyword,
            &self.category_name,
            &self.weight,
            &self.created_at,
        ]
    }
}

/// Served by the UNIQUE index on `keywords (keyword COLLATE NOCASE)`.
pub(crate) const KEYWORDS_BY_WORD: &str =
    "SELECT id, keyword, category_name, weight, created_at FROM keywords \
     WHERE keyword IN (SELECT value FROM json_each(?1))";

/// The words of a description that the keywords are looked up by: split at every character
/// that is not alphanumeric, lowercased, each once, in order of first appearance.
pub fn description_words(description: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    description
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

impl ExpenseTracker {
    /// The category name the keywords suggest for a description: of the description's words
    /// that are keywords, the one with the highest weight. Words are looked up through the
    /// `keywords` cache (absent words are cached as absent too), which any change to a keyword
    /// drops whole.
    pub fn suggest_category(&self, description: &str) -> Result<Option<String>> {
        let words = description_words(description);
        if words.is_empty() {
            return Ok(None);
        }
        let found = self.db.cached_many(&self.keywords, &words, |c, missing| {
            let list = serde_json::to_string(missing).map_err(Error::closure)?;
            let mut stmt = c.prepare_cached(KEYWORDS_BY_WORD)?;
            let rows = stmt.query_map([list], Keyword::from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let keyword = row?;
                out.push((keyword.keyword.to_lowercase(), keyword));
            }
            Ok(out)
        })?;
        Ok(found
            .into_iter()
            .flatten()
            .max_by_key(|k| k.weight)
            .map(|k| k.category_name.clone()))
    }
}
