//! Random numbers for the workload: a small seeded generator and a Zipf sampler for key skew.
//!
//! Both are deterministic per seed, so two runs with the same options draw the same keys.

use strata::{Error, Result};

/// A SplitMix64 generator: fast, small, deterministic per seed; not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: no division, bias below 2^-64 * n.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.wrapping_add(self.below(span) as i64)
    }
}

/// Ranks `1..=n` drawn with probability proportional to `1 / rank^s` (Zipf's law); `s = 0` is
/// uniform. Rank 1 is the hottest key.
///
/// Uses rejection-inversion sampling (Hörmann and Derflinger, 1996): constant time and memory
/// per draw, whatever `n` is.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
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
        if !s.is_finite() || s < 0.0 {
            return Err(Error::InvalidValue {
                field: "zipf",
                value: s.to_string(),
                reason: "must be a finite number >= 0".into(),
            });
        }
        let mut z = Zipf {
            n,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        Ok(z)
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

    /// Draws a rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        if self.s == 0.0 || self.n == 1 {
            return 1 + rng.below(self.n);
        }
        loop {
            let u = self.h_integral_n + rng.unit() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).clamp(1.0, self.n as f64) as u64;
            let kf = k as f64;
            if kf - x <= self.threshold || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
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
            let mut rng = Rng::new(7);
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
        let mut rng = Rng::new(1);
        let hot = (0..10_000).filter(|_| zipf.sample(&mut rng) <= 10).count();
        assert!(hot > 1000, "the first ranks are hot: {hot}");
        Ok(())
    }

    #[test]
    fn rng_ranges_stay_inside() -> Result<()> {
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let x = rng.range(-5, 5);
            assert!((-5..=5).contains(&x));
            assert!(rng.unit() < 1.0);
        }
        assert_eq!(rng.range(4, 4), 4);
        assert_eq!(rng.below(0), 0);
        Ok(())
    }
}
