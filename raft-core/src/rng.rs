//! A tiny deterministic PRNG (SplitMix64). Election timeouts need uniform
//! spread, not cryptographic strength, and must replay bit for bit.

#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, id: u64) -> Self {
        let mut rng = Rng(seed ^ id.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`; `high > low`.
    pub(crate) fn range(&mut self, low: u32, high: u32) -> u32 {
        let span = u64::from(high - low);
        // Lemire's multiply-shift: unbiased enough for spans this small.
        low + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u32
    }
}
