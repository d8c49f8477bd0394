//! `SharedTier`: the connections to the shared tier's Redis, its health (down, backoff,
//! reconnect) and the calls the caches make through it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Connection, RedisError, RedisResult};

use super::script::{self, Names, DROP_KEY, FILL, LOOKUP};
use super::settings::SharedTierSettings;
use crate::error::{Error, Result};

/// What the tier tells its `Db`, which raises the matching alert (`Alert::SharedTierDown`,
/// `Alert::SharedTierRecovered`): the monitor sits above the caches, so the tier names no
/// alert itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TierEvent {
    /// A call failed or timed out; the error.
    Down(String),
    /// The tier answers again after this long down, its epoch bumped.
    Recovered(Duration),
}

/// Where the tier's events go: the monitor of the `Db` that owns it.
pub(crate) type EventSink = Arc<dyn Fn(TierEvent) + Send + Sync>;

/// What a lookup found.
pub(crate) enum Lookup {
    /// The stored bytes, and the versions they are under (for a fill that replaces bytes
    /// this build cannot decode).
    Hit(Vec<u8>, String),
    /// Nothing under the versions read, which a fill must carry.
    Miss(String),
    /// The tier is down: load without it, fill nothing.
    Unavailable,
}

/// One invalidation, sent with the others of its commit in one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Delete a key's value and bump its own counter (kept `ttl_ms` past the bump).
    DropKey { names: Names, ttl_ms: u64 },
    /// Bump a namespace's or a whole cache's counter (kept `ttl_ms` past the bump, if set).
    Bump {
        counter: String,
        ttl_ms: Option<u64>,
    },
}

/// The counters of the shared tier, as [`SharedTier::stats`] shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SharedTierStats {
    /// Whether the last call succeeded (false before the first call).
    pub up: bool,
    /// Lookups that found a value.
    pub hits: u64,
    /// Lookups that found none (the loader ran).
    pub misses: u64,
    /// Values written after a miss.
    pub fills: u64,
    /// Fills refused because an invalidation moved the versions during the load.
    pub stale_fills: u64,
    /// Invalidations sent (keys dropped, namespaces and caches bumped).
    pub invalidations: u64,
    /// Calls not made because the tier was down.
    pub skipped: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Times the tier went down.
    pub downs: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    stale_fills: AtomicU64,
    invalidations: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
    downs: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

struct Health {
    /// When the tier went down; `None` while up and before the first connection.
    down_since: Option<Instant>,
    /// The earliest next connection attempt.
    retry_at: Instant,
    backoff: Duration,
}

/// A Redis server shared by the processes of a service, as a second cache tier behind the
/// local caches that opt in ([`CacheSpec::shared_tier`](crate::cache::CacheSpec::shared_tier)).
///
/// Calls run on the caller's thread over synchronous connections kept in a small pool, each
/// with the connect and I/O timeouts of its [`SharedTierSettings`]. A failure drops the
/// connections, fires [`Alert::SharedTierDown`](crate::monitor::Alert::SharedTierDown) and marks the tier down: calls are skipped
/// (lookups load from the database, fills are not made, invalidations are lost) until a
/// reconnection succeeds, tried by one caller at a time after a backoff that doubles up to
/// `max_backoff`. Since invalidations may have been lost meanwhile, the reconnection bumps the
/// global epoch before anything is served, which makes every entry written before unreachable
/// (for every process), and fires
/// [`Alert::SharedTierRecovered`](crate::monitor::Alert::SharedTierRecovered).
pub struct SharedTier {
    client: redis::Client,
    settings: SharedTierSettings,
    idle: Mutex<Vec<Connection>>,
    up: AtomicBool,
    /// Set when an invalidation may have been lost: the next connection bumps the epoch.
    stale: AtomicBool,
    health: Mutex<Health>,
    events: OnceLock<EventSink>,
    counters: Counters,
}

impl fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTier")
            .field("url", &self.settings.url)
            .field("prefix", &self.settings.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// A tier for the server `settings` name. Connects lazily: a server that is down at open
    /// fails nothing.
    pub(crate) fn new(settings: SharedTierSettings) -> Result<Self> {
        settings.validate()?;
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|err| Error::InvalidConfig {
                field: "redis.url",
                reason: err.to_string(),
            })?;
        Ok(SharedTier {
            client,
            health: Mutex::new(Health {
                down_since: None,
                retry_at: Instant::now(),
                backoff: settings.min_backoff,
            }),
            settings,
            idle: Mutex::new(Vec::new()),
            up: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            events: OnceLock::new(),
            counters: Counters::default(),
        })
    }

    /// Sends the tier's events to `sink` from now on (the first sink set stays).
    pub(crate) fn on_event(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    /// How long one call to the server may take before it counts as failed.
    pub(crate) fn io_timeout(&self) -> Duration {
        self.settings.io_timeout
    }

    /// The first part of every key the tier writes.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SharedTierStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedTierStats {
            up: self.is_up(),
            hits: get(&c.hits),
            misses: get(&c.misses),
            fills: get(&c.fills),
            stale_fills: get(&c.stale_fills),
            invalidations: get(&c.invalidations),
            skipped: get(&c.skipped),
            errors: get(&c.errors),
            downs: get(&c.downs),
        }
    }

    /// The value stored for `names` under the current versions, or the versions a fill must
    /// carry.
    pub(crate) fn lookup(&self, names: &Names) -> Lookup {
        let reply = self.with_conn(|c| {
            let mut call = LOOKUP.prepare_invoke();
            for counter in &names.counters {
                call.key(counter);
            }
            call.arg(&names.base);
            call.invoke::<(String, Option<Vec<u8>>)>(c)
        });
        match reply {
            Some((versions, Some(bytes))) => {
                add(&self.counters.hits, 1);
                Lookup::Hit(bytes, versions)
            }
            Some((versions, None)) => {
                add(&self.counters.misses, 1);
                Lookup::Miss(versions)
            }
            None => Lookup::Unavailable,
        }
    }

    /// Stores `value` for `ttl` under `versions` if they are still current; true if it did.
    pub(crate) fn fill(&self, names: &Names, versions: &str, value: &[u8], ttl: Duration) -> bool {
        let ttl_ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let wrote = self.with_conn(|c| {
            let mut call = FILL.prepare_invoke();
            for counter in &names.counters {
                call.key(counter);
            }
            call.arg(&names.base).arg(versions).arg(value).arg(ttl_ms);
            call.invoke::<i64>(c)
        });
        match wrote {
            Some(1) => {
                add(&self.counters.fills, 1);
                true
            }
            Some(_) => {
                add(&self.counters.stale_fills, 1);
                false
            }
            None => false,
        }
    }

    /// Sends `ops` in one pipeline. A failure (or a tier already down) marks the tier stale,
    /// so that its next connection bumps the epoch: nothing an invalidation should have
    /// dropped is served afterwards.
    pub(crate) fn invalidate(&self, ops: &[Op]) {
        if ops.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for op in ops {
            match op {
                Op::DropKey { names, ttl_ms } => {
                    pipe.cmd("EVALSHA")
                        .arg(DROP_KEY.get_hash())
                        .arg(names.counters.len())
                        .arg(&names.counters)
                        .arg(&names.base)
                        .arg(*ttl_ms)
                        .ignore();
                }
                Op::Bump { counter, ttl_ms } => {
                    pipe.cmd("INCR").arg(counter).ignore();
                    if let Some(ttl_ms) = ttl_ms {
                        pipe.cmd("PEXPIRE").arg(counter).arg(*ttl_ms).ignore();
                    }
                }
            }
        }
        let sent = self.with_conn(|c| match pipe.query::<()>(c) {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Someone flushed the scripts: load them again; bumping twice is harmless.
                load_scripts(c)?;
                pipe.query::<()>(c)
            }
            other => other,
        });
        match sent {
            Some(()) => add(&self.counters.invalidations, ops.len() as u64),
            None => self.stale.store(true, Ordering::Release),
        }
    }

    /// Runs `call` on a pooled connection; `None` when the tier is down or the call failed
    /// (which marks it down).
    fn with_conn<T>(&self, call: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Option<T> {
        let Some(mut conn) = self.checkout() else {
            add(&self.counters.skipped, 1);
            return None;
        };
        match call(&mut conn) {
            Ok(value) => {
                let mut idle = self.idle.lock();
                if idle.len() < self.settings.max_idle && self.is_up() {
                    idle.push(conn);
                }
                Some(value)
            }
            Err(err) => {
                self.fail(&err);
                None
            }
        }
    }

    /// An idle connection, a new one, or `None` while the tier is down and not yet due for
    /// (or already in) a reconnection attempt.
    fn checkout(&self) -> Option<Connection> {
        if self.is_up() {
            if let Some(conn) = self.idle.lock().pop() {
                return Some(conn);
            }
            return match self.connect() {
                Ok(conn) => Some(conn),
                Err(err) => {
                    self.fail(&err);
                    None
                }
            };
        }
        self.reconnect()
    }

    /// One caller's attempt to bring the tier (back) up: the others skip the tier meanwhile.
    fn reconnect(&self) -> Option<Connection> {
        let mut health = self.health.try_lock()?;
        if self.is_up() {
            drop(health);
            return self.idle.lock().pop().or_else(|| self.connect().ok());
        }
        let now = Instant::now();
        if now < health.retry_at {
            return None;
        }
        let connected = self.connect().and_then(|mut conn| {
            if self.stale.load(Ordering::Acquire) {
                let epoch = script::epoch(&self.settings.prefix);
                redis::cmd("INCR").arg(epoch).query::<i64>(&mut conn)?;
            }
            Ok(conn)
        });
        match connected {
            Ok(conn) => {
                self.stale.store(false, Ordering::Release);
                health.backoff = self.settings.min_backoff;
                let down_for = health.down_since.take().map(|at| at.elapsed());
                self.up.store(true, Ordering::Release);
                drop(health);
                if let Some(down_for) = down_for {
                    tracing::info!(?down_for, "shared cache tier back; epoch bumped");
                    self.raise(TierEvent::Recovered(down_for));
                }
                Some(conn)
            }
            Err(err) => {
                add(&self.counters.errors, 1);
                health.backoff = (health.backoff * 2).min(self.settings.max_backoff);
                health.retry_at = now + health.backoff;
                let first = health.down_since.is_none();
                if first {
                    health.down_since = Some(now);
                }
                drop(health);
                self.stale.store(true, Ordering::Release);
                if first {
                    add(&self.counters.downs, 1);
                    self.raise(TierEvent::Down(err.to_string()));
                }
                None
            }
        }
    }

    /// A new connection with the settings' timeouts and the scripts loaded. A server without
    /// an epoch (new, or restarted empty) gets a random one, so that no versions read before a
    /// restart match the versions after it: a fill that straddles the restart is refused.
    fn connect(&self) -> RedisResult<Connection> {
        let mut conn = self
            .client
            .get_connection_with_timeout(self.settings.connect_timeout)?;
        conn.set_read_timeout(Some(self.settings.io_timeout))?;
        conn.set_write_timeout(Some(self.settings.io_timeout))?;
        load_scripts(&mut conn)?;
        redis::cmd("SET")
            .arg(script::epoch(&self.settings.prefix))
            .arg(random_epoch())
            .arg("NX")
            .query::<()>(&mut conn)?;
        Ok(conn)
    }

    /// Marks the tier down after a failed call: the idle connections go (after a restart
    /// they are all broken), the next connection bumps the epoch.
    fn fail(&self, err: &RedisError) {
        add(&self.counters.errors, 1);
        self.stale.store(true, Ordering::Release);
        self.up.store(false, Ordering::Release);
        self.idle.lock().clear();
        let first = {
            let mut health = self.health.lock();
            let first = health.down_since.is_none();
            if first {
                let now = Instant::now();
                health.down_since = Some(now);
                health.backoff = self.settings.min_backoff;
                health.retry_at = now + health.backoff;
            }
            first
        };
        if first {
            add(&self.counters.downs, 1);
            tracing::warn!(error = %err, "shared cache tier down");
            self.raise(TierEvent::Down(err.to_string()));
        }
    }

    fn raise(&self, event: TierEvent) {
        if let Some(sink) = self.events.get() {
            sink(event);
        }
    }
}

/// A starting epoch unlikely to be one a server had before: clock nanoseconds and the process
/// id, folded to 32 bits (leaves room for increments in Lua's doubles).
fn random_epoch() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) + 1
}

/// Loads every script, so that pipelined `EVALSHA`s find them.
fn load_scripts(conn: &mut Connection) -> RedisResult<()> {
    for script in [&*LOOKUP, &*FILL, &*DROP_KEY] {
        script.prepare_invoke().load(conn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_down_not_an_error() -> Result<()> {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let tier = SharedTier::new(SharedTierSettings::new("redis://127.0.0.1:1/"))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        tier.on_event(Arc::new(move |e| sink.lock().push(e)));
        let names = Names::new("strata", "c", "1", &[]);
        assert!(matches!(tier.lookup(&names), Lookup::Unavailable));
        assert!(matches!(tier.lookup(&names), Lookup::Unavailable));
        tier.invalidate(&[Op::Bump {
            counter: "x".into(),
            ttl_ms: None,
        }]);
        let stats = tier.stats();
        assert!(!stats.up);
        assert_eq!((stats.downs, stats.errors, stats.skipped), (1, 1, 3));
        assert!(matches!(&seen.lock()[..], [TierEvent::Down(_)]));
        Ok(())
    }
}
