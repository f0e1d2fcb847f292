//! A tiny seeded generator for the core's own randomized unit tests (the core has no
//! random-number dependency, and these tests only need a fixed, varied sequence).

/// Marsaglia's xorshift64.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// `seed` must not be zero.
    pub(crate) fn new(seed: u64) -> XorShift {
        assert_ne!(seed, 0, "xorshift needs a non-zero seed");
        XorShift(seed)
    }

    /// A number below `m` (`m > 0`).
    pub(crate) fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }
}
