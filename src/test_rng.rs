//! A seeded xorshift generator for the randomized no-panic tests of the
//! parsers. Test-only; not for anything that needs real randomness.

pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
