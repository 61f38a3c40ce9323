//! A small seeded generator for parameter initialisation, shuffling and test inputs.

/// SplitMix64: reproducible, fast, and good enough for initialisation and shuffles.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; the same seed gives the same sequence on every platform.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The next 64 uniformly distributed bits.
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
    /// Uniform integer in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// `n` values uniform in [-1, 1], never exactly zero (|v| >= 1/64).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.unit() * 2.0 - 1.0;
                let v = if v.abs() < 1.0 / 64.0 { v.signum() / 64.0 + v } else { v };
                v as f32
            })
            .collect()
    }
    /// `n` distinct-ish values: uniform, then nudged so no two neighbours tie (pooling).
    pub fn vec_untied(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|i| (self.unit() * 2.0 - 1.0) as f32 + i as f32 * 1e-5).collect()
    }
}

