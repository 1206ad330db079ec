//! The SYN cookie: a keyed MAC of the flow that lets the ACK alone prove a SYN+ACK was
//! sent, plus five bits of encoded options, so no state is kept per half-open connection.
//!
//! ## Layout
//! - MAC input (SipHash-2-4, key from the [`KeySlot`]): client address, server address,
//!   client port and server port (big-endian), the client ISN (big-endian), the key epoch
//!   (little-endian), the option bits as one byte, three zero bytes. 24 bytes for IPv4,
//!   48 for IPv6. The epoch binds a cookie to its key slot's generation.
//! - Option bits (5): bits 0-1 the index into the family's MSS table, bits 2-4 SACK and
//!   the client's window scale together, as a [`SACK_WSCALE_TABLE`] code. All 32 values
//!   are something [`mint`] can produce (4 x 8), so decoding is total and the MAC alone
//!   decides.
//! - Cookie ISN = `(mac & (2^27 - 1)) << 5 | option bits`: [`ISN_MAC_BITS`] = 27 MAC bits.
//! - When the client sends timestamps, our TSval carries ECN in its low bit and
//!   [`TS_MAC_BITS`] = 31 more MAC bits above it: `mac >> 32` for ECN off, `mac >> 33` for
//!   ECN on, each cut to 31 bits. The ACK echoes it as TSecr. A changed ECN bit thus
//!   selects other MAC bits, so ECN is authenticated too without a second MAC.
//! - Without timestamps there is nowhere for ECN: it is given up, as Linux's cookies do
//!   ([`Minted::ecn`] tells the SYN+ACK not to answer ECE). Window scale and SACK live in
//!   the ISN, so clients without timestamps keep them (Linux's cookies keep them in TSval
//!   and lose them).
//!
//! ## Forgery odds
//! The data path checks the ISN's MAC bits first and reads the ACK's options only on a
//! match, then checks TSecr if the ACK carries timestamps. A forger who never saw our
//! SYN+ACK guesses, per forged ACK and per key slot the ACK is tried against:
//! - without timestamps: 27 MAC bits, 2^-27 per slot;
//! - with timestamps: 27 + 31 = 58 MAC bits, 2^-58 per slot.
//!
//! Two key slots are live (active and previous), so the rate per forged ACK is at most
//! 2 x 2^-27 = 2^-26 without timestamps when both slots minted recently, 2^-27 when only
//! one did, and 0 when none did (the data path tries a slot only after minting with its
//! current key, see [`crate::maps::minted_mark`]); with timestamps at most 2^-57. With a
//! shared key file the controller marks both slots as minted (the fleet minted them), so
//! there the rate is 2^-26 (2^-57) at all times. Linux's
//! syncookies, for comparison, are about 2^-28 and are tried only within two minutes of a
//! listener overflow.
//! A legitimate ACK with timestamps whose cookie came from the previous slot is refused
//! when the active slot's 27 ISN bits also match by chance (2^-27); the client retries
//! through its SYN.
//!
//! ## SACK and window scale
//! Three bits hold SACK-permitted and the window scale together, as one of eight
//! [`SACK_WSCALE_TABLE`] entries, chosen for the stacks that send them: with SACK, a
//! shift of 0, 2 (old Linux), 6 (macOS, the BSDs), 7 (Linux's default buffers), 8
//! (Windows, Linux with 16 MiB buffers) or 9 (Linux with 32 MiB); without SACK, scaling
//! absent or present. One bit fewer than SACK and a shift table apart would take: that bit
//! is the 27th MAC bit, which keeps 2^-26 with two live key slots.
//!
//! What the client offered becomes the entry that promises no more than it did:
//! - window scale present or absent is always exact, because our SYN+ACK echoes the option
//!   when offered, and both ends must then agree that scaling is on;
//! - the shift rounds DOWN to the next listed one (1 to 0, 3-5 to 2, 10-14 to 9; without
//!   SACK every shift to 0). That is safe: we then believe the client's window is smaller
//!   than it is and send less, never more. The cost is throughput only;
//! - SACK is kept, except without window scale (SACK without scaling is rare, e.g.
//!   Windows XP): then it is dropped, which is also safe (the kernel recovers losses
//!   without SACK and ignores SACK blocks on such a connection, as RFC 2018 allows).

use crate::flow::Flow;
use crate::maps::KeySlot;
use crate::siphash::SipHash24;
use crate::wire::tcp_options::{MAX_WSCALE, TcpOptions, WSCALE_ABSENT};

/// MSS values a cookie can carry, smallest first: Linux's tables (`msstab` in
/// net/ipv4/syncookies.c, `msstab6` in net/ipv6/syncookies.c; the IPv6 one is 1280, 1480,
/// 1500 and 9000 minus 60 bytes of headers). Index 0 is also what a client without an MSS
/// option gets: the protocol defaults (RFC 9293: 536; RFC 8200: 1280 - 60).
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// SACK-permitted and the window-scale shift a cookie can carry, by code. See the module
/// doc.
pub const SACK_WSCALE_TABLE: [(bool, u8); 8] = [
    (false, WSCALE_ABSENT),
    (false, 0),
    (true, 0),
    (true, 2),
    (true, 6),
    (true, 7),
    (true, 8),
    (true, 9),
];

/// MAC bits in the cookie ISN, and in TSval when the client sends timestamps.
pub const ISN_MAC_BITS: u32 = 27;
pub const TS_MAC_BITS: u32 = 31;
/// The option bits: the ISN's low `32 - ISN_MAC_BITS` bits.
pub const OPTION_BITS: u32 = 32 - ISN_MAC_BITS;
const OPTION_MASK: u32 = (1 << OPTION_BITS) - 1;
const ISN_MAC_MASK: u32 = (1 << ISN_MAC_BITS) - 1;
const TS_MAC_MASK: u32 = (1 << TS_MAC_BITS) - 1;
// The floor: 2^-26 per forged ACK without timestamps with both key slots live (so 27 bits
// per slot), 48 MAC bits with timestamps.
const _: () = assert!(ISN_MAC_BITS >= 27 && ISN_MAC_BITS + TS_MAC_BITS >= 48);

const MSS_MASK: u8 = 0b11;
const SW_SHIFT: u8 = 2;
/// A nibble no shift uses: "absent" in [`SW_DECODE`].
const WS_NONE_NIBBLE: u32 = 0xf;
/// Code -> shift, one nibble per code ("absent" = [`WS_NONE_NIBBLE`]), built from
/// [`SACK_WSCALE_TABLE`]; see `decode_options` for why a packed integer.
const SW_DECODE: u32 = {
    let mut packed = 0;
    let mut i = 0;
    while i < SACK_WSCALE_TABLE.len() {
        let ws = SACK_WSCALE_TABLE[i].1;
        let nibble = if ws == WSCALE_ABSENT {
            WS_NONE_NIBBLE
        } else {
            ws as u32
        };
        packed |= nibble << (4 * i);
        i += 1;
    }
    packed
};
/// Code -> SACK-permitted, one bit per code.
const SACK_DECODE: u8 = {
    let mut bits = 0;
    let mut i = 0;
    while i < SACK_WSCALE_TABLE.len() {
        if SACK_WSCALE_TABLE[i].0 {
            bits |= 1 << i;
        }
        i += 1;
    }
    bits
};
// `sack_wscale_code` computes codes by arithmetic on exactly this layout.
const _: () = {
    let t = SACK_WSCALE_TABLE;
    assert!(!t[0].0 && t[0].1 == WSCALE_ABSENT && !t[1].0 && t[1].1 == 0);
    assert!(t[2].0 && t[2].1 == 0 && t[3].1 == 2 && t[4].1 == 6);
    assert!(t[5].1 == 7 && t[6].1 == 8 && t[7].1 == 9);
};

/// What [`mint`] gives the SYN+ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minted {
    /// Our initial sequence number.
    pub isn: u32,
    /// Our TSval; use it only if the client offered timestamps.
    pub tsval: u32,
    /// Whether the SYN+ACK may accept ECN (ECE): only when asked and the cookie can carry
    /// it, which takes timestamps.
    pub ecn: bool,
}

/// What a valid cookie gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The client's MSS rounded down to the table (or the table's first entry).
    pub mss: u16,
    /// The client's window scale rounded down to [`SACK_WSCALE_TABLE`], or [`WSCALE_ABSENT`].
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

/// The [`SACK_WSCALE_TABLE`] code for what the client offered (`ws` as the parser leaves
/// it: at most 14, or [`WSCALE_ABSENT`]): the entry that promises no more than it did.
/// Branch-free like `below`: no scaling is code 0; scaling without SACK code 1; with SACK
/// 2 + the index of the largest listed shift not above `ws`.
#[inline(always)]
fn sack_wscale_code(sack: bool, ws: u8) -> u8 {
    let w = u16::from(ws);
    let rank = 5 - below(w, 2) - below(w, 6) - below(w, 7) - below(w, 8) - below(w, 9);
    // WSCALE_ABSENT (0xff) has its top bit set, real shifts not.
    let present = (ws >> 7) ^ 1;
    let sack = u8::from(sack);
    present * (1 + sack * (1 + rank))
}

/// The option bits for what the client offered (`opts.wscale` as the parser leaves it:
/// at most 14, or [`WSCALE_ABSENT`]).
#[inline(always)]
pub fn encode_options(v6: bool, opts: &TcpOptions) -> u8 {
    debug_assert!(opts.wscale <= MAX_WSCALE || opts.wscale == WSCALE_ABSENT);
    mss_index(v6, opts.mss) | (sack_wscale_code(opts.sack_ok, opts.wscale) << SW_SHIFT)
}

/// The inverse of [`encode_options`] (with MSS and window scale rounded to their tables),
/// plus the ECN bit that came back in TSecr.
#[inline(always)]
pub fn decode_options(v6: bool, ob: u8, ecn: bool) -> Decoded {
    // The tables packed into integers and shifted: indexing an array with a variable
    // would put it on the stack and address it with pointer arithmetic LLVM is free to
    // emit as an `or`, which the verifier refuses.
    let t = mss_table(v6);
    let packed = u64::from(t[0])
        | (u64::from(t[1]) << 16)
        | (u64::from(t[2]) << 32)
        | (u64::from(t[3]) << 48);
    let mss = (packed >> (16 * u32::from(ob & MSS_MASK))) as u16;
    let code = (ob >> SW_SHIFT) & 7;
    let ws = (SW_DECODE >> (4 * u32::from(code))) & 0xf;
    Decoded {
        mss,
        wscale: if ws == WS_NONE_NIBBLE {
            WSCALE_ABSENT
        } else {
            ws as u8
        },
        sack_ok: (SACK_DECODE >> code) & 1 != 0,
        ecn_ok: ecn,
    }
}

/// Our TSval for a MAC: ECN in bit 0, 31 MAC bits above, chosen by the ECN bit.
#[inline(always)]
fn ts_word(h: u64, ecn: bool) -> u32 {
    let e = u32::from(ecn);
    ((((h >> (32 + e)) as u32) & TS_MAC_MASK) << 1) | e
}

/// The MAC absorbed up to, not including, its last word (epoch and option bits).
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
    /// from the flow's [`Addr`](crate::wire::Addr) words: no message buffer on the stack.
    #[inline(always)]
    pub fn new(key: &KeySlot, flow: &Flow, client_isn: u32) -> MacPrefix {
        let [p0, p1] = flow.src_port.to_be_bytes();
        let [q0, q1] = flow.dst_port.to_be_bytes();
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

    /// The whole MAC, given the key epoch and the option bits.
    #[inline(always)]
    pub fn finish(self, epoch: u32, ob: u8) -> u64 {
        let epoch_ob = u64::from(epoch) | (u64::from(ob) << 32);
        self.h.word(epoch_ob).finish(self.words + 1)
    }

    /// [`mint`] from a prefix of the same key, flow and client ISN.
    #[inline(always)]
    pub fn mint(self, epoch: u32, v6: bool, opts: &TcpOptions, ecn: bool) -> Minted {
        let ob = encode_options(v6, opts);
        let h = self.finish(epoch, ob);
        // ECN travels in TSval only: without timestamps it is given up.
        let ecn = ecn & opts.ts;
        Minted {
            isn: (((h as u32) & ISN_MAC_MASK) << OPTION_BITS) | u32::from(ob),
            tsval: ts_word(h, ecn),
            ecn,
        }
    }

    /// The first half of [`check`]: the ISN's MAC bits, before anything of the ACK's
    /// options is read. `cookie` = ACK.ack - 1.
    #[inline(always)]
    pub fn check_isn(self, epoch: u32, cookie: u32) -> Option<IsnMatch> {
        let ob = (cookie & OPTION_MASK) as u8;
        let mac = self.finish(epoch, ob);
        if (mac as u32) & ISN_MAC_MASK != cookie >> OPTION_BITS {
            return None;
        }
        Some(IsnMatch { mac, ob })
    }
}

/// A cookie whose ISN MAC bits matched; [`IsnMatch::check_tsecr`] finishes the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsnMatch {
    mac: u64,
    ob: u8,
}

impl IsnMatch {
    /// The second half of [`check`]: `tsecr` = the ACK's TSecr if it carries timestamps
    /// (then its 31 MAC bits must match too, and its low bit is ECN). Returns the
    /// options the cookie encodes.
    #[inline(always)]
    pub fn check_tsecr(self, v6: bool, tsecr: Option<u32>) -> Option<Decoded> {
        let ecn = match tsecr {
            Some(t) => {
                let ecn = t & 1 != 0;
                if t != ts_word(self.mac, ecn) {
                    return None;
                }
                ecn
            }
            None => false,
        };
        Some(decode_options(v6, self.ob, ecn))
    }
}

/// SipHash-2-4 of the MAC input described in the module doc.
#[inline(always)]
pub fn mac(key: &KeySlot, flow: &Flow, client_isn: u32, ob: u8) -> u64 {
    MacPrefix::new(key, flow, client_isn).finish(key.epoch, ob)
}

/// The cookie ISN and TSval for a SYN from `flow` with sequence number `client_isn`.
/// `ecn`: we would accept the client's ECN setup (honoured only with timestamps).
#[inline(always)]
pub fn mint(key: &KeySlot, flow: &Flow, client_isn: u32, opts: &TcpOptions, ecn: bool) -> Minted {
    MacPrefix::new(key, flow, client_isn).mint(key.epoch, flow.is_v6(), opts, ecn)
}

/// Validates the cookie an ACK returns: `client_isn` = ACK.seq - 1, `cookie` = ACK.ack - 1,
/// `tsecr` = the ACK's TSecr if it carries timestamps (then those bits must match too).
#[inline(always)]
pub fn check(
    key: &KeySlot,
    flow: &Flow,
    client_isn: u32,
    cookie: u32,
    tsecr: Option<u32>,
) -> Option<Decoded> {
    MacPrefix::new(key, flow, client_isn)
        .check_isn(key.epoch, cookie)?
        .check_tsecr(flow.is_v6(), tsecr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Addr;
    use core::hash::Hasher;
    use proptest::prelude::*;
    use siphasher::sip::SipHasher24;

    /// The MAC input bytes exactly as the module doc lays them out.
    fn msg_bytes(key: &KeySlot, flow: &Flow, isn: u32, ob: u8) -> Vec<u8> {
        let alen = if flow.is_v6() { 16 } else { 4 };
        let mut m = Vec::new();
        m.extend_from_slice(&flow.src.octets()[..alen]);
        m.extend_from_slice(&flow.dst.octets()[..alen]);
        m.extend_from_slice(&flow.src_port.to_be_bytes());
        m.extend_from_slice(&flow.dst_port.to_be_bytes());
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

    /// Our TSval from the rule in words: ECN in bit 0; above it MAC bits 32..=62 for ECN
    /// off, 33..=63 for ECN on.
    fn reference_tsval(h: u64, ecn: bool) -> u32 {
        let bits = if ecn {
            h >> 33
        } else {
            (h >> 32) & 0x7fff_ffff
        };
        ((bits as u32) << 1) | ecn as u32
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
            prop_oneof![Just(0u16), any::<u16>(), 500u16..1500, 8000u16..9500],
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
                signed: false,
            })
    }

    /// The table entry we expect for a client MSS, from the rule in words.
    fn expected_mss(v6: bool, mss: u16) -> u16 {
        let t = if v6 {
            [1220, 1420, 1440, 8940]
        } else {
            [536, 1300, 1440, 1460]
        };
        t.iter().rev().copied().find(|&e| e <= mss).unwrap_or(t[0])
    }

    /// The (SACK, shift) we expect back for what a client offered, from the rule in words:
    /// scaling present or absent exactly; with SACK and scaling the largest of 0, 2, 6, 7,
    /// 8, 9 not above its shift; scaling without SACK as shift 0; SACK without scaling
    /// dropped.
    fn expected_sack_wscale(sack: bool, ws: u8) -> (bool, u8) {
        match (sack, ws) {
            (_, WSCALE_ABSENT) => (false, WSCALE_ABSENT),
            (false, _) => (false, 0),
            (true, ws) => (
                true,
                *[0u8, 2, 6, 7, 8, 9]
                    .iter()
                    .rev()
                    .find(|&&e| e <= ws)
                    .unwrap(),
            ),
        }
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
            (true, 1280, 1220),
            (true, 1419, 1220),
            (true, 1420, 1420),
            (true, 1440, 1440),
            (true, 8939, 1440),
            (true, 8940, 8940),
            (true, 65535, 8940),
        ] {
            assert_eq!(
                decode_options(v6, encode_options(v6, &o(mss)), false).mss,
                want,
                "v6 {v6} mss {mss}"
            );
        }
    }

    #[test]
    fn sack_and_wscale_round_down() {
        let o = |sack_ok, wscale| TcpOptions {
            sack_ok,
            wscale,
            ..TcpOptions::NONE
        };
        for (sack, ws, want) in [
            (true, 0, (true, 0)),
            (true, 1, (true, 0)),
            (true, 2, (true, 2)),
            (true, 5, (true, 2)),
            (true, 6, (true, 6)),
            (true, 7, (true, 7)),
            (true, 8, (true, 8)),
            (true, 9, (true, 9)),
            (true, 14, (true, 9)),
            (false, 7, (false, 0)),
            (false, 0, (false, 0)),
            (true, WSCALE_ABSENT, (false, WSCALE_ABSENT)),
            (false, WSCALE_ABSENT, (false, WSCALE_ABSENT)),
        ] {
            let d = decode_options(false, encode_options(false, &o(sack, ws)), false);
            assert_eq!((d.sack_ok, d.wscale), want, "sack {sack} ws {ws}");
        }
        // Codes 0..=7 are the table in order.
        for (i, &(sack, ws)) in SACK_WSCALE_TABLE.iter().enumerate() {
            assert_eq!(sack_wscale_code(sack, ws), i as u8);
        }
    }

    #[test]
    fn every_option_value_decodes_and_reencodes() {
        for v6 in [false, true] {
            for ob in 0..1u8 << OPTION_BITS {
                let d = decode_options(v6, ob, false);
                let o = TcpOptions {
                    mss: d.mss,
                    wscale: d.wscale,
                    sack_ok: d.sack_ok,
                    ..TcpOptions::NONE
                };
                assert_eq!(encode_options(v6, &o), ob);
            }
        }
    }

    #[test]
    fn mac_bit_budget() {
        assert_eq!(ISN_MAC_BITS + OPTION_BITS, 32);
        assert_eq!(ISN_MAC_MASK.count_ones(), ISN_MAC_BITS);
        assert_eq!(TS_MAC_MASK.count_ones(), TS_MAC_BITS);
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
            let ob = (m.isn & 0x1f) as u8;
            let h = reference_mac(&k, &f, isn, ob);
            prop_assert_eq!(m.isn >> 5, (h & 0x7ff_ffff) as u32);
            prop_assert_eq!(m.ecn, ecn && o.ts, "ECN only with timestamps");
            prop_assert_eq!(m.tsval, reference_tsval(h, m.ecn));
            prop_assert_eq!(ob & 0b11, mss_index(f.is_v6(), o.mss));
            prop_assert_eq!(ob >> 2, sack_wscale_code(o.sack_ok, o.wscale));
        }

        /// The ACK of a minted cookie validates and returns the options, with and without
        /// timestamps.
        #[test]
        fn roundtrip(k in key(), f in flow(), isn: u32, o in options(), ecn: bool) {
            let m = mint(&k, &f, isn, &o, ecn);
            let tsecr = o.ts.then_some(m.tsval);
            let d = check(&k, &f, isn, m.isn, tsecr).expect("own cookie validates");
            prop_assert_eq!(d.mss, expected_mss(f.is_v6(), o.mss));
            prop_assert_eq!((d.sack_ok, d.wscale), expected_sack_wscale(o.sack_ok, o.wscale));
            prop_assert_eq!(d.ecn_ok, ecn && o.ts);
            // A client that sent no timestamps has no TSecr to check; the ISN alone works
            // (and then carries no ECN).
            prop_assert_eq!(check(&k, &f, isn, m.isn, None), Some(Decoded { ecn_ok: false, ..d }));
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
                // Bit 0 is ECN: flipping it selects other MAC bits, so it fails too.
                3 => ts2 = Some(m.tsval ^ (1 << (b % 32))),
                4 => if b % 32 < 16 { f2.src_port ^= 1 << (b % 16) } else { f2.dst_port ^= 1 << (b % 16) },
                _ => {
                    let a = b - 160;
                    let (addr, i) = if a < alen * 8 { (&mut f2.src, a) } else { (&mut f2.dst, a - alen * 8) };
                    let mut bytes = addr.octets();
                    bytes[i / 8] ^= 1 << (i % 8);
                    *addr = Addr::from_v6(bytes);
                }
            }
            // 2^-27 (ISN) x 2^-31 (TSecr) = 2^-58 chance of a false accept per case.
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

    /// Without timestamps only the ISN's MAC bits stand between a forger and a socket.
    /// Per (flow, client ISN, key) exactly one cookie validates for each of the 32 option
    /// values, so the rate per random cookie and key slot is 32 / 2^32 = 2^-27 exactly
    /// (2^-26 with both slots tried). Shown here in two parts: every one of the 27 MAC bits
    /// is compared (flipping any one fails, so no second value per option value
    /// validates), and every option value's own cookie validates (so there are 32). Then a
    /// random sample as a check on the whole: 2^22 random (ISN, cookie) pairs expect
    /// 2^22 / 2^27 = 1/32 hits; more than 2 would mean far fewer MAC bits than claimed
    /// (24 bits expect 1/4, 20 bits 4).
    #[test]
    fn random_cookies_validate_at_two_to_minus_27_per_slot() {
        let k = KeySlot {
            k0: 1,
            k1: 2,
            epoch: 3,
            wscale: 7,
            valid: 1,
            _pad: [0; 2],
        };
        let f = Flow::v4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
        let isn = 12345;
        let prefix = MacPrefix::new(&k, &f, isn);
        let mut valid = 0;
        for ob in 0..1u8 << OPTION_BITS {
            let good =
                (((mac(&k, &f, isn, ob) as u32) & ISN_MAC_MASK) << OPTION_BITS) | u32::from(ob);
            valid += prefix.check_isn(k.epoch, good).is_some() as u32;
            for b in OPTION_BITS..32 {
                assert_eq!(
                    prefix.check_isn(k.epoch, good ^ (1 << b)),
                    None,
                    "MAC bit {b} unchecked"
                );
            }
        }
        assert_eq!(valid, 32);

        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let tries: u64 = 1 << 22;
        let mut hits = 0u64;
        for _ in 0..tries {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hits += check(&k, &f, (x >> 32) as u32, x as u32, None).is_some() as u64;
        }
        assert!(hits <= 2, "{hits} of {tries} random cookies validated");
    }
}
