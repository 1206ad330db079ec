//! TCP options: the parser for a SYN's (or ACK's) option area and the writer for our
//! SYN+ACK's.
//!
//! The parser walks at most [`MAX_LEN`] bytes, one option per step of a
//! [`bounded_loop`], each step a constant-size load at a
//! variable offset: the form the BPF verifier accepts.

use crate::packet::Packet;
use crate::verifier::{Step, bounded_loop};

/// The option area is at most 40 bytes (data offset 15).
pub const MAX_LEN: usize = 40;
/// [`TcpOptions::wscale`] when the peer sent no window scale option.
pub const WSCALE_ABSENT: u8 = 0xff;
/// RFC 7323 section 2.3: larger shift counts are treated as 14.
pub const MAX_WSCALE: u8 = 14;

pub mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const TIMESTAMP: u8 = 8;
    /// TCP MD5 signature (RFC 2385).
    pub const MD5SIG: u8 = 19;
    /// TCP Authentication Option (RFC 5925).
    pub const AO: u8 = 29;
}

/// What the peer offered, in the form the cookie and the SYN+ACK need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size; 0 = absent (Linux also ignores an MSS option of 0).
    pub mss: u16,
    /// Shift count clamped to [`MAX_WSCALE`], or [`WSCALE_ABSENT`].
    pub wscale: u8,
    pub sack_ok: bool,
    /// A timestamp option was present; `tsval`/`tsecr` are meaningful only then.
    pub ts: bool,
    pub tsval: u32,
    pub tsecr: u32,
    /// A TCP-MD5 or TCP-AO option (any length) was present: the segment is signed, and
    /// its answer must be too, with a key only the kernel has.
    pub signed: bool,
}

impl TcpOptions {
    pub const NONE: TcpOptions = TcpOptions {
        mss: 0,
        wscale: WSCALE_ABSENT,
        sack_ok: false,
        ts: false,
        tsval: 0,
        tsecr: 0,
        signed: false,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// The area is not all inside the packet, or claims more than the [`MAX_LEN`] bytes a
    /// data offset can give. Never for a segment whose lengths the pipeline has checked:
    /// no layout of the option bytes themselves is an error (see [`parse`]).
    Truncated,
}

/// Parses the `len` option bytes at `off` (`len` = data offset * 4 - 20), with the rules
/// of Linux's `tcp_parse_options` (net/ipv4/tcp_input.c), which never fails:
///
/// - EOL ends the walk; NOP is skipped.
/// - Any other kind needs a length byte inside the area, at least 2, that keeps the option
///   inside the area; if it has none, or one that is below 2 or runs past the area, the
///   walk stops there, keeping what it had read before.
/// - MSS (length 4), window scale (3), SACK-permitted (2) and timestamps (10) count only
///   with exactly that length; with any other (sane) length they are skipped like an
///   unknown kind.
/// - A repeated option overwrites the earlier one, except that an MSS of 0 is ignored
///   (it neither counts nor clears an earlier MSS).
/// - A window scale above 14 counts as 14 (Linux clamps it and logs a warning).
/// - A TCP-MD5 or TCP-AO option of any length sets `signed` (Linux checks those apart,
///   against the listener's keys).
///
/// Linux reads MSS, window scale and SACK-permitted only on a SYN; the caller uses only
/// the fields that apply to its segment (the cookie ACK only the timestamps).
#[inline(always)]
pub fn parse<P: Packet + ?Sized>(
    p: &P,
    off: usize,
    len: usize,
) -> Result<TcpOptions, OptionsError> {
    if len > MAX_LEN {
        return Err(OptionsError::Truncated);
    }
    if len == 0 {
        return Ok(TcpOptions::NONE);
    }
    if let Some(o) = linux_layout(p, off, len) {
        return Ok(o);
    }
    walk(p, off, len)
}

/// The two option layouts Linux puts on nearly every segment, recognised with a few
/// constant-offset word loads:
/// - SYN: MSS, SACK-permitted, timestamps, NOP, window scale (20 bytes), or without
///   timestamps MSS, NOP NOP SACK-permitted, NOP window scale (12 bytes);
/// - any later segment of a flow with timestamps: NOP NOP timestamps (12 bytes).
///
/// In BPF the general [`walk`] costs a `bpf_loop` callback per option byte; this costs
/// none. It returns `None` for anything else, which then takes the walk, and gives what
/// the walk would for everything it accepts (a property test holds it to that).
#[inline(always)]
fn linux_layout<P: Packet + ?Sized>(p: &P, off: usize, len: usize) -> Option<TcpOptions> {
    const MSS_HEAD: u32 = (kind::MSS as u32) << 8 | 4;
    const NOP_NOP_TS: u32 = u32::from_be_bytes([kind::NOP, kind::NOP, kind::TIMESTAMP, 10]);
    const SACK_TS: u32 = u32::from_be_bytes([kind::SACK_PERM, 2, kind::TIMESTAMP, 10]);
    const NOP_NOP_SACK: u32 = u32::from_be_bytes([kind::NOP, kind::NOP, kind::SACK_PERM, 2]);
    const NOP_WS_HEAD: u32 = u32::from_be_bytes([0, kind::NOP, kind::WSCALE, 3]);
    let clamp = |ws: u32| {
        if ws as u8 > MAX_WSCALE {
            MAX_WSCALE
        } else {
            ws as u8
        }
    };
    let mut o = TcpOptions::NONE;
    let w0 = p.load_be32(off)?;
    if len == 12 && w0 == NOP_NOP_TS {
        o.ts = true;
        o.tsval = p.load_be32(off + 4)?;
        o.tsecr = p.load_be32(off + 8)?;
        return Some(o);
    }
    if w0 >> 16 != MSS_HEAD {
        return None;
    }
    o.mss = w0 as u16;
    o.sack_ok = true;
    if len == 20 && p.load_be32(off + 4)? == SACK_TS {
        let ws = p.load_be32(off + 16)?;
        if ws >> 8 != NOP_WS_HEAD {
            return None;
        }
        o.ts = true;
        o.tsval = p.load_be32(off + 8)?;
        o.tsecr = p.load_be32(off + 12)?;
        o.wscale = clamp(ws & 0xff);
        return Some(o);
    }
    if len == 12 && p.load_be32(off + 4)? == NOP_NOP_SACK {
        let ws = p.load_be32(off + 8)?;
        if ws >> 8 != NOP_WS_HEAD {
            return None;
        }
        o.wscale = clamp(ws & 0xff);
        return Some(o);
    }
    None
}

/// The general parser: any layout, option by option.
#[inline(always)]
fn walk<P: Packet + ?Sized>(p: &P, off: usize, len: usize) -> Result<TcpOptions, OptionsError> {
    // The value fields start from a packet byte, spread over their width, instead of
    // from constants. They are read only once their option has been seen, so what they
    // start as does not matter; but to the verifier a packet byte is "any value", so the
    // walk's state starts at its widest and every later state fits inside it, which is
    // what lets the verifier stop exploring the walk after a step or two (see `Step`).
    let any = u32::from(p.load_u8(off).ok_or(OptionsError::Truncated)?).wrapping_mul(0x0101_0101);
    let mut w = Walk {
        p,
        off,
        len,
        next: 0,
        seen: 0,
        mss: any as u16,
        ws: any as u8,
        tsval: any,
        tsecr: any,
        err: None,
    };
    // One step per option byte.
    bounded_loop(MAX_LEN as u32, &mut w);
    if let Some(e) = w.err {
        return Err(e);
    }
    let seen = |s: Slot| (w.seen >> (s as u32)) & 1 != 0;
    let mut o = TcpOptions::NONE;
    if seen(Slot::Mss) {
        o.mss = w.mss;
    }
    if seen(Slot::Wscale) {
        o.wscale = if w.ws > MAX_WSCALE { MAX_WSCALE } else { w.ws };
    }
    o.sack_ok = seen(Slot::SackPerm);
    if seen(Slot::Timestamp) {
        o.ts = true;
        o.tsval = w.tsval;
        o.tsecr = w.tsecr;
    }
    o.signed = seen(Slot::Signature);
    Ok(o)
}

/// Where the walk files each option kind it keeps; `Other` takes the rest.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Slot {
    Other = 0,
    Mss = 1,
    Wscale = 2,
    SackPerm = 3,
    Timestamp = 4,
    /// TCP-MD5 or TCP-AO, kept whatever its length.
    Signature = 5,
}

/// Per kind: its [`Slot`] (low 3 bits) and the length it counts with (high 5 bits; 0 for
/// `Other`, whose length is never compared, and for `Signature`, which counts with any). A table rather than a `match` on the kind: a match hands the
/// verifier a constant length on each path, and constants keep the walk's states apart.
static KIND_INFO: [u8; 256] = {
    let mut t = [Slot::Other as u8; 256];
    t[kind::MSS as usize] = Slot::Mss as u8 | (4 << 3);
    t[kind::WSCALE as usize] = Slot::Wscale as u8 | (3 << 3);
    t[kind::SACK_PERM as usize] = Slot::SackPerm as u8 | (2 << 3);
    t[kind::TIMESTAMP as usize] = Slot::Timestamp as u8 | (10 << 3);
    t[kind::MD5SIG as usize] = Slot::Signature as u8;
    t[kind::AO as usize] = Slot::Signature as u8;
    t
};

/// The walk's state between steps.
struct Walk<'a, P: ?Sized> {
    p: &'a P,
    off: usize,
    len: usize,
    /// Where the next option starts.
    next: usize,
    /// Bit `s`: an option of slot `s` was seen; the value fields below are meaningful
    /// only with their bit set.
    seen: u32,
    mss: u16,
    ws: u8,
    tsval: u32,
    tsecr: u32,
    err: Option<OptionsError>,
}

impl<P: Packet + ?Sized> Walk<'_, P> {
    #[inline(always)]
    fn fail(&mut self, e: OptionsError) -> bool {
        self.err = Some(e);
        false
    }
}

impl<P: Packet + ?Sized> Step for Walk<'_, P> {
    /// Looks at option byte `i`: skips it inside an option, else consumes the option (or
    /// NOP) starting there.
    ///
    /// Shaped for the verifier, which checks the step once per distinct walk state and
    /// stops when a state fits inside one it has seen. Byte by byte, with the position
    /// taken from the loop index, the state carried between steps (`next`) is only ever
    /// compared, never used to address the packet; a walk jumping from option to option
    /// carries an exact offset instead, and is explored once per possible offset and
    /// option combination, far past the verifier's budget.
    #[inline(always)]
    fn step(&mut self, i: u32) -> bool {
        let i = i as usize;
        if i >= MAX_LEN || i >= self.len {
            return false;
        }
        if i < self.next {
            return true;
        }
        let at = self.off + i;
        let Some(k) = self.p.load_u8(at) else {
            return self.fail(OptionsError::Truncated);
        };
        if k == kind::EOL {
            return false;
        }
        if k == kind::NOP {
            self.next = i + 1;
            return true;
        }
        // Linux: a kind without a length byte, or a length below 2 or running past the
        // area, ends the parse; what came before stands.
        if i + 2 > self.len {
            return false;
        }
        let Some(olen) = self.p.load_u8(at + 1) else {
            return self.fail(OptionsError::Truncated);
        };
        let olen = usize::from(olen);
        if olen < 2 || i + olen > self.len {
            return false;
        }
        let info = KIND_INFO[usize::from(k)];
        // A kept kind with another length is skipped like an unknown one; a signature
        // counts whatever its length.
        let slot = if usize::from(info >> 3) == olen || info == Slot::Signature as u8 {
            info & 7
        } else {
            Slot::Other as u8
        };
        // Each kept option's full length lies inside the area, checked just above.
        let kept = match slot {
            // An MSS of 0 is ignored, as Linux does: it does not clear an earlier one.
            s if s == Slot::Mss as u8 => self.p.load_be16(at + 2).map(|m| {
                if m != 0 {
                    self.mss = m;
                }
                m != 0
            }),
            s if s == Slot::Wscale as u8 => self.p.load_u8(at + 2).map(|ws| {
                self.ws = ws;
                true
            }),
            s if s == Slot::Timestamp as u8 => self.p.load::<8>(at + 2).map(|ts| {
                self.tsval = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
                self.tsecr = u32::from_be_bytes([ts[4], ts[5], ts[6], ts[7]]);
                true
            }),
            _ => Some(true),
        };
        let Some(kept) = kept else {
            return self.fail(OptionsError::Truncated);
        };
        self.seen |= u32::from(kept) << slot;
        self.next = i + olen;
        // Stop right after the last option rather than stepping over its bytes.
        self.next < self.len
    }
}

/// The options of our SYN+ACK as big-endian 32-bit words: `words[..len / 4]` are used,
/// the rest are zero (so they add nothing to a checksum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAckOptions {
    pub words: [u32; 5],
    /// Bytes used: a multiple of 4, at most 20.
    pub len: usize,
}

/// Lays out the options of our SYN+ACK.
///
/// In order: MSS (`adv_mss`; omitted when `adv_mss` is 0), then SACK-permitted and/or
/// timestamps (TSval = `tsval`, TSecr = the client's TSval), then window scale
/// (`our_wscale`, clamped to 14). Everything but MSS is echoed only if `offered` has it,
/// so when the client sent an MSS option our options are never longer than the client's:
/// the SYN+ACK can always be built in place of the SYN.
#[inline(always)]
pub fn synack_options(
    offered: &TcpOptions,
    adv_mss: u16,
    our_wscale: u8,
    tsval: u32,
) -> SynAckOptions {
    // Built back to front, each word pushed in at index 0, so every index is a constant:
    // no variable-offset stack access, and the words can live in registers.
    let mut w = [0u32; 5];
    let mut len = 0;
    let mut push = |x: u32| {
        w = [x, w[0], w[1], w[2], w[3]];
        len += 4;
    };
    if offered.wscale != WSCALE_ABSENT {
        let ws = if our_wscale > MAX_WSCALE {
            MAX_WSCALE
        } else {
            our_wscale
        };
        push(u32::from_be_bytes([kind::NOP, kind::WSCALE, 3, ws]));
    }
    if offered.ts {
        push(offered.tsval);
        push(tsval);
        // SACK-permitted fills the two bytes that would otherwise be NOP padding.
        let lead = if offered.sack_ok {
            [kind::SACK_PERM, 2]
        } else {
            [kind::NOP, kind::NOP]
        };
        push(u32::from_be_bytes([lead[0], lead[1], kind::TIMESTAMP, 10]));
    } else if offered.sack_ok {
        push(u32::from_be_bytes([
            kind::NOP,
            kind::NOP,
            kind::SACK_PERM,
            2,
        ]));
    }
    if adv_mss != 0 {
        push((u32::from(kind::MSS) << 24) | (4 << 16) | u32::from(adv_mss));
    }
    SynAckOptions { words: w, len }
}

/// [`synack_options`] as bytes: writes them into `out` and returns their length.
#[inline(always)]
pub fn write_synack(
    offered: &TcpOptions,
    adv_mss: u16,
    our_wscale: u8,
    tsval: u32,
    out: &mut [u8; 20],
) -> usize {
    let o = synack_options(offered, adv_mss, our_wscale, tsval);
    let [a, b, c, d, e] = o.words.map(u32::to_be_bytes);
    *out = [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3], e[0], e[1], e[2], e[3],
    ];
    o.len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_bytes(b: &[u8]) -> Result<TcpOptions, OptionsError> {
        // Put the area at an offset inside a larger packet, as it is in a frame.
        let mut pkt = vec![0xeeu8; 7];
        pkt.extend_from_slice(b);
        parse(&pkt[..], 7, b.len())
    }

    #[test]
    fn linux_syn_options() {
        // What Linux sends: MSS 1460, SACK_PERM, TS, NOP, WS 7.
        let b = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let o = parse_bytes(&b).unwrap();
        assert_eq!(
            o,
            TcpOptions {
                mss: 1460,
                wscale: 7,
                sack_ok: true,
                ts: true,
                tsval: 0x1234,
                tsecr: 0,
                signed: false,
            }
        );
    }

    #[test]
    fn signatures_of_any_length_are_seen() {
        // Linux's MD5 SYN: MSS, NOP NOP MD5 (18 bytes), then the rest.
        let mut b = vec![2, 4, 0x05, 0xb4, 1, 1, 19, 18];
        b.extend([0xab; 16]);
        b.extend([4, 2, 1, 1]);
        let o = parse_bytes(&b).unwrap();
        assert!(o.signed && o.sack_ok && o.mss == 1460, "{o:?}");
        // TCP-AO, with a short MAC.
        assert!(parse_bytes(&[29, 6, 1, 2, 0, 0, 1, 1]).unwrap().signed);
        // Neither after EOL, nor cut by the area's end.
        assert!(!parse_bytes(&[0, 1, 19, 18]).unwrap().signed);
        assert!(!parse_bytes(&[1, 1, 19, 18]).unwrap().signed);
        assert!(!parse_bytes(&linux_areas(1460, 7, 1, 0)[0]).unwrap().signed);
    }

    #[test]
    fn empty_eol_nop_unknown() {
        assert_eq!(parse_bytes(&[]), Ok(TcpOptions::NONE));
        assert_eq!(parse_bytes(&[1, 1, 1, 1]), Ok(TcpOptions::NONE));
        // EOL ends the walk: the garbage after it is not looked at.
        assert_eq!(parse_bytes(&[0, 2, 9, 9]), Ok(TcpOptions::NONE));
        // Unknown kind 30 (MPTCP) with a valid length is skipped.
        let o = parse_bytes(&[30, 4, 0, 0, 2, 4, 0x02, 0x18]).unwrap();
        assert_eq!(o.mss, 536);
    }

    #[test]
    fn wscale_clamped() {
        assert_eq!(parse_bytes(&[1, 3, 3, 14]).unwrap().wscale, 14);
        assert_eq!(parse_bytes(&[1, 3, 3, 15]).unwrap().wscale, 14);
        assert_eq!(parse_bytes(&[1, 3, 3, 255]).unwrap().wscale, 14);
        assert_eq!(parse_bytes(&[1, 3, 3, 0]).unwrap().wscale, 0);
    }

    /// SACK-permitted then timestamps (1, 2): what survives each tolerated layout below.
    const SACK_TS: [u8; 12] = [4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    const SACK_TS_OPTS: TcpOptions = TcpOptions {
        sack_ok: true,
        ts: true,
        tsval: 1,
        tsecr: 2,
        ..TcpOptions::NONE
    };

    fn after_sack_ts(tail: &[u8]) -> Result<TcpOptions, OptionsError> {
        let mut b = SACK_TS.to_vec();
        b.extend_from_slice(tail);
        parse_bytes(&b)
    }

    #[test]
    fn known_kind_with_wrong_length_is_skipped() {
        // MSS with length 3: skipped as 3 bytes, the window scale after it still counts.
        assert_eq!(
            parse_bytes(&[2, 3, 5, 3, 3, 7, 1, 1]),
            Ok(TcpOptions {
                wscale: 7,
                ..TcpOptions::NONE
            })
        );
        assert_eq!(after_sack_ts(&[2, 3, 5, 1]), Ok(SACK_TS_OPTS));
        // Window scale with length 4, SACK-permitted with 3, timestamps with 8.
        assert_eq!(after_sack_ts(&[3, 4, 5, 1]), Ok(SACK_TS_OPTS));
        assert_eq!(parse_bytes(&[4, 3, 0, 2, 4, 0x02, 0x18]).unwrap().mss, 536);
        assert_eq!(parse_bytes(&[4, 3, 0, 1]), Ok(TcpOptions::NONE));
        assert_eq!(parse_bytes(&[8, 8, 0, 0, 0, 0, 0, 0]), Ok(TcpOptions::NONE));
        // A wrong-length copy does not undo the right one before it.
        let mut b = vec![2, 4, 0x05, 0xb4, 2, 6, 0, 1, 0, 0];
        b.extend([3, 2, 3, 3, 9]);
        let o = parse_bytes(&b).unwrap();
        assert_eq!((o.mss, o.wscale), (1460, 9));
    }

    #[test]
    fn trailing_kind_without_length_byte_ends_the_walk() {
        assert_eq!(parse_bytes(&[1, 1, 1, 2]), Ok(TcpOptions::NONE));
        assert_eq!(after_sack_ts(&[1, 1, 1, 30]), Ok(SACK_TS_OPTS));
        // An odd-length area: the last byte is a kind, its length would be past the area.
        let b = [2, 4, 0x05, 0xb4, 3];
        assert_eq!(parse_bytes(&b).unwrap().mss, 1460);
    }

    #[test]
    fn length_below_two_ends_the_walk() {
        assert_eq!(parse_bytes(&[30, 0, 1, 1]), Ok(TcpOptions::NONE));
        assert_eq!(parse_bytes(&[30, 1, 1, 1]), Ok(TcpOptions::NONE));
        // What comes after is not read, even a valid MSS.
        let o = after_sack_ts(&[2, 1, 2, 4, 0x05, 0xb4, 1, 1]).unwrap();
        assert_eq!(o, SACK_TS_OPTS);
    }

    #[test]
    fn option_running_past_the_area_ends_the_walk() {
        assert_eq!(parse_bytes(&[1, 1, 1, 2, 4, 5]), Ok(TcpOptions::NONE));
        assert_eq!(after_sack_ts(&[1, 1, 30, 9]), Ok(SACK_TS_OPTS));
        // A timestamp cut by the area's end is not read, nor a half MSS.
        assert_eq!(
            parse_bytes(&[2, 4, 0x05, 0xb4, 8, 10, 0, 0, 0, 1, 0, 0]).unwrap(),
            TcpOptions {
                mss: 1460,
                ..TcpOptions::NONE
            }
        );
        assert_eq!(parse_bytes(&[1, 2, 4, 5]), Ok(TcpOptions::NONE));
    }

    #[test]
    fn mss_zero_is_ignored_not_a_reset() {
        assert_eq!(parse_bytes(&[2, 4, 0, 0]), Ok(TcpOptions::NONE));
        assert_eq!(
            parse_bytes(&[2, 4, 0x05, 0xb4, 2, 4, 0, 0]).unwrap().mss,
            1460
        );
        assert_eq!(
            parse_bytes(&[2, 4, 0, 0, 2, 4, 0x05, 0xb4]).unwrap().mss,
            1460
        );
        assert_eq!(
            parse_bytes(&[2, 4, 0x05, 0xb4, 2, 4, 0x02, 0x18])
                .unwrap()
                .mss,
            536
        );
    }

    #[test]
    fn unreadable_areas() {
        assert_eq!(parse(&[0u8; 60][..], 0, 44), Err(OptionsError::Truncated));
        // The area claims bytes the packet does not have.
        assert_eq!(parse(&[1u8, 1, 1][..], 0, 4), Err(OptionsError::Truncated));
    }

    #[test]
    fn forty_nops_then_nothing() {
        assert_eq!(parse_bytes(&[1; 40]), Ok(TcpOptions::NONE));
        let mut b = [1u8; 40];
        b[36..].copy_from_slice(&[2, 4, 0x05, 0x00]);
        assert_eq!(parse_bytes(&b).unwrap().mss, 1280);
    }

    #[test]
    fn synack_layouts() {
        let mut out = [0u8; 20];
        let all = TcpOptions {
            mss: 1460,
            wscale: 7,
            sack_ok: true,
            ts: true,
            tsval: 0x0102_0304,
            tsecr: 0,
            signed: false,
        };
        let n = write_synack(&all, 1400, 9, 0xaabb_ccdd, &mut out);
        assert_eq!(
            &out[..n],
            &[
                2, 4, 0x05, 0x78, 4, 2, 8, 10, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 1, 3, 3, 9
            ]
        );
        let ts_only = TcpOptions {
            sack_ok: false,
            wscale: WSCALE_ABSENT,
            ..all
        };
        let n = write_synack(&ts_only, 1400, 9, 5, &mut out);
        assert_eq!(
            &out[..n],
            &[2, 4, 0x05, 0x78, 1, 1, 8, 10, 0, 0, 0, 5, 1, 2, 3, 4]
        );
        let sack_only = TcpOptions {
            ts: false,
            wscale: WSCALE_ABSENT,
            ..all
        };
        let n = write_synack(&sack_only, 1400, 9, 5, &mut out);
        assert_eq!(&out[..n], &[2, 4, 0x05, 0x78, 1, 1, 4, 2]);
        let n = write_synack(&TcpOptions::NONE, 536, 9, 5, &mut out);
        assert_eq!(&out[..n], &[2, 4, 0x02, 0x18]);
        let n = write_synack(
            &TcpOptions {
                wscale: 0,
                ..TcpOptions::NONE
            },
            536,
            20,
            5,
            &mut out,
        );
        assert_eq!(&out[..n], &[2, 4, 0x02, 0x18, 1, 3, 3, 14]);
        let n = write_synack(&TcpOptions::NONE, 0, 9, 5, &mut out);
        assert_eq!(n, 0);
        assert_eq!(out, [0; 20], "unused words are zero");
    }

    /// One option as the client may encode it, padded or not.
    #[derive(Clone, Debug)]
    enum Opt {
        Mss(u16),
        Ws(u8),
        SackPerm,
        Ts(u32, u32),
        Nop,
        Unknown(u8, Vec<u8>),
    }

    fn opt() -> impl Strategy<Value = Opt> {
        prop_oneof![
            (1u16..).prop_map(Opt::Mss),
            any::<u8>().prop_map(Opt::Ws),
            Just(Opt::SackPerm),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Opt::Ts(a, b)),
            Just(Opt::Nop),
            ((9u8..=253), prop::collection::vec(any::<u8>(), 0..6))
                .prop_map(|(k, v)| Opt::Unknown(k, v)),
        ]
    }

    fn encode(opts: &[Opt]) -> Vec<u8> {
        let mut b = Vec::new();
        for o in opts {
            match o {
                Opt::Mss(m) => b.extend_from_slice(&[2, 4, (m >> 8) as u8, *m as u8]),
                Opt::Ws(w) => b.extend_from_slice(&[3, 3, *w]),
                Opt::SackPerm => b.extend_from_slice(&[4, 2]),
                Opt::Ts(v, e) => {
                    b.extend_from_slice(&[8, 10]);
                    b.extend_from_slice(&v.to_be_bytes());
                    b.extend_from_slice(&e.to_be_bytes());
                }
                Opt::Nop => b.push(1),
                Opt::Unknown(k, v) => {
                    b.extend_from_slice(&[*k, v.len() as u8 + 2]);
                    b.extend_from_slice(v);
                }
            }
        }
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// Linux's three layouts with the given fields, as `parse` sees them on the wire.
    fn linux_areas(mss: u16, ws: u8, tsval: u32, tsecr: u32) -> [Vec<u8>; 3] {
        let (m, v, e) = (mss.to_be_bytes(), tsval.to_be_bytes(), tsecr.to_be_bytes());
        let mut syn = vec![2, 4, m[0], m[1], 4, 2, 8, 10];
        syn.extend(v);
        syn.extend(e);
        syn.extend([1, 3, 3, ws]);
        let syn_no_ts = vec![2, 4, m[0], m[1], 1, 1, 4, 2, 1, 3, 3, ws];
        let mut ack = vec![1, 1, 8, 10];
        ack.extend(v);
        ack.extend(e);
        [syn, syn_no_ts, ack]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The fast path recognises Linux's layouts, and whatever it accepts, even after
        /// a byte is overwritten or the frame cut short, it parses exactly as the walk does.
        #[test]
        fn linux_fast_path_agrees_with_the_walk(
            mss: u16, ws: u8, tsval: u32, tsecr: u32,
            which in 0usize..3, at in 0usize..20, byte: u8, mutate: bool, cut in 0usize..24,
        ) {
            let mut area = linux_areas(mss, ws, tsval, tsecr)[which].clone();
            let len = area.len();
            prop_assert!(linux_layout(&area[..], 0, len).is_some());
            if mutate {
                area[at % len] = byte;
            }
            area.truncate(cut.max(len - 4).min(len));
            let fast = linux_layout(&area[..], 0, len);
            let slow = walk(&area[..], 0, len);
            if let Some(o) = fast {
                prop_assert_eq!(Ok(o), slow);
            }
            prop_assert_eq!(parse(&area[..], 0, len), slow);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever well-formed list fits in 40 bytes parses to what an obvious
        /// last-one-wins reading of the list says.
        #[test]
        fn parses_generated_lists(list in prop::collection::vec(opt(), 0..10)) {
            let bytes = encode(&list);
            prop_assume!(bytes.len() <= MAX_LEN);
            let mut want = TcpOptions::NONE;
            for o in &list {
                match o {
                    Opt::Mss(m) => want.mss = *m,
                    Opt::Ws(w) => want.wscale = (*w).min(14),
                    Opt::SackPerm => want.sack_ok = true,
                    Opt::Ts(v, e) => { want.ts = true; want.tsval = *v; want.tsecr = *e; }
                    Opt::Unknown(kind::MD5SIG | kind::AO, _) => want.signed = true,
                    _ => {}
                }
            }
            prop_assert_eq!(parse_bytes(&bytes), Ok(want));
        }

        /// Our options never exceed what the client sent when it sent an MSS option, and
        /// exceed it by at most the MSS option otherwise; they are a multiple of 4 and
        /// parse back to what we meant.
        #[test]
        fn synack_fits_in_client_area(
            list in prop::collection::vec(opt(), 0..10),
            adv_mss in 1u16..,
            our_ws in any::<u8>(),
            tsval in any::<u32>(),
        ) {
            let bytes = encode(&list);
            prop_assume!(bytes.len() <= MAX_LEN);
            let offered = parse_bytes(&bytes).unwrap();
            let mut out = [0u8; 20];
            let n = write_synack(&offered, adv_mss, our_ws, tsval, &mut out);
            prop_assert_eq!(n % 4, 0);
            let slack = if offered.mss == 0 { 4 } else { 0 };
            prop_assert!(n <= bytes.len() + slack, "{} > {} (+{})", n, bytes.len(), slack);
            let back = parse_bytes(&out[..n]).unwrap();
            prop_assert_eq!(back.mss, adv_mss);
            prop_assert_eq!(back.sack_ok, offered.sack_ok);
            prop_assert_eq!(back.ts, offered.ts);
            if offered.ts {
                prop_assert_eq!(back.tsval, tsval);
                prop_assert_eq!(back.tsecr, offered.tsval);
            }
            let want_ws = if offered.wscale == WSCALE_ABSENT { WSCALE_ABSENT } else { our_ws.min(14) };
            prop_assert_eq!(back.wscale, want_ws);
        }

        /// Arbitrary bytes: never a panic, any success reports sane values, and an area
        /// inside the packet always parses (Linux's parser has no failure).
        #[test]
        fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..48), len in 0usize..48) {
            match parse(&b[..], 0, len) {
                Ok(o) => {
                    prop_assert!(o.wscale <= 14 || o.wscale == WSCALE_ABSENT);
                    prop_assert!(len <= MAX_LEN);
                }
                Err(e) => {
                    prop_assert_eq!(e, OptionsError::Truncated);
                    prop_assert!(len > MAX_LEN || len > b.len());
                }
            }
        }
    }
}
