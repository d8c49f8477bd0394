//! The database a run works on: where it comes from, and opening, migrating and seeding it with
//! caches sized to the data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::progress::Bar;
use super::seed::{self, Dataset, Scale, SeedReport};
use strata::cache::CacheSettings;
use strata::domain::ExpenseTracker;
use strata::{Config, Db, Error, Result};

/// Where the database comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The default path under the temp directory: removed (with its `-wal`, `-shm` and `-lock`
    /// files) and created anew, so that every run starts from the same data.
    Fresh(PathBuf),
    /// A path the user chose: used as it is (migrated; seeded only when it has no users).
    Given(PathBuf),
}

impl Target {
    /// The database path.
    pub fn path(&self) -> &Path {
        match self {
            Target::Fresh(p) | Target::Given(p) => p,
        }
    }
}

/// A database ready for a workload: opened, migrated, seeded.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The database.
    pub db: Db,
    /// Its expense tracker.
    pub tracker: ExpenseTracker,
    /// The key ranges to draw from.
    pub data: Dataset,
    /// What seeding did, when this run seeded.
    pub seed: Option<SeedReport>,
}

/// Opens `target` (creating it anew when it is [`Target::Fresh`]), migrates it and seeds it at
/// `scale` when it has no users; `trend_window` replaces the monitor's default.
pub fn prepare(
    target: &Target,
    scale: Scale,
    bar: &Bar,
    trend_window: Option<Duration>,
) -> Result<Prepared> {
    prepare_with(target, scale, bar, trend_window, false)
}

/// [`prepare`], with [`Config::instances`](strata::Config::instances) on when `instances`: the
/// database is shared with other processes running the workload.
pub fn prepare_with(
    target: &Target,
    scale: Scale,
    bar: &Bar,
    trend_window: Option<Duration>,
    instances: bool,
) -> Result<Prepared> {
    if let Target::Fresh(path) = target {
        remove_database(path)?;
    }
    let mut config = Db::builder().path(target.path());
    if let Some(window) = trend_window {
        config = config.trend_window(window);
    }
    let mut config = cache_sizes(config, scale);
    if instances {
        config = config.instances(strata::instances::InstanceSettings::default());
    }
    // Expenses created without a category enqueue their suggestion, as in a service.
    let tracker = ExpenseTracker::with_config(config)?.with_category_jobs()?;
    let db = tracker.db().clone();
    let seeded = if seed::is_empty(&db)? {
        let report = seed::seed(&tracker, scale, &mut |done, total| bar.seeding(done, total))?;
        bar.reset();
        Some(report)
    } else {
        None
    };
    let data = Dataset::read(&db)?;
    Ok(Prepared {
        db,
        tracker,
        data,
        seed: seeded,
    })
}

/// Sizes the domain's caches to the dataset, so that the workload measures strata with its
/// caches on rather than the tracker's default sizes (sized for a service's hot set, e.g. 365
/// daily metrics) thrashing under a Zipf draw over every user.
fn cache_sizes(config: Config, scale: Scale) -> Config {
    let users = usize::try_from(scale.users).unwrap_or(usize::MAX);
    let expenses = usize::try_from(scale.expenses).unwrap_or(usize::MAX);
    let sized = |name: &str, capacity: usize| CacheSettings::new(name).capacity(capacity.max(1));
    config
        .cache(users_cache(sized("users", users)))
        .cache(sized("user_categories", users))
        .cache(sized(
            "categories",
            users.saturating_mul(usize::try_from(seed::CATEGORIES_PER_USER).unwrap_or(1)),
        ))
        .cache(sized("expenses", expenses))
        // A year of days for the most active users is plenty under a skewed draw.
        .cache(sized(
            "daily_metrics",
            users.saturating_mul(20).min(1_000_000),
        ))
}

/// The users cache with the TTL (`STRATA_LOAD_USERS_TTL_MS`, milliseconds) and refresh-ahead
/// fraction (`STRATA_LOAD_REFRESH_AHEAD`) the environment asks for: how the p99 of `get_user`
/// with and without refresh ahead is measured (a short TTL makes expiries show in the tail).
fn users_cache(settings: CacheSettings) -> CacheSettings {
    let var = |name| std::env::var(name).ok();
    let settings = match var("STRATA_LOAD_USERS_TTL_MS").and_then(|v| v.parse().ok()) {
        Some(ms) => settings.ttl(Duration::from_millis(ms)),
        None => settings,
    };
    match var("STRATA_LOAD_REFRESH_AHEAD").and_then(|v| v.parse().ok()) {
        Some(fraction) => settings.refresh_ahead(fraction),
        None => settings,
    }
}

/// Removes a database file and the files SQLite and strata keep beside it; missing ones are
/// fine.
pub fn remove_database(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-lock", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: file, source }),
        }
    }
    Ok(())
}
