//! `Cached`: what a lookup found, a value or a negative entry.

use std::sync::Arc;

/// What the cache knows about a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached<V> {
    /// The key's value.
    Value(Arc<V>),
    /// The key is known not to exist (a negative entry).
    Absent,
}

impl<V> Clone for Cached<V> {
    fn clone(&self) -> Self {
        match self {
            Cached::Value(value) => Cached::Value(Arc::clone(value)),
            Cached::Absent => Cached::Absent,
        }
    }
}

impl<V> Cached<V> {
    /// The value, or `None` for a negative entry.
    pub fn value(&self) -> Option<&Arc<V>> {
        match self {
            Cached::Value(value) => Some(value),
            Cached::Absent => None,
        }
    }

    /// The value, or `None` for a negative entry.
    pub fn into_value(self) -> Option<Arc<V>> {
        match self {
            Cached::Value(value) => Some(value),
            Cached::Absent => None,
        }
    }

    /// True for a negative entry.
    pub fn is_absent(&self) -> bool {
        matches!(self, Cached::Absent)
    }
}
