//! The SYN cookie: a keyed MAC of the flow that lets the ACK alone prove a SYN+ACK was
//! sent, plus one byte of encoded options, so no state is kept per half-open connection.
//!
//! ## Layout
//! - MAC input (SipHash-2-4, key from the [`KeySlot`]): client address, server address,
//!   client port and server port (big-endian), the client ISN (big-endian), the key epoch
//!   (little-endian), the option byte, three zero bytes. 24 bytes for IPv4, 48 for IPv6.
//!   The epoch binds a cookie to its key slot's generation.
//! - Option byte: bits 0-3 client window scale (15 = none; shifts are clamped to 14 when
//!   parsed, so 15 never collides), bit 4 SACK-permitted, bit 5 ECN, bits 6-7 the index
//!   into the family's MSS table.
//! - Cookie ISN = `(mac & 0xff_ffff) << 8 | option byte`: 24 MAC bits.
//! - When the client sends timestamps, our TSval is `mac >> 32`, which comes back as the
//!   ACK's TSecr: 32 more MAC bits. Clients without timestamps still get wscale and SACK
//!   back, because they live in the ISN, not in the TSval as Linux's cookies keep them.
//!
//! Every one of the 256 option byte values is something [`mint`] can produce (16 wscale
//! codes x SACK x ECN x 4 MSS indexes), so decoding is total and the MAC alone decides.

use crate::flow::Flow;
use crate::maps::KeySlot;
use crate::siphash::SipHash24;
use crate::wire::tcp_options::{MAX_WSCALE, TcpOptions, WSCALE_ABSENT};

/// MSS values a cookie can carry, smallest first. Index 0 is also what a client without
/// an MSS option gets: the protocol defaults (RFC 9293: 536; RFC 8200: 1280 - 60).
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1280, 1420, 1440];

const WS_NONE: u8 = 15;
const BIT_SACK: u8 = 1 << 4;
const BIT_ECN: u8 = 1 << 5;
const MSS_SHIFT: u8 = 6;

/// What [`mint`] gives the SYN+ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minted {
    /// Our initial sequence number.
    pub isn: u32,
    /// Our TSval; use it only if the client offered timestamps.
    pub tsval: u32,
}

/// What a valid cookie gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The client's MSS rounded down to the table (or the table's first entry).
    pub mss: u16,
    /// The client's window scale, or [`WSCALE_ABSENT`].
    pub wscale: u8,
    pub sack_ok: bool,
    pub ecn_ok: bool,
}

#[inline(always)]
fn mss_table(v6: bool) -> [u16; 4] {
    if v6 { MSS_TABLE_V6 } else { MSS_TABLE_V4 }
}

/// 1 when `a < b`, computed without a comparison: in BPF every comparison is a branch,
/// and each branch here would be one more path for the verifier through the whole
/// SYN+ACK construction.
#[inline(always)]
fn below(a: u16, b: u16) -> u8 {
    (u32::from(a).wrapping_sub(u32::from(b)) >> 31) as u8
}

/// Index of the largest table entry not above `mss`; 0 when none is (Linux's rule too:
/// a client below the table's floor is answered as if at the floor).
#[inline(always)]
fn mss_index(v6: bool, mss: u16) -> u8 {
    let t = mss_table(v6);
    3 - below(mss, t[1]) - below(mss, t[2]) - below(mss, t[3])
}

/// The option byte for what the client offered (`opts.wscale` as the parser leaves it:
/// at most 14, or [`WSCALE_ABSENT`]).
#[inline(always)]
pub fn encode_options(v6: bool, opts: &TcpOptions, ecn: bool) -> u8 {
    debug_assert!(opts.wscale <= MAX_WSCALE || opts.wscale == WSCALE_ABSENT);
    // Branch-free like `below`: 0..=14 keep their value and WSCALE_ABSENT (0xff) becomes 15.
    let ws = opts.wscale & 0x0f;
    ws | (u8::from(opts.sack_ok) << 4)
        | (u8::from(ecn) << 5)
        | (mss_index(v6, opts.mss) << MSS_SHIFT)
}

/// The inverse of [`encode_options`] (with the MSS rounded to the table).
#[inline(always)]
pub fn decode_options(v6: bool, ob: u8) -> Decoded {
    let ws = ob & 0x0f;
    // The table packed into one integer and shifted: indexing an array with a variable
    // would put it on the stack and address it with pointer arithmetic LLVM is free to
    // emit as an `or`, which the verifier refuses.
    let t = mss_table(v6);
    let packed = u64::from(t[0])
        | (u64::from(t[1]) << 16)
        | (u64::from(t[2]) << 32)
        | (u64::from(t[3]) << 48);
    let mss = (packed >> (16 * u32::from(ob >> MSS_SHIFT))) as u16;
    Decoded {
        mss,
        wscale: if ws == WS_NONE { WSCALE_ABSENT } else { ws },
        sack_ok: ob & BIT_SACK != 0,
        ecn_ok: ob & BIT_ECN != 0,
    }
}

/// The MAC absorbed up to, not including, its last word (epoch and option byte).
///
/// The address and port words are most of the work and do not depend on the options, so
/// the data path computes them once, before the options are parsed, and each of the few
/// option layouts the verifier then explores pays only for the last word.
#[derive(Clone, Copy)]
pub struct MacPrefix {
    h: SipHash24,
    words: usize,
}

impl MacPrefix {
    /// The words of the module doc's MAC input that come before the epoch, taken straight
    /// from the flow's [`Addr`](crate::flow::Addr) words: no message buffer on the stack.
    #[inline(always)]
    pub fn new(key: &KeySlot, flow: &Flow, client_isn: u32) -> MacPrefix {
        let [p0, p1] = flow.sport.to_be_bytes();
        let [q0, q1] = flow.dport.to_be_bytes();
        let [i0, i1, i2, i3] = client_isn.to_be_bytes();
        let ports_isn = u64::from_le_bytes([p0, p1, q0, q1, i0, i1, i2, i3]);
        let [s0, s1] = flow.src.0;
        let [d0, d1] = flow.dst.0;
        let h = SipHash24::new(key.k0, key.k1);
        if flow.is_v6() {
            MacPrefix {
                h: h.word(s0).word(s1).word(d0).word(d1).word(ports_isn),
                words: 5,
            }
        } else {
            // Both IPv4 addresses fill one word: client's 4 bytes, then server's.
            MacPrefix {
                h: h.word((s0 & 0xffff_ffff) | (d0 << 32)).word(ports_isn),
                words: 2,
            }
        }
    }

    /// The whole MAC, given the key epoch and the option byte.
    #[inline(always)]
    pub fn finish(self, epoch: u32, ob: u8) -> u64 {
        let epoch_ob = u64::from(epoch) | (u64::from(ob) << 32);
        self.h.word(epoch_ob).finish(self.words + 1)
    }

    /// [`mint`] from a prefix of the same key, flow and client ISN.
    #[inline(always)]
    pub fn mint(self, epoch: u32, v6: bool, opts: &TcpOptions, ecn: bool) -> Minted {
        let ob = encode_options(v6, opts, ecn);
        let h = self.finish(epoch, ob);
        Minted {
            isn: (((h as u32) & 0x00ff_ffff) << 8) | u32::from(ob),
            tsval: (h >> 32) as u32,
        }
    }

    /// [`check`] from a prefix of the same key, flow and client ISN.
    #[inline(always)]
    pub fn check(self, epoch: u32, v6: bool, cookie: u32, tsecr: Option<u32>) -> Option<Decoded> {
        let ob = cookie as u8;
        let h = self.finish(epoch, ob);
        if (h as u32) & 0x00ff_ffff != cookie >> 8 {
            return None;
        }
        if let Some(t) = tsecr
            && t != (h >> 32) as u32
        {
            return None;
        }
        Some(decode_options(v6, ob))
    }
}

/// SipHash-2-4 of the MAC input described in the module doc.
#[inline(always)]
pub fn mac(key: &KeySlot, flow: &Flow, client_isn: u32, ob: u8) -> u64 {
    MacPrefix::new(key, flow, client_isn).finish(key.epoch, ob)
}

/// The cookie ISN and TSval for a SYN from `flow` with sequence number `client_isn`.
/// `ecn`: we accept the client's ECN setup.
#[inline(always)]
pub fn mint(key: &KeySlot, flow: &Flow, client_isn: u32, opts: &TcpOptions, ecn: bool) -> Minted {
    MacPrefix::new(key, flow, client_isn).mint(key.epoch, flow.is_v6(), opts, ecn)
}

/// Validates the cookie an ACK returns: `client_isn` = ACK.seq - 1, `cookie` = ACK.ack - 1,
/// `tsecr` = the ACK's TSecr if it carries timestamps (then those 32 bits must match too).
#[inline(always)]
pub fn check(
    key: &KeySlot,
    flow: &Flow,
    client_isn: u32,
    cookie: u32,
    tsecr: Option<u32>,
) -> Option<Decoded> {
    MacPrefix::new(key, flow, client_isn).check(key.epoch, flow.is_v6(), cookie, tsecr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Addr;
    use core::hash::Hasher;
    use proptest::prelude::*;
    use siphasher::sip::SipHasher24;

    /// The MAC input bytes exactly as the module doc lays them out.
    fn msg_bytes(key: &KeySlot, flow: &Flow, isn: u32, ob: u8) -> Vec<u8> {
        let alen = if flow.is_v6() { 16 } else { 4 };
        let mut m = Vec::new();
        m.extend_from_slice(&flow.saddr()[..alen]);
        m.extend_from_slice(&flow.daddr()[..alen]);
        m.extend_from_slice(&flow.sport.to_be_bytes());
        m.extend_from_slice(&flow.dport.to_be_bytes());
        m.extend_from_slice(&isn.to_be_bytes());
        m.extend_from_slice(&key.epoch.to_le_bytes());
        m.extend_from_slice(&[ob, 0, 0, 0]);
        assert_eq!(m.len(), if flow.is_v6() { 48 } else { 24 });
        m
    }

    fn reference_mac(key: &KeySlot, flow: &Flow, isn: u32, ob: u8) -> u64 {
        let mut h = SipHasher24::new_with_keys(key.k0, key.k1);
        h.write(&msg_bytes(key, flow, isn, ob));
        h.finish()
    }

    fn key() -> impl Strategy<Value = KeySlot> {
        (any::<u64>(), any::<u64>(), any::<u32>(), 0u8..=14).prop_map(|(k0, k1, epoch, wscale)| {
            KeySlot {
                k0,
                k1,
                epoch,
                wscale,
                valid: 1,
                _pad: [0; 2],
            }
        })
    }

    fn flow() -> impl Strategy<Value = Flow> {
        (
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(v6, s, d, sp, dp)| {
                if v6 {
                    Flow::v6(s, d, sp, dp)
                } else {
                    Flow::v4([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]], sp, dp)
                }
            })
    }

    fn options() -> impl Strategy<Value = TcpOptions> {
        (
            prop_oneof![Just(0u16), any::<u16>(), 500u16..1500],
            prop_oneof![Just(WSCALE_ABSENT), 0u8..=14],
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(|(mss, wscale, sack_ok, ts, tsval)| TcpOptions {
                mss,
                wscale,
                sack_ok,
                ts,
                tsval,
                tsecr: 0,
            })
    }

    /// The table entry we expect for a client MSS, from the rule in words.
    fn expected_mss(v6: bool, mss: u16) -> u16 {
        let t = if v6 {
            [1220, 1280, 1420, 1440]
        } else {
            [536, 1300, 1440, 1460]
        };
        t.iter().rev().copied().find(|&e| e <= mss).unwrap_or(t[0])
    }

    #[test]
    fn mss_rounding_examples() {
        let o = |mss| TcpOptions {
            mss,
            ..TcpOptions::NONE
        };
        for (v6, mss, want) in [
            (false, 0, 536),
            (false, 100, 536),
            (false, 1299, 536),
            (false, 1300, 1300),
            (false, 1459, 1440),
            (false, 1460, 1460),
            (false, 9000, 1460),
            (true, 0, 1220),
            (true, 1280, 1280),
            (true, 1419, 1280),
            (true, 65535, 1440),
        ] {
            assert_eq!(
                decode_options(v6, encode_options(v6, &o(mss), false)).mss,
                want
            );
        }
    }

    #[test]
    fn every_option_byte_decodes_and_reencodes() {
        for v6 in [false, true] {
            for ob in 0..=255u8 {
                let d = decode_options(v6, ob);
                let o = TcpOptions {
                    mss: d.mss,
                    wscale: d.wscale,
                    sack_ok: d.sack_ok,
                    ..TcpOptions::NONE
                };
                assert_eq!(encode_options(v6, &o, d.ecn_ok), ob);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn mac_matches_siphasher(k in key(), f in flow(), isn: u32, ob: u8) {
            prop_assert_eq!(mac(&k, &f, isn, ob), reference_mac(&k, &f, isn, ob));
        }

        #[test]
        fn mint_layout(k in key(), f in flow(), isn: u32, o in options(), ecn: bool) {
            let m = mint(&k, &f, isn, &o, ecn);
            let ob = m.isn as u8;
            let h = reference_mac(&k, &f, isn, ob);
            prop_assert_eq!(m.isn >> 8, (h & 0xff_ffff) as u32);
            prop_assert_eq!(m.tsval, (h >> 32) as u32);
            let want_ws = if o.wscale == WSCALE_ABSENT { 15 } else { o.wscale };
            prop_assert_eq!(ob & 0x0f, want_ws);
            prop_assert_eq!(ob & 0x10 != 0, o.sack_ok);
            prop_assert_eq!(ob & 0x20 != 0, ecn);
        }

        /// The ACK of a minted cookie validates and returns the options, with and without
        /// timestamps.
        #[test]
        fn roundtrip(k in key(), f in flow(), isn: u32, o in options(), ecn: bool) {
            let m = mint(&k, &f, isn, &o, ecn);
            let tsecr = o.ts.then_some(m.tsval);
            let d = check(&k, &f, isn, m.isn, tsecr).expect("own cookie validates");
            prop_assert_eq!(d.mss, expected_mss(f.is_v6(), o.mss));
            prop_assert_eq!(d.wscale, o.wscale);
            prop_assert_eq!(d.sack_ok, o.sack_ok);
            prop_assert_eq!(d.ecn_ok, ecn);
            // A client that sent no timestamps has no TSecr to check; the ISN alone works.
            prop_assert_eq!(check(&k, &f, isn, m.isn, None), Some(d));
        }

        /// Flipping any one bit of cookie, tuple, ISN, epoch or TSecr fails the check.
        #[test]
        fn any_flipped_bit_fails(k in key(), f in flow(), isn: u32, o in options(), ecn: bool, bit in 0usize..1000) {
            let m = mint(&k, &f, isn, &o, ecn);
            let ts = Some(m.tsval);
            let alen = if f.is_v6() { 16 } else { 4 };
            // Fields in bits: cookie 32, isn 32, epoch 32, tsecr 32, ports 32, addresses.
            let fields = 5 * 32 + 2 * alen * 8;
            let b = bit % fields;
            let (mut k2, mut f2, mut isn2, mut cookie2, mut ts2) = (k, f, isn, m.isn, ts);
            match b / 32 {
                0 => cookie2 ^= 1 << (b % 32),
                1 => isn2 ^= 1 << (b % 32),
                2 => k2.epoch ^= 1 << (b % 32),
                3 => ts2 = Some(m.tsval ^ (1 << (b % 32))),
                4 => if b % 32 < 16 { f2.sport ^= 1 << (b % 16) } else { f2.dport ^= 1 << (b % 16) },
                _ => {
                    let a = b - 160;
                    let (addr, i) = if a < alen * 8 { (&mut f2.src, a) } else { (&mut f2.dst, a - alen * 8) };
                    let mut bytes = addr.octets();
                    bytes[i / 8] ^= 1 << (i % 8);
                    *addr = Addr::from_v6(bytes);
                }
            }
            // 2^-56 chance of a false accept per case: none expected in any run.
            prop_assert_eq!(check(&k2, &f2, isn2, cookie2, ts2), None, "bit {}", b);
        }

        #[test]
        fn wrong_key_fails(k in key(), f in flow(), isn: u32, o in options(), which in 0usize..2, bit in 0u32..64) {
            let m = mint(&k, &f, isn, &o, false);
            let mut k2 = k;
            if which == 0 { k2.k0 ^= 1 << bit } else { k2.k1 ^= 1 << bit }
            prop_assert_eq!(check(&k2, &f, isn, m.isn, Some(m.tsval)), None);
        }
    }

    /// Without timestamps only 24 MAC bits stand between a forger and a socket: measure
    /// that the false-accept rate of random cookies is near 2^-24, not worse.
    #[test]
    fn random_cookies_rarely_validate() {
        let k = KeySlot {
            k0: 1,
            k1: 2,
            epoch: 3,
            wscale: 7,
            valid: 1,
            _pad: [0; 2],
        };
        let f = Flow::v4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut hits = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hits += check(&k, &f, (x >> 32) as u32, x as u32, None).is_some() as u32;
        }
        // Expected 0.012; 3 or more would mean the MAC is leaking bits.
        assert!(hits < 3, "{hits} random cookies validated");
    }
}
