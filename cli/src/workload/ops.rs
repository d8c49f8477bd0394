//! The operations of the mixed workload: every domain operation of the expense tracker, with
//! the keys drawn from the seeded data (users by Zipf rank, days hottest-recent-first).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::seed::{self, Dataset, CATEGORIES_PER_USER, DAYS};
use rand::distr::Distribution;
use rand::RngExt;

use super::engine::Engine;
use super::zipf::{self, Rng, Zipf};
use strata::domain::Category;
use strata::Result;

/// Calls the operation both engines name alike (same method, same arguments) on the worker's
/// engine, keeping only its error.
macro_rules! on_engine {
    ($engine:expr, $method:ident($($arg:expr),*)) => {
        match $engine {
            Engine::Strata(t) => {
                t.$method($($arg),*)?;
            }
            Engine::Raw(r) => {
                r.$method($($arg),*)?;
            }
        }
    };
}

/// Whether an operation reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Served by readers and caches.
    Read,
    /// A write transaction (group-committed).
    Write,
}

/// One operation of the workload; its [`name`](Operation::name) keys the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `users.get(id)`: a cached point read.
    GetUser,
    /// `categories_of(user)`: a cached list.
    CategoriesOf,
    /// `expenses_of(user, 20, None)`: the first page of a user's expenses, newest first.
    ExpensesPage,
    /// `expenses_between(user, from, to)`: a user's expenses over 30 days.
    ExpensesBetween,
    /// `daily_metrics(user, day)`: a cached aggregate.
    DailyMetrics,
    /// `suggest_category(description)`: cached keyword lookups.
    SuggestCategory,
    /// `create_expense`: an insert that drops the day's metrics.
    CreateExpense,
    /// `expenses.get` then `expenses.update` with a new amount.
    UpdateExpense,
    /// `categories.insert`: drops the user's category list.
    CreateCategory,
}

impl Operation {
    /// Every operation, reads first.
    pub const ALL: [Operation; 9] = [
        Operation::GetUser,
        Operation::CategoriesOf,
        Operation::ExpensesPage,
        Operation::ExpensesBetween,
        Operation::DailyMetrics,
        Operation::SuggestCategory,
        Operation::CreateExpense,
        Operation::UpdateExpense,
        Operation::CreateCategory,
    ];

    /// The name used in reports and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::GetUser => "get_user",
            Operation::CategoriesOf => "categories_of",
            Operation::ExpensesPage => "expenses_page",
            Operation::ExpensesBetween => "expenses_between",
            Operation::DailyMetrics => "daily_metrics",
            Operation::SuggestCategory => "suggest_category",
            Operation::CreateExpense => "create_expense",
            Operation::UpdateExpense => "update_expense",
            Operation::CreateCategory => "create_category",
        }
    }

    /// Read or write.
    pub fn class(self) -> OpClass {
        match self {
            Operation::CreateExpense | Operation::UpdateExpense | Operation::CreateCategory => {
                OpClass::Write
            }
            _ => OpClass::Read,
        }
    }

    /// The share of its class's calls this operation gets (weights of one class sum to 100):
    /// point reads and cached lookups dominate, as in the services strata serves; list queries
    /// and writes come at the rates of a user paging or entering data.
    pub fn weight(self) -> u32 {
        match self {
            Operation::GetUser => 30,
            Operation::CategoriesOf => 20,
            Operation::DailyMetrics => 20,
            Operation::SuggestCategory => 15,
            Operation::ExpensesPage => 10,
            Operation::ExpensesBetween => 5,
            Operation::CreateExpense => 60,
            Operation::UpdateExpense => 30,
            Operation::CreateCategory => 10,
        }
    }

    /// The index of the operation in [`ALL`](Operation::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Draws operations: a read with probability `read_ratio`, then one of its class by weight.
#[derive(Debug, Clone)]
pub struct Mix {
    read_ratio: f64,
    reads: Vec<(u32, Operation)>,
    writes: Vec<(u32, Operation)>,
}

impl Mix {
    /// A mix with `read_ratio` (clamped to 0..=1) of reads.
    pub fn new(read_ratio: f64) -> Self {
        let cumulative = |class| {
            let mut total = 0;
            Operation::ALL
                .iter()
                .filter(|op| op.class() == class)
                .map(|op| {
                    total += op.weight();
                    (total, *op)
                })
                .collect()
        };
        Mix {
            read_ratio: read_ratio.clamp(0.0, 1.0),
            reads: cumulative(OpClass::Read),
            writes: cumulative(OpClass::Write),
        }
    }

    /// The next operation.
    pub fn next(&self, rng: &mut Rng) -> Operation {
        let table = if rng.random::<f64>() < self.read_ratio {
            &self.reads
        } else {
            &self.writes
        };
        let total = table.last().map_or(1, |(t, _)| *t).max(1);
        let x = rng.random_range(0..total);
        table
            .iter()
            .find(|(t, _)| x < *t)
            .map_or(Operation::GetUser, |(_, op)| *op)
    }
}

/// One worker's view of the workload: the engine, the key ranges and its own generator.
#[derive(Debug, Clone)]
pub struct Worker {
    engine: Engine,
    data: Dataset,
    users: Zipf,
    days: Zipf,
    expenses: Zipf,
    rng: Rng,
}

impl Worker {
    /// A worker on `engine` (an [`ExpenseTracker`](strata::domain::ExpenseTracker) or a raw engine) drawing user keys with
    /// Zipf exponent `skew` (0 for uniform), seeded with `seed`. The dataset must have at least
    /// one user. Equal seeds draw equal keys on either engine.
    pub fn new(engine: impl Into<Engine>, data: Dataset, skew: f64, seed: u64) -> Result<Self> {
        Ok(Worker {
            engine: engine.into(),
            users: Zipf::new(data.users.max(1) as u64, skew)?,
            days: Zipf::new(u64::from(DAYS), skew)?,
            expenses: Zipf::new(data.expenses.max(1) as u64, skew)?,
            data,
            rng: zipf::rng(seed),
        })
    }

    /// The worker's generator.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Runs `op` once.
    pub fn run(&mut self, op: Operation) -> Result<()> {
        match op {
            Operation::GetUser => self.get_user(),
            Operation::CategoriesOf => self.categories_of(),
            Operation::ExpensesPage => self.expenses_page(),
            Operation::ExpensesBetween => self.expenses_between(),
            Operation::DailyMetrics => self.daily_metrics(),
            Operation::SuggestCategory => self.suggest_category(),
            Operation::CreateExpense => self.create_expense(),
            Operation::UpdateExpense => self.update_expense(),
            Operation::CreateCategory => self.create_category(),
        }
    }

    // One function per operation, never inlined: each has its own symbol, so that a profile
    // (benches/profile_load.sh) splits the CPU time per operation.

    #[inline(never)]
    fn get_user(&mut self) -> Result<()> {
        let Worker {
            engine, users, rng, ..
        } = self;
        let id = users.sample(rng) as i64;
        match engine {
            Engine::Strata(t) => {
                t.users.get(id)?;
            }
            Engine::Raw(r) => {
                r.get_user(id)?;
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn categories_of(&mut self) -> Result<()> {
        let Worker {
            engine, users, rng, ..
        } = self;
        let user = users.sample(rng) as i64;
        on_engine!(engine, categories_of(user));
        Ok(())
    }

    #[inline(never)]
    fn expenses_page(&mut self) -> Result<()> {
        let Worker {
            engine, users, rng, ..
        } = self;
        let user = users.sample(rng) as i64;
        match engine {
            Engine::Strata(t) => {
                t.expenses_of(user, 20, None)?;
            }
            Engine::Raw(r) => {
                r.expenses_of(user, 20)?;
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn expenses_between(&mut self) -> Result<()> {
        let Worker {
            engine,
            users,
            days,
            rng,
            ..
        } = self;
        let user = users.sample(rng) as i64;
        let to = DAYS - days.sample(rng) as u32;
        let from = to.saturating_sub(29);
        let (from, to) = (seed::date_of_day(from), seed::date_of_day(to));
        on_engine!(engine, expenses_between(user, &from, &to));
        Ok(())
    }

    #[inline(never)]
    fn daily_metrics(&mut self) -> Result<()> {
        let Worker {
            engine,
            users,
            days,
            rng,
            ..
        } = self;
        let user = users.sample(rng) as i64;
        let day = seed::date_of_day(DAYS - days.sample(rng) as u32);
        on_engine!(engine, daily_metrics(user, &day));
        Ok(())
    }

    #[inline(never)]
    fn suggest_category(&mut self) -> Result<()> {
        let Worker { engine, rng, .. } = self;
        let text = seed::description(rng);
        on_engine!(engine, suggest_category(&text));
        Ok(())
    }

    #[inline(never)]
    fn create_expense(&mut self) -> Result<()> {
        let Worker {
            engine,
            data,
            users,
            rng,
            ..
        } = self;
        let user = users.sample(rng) as i64;
        let mut last = user * CATEGORIES_PER_USER as i64;
        if last > data.categories {
            last = 0; // not a seeded user's categories: no category
        }
        let expense = seed::new_expense(rng, user, last);
        on_engine!(engine, create_expense(&expense));
        Ok(())
    }

    #[inline(never)]
    fn update_expense(&mut self) -> Result<()> {
        let Worker {
            engine,
            data,
            expenses,
            rng,
            ..
        } = self;
        if data.expenses == 0 {
            return Ok(());
        }
        // Recent expenses are the ones edited: rank 1 is the newest seeded one.
        let id = data.expenses + 1 - expenses.sample(rng) as i64;
        match engine {
            Engine::Strata(t) => {
                if let Some(found) = t.expenses.get(id)? {
                    let mut expense = (*found).clone();
                    expense.amount_cents = rng.random_range(100..=20_000);
                    t.expenses.update(&expense)?;
                }
            }
            Engine::Raw(r) => {
                if let Some(mut expense) = r.get_expense(id)? {
                    expense.amount_cents = rng.random_range(100..=20_000);
                    r.update_expense(&expense)?;
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn create_category(&mut self) -> Result<()> {
        let Worker {
            engine, users, rng, ..
        } = self;
        let user = users.sample(rng) as i64;
        let n = rng.random_range(0..1_000_000);
        let category = Category {
            id: 0,
            user_id: user,
            name: format!("Project {n}"),
            created_at: strata::domain::now_millis(),
        };
        match engine {
            Engine::Strata(t) => {
                t.categories.insert(&category)?;
            }
            Engine::Raw(r) => {
                r.create_category(&category)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::seed::{seed, Scale};
    use strata::domain::ExpenseTracker;

    #[test]
    fn weights_and_names() -> Result<()> {
        for class in [OpClass::Read, OpClass::Write] {
            let sum: u32 = Operation::ALL
                .iter()
                .filter(|o| o.class() == class)
                .map(|o| o.weight())
                .sum();
            assert_eq!(sum, 100, "{class:?}");
        }
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        let mix = Mix::new(0.9);
        let mut rng = zipf::rng(1);
        let writes = (0..10_000)
            .filter(|_| mix.next(&mut rng).class() == OpClass::Write)
            .count();
        assert!((800..1200).contains(&writes), "{writes}");
        let mix = Mix::new(1.0);
        assert!((0..1000).all(|_| mix.next(&mut rng).class() == OpClass::Read));
        Ok(())
    }

    #[test]
    fn every_operation_runs() -> Result<()> {
        let tracker = ExpenseTracker::open_in_memory()?;
        let db = tracker.db().clone();
        seed(&tracker, Scale::new(0.01)?, &mut |_, _| {})?;
        let mut worker = Worker::new(tracker, Dataset::read(&db)?, 1.0, 9)?;
        for _ in 0..20 {
            for op in Operation::ALL {
                worker.run(op)?;
            }
        }
        assert!(db.write_stats().commits >= 60);
        Ok(())
    }
}
