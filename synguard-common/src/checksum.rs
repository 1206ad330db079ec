//! The Internet checksum (RFC 1071) in the shapes the data path needs.
//!
//! A partial sum is a `u32` accumulator of big-endian 16-bit words, combined with an
//! end-around carry so partial sums can be added in any order. [`fold`] reduces it to 16
//! bits and [`finish`] complements that into the value stored in a header.
//!
//! Every loop has a constant bound (the size of a stack array), which is what the BPF
//! verifier needs; variable lengths are handled by masking inside that bound.

use crate::wire::Addr;

/// Adds two partial sums with end-around carry.
#[inline(always)]
pub const fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    // A wrapped sum is at most 2^32 - 2, so adding the carry back cannot wrap again.
    s.wrapping_add(carry as u32)
}

/// Reduces a partial sum to 16 bits (ones'-complement sum, not yet complemented).
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for data whose partial sum is `sum`.
#[inline(always)]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Partial sum of `len` leading bytes of `buf`; bytes from `len` on count as zero, and an
/// odd final byte is padded with a zero byte, as the checksum definition requires.
#[inline(always)]
pub fn sum_prefix<const N: usize>(buf: &[u8; N], len: usize) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    // Constant trip count: the verifier sees at most N/2 + 1 iterations.
    while i < N {
        let hi = if i < len { byte(buf, i) } else { 0 };
        let lo = if i + 1 < len { byte(buf, i + 1) } else { 0 };
        sum = add(sum, u32::from(u16::from_be_bytes([hi, lo])));
        i += 2;
    }
    sum
}

/// Partial sum of the whole array.
#[inline(always)]
pub fn sum_bytes<const N: usize>(buf: &[u8; N]) -> u32 {
    sum_prefix(buf, N)
}

#[inline(always)]
fn byte<const N: usize>(buf: &[u8; N], i: usize) -> u8 {
    match buf.get(i) {
        Some(b) => *b,
        None => 0,
    }
}

#[inline(always)]
const fn sum_u32(v: u32) -> u32 {
    add(v >> 16, v & 0xffff)
}

/// Partial sum of the IPv4 pseudo-header (RFC 793): addresses, protocol and the length
/// of the transport segment (header + data).
#[inline(always)]
pub const fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let s = sum_u32(u32::from_be_bytes(src));
    let s = add(s, sum_u32(u32::from_be_bytes(dst)));
    let s = add(s, proto as u32);
    add(s, l4_len as u32)
}

/// Partial sum of an address's 16 bytes, straight from its little-endian words: the
/// ones'-complement sum does not depend on byte order (RFC 1071 section 2(B)), so the
/// little-endian 16-bit lanes are summed and the folded result byte-swapped.
#[inline(always)]
pub fn sum_addr(a: &Addr) -> u32 {
    let [w0, w1] = a.0;
    // Four 32-bit halves: less than 2^34, no overflow.
    let s = (w0 & 0xffff_ffff) + (w0 >> 32) + (w1 & 0xffff_ffff) + (w1 >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    u32::from((s as u16).swap_bytes())
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
#[inline(always)]
pub fn pseudo_v6(src: &Addr, dst: &Addr, next_header: u8, l4_len: u32) -> u32 {
    let s = add(sum_addr(src), sum_addr(dst));
    let s = add(s, sum_u32(l4_len));
    add(s, u32::from(next_header))
}

/// Checksum after a 16-bit field changed from `old` to `new` (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`), without touching the rest of the data.
#[inline(always)]
pub const fn update16(check: u16, old: u16, new: u16) -> u16 {
    let s = add(!check as u32, !old as u32);
    !fold(add(s, new as u32))
}

/// [`update16`] for a 32-bit field (an address, a sequence number): two 16-bit words.
#[inline(always)]
pub const fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ref_checksum;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(&b)), 0xddf2);
        assert_eq!(finish(sum_bytes(&b)), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured header whose checksum field (0xb861) is known good.
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum_bytes(&h)), 0xb861);
    }

    #[test]
    fn add_wraps_with_end_around_carry() {
        assert_eq!(add(0xffff_ffff, 1), 1);
        assert_eq!(add(0xffff_ffff, 0xffff_ffff), 0xffff_ffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }

    proptest! {
        #[test]
        fn prefix_sum_matches_reference(buf in prop::array::uniform32(any::<u8>()), len in 0usize..=32) {
            prop_assert_eq!(finish(sum_prefix(&buf, len)), ref_checksum(&buf[..len]));
        }

        #[test]
        fn odd_array_lengths(buf in prop::array::uniform7(any::<u8>())) {
            prop_assert_eq!(finish(sum_bytes(&buf)), ref_checksum(&buf));
        }

        #[test]
        fn pseudo_headers_match_reference(
            s4 in any::<[u8; 4]>(), d4 in any::<[u8; 4]>(),
            s6 in any::<[u8; 16]>(), d6 in any::<[u8; 16]>(),
            len in any::<u16>(), big in any::<u32>(),
        ) {
            let mut ph = Vec::new();
            ph.extend_from_slice(&s4);
            ph.extend_from_slice(&d4);
            ph.extend_from_slice(&[0, 6]);
            ph.extend_from_slice(&len.to_be_bytes());
            prop_assert_eq!(finish(pseudo_v4(s4, d4, 6, len)), ref_checksum(&ph));

            let mut ph = Vec::new();
            ph.extend_from_slice(&s6);
            ph.extend_from_slice(&d6);
            ph.extend_from_slice(&big.to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, 6]);
            prop_assert_eq!(finish(pseudo_v6(&Addr::from_v6(s6), &Addr::from_v6(d6), 6, big)), ref_checksum(&ph));
            prop_assert_eq!(finish(sum_addr(&Addr::from_v6(s6))), ref_checksum(&s6));
        }

        /// Random IPv4-like headers (version byte fixed so the data is never all zero, the
        /// one case where RFC 1624's -0/+0 ambiguity could show): patching any 16- or
        /// 32-bit field incrementally equals recomputing.
        #[test]
        fn incremental_equals_full(
            mut h in prop::array::uniform20(any::<u8>()),
            w16 in 0usize..10, new16 in any::<u16>(),
            w32 in 0usize..5, new32 in any::<u32>(),
        ) {
            h[0] = 0x45;
            h[10] = 0;
            h[11] = 0;
            let c0 = ref_checksum(&h);
            h[10..12].copy_from_slice(&c0.to_be_bytes());

            // 16-bit field (not the checksum itself, and not the fixed version byte).
            let at = 2 + 2 * (w16 % 4) + if w16 >= 4 { 10 } else { 0 };
            let old = u16::from_be_bytes([h[at], h[at + 1]]);
            h[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let inc = update16(c0, old, new16);
            h[10] = 0;
            h[11] = 0;
            let full = ref_checksum(&h);
            prop_assert_eq!(inc, full);
            h[10..12].copy_from_slice(&full.to_be_bytes());

            // 32-bit field: id/frag, ttl/proto/csum excluded, addresses.
            let at = [4usize, 12, 16, 12, 16][w32];
            let old = u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
            h[at..at + 4].copy_from_slice(&new32.to_be_bytes());
            let inc = update32(full, old, new32);
            h[10] = 0;
            h[11] = 0;
            prop_assert_eq!(inc, ref_checksum(&h));
        }
    }
}
