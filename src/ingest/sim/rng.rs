//! A small seeded random generator (SplitMix64) with the distributions the simulator needs.
//!
//! The simulator must be deterministic for a seed on every platform and crate version, so it carries its
//! own generator rather than depending on a crate whose streams may change between releases.

/// SplitMix64: fast, statistically good enough for traffic generation, and tiny.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponentially distributed with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Log-normally distributed with the given mean and a shape that gives call-centre-like long tails.
    pub fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        // Box-Muller for a standard normal.
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * normal).exp()
    }

    /// Uniform in [low, high).
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn distributions_have_their_means() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let exp: f64 = (0..n).map(|_| rng.exponential(10.0)).sum::<f64>() / n as f64;
        assert!((exp - 10.0).abs() < 0.3, "{exp}");
        let logn: f64 = (0..n).map(|_| rng.lognormal(180.0, 0.8)).sum::<f64>() / n as f64;
        assert!((logn - 180.0).abs() < 8.0, "{logn}");
        assert!((0..1000).all(|_| rng.below(6) < 6));
    }
}
