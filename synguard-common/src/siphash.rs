//! SipHash-2-4 (Aumasson and Bernstein) over a message of `N` little-endian 64-bit words.
//!
//! The cookie MAC input has a fixed size per address family, so the message is given as
//! words already: no tail handling, no heap, loops with constant bounds. [`SipHash24`]
//! takes the words one at a time; [`siphash24`] takes an array of them. The result is
//! the standard SipHash-2-4 of the `8 * N` message bytes, which the tests check against
//! the `siphasher` crate.

/// SipHash-2-4 state fed one 64-bit word at a time, so a caller can hash words it
/// computes on the fly instead of building a message array on the (512-byte) BPF stack.
#[derive(Clone, Copy)]
pub struct SipHash24 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl SipHash24 {
    #[inline(always)]
    pub fn new(k0: u64, k1: u64) -> SipHash24 {
        SipHash24 {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// Absorbs the next 8 message bytes, given as their little-endian word.
    #[inline(always)]
    pub fn word(mut self, w: u64) -> SipHash24 {
        self.v3 ^= w;
        self.round();
        self.round();
        self.v0 ^= w;
        self
    }

    /// The hash of the `words` words absorbed so far (no tail bytes).
    #[inline(always)]
    pub fn finish(mut self, words: usize) -> u64 {
        // Final block: the message length mod 256 in the top byte.
        let b = ((words as u64 * 8) & 0xff) << 56;
        self = self.word(b);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

/// SipHash-2-4 with key `(k0, k1)` of the `8 * N` bytes whose little-endian words are `m`.
#[inline(always)]
pub fn siphash24<const N: usize>(k0: u64, k1: u64, m: &[u64; N]) -> u64 {
    let mut h = SipHash24::new(k0, k1);
    for &w in m {
        h = h.word(w);
    }
    h.finish(N)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;
    use proptest::prelude::*;
    use siphasher::sip::SipHasher24;

    fn reference(k0: u64, k1: u64, words: &[u64]) -> u64 {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut h = SipHasher24::new_with_keys(k0, k1);
        h.write(&bytes);
        h.finish()
    }

    #[test]
    fn paper_vector_prefix() {
        // vectors.h of the reference implementation, key 00..0f: the empty message and the
        // 8-byte message 00..07 (the whole-word entries of that table).
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(siphash24::<0>(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        let w0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(siphash24(k0, k1, &[w0]), 0x93f5_f579_9a93_2462);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_siphasher_3_words(k0: u64, k1: u64, m: [u64; 3]) {
            prop_assert_eq!(siphash24(k0, k1, &m), reference(k0, k1, &m));
        }

        #[test]
        fn matches_siphasher_6_words(k0: u64, k1: u64, m: [u64; 6]) {
            prop_assert_eq!(siphash24(k0, k1, &m), reference(k0, k1, &m));
        }

        #[test]
        fn streaming_matches_siphasher(k0: u64, k1: u64, m in prop::collection::vec(any::<u64>(), 0..40)) {
            let h = m.iter().fold(SipHash24::new(k0, k1), |h, &w| h.word(w));
            prop_assert_eq!(h.finish(m.len()), reference(k0, k1, &m));
        }
    }
}
