//! The tracker's schema: the repository's `migrations/` folder, embedded at build time.

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The expense tracker's migrations (its tables, then its performance indexes) as a refinery
/// runner: grouped, aborting on divergent and missing versions. Pass it to
/// [`Config::migrations`](crate::Config::migrations), or open through
/// [`ExpenseTracker::open`](super::ExpenseTracker::open), which does.
pub fn migrations() -> refinery::Runner {
    crate::migrate::configure(embedded::migrations::runner())
}
