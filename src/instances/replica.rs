//! LiteFS replica awareness: on a replica, LiteFS puts a `.primary` file in the mount's
//! directory naming the primary (its content, e.g. a host name); on the primary it is absent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::Role;

/// How long a look at `.primary` stands: a `write` costs no system call, and a new primary
/// (LiteFS moves it on failover) is seen within this.
const RECHECK: Duration = Duration::from_millis(100);

/// The role of the database file, looked up again at most every [`RECHECK`].
pub(crate) struct Replica {
    file: Option<PathBuf>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last look, plus one (0: never).
    checked_ms: AtomicU64,
    role: RwLock<Role>,
}

impl Replica {
    /// For the database at `db`; `None` (in memory) is always the primary.
    pub(crate) fn new(db: Option<&Path>) -> Self {
        Replica {
            file: db.map(|db| {
                db.parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(".primary")
            }),
            epoch: Instant::now(),
            checked_ms: AtomicU64::new(0),
            role: RwLock::new(Role::Primary),
        }
    }

    /// The role now.
    pub(crate) fn role(&self) -> Role {
        let Some(file) = &self.file else {
            return Role::Primary;
        };
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.checked_ms.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= RECHECK.as_millis() as u64 {
            let role = match std::fs::read_to_string(file) {
                Ok(primary) => Role::Replica {
                    primary: primary.trim().to_owned(),
                },
                Err(_) => Role::Primary,
            };
            *self.role.write() = role.clone();
            self.checked_ms.store(now, Ordering::Relaxed);
            return role;
        }
        self.role.read().clone()
    }

    /// The primary's name if this is a replica (the fast path of every `write`).
    pub(crate) fn primary(&self) -> Option<String> {
        self.file.as_ref()?;
        match self.role() {
            Role::Primary => None,
            Role::Replica { primary } => Some(primary),
        }
    }
}
