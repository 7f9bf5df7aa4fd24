//! SplitMix64: the one small pseudo-random source of the crate (load generator picks, client
//! jitter, the proxy's fault choices). Not for secrets; idempotency keys come from UUIDv4.
//!
//! A crate such as `rand` would bring a dependency tree for a dozen lines; SplitMix64 passes
//! BigCrush and, seeded, repeats exactly, which the proxy's deterministic faults rely on.

/// SplitMix64 state. Seeded from `new(seed, stream)` so a run's choices can be repeated, or from
/// the operating system's randomness (`from_entropy`) when they need not be.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        // Mix once so neighbouring streams do not start from neighbouring states.
        rng.next_u64();
        rng
    }

    /// Seeded from the OS random source (through `uuid`'s v4 generator, already a dependency).
    pub fn from_entropy() -> Rng {
        let (seed, stream) = uuid::Uuid::new_v4().as_u64_pair();
        Rng::new(seed, stream)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32). `n` must be > 0.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `0..=n`, over the full `u64` range (128-bit multiply-shift; the bias is below
    /// 2^-64 of the range).
    pub fn up_to(&mut self, n: u64) -> u64 {
        match n.checked_add(1) {
            Some(span) => ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64,
            None => self.next_u64(),
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_up_to_stays_in_range() {
        let mut a = Rng::new(9, 3);
        let mut b = Rng::new(9, 3);
        for n in [0u64, 1, 2, 49, 1000, u64::MAX - 1, u64::MAX] {
            let (x, y) = (a.up_to(n), b.up_to(n));
            assert_eq!(x, y);
            assert!(x <= n);
        }
        let mut rng = Rng::new(1, 0);
        assert!((0..10_000).all(|_| rng.up_to(0) == 0));
        // Both ends of a small range are reached.
        let seen: std::collections::BTreeSet<u64> = (0..1000).map(|_| rng.up_to(3)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }
}
