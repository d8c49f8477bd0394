//! The tier's keys and the Lua scripts that read, fill and invalidate them atomically.
//!
//! An entry's data key embeds the versions it was written under:
//!
//! ```text
//! {prefix}:epoch                      global epoch: bumped when a process reconnects
//! {prefix}:{cache}:v                  the cache's version: bumped to drop the whole cache
//! {prefix}:{cache}:ns:{namespace}     a namespace's version: bumped to drop every key in it
//! {prefix}:{cache}:kv:{key}           the key's own version: bumped when the key is dropped
//! {prefix}:{cache}:d:{key}:{e}.{c}.{n..}.{k}   the value, under the versions above
//! ```
//!
//! Bumping any counter moves the name every reader computes, so the entries under the old name
//! are unreachable at once and expire by their TTL: dropping a namespace (a tag, a prefix) or a
//! cache costs one `INCR`, never a `SCAN`. A fill carries the versions its lookup read before
//! the loader took its snapshot, and the fill script writes only if they are still current: a
//! load that read an older snapshot than an invalidation cannot put its value back (the
//! compare-and-set of memcache's leases).
//!
//! The scripts build data key names from their arguments, which a Redis Cluster would refuse;
//! the tier is for one server (or a primary with replicas).

use std::sync::LazyLock;

use redis::Script;

/// Reads the counters of `KEYS` and the value under the name they give. Returns the versions
/// and the value (nil when absent).
pub(crate) static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = {}
for i, k in ipairs(KEYS) do v[i] = redis.call('GET', k) or '0' end
local versions = table.concat(v, '.')
return {versions, redis.call('GET', ARGV[1] .. versions)}
",
    )
});

/// Writes `ARGV[3]` for `ARGV[2]` milliseconds under the versions `ARGV[2]` if the counters
/// of `KEYS` still read so. Returns 1 if it wrote.
pub(crate) static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = {}
for i, k in ipairs(KEYS) do v[i] = redis.call('GET', k) or '0' end
local versions = table.concat(v, '.')
if versions ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1] .. versions, ARGV[3], 'PX', ARGV[4])
return 1
",
    )
});

/// Deletes the value under the current versions and bumps the key's own counter (the last of
/// `KEYS`), which lives `ARGV[2]` milliseconds past its last bump.
pub(crate) static DROP_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = {}
for i, k in ipairs(KEYS) do v[i] = redis.call('GET', k) or '0' end
redis.call('DEL', ARGV[1] .. table.concat(v, '.'))
redis.call('INCR', KEYS[#KEYS])
redis.call('PEXPIRE', KEYS[#KEYS], ARGV[2])
return 1
",
    )
});

/// The names one key of one cache is read, filled and dropped through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// The counters, in the order their versions appear in the data key: epoch, cache,
    /// namespaces, key.
    pub(crate) counters: Vec<String>,
    /// The data key's name up to its versions.
    pub(crate) base: String,
}

impl Names {
    /// The names of `key` (already encoded) in `cache`, under `namespaces`.
    pub(crate) fn new(prefix: &str, cache: &str, key: &str, namespaces: &[String]) -> Self {
        let mut counters = Vec::with_capacity(3 + namespaces.len());
        counters.push(epoch(prefix));
        counters.push(cache_version(prefix, cache));
        counters.extend(namespaces.iter().map(|ns| namespace(prefix, cache, ns)));
        counters.push(format!("{prefix}:{cache}:kv:{key}"));
        Names {
            counters,
            base: format!("{prefix}:{cache}:d:{key}:"),
        }
    }
}

/// The global epoch's counter.
pub(crate) fn epoch(prefix: &str) -> String {
    format!("{prefix}:epoch")
}

/// The counter of a whole cache.
pub(crate) fn cache_version(prefix: &str, cache: &str) -> String {
    format!("{prefix}:{cache}:v")
}

/// The counter of one namespace of a cache.
pub(crate) fn namespace(prefix: &str, cache: &str, namespace: &str) -> String {
    format!("{prefix}:{cache}:ns:{namespace}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn names_put_the_key_counter_last() -> Result<()> {
        let names = Names::new("p", "daily", "[1,\"d\"]", &["user:1".to_owned()]);
        assert_eq!(
            names.counters,
            [
                "p:epoch",
                "p:daily:v",
                "p:daily:ns:user:1",
                "p:daily:kv:[1,\"d\"]"
            ]
        );
        assert_eq!(names.base, "p:daily:d:[1,\"d\"]:");
        Ok(())
    }
}
