//! What several test files share.

use rand::{RngExt, SeedableRng};

/// A seeded generator: the same draws for the same seed, so a failing run can be repeated.
pub struct Rng(rand::rngs::Xoshiro256PlusPlus);

impl Rng {
    /// The generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
}
