//! The shared cache tier against a real Redis: each test starts its own `redis-server` on a
//! free loopback port (or uses `REDIS_URL` with a prefix of its own, where the test does not
//! need to kill the server), and two or three `Db`s on one SQLite file stand for the processes
//! of a service: each has its own local caches, and they meet only in the file and in Redis.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use strata::cache::{EntityCache, InvalidationRule, SharedTierSettings};
use strata::monitor::Alert;
use strata::{Config, Db, Result};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` of this test's own, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    /// Starts a server on a free loopback port; panics (the test fails) with what to install
    /// when it cannot.
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Server { child: None, port };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = if Path::new(REDIS_SERVER).exists() {
            REDIS_SERVER
        } else {
            "redis-server"
        };
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "these tests need a Redis server: install redis-server \
                     (apt-get install redis-server) or set REDIS_URL ({err})"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(100)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a test's Redis is: `REDIS_URL` when set (with a prefix of the test's own), else a
/// server of its own.
struct Redis {
    url: String,
    prefix: String,
    _server: Option<Server>,
}

fn redis(test: &str) -> Redis {
    match std::env::var("REDIS_URL") {
        Ok(url) => Redis {
            url,
            prefix: format!("t{}{test}", std::process::id()),
            _server: None,
        },
        Err(_) => {
            let server = Server::start();
            Redis {
                url: server.url(),
                prefix: test.to_owned(),
                _server: Some(server),
            }
        }
    }
}

/// Generous timeouts (the machine may be loaded; a timeout would turn a hit into a miss), and
/// a short backoff; the tests of a failing server set their own timeouts.
fn settings(url: &str, prefix: &str) -> SharedTierSettings {
    SharedTierSettings::new(url)
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(1))
        .io_timeout(Duration::from_secs(2))
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
}

/// The schema every test's databases share: `t(id, g, v)`, where row `id` is in group `id / 10`.
fn create(path: &Path) -> Result<()> {
    let db = Db::open(path)?;
    db.write(|c| {
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER NOT NULL, v TEXT)")?;
        for id in 0..30_i64 {
            c.execute("INSERT INTO t VALUES (?1, ?2, 'v0')", (id, id / 10))?;
        }
        Ok(())
    })
}

/// One "process": a `Db` on the file with the shared cache `vals` (keys in namespaces
/// `g:{id / 10}`), its rules, and a count of loader calls.
struct Node {
    db: Db,
    vals: Arc<EntityCache<i64, String>>,
    loads: Arc<AtomicUsize>,
    alerts: Arc<Mutex<Vec<Alert>>>,
}

impl Node {
    fn open(path: &Path, tier: SharedTierSettings) -> Result<Node> {
        Node::open_with(Config::new().path(path), tier)
    }

    fn open_with(config: Config, tier: SharedTierSettings) -> Result<Node> {
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&alerts);
        let db = config
            .shared_tier(tier)
            .alert_window(Duration::from_millis(1))
            .on_alert(move |a: &Alert| sink.lock().unwrap().push(a.clone()))
            .build()?;
        let vals = db.register_cache(
            EntityCache::<i64, String>::builder("vals")
                .shared_tier()
                .shared_namespaces(|id: &i64| vec![format!("g:{}", id / 10)]),
        )?;
        db.add_rule(InvalidationRule::rowid_key("t", "vals"))?;
        db.add_rule(InvalidationRule::column_tag("t", "g", "vals", "g:"))?;
        Ok(Node {
            db,
            vals,
            loads: Arc::new(AtomicUsize::new(0)),
            alerts,
        })
    }

    fn get(&self, id: i64) -> Result<Option<String>> {
        let loads = Arc::clone(&self.loads);
        let value = self.db.cached(&self.vals, &id, move |c, id| {
            loads.fetch_add(1, Ordering::SeqCst);
            load(c, *id)
        })?;
        Ok(value.map(|v| (*v).clone()))
    }

    fn set(&self, id: i64, v: &str) -> Result<()> {
        let v = v.to_owned();
        self.db.write(move |c| {
            c.execute("UPDATE t SET v = ?2 WHERE id = ?1", (id, v))?;
            Ok(())
        })
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn stats(&self) -> strata::cache::SharedTierStats {
        self.db
            .caches()
            .shared_tier()
            .expect("a shared tier")
            .stats()
    }

    fn alerts(&self) -> Vec<Alert> {
        self.alerts.lock().unwrap().clone()
    }
}

fn load(c: &Connection, id: i64) -> Result<Option<String>> {
    let mut stmt = c.prepare_cached("SELECT v FROM t WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

fn db_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tier.db");
    (dir, path)
}

#[test]
fn a_second_db_with_an_empty_local_cache_hits_the_shared_tier() -> Result<()> {
    let redis = redis("hit");
    let (_dir, path) = db_file();
    create(&path)?;
    let a = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    let b = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    assert!(a.vals.is_shared());

    assert_eq!(a.get(1)?.as_deref(), Some("v0"));
    assert_eq!(a.get(99)?, None, "absent, stored as absent");
    assert_eq!(a.loads(), 2);
    assert_eq!(b.get(1)?.as_deref(), Some("v0"));
    assert_eq!(b.get(99)?, None);
    assert_eq!(b.loads(), 0, "b's values came from Redis");
    let stats = b.stats();
    assert!(stats.up);
    assert_eq!((stats.hits, stats.misses), (2, 0));
    assert_eq!(a.stats().fills, 2);
    let report = b.db.report();
    assert_eq!(report.shared_tier.map(|t| t.hits), Some(2));
    Ok(())
}

#[test]
fn the_tracker_serves_daily_metrics_to_a_second_db_from_the_shared_tier() -> Result<()> {
    use strata::domain::{Expense, ExpenseTracker, User};
    let redis = redis("tracker");
    let (_dir, path) = db_file();
    let open = || {
        ExpenseTracker::with_config(
            Config::new()
                .path(&path)
                .shared_tier(settings(&redis.url, &redis.prefix)),
        )
    };
    let a = open()?;
    let user_id = a.users.insert(&User {
        id: 0,
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: 0,
    })?;
    let expense = |cents| Expense {
        id: 0,
        user_id,
        category_id: None,
        amount_cents: cents,
        description: "tea".into(),
        expense_date: "2026-01-02".into(),
        created_at: 0,
    };
    a.expenses.insert(&expense(250))?;
    assert_eq!(a.daily_metrics(user_id, "2026-01-02")?.total_cents, 250);

    let b = open()?;
    let tier = |t: &ExpenseTracker| t.db().caches().shared_tier().expect("a tier").stats();
    assert_eq!(b.daily_metrics(user_id, "2026-01-02")?.total_cents, 250);
    assert_eq!(tier(&b).hits, 1, "b's metrics came from Redis");

    // A new expense in a: b's next read of the day, with nothing local, sees it.
    a.expenses.insert(&expense(100))?;
    let c = open()?;
    assert_eq!(c.daily_metrics(user_id, "2026-01-02")?.total_cents, 350);
    assert_eq!((tier(&c).hits, tier(&c).misses), (0, 1));
    Ok(())
}

#[test]
fn a_commit_drops_the_shared_entry_before_write_returns() -> Result<()> {
    let redis = redis("commit");
    let (_dir, path) = db_file();
    create(&path)?;
    let a = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    let b = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    for round in 1..=20 {
        assert!(a.get(5)?.is_some()); // a's value is in Redis now
        let v = format!("v{round}");
        a.set(5, &v)?;
        // b holds nothing locally: whatever it gets came through Redis or the file.
        b.vals.invalidate_all();
        assert_eq!(b.get(5)?.as_deref(), Some(v.as_str()), "round {round}");
    }
    assert_eq!(b.loads(), 20, "each write dropped the shared entry");
    assert!(a.stats().invalidations >= 20);
    Ok(())
}

#[test]
fn a_load_that_read_an_older_snapshot_does_not_fill_the_shared_tier() -> Result<()> {
    let redis = redis("cas");
    let (_dir, path) = db_file();
    create(&path)?;
    let a = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    let b = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    let (read, resume) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| -> Result<()> {
        let slow = s.spawn(|| {
            a.db.cached(&a.vals, &7, |c, id| {
                let old = load(c, *id)?; // the snapshot before b's write
                read.wait();
                resume.wait(); // returns after b's write invalidated the key
                Ok(old)
            })
        });
        read.wait();
        b.set(7, "new")?;
        resume.wait();
        let old = slow.join().expect("the slow load")?;
        assert_eq!(
            old.as_deref().map(String::as_str),
            Some("v0"),
            "its caller got it"
        );
        Ok(())
    })?;
    assert_eq!(a.stats().stale_fills, 1, "the fill was refused");
    let c = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    assert_eq!(c.get(7)?.as_deref(), Some("new"));
    assert_eq!(c.loads(), 1, "nothing was in Redis");
    Ok(())
}

/// A process whose local cache is dropped by another's commit may reload it from Redis before
/// that commit's invalidation reached Redis; a foreign-write check the tier's I/O timeout later
/// drops it once more.
#[test]
fn a_reload_that_beat_the_other_process_invalidation_is_dropped_again() -> Result<()> {
    let redis = redis("redrop");
    let (_dir, path) = db_file();
    create(&path)?;
    let a = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    let check = Duration::from_millis(1);
    let io = Duration::from_millis(500);
    let b = Node::open_with(
        Config::new().path(&path).foreign_write_check(check),
        settings(&redis.url, &redis.prefix).io_timeout(io),
    )?;
    assert_eq!(a.get(4)?.as_deref(), Some("v0")); // in Redis
    assert_eq!(b.get(4)?.as_deref(), Some("v0")); // in b's cache
                                                  // The other process commits; its invalidation of Redis has not run yet.
    let other = Connection::open(&path)?;
    other.execute("UPDATE t SET v = 'new' WHERE id = 4", [])?;
    std::thread::sleep(check * 5);
    // b sees the foreign write, drops its cache and reloads the old value from Redis.
    assert_eq!(b.get(4)?.as_deref(), Some("v0"));
    a.vals.shared_invalidate(&4); // the other process's invalidation lands
                                  // b drops its caches once more, the tier's I/O timeout after the first drop.
    let deadline = Instant::now() + io + Duration::from_secs(2);
    while b.get(4)?.as_deref() != Some("new") {
        assert!(Instant::now() < deadline, "b still serves the old value");
        std::thread::sleep(check * 5);
    }
    Ok(())
}

#[test]
fn tags_and_whole_caches_drop_through_namespace_versions() -> Result<()> {
    let redis = redis("ns");
    let (_dir, path) = db_file();
    create(&path)?;
    let a = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    for id in [10, 11, 12, 20, 21] {
        a.get(id)?;
    }
    // Moving row 12 from group 1 to group 2 drops the tags g:1 and g:2 (the rule), so every
    // key of both groups in Redis, with one INCR each.
    a.db.write(|c| {
        Ok(c.execute("UPDATE t SET g = 2 WHERE id = 12", [])
            .map(drop)?)
    })?;
    let b = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    for id in [10, 11, 20, 21] {
        b.get(id)?;
    }
    assert_eq!(b.stats().misses, 4);

    // By hand: one namespace, then the whole cache.
    b.get(1)?; // group 0
    let c = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    c.vals.shared_invalidate_tag("g:1");
    let d = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    for id in [10, 11, 20, 1] {
        d.get(id)?;
    }
    assert_eq!(
        (d.stats().hits, d.stats().misses),
        (2, 2),
        "only g:1 was dropped"
    );
    c.vals.shared_invalidate_all();
    let e = Node::open(&path, settings(&redis.url, &redis.prefix))?;
    for id in [10, 11, 20, 1] {
        e.get(id)?;
    }
    assert_eq!((e.stats().hits, e.stats().misses), (0, 4));
    Ok(())
}

/// Redis killed in the middle of a run of reads and writes on two `Db`s, then started again:
/// no call fails, each `Db` alerts, and no read after Redis is back (or during) serves a value
/// older than the last acknowledged write.
#[test]
fn redis_killed_and_restarted_mid_run() -> Result<()> {
    let mut server = Server::start();
    let (_dir, path) = db_file();
    create(&path)?;
    let tier = || {
        settings(&server.url(), "restart")
            .io_timeout(Duration::from_millis(50))
            .connect_timeout(Duration::from_millis(50))
    };
    let a = Node::open(&path, tier())?;
    let b = Node::open(&path, tier())?;
    let mut latest = vec![String::from("v0"); 30];
    let mut step = |round: usize| -> Result<()> {
        for id in 0..30_i64 {
            a.get(id)?; // fills Redis (when it is up)
        }
        // Group 0 only: the tag rule drops a written row's whole group from Redis, and b
        // must have groups 1 and 2 to read from it.
        for id in (round % 3..10).step_by(3) {
            let v = format!("r{round}");
            a.set(id as i64, &v)?;
            latest[id] = v;
        }
        // b's own cache is dropped: its reads go to Redis, then the file.
        b.vals.invalidate_all();
        for id in 0..30_i64 {
            let got = b.get(id)?;
            assert_eq!(
                got.as_deref(),
                Some(latest[id as usize].as_str()),
                "round {round}, id {id}"
            );
        }
        Ok(())
    };
    for round in 0..5 {
        step(round)?;
    }
    let hits_before = b.stats().hits;
    assert!(hits_before > 0, "b read from Redis before the kill");
    server.kill();
    for round in 5..10 {
        step(round)?;
    }
    assert!(!a.stats().up && !b.stats().up);
    server.restart();
    // Back within the backoff (20 ms at most); every round checks values meanwhile.
    let mut round = 10;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.stats().up && b.stats().up) {
        assert!(Instant::now() < deadline, "the tier did not come back");
        step(round)?;
        round += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..5 {
        step(round)?;
        round += 1;
    }
    assert!(b.stats().hits > hits_before, "b reads from Redis again");
    for node in [&a, &b] {
        let alerts = node.alerts();
        assert!(
            alerts
                .iter()
                .any(|a| matches!(a, Alert::SharedTierDown { .. })),
            "{alerts:?}"
        );
        assert!(
            alerts
                .iter()
                .any(|a| matches!(a, Alert::SharedTierRecovered { .. })),
            "{alerts:?}"
        );
    }
    Ok(())
}

/// A Redis that stops answering (frozen with SIGSTOP, its data kept): writes and reads go on,
/// and once it answers again the entries written before are ignored, since the invalidation of
/// the write made meanwhile was lost.
#[test]
fn a_frozen_redis_times_out_and_its_old_entries_are_ignored_after() -> Result<()> {
    let server = Server::start();
    let pid = server.child.as_ref().expect("running").id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {pid}");
    };
    let (_dir, path) = db_file();
    create(&path)?;
    let tier = || settings(&server.url(), "freeze").io_timeout(Duration::from_millis(30));
    let a = Node::open(&path, tier())?;
    let b = Node::open(&path, tier())?;
    assert_eq!(a.get(3)?.as_deref(), Some("v0")); // in Redis now
    signal("-STOP");
    let frozen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        a.set(3, "during")?; // its invalidation times out
        b.vals.invalidate_all();
        assert_eq!(b.get(3)?.as_deref(), Some("during"));
        Ok(())
    }));
    signal("-CONT");
    frozen.expect("no panic while frozen")?;
    // The old "v0" is still stored in Redis, under the old epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.stats().up && b.stats().up) {
        assert!(Instant::now() < deadline, "the tier did not come back");
        b.vals.invalidate_all();
        assert_eq!(b.get(3)?.as_deref(), Some("during"));
        a.vals.invalidate_all(); // so that a's read reaches the tier
        a.get(4)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = Node::open(&path, tier())?;
    assert_eq!(c.get(3)?.as_deref(), Some("during"));
    assert!(a.stats().errors > 0 && b.stats().errors > 0);
    Ok(())
}

#[test]
fn no_server_at_all_is_an_alert_not_an_error() -> Result<()> {
    let (_dir, path) = db_file();
    create(&path)?;
    // Nothing listens on port 1.
    let a = Node::open(&path, settings("redis://127.0.0.1:1/", "none"))?;
    assert!(a.vals.is_shared());
    assert_eq!(a.get(1)?.as_deref(), Some("v0"));
    a.set(1, "x")?;
    assert_eq!(a.get(1)?.as_deref(), Some("x"));
    assert!(!a.stats().up);
    assert!(a
        .alerts()
        .iter()
        .any(|a| matches!(a, Alert::SharedTierDown { .. })));
    Ok(())
}
