//! Random numbers for the workload: the seeded generator and the Zipf sampler for key skew.
//!
//! Both are deterministic per seed, so two runs with the same options draw the same keys.

use rand::distr::Distribution;
use rand::SeedableRng;

use strata::{Error, Result};

/// The workload's generator: Xoshiro256++ (fast, 32 bytes of state; not for cryptography).
///
/// A named algorithm rather than `rand::rngs::SmallRng`, whose algorithm may change between
/// rand releases and differs between 32- and 64-bit targets: a seed must draw the same keys
/// wherever a run is repeated. Draw with `rand::RngExt` (`random`, `random_range`).
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// The generator for `seed` (any value, zero included).
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Ranks `1..=n` drawn with probability proportional to `1 / rank^s` (Zipf's law); `s = 0` is
/// uniform. Rank 1 is the hottest key.
///
/// `rand_distr::Zipf` draws; this type adds strata's errors for bad parameters and integer
/// ranks. Each draw costs constant time and memory whatever `n` is.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    s: f64,
    law: rand_distr::Zipf<f64>,
}

impl Zipf {
    /// A sampler over `1..=n` with exponent `s` (0 for uniform; 1 is the classic Zipf law).
    /// `n` must be at least 1 and `s` finite and not negative.
    pub fn new(n: u64, s: f64) -> Result<Self> {
        if n == 0 {
            return Err(Error::InvalidValue {
                field: "zipf key count",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let bad_exponent = |reason: String| Error::InvalidValue {
            field: "zipf",
            value: s.to_string(),
            reason,
        };
        if !s.is_finite() || s < 0.0 {
            return Err(bad_exponent("must be a finite number >= 0".into()));
        }
        let law = rand_distr::Zipf::new(n as f64, s).map_err(|e| bad_exponent(e.to_string()))?;
        Ok(Zipf { n, s, law })
    }

    /// The number of ranks.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Always false: a sampler has at least one rank.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The exponent.
    pub fn exponent(&self) -> f64 {
        self.s
    }
}

impl Distribution<u64> for Zipf {
    /// Draws a rank in `1..=n`.
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        // The law draws whole numbers as floats; `n` above 2^53 rounds, hence the clamp.
        (self.law.sample(rng) as u64).clamp(1, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draw frequencies against the exact probabilities, for a few exponents.
    #[test]
    fn frequencies_follow_the_law() -> Result<()> {
        for s in [0.0, 0.5, 1.0, 1.5] {
            let n = 20u64;
            let zipf = Zipf::new(n, s)?;
            let mut rng = rng(7);
            let draws = 200_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..draws {
                let k = zipf.sample(&mut rng);
                assert!((1..=n).contains(&k), "rank {k} out of range");
                counts[k as usize] += 1;
            }
            let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            for k in 1..=n {
                let expected = (k as f64).powf(-s) / norm;
                let seen = counts[k as usize] as f64 / draws as f64;
                assert!(
                    (seen - expected).abs() < 0.01 + expected * 0.05,
                    "s={s} rank {k}: {seen} vs {expected}"
                );
            }
        }
        Ok(())
    }

    /// Zipf's law at s = 1: rank 1 is drawn twice as often as rank 2 (loosely: a fixed seed,
    /// 100 000 draws over 1 000 keys).
    #[test]
    fn rank_one_is_twice_as_hot_as_rank_two() -> Result<()> {
        let zipf = Zipf::new(1000, 1.0)?;
        let mut rng = rng(42);
        let (mut first, mut second) = (0u32, 0u32);
        for _ in 0..100_000 {
            match zipf.sample(&mut rng) {
                1 => first += 1,
                2 => second += 1,
                _ => {}
            }
        }
        let ratio = f64::from(first) / f64::from(second);
        assert!((1.8..2.2).contains(&ratio), "{first} / {second} = {ratio}");
        Ok(())
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(10, -1.0).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
        assert!(Zipf::new(10, f64::INFINITY).is_err());
    }

    #[test]
    fn huge_key_spaces_cost_nothing() -> Result<()> {
        let zipf = Zipf::new(u64::MAX / 2, 1.1)?;
        let mut rng = rng(1);
        let hot = (0..10_000).filter(|_| zipf.sample(&mut rng) <= 10).count();
        assert!(hot > 1000, "the first ranks are hot: {hot}");
        Ok(())
    }

    #[test]
    fn a_seed_draws_the_same_keys() -> Result<()> {
        let zipf = Zipf::new(1000, 1.0)?;
        let draw = |seed| {
            let mut rng = rng(seed);
            (0..100).map(|_| zipf.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        Ok(())
    }
}
