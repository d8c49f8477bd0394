//! The expense tracker on the job queue: an expense created without a category enqueues its
//! `suggest_category` job in the same transaction, and the handler assigns the category the
//! keywords suggest.

use std::time::Duration;

use strata::domain::{now_millis, Expense, ExpenseTracker, Keyword, User, SUGGEST_CATEGORY};
use strata::Result;

fn expense(user_id: i64, description: &str, category_id: Option<i64>) -> Expense {
    Expense {
        id: 0,
        user_id,
        category_id,
        amount_cents: 1250,
        description: description.into(),
        expense_date: "2026-12-02".into(),
        created_at: now_millis(),
    }
}

#[test]
fn an_uncategorized_expense_gets_its_suggested_category_in_the_background() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let tracker = ExpenseTracker::open(dir.path().join("t.db"))?.with_category_jobs()?;
    let user = tracker.users.insert(&User {
        id: 0,
        email: "ada@example.com".into(),
        name: "Ada".into(),
        created_at: now_millis(),
    })?;
    tracker.keywords_by_id.insert(&Keyword {
        id: 0,
        keyword: "coffee".into(),
        category_name: "Food".into(),
        weight: 1,
        created_at: now_millis(),
    })?;
    let queue = tracker.db().jobs()?;
    let coffee = tracker.create_expense(&expense(user, "Morning coffee", None))?;
    let unknown = tracker.create_expense(&expense(user, "Something else", None))?;
    assert_eq!(queue.len()?, 2, "one job per uncategorized expense");
    // A failed insert (no such user) enqueues nothing: same transaction.
    assert!(tracker
        .create_expense(&expense(999, "coffee", None))
        .is_err());
    assert_eq!(queue.len()?, 2);
    let food = tracker.categories.insert(&strata::domain::Category {
        id: 0,
        user_id: user,
        name: "Rent".into(),
        created_at: now_millis(),
    })?;
    tracker.create_expense(&expense(user, "coffee", Some(food)))?;
    assert_eq!(queue.len()?, 2, "a categorized expense enqueues nothing");

    let mut builder = tracker.category_workers()?.threads(1);
    let done = builder.completed();
    let pool = builder.start()?;
    for _ in 0..2 {
        let job = done
            .recv_timeout(Duration::from_secs(20))
            .expect("a completed job");
        assert_eq!(job.kind, SUGGEST_CATEGORY);
    }
    pool.shutdown(Duration::from_secs(5));
    assert!(queue.is_empty()? && queue.dead_letters()?.is_empty());
    let category = tracker
        .expenses
        .get(coffee)?
        .unwrap()
        .category_id
        .expect("assigned");
    assert_eq!(tracker.categories.get(category)?.unwrap().name, "Food");
    assert_eq!(tracker.expenses.get(unknown)?.unwrap().category_id, None);
    Ok(())
}
