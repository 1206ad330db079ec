//! The hand-off from XDP to TC for an ACK whose cookie XDP validated: XDP stores a
//! [`CookieMeta`] in the `HANDOFF` map under the segment's [`HandoffKey`], TC takes it back
//! out (lookup, then delete) and turns it into the [`TcpReqAttrs`] that
//! `bpf_sk_assign_tcp_reqsk` takes to build the request socket.
//!
//! A map rather than the XDP metadata area, for two reasons. XDP then calls no helper
//! that changes packet data (`bpf_xdp_adjust_meta`), so the program can be an extension
//! program in any libxdp dispatcher, whose stubs do not change packet data either: since
//! Linux 6.13 (and 6.12.y) the kernel refuses an EXT program that does, under a stub that
//! does not. And drivers without XDP metadata support (hv_netvsc) hand off in native mode.
//! Only synguard writes the map, and an entry is bound to one segment: both addresses and
//! ports, the sequence and the acknowledgement number. Metadata another program leaves in
//! front of a frame is never read.
//!
//! ## `CookieMeta` bytes (the map value)
//! [`CookieMeta::LEN`] = 32 bytes, every field little-endian, no padding:
//!
//! | offset | size | field        |
//! |--------|------|--------------|
//! | 0      | 4    | `magic` ([`CookieMeta::MAGIC`]) |
//! | 4      | 4    | `rcv_tsval`  |
//! | 8      | 4    | `rcv_tsecr`  |
//! | 12     | 2    | `mss`        |
//! | 14     | 1    | `rcv_wscale` |
//! | 15     | 1    | `snd_wscale` |
//! | 16     | 1    | `ecn_ok`     |
//! | 17     | 1    | `wscale_ok`  |
//! | 18     | 1    | `sack_ok`    |
//! | 19     | 1    | `tstamp_ok`  |
//! | 20     | 4    | `seq`        |
//! | 24     | 4    | `ack`        |
//! | 28     | 2    | `src_port`   |
//! | 30     | 2    | `dst_port`   |

use crate::cookie::Decoded;
use crate::flow::Flow;
use crate::maps::KeySlot;
use crate::wire::tcp::TcpHeader;
use crate::wire::tcp_options::{MAX_WSCALE, TcpOptions, WSCALE_ABSENT};

/// What XDP writes before a `HANDOFF` insert, in a per-CPU scratch slot (`HANDOFF_SCRATCH`):
/// the key and the value, off the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffEntry {
    pub key: HandoffKey,
    pub meta: CookieMeta,
}

/// `HANDOFF`'s key: the one segment an entry is for. Every byte is a field (no padding),
/// so XDP and TC build equal keys for equal segments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffKey {
    /// The client's and the server's address, as [`crate::wire::addr::Addr`] words.
    pub src: [u64; 2],
    pub dst: [u64; 2],
    pub seq: u32,
    pub ack: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// 1 for IPv6: an IPv4 and an IPv6 address never share a key.
    pub v6: u32,
}

const _: () = assert!(core::mem::size_of::<HandoffKey>() == 48);

impl HandoffKey {
    #[inline(always)]
    pub fn new(flow: &Flow, seq: u32, ack: u32) -> HandoffKey {
        HandoffKey {
            src: flow.src.0,
            dst: flow.dst.0,
            seq,
            ack,
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            v6: flow.is_v6() as u32,
        }
    }
}

/// What XDP hands to TC for a validated cookie ACK. The field set is what
/// `bpf_sk_assign_tcp_reqsk` needs ([`TcpReqAttrs`]); fields of options not negotiated are
/// zero, as the kfunc requires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieMeta {
    /// [`CookieMeta::MAGIC`]; TC ignores an entry without it.
    pub magic: u32,
    pub rcv_tsval: u32,
    pub rcv_tsecr: u32,
    pub mss: u16,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub ecn_ok: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub tstamp_ok: u8,
    /// The described ACK's TCP sequence number, ...
    pub seq: u32,
    /// ... acknowledgement number, ...
    pub ack: u32,
    /// ... source port (the client's) ...
    pub src_port: u16,
    /// ... and destination port: what binds the metadata to its segment.
    pub dst_port: u16,
}

// Stored as it is (the map value): no padding, so its bytes are exactly the fields, laid
// out as the table above on a little-endian machine (`to_bytes` is that layout anywhere).
const _: () = assert!(core::mem::size_of::<CookieMeta>() == CookieMeta::LEN);

impl CookieMeta {
    pub const MAGIC: u32 = 0x5347_4b31; // "SGK1"
    /// Bytes on the wire (see the module doc for the layout).
    pub const LEN: usize = 32;

    /// The metadata for a cookie `key` validated as `d`, on the ACK `tcph` with options
    /// `opts`.
    #[inline(always)]
    pub fn new(key: &KeySlot, d: &Decoded, opts: &TcpOptions, tcph: &TcpHeader) -> CookieMeta {
        let mut m = CookieMeta::default();
        m.fill(key, d, opts, tcph);
        m
    }

    /// [`CookieMeta::new`] in place, field by field: XDP fills a map slot this way, since
    /// a whole value built on the stack would not fit beside the pipeline's frame.
    #[inline(always)]
    pub fn fill(&mut self, key: &KeySlot, d: &Decoded, opts: &TcpOptions, tcph: &TcpHeader) {
        let wscale_ok = d.wscale != WSCALE_ABSENT;
        self.magic = CookieMeta::MAGIC;
        self.rcv_tsval = if opts.ts { opts.tsval } else { 0 };
        self.rcv_tsecr = if opts.ts { opts.tsecr } else { 0 };
        self.mss = d.mss;
        self.rcv_wscale = if wscale_ok {
            clamp_wscale(key.wscale)
        } else {
            0
        };
        self.snd_wscale = if wscale_ok { d.wscale } else { 0 };
        self.ecn_ok = d.ecn_ok as u8;
        self.wscale_ok = wscale_ok as u8;
        self.sack_ok = d.sack_ok as u8;
        self.tstamp_ok = opts.ts as u8;
        self.seq = tcph.seq;
        self.ack = tcph.ack;
        self.src_port = tcph.src_port;
        self.dst_port = tcph.dst_port;
    }

    /// Whether this is synguard's metadata for the segment with these sequence and
    /// acknowledgement numbers and ports: the magic and all four must match. TC hands off
    /// only then, so metadata left by another program, or one XDP wrote for another
    /// segment, is never turned into a request socket.
    #[inline(always)]
    pub fn describes(&self, seq: u32, ack: u32, src_port: u16, dst_port: u16) -> bool {
        // `&` rather than `&&`: one verifier path, not five.
        (self.magic == CookieMeta::MAGIC)
            & (self.seq == seq)
            & (self.ack == ack)
            & (self.src_port == src_port)
            & (self.dst_port == dst_port)
    }

    /// The bytes XDP stores, as one constant-size array (one bounded store in BPF).
    #[inline(always)]
    pub fn to_bytes(&self) -> [u8; CookieMeta::LEN] {
        let [m0, m1, m2, m3] = self.magic.to_le_bytes();
        let [v0, v1, v2, v3] = self.rcv_tsval.to_le_bytes();
        let [e0, e1, e2, e3] = self.rcv_tsecr.to_le_bytes();
        let [s0, s1] = self.mss.to_le_bytes();
        let [q0, q1, q2, q3] = self.seq.to_le_bytes();
        let [a0, a1, a2, a3] = self.ack.to_le_bytes();
        let [p0, p1] = self.src_port.to_le_bytes();
        let [d0, d1] = self.dst_port.to_le_bytes();
        [
            m0,
            m1,
            m2,
            m3,
            v0,
            v1,
            v2,
            v3,
            e0,
            e1,
            e2,
            e3,
            s0,
            s1,
            self.rcv_wscale,
            self.snd_wscale,
            self.ecn_ok,
            self.wscale_ok,
            self.sack_ok,
            self.tstamp_ok,
            q0,
            q1,
            q2,
            q3,
            a0,
            a1,
            a2,
            a3,
            p0,
            p1,
            d0,
            d1,
        ]
    }

    /// The inverse of [`to_bytes`](Self::to_bytes); TC checks it with
    /// [`describes`](Self::describes).
    #[inline(always)]
    pub fn from_bytes(b: [u8; CookieMeta::LEN]) -> CookieMeta {
        let [
            m0,
            m1,
            m2,
            m3,
            v0,
            v1,
            v2,
            v3,
            e0,
            e1,
            e2,
            e3,
            s0,
            s1,
            rcv_wscale,
            snd_wscale,
            ecn_ok,
            wscale_ok,
            sack_ok,
            tstamp_ok,
            q0,
            q1,
            q2,
            q3,
            a0,
            a1,
            a2,
            a3,
            p0,
            p1,
            d0,
            d1,
        ] = b;
        CookieMeta {
            magic: u32::from_le_bytes([m0, m1, m2, m3]),
            rcv_tsval: u32::from_le_bytes([v0, v1, v2, v3]),
            rcv_tsecr: u32::from_le_bytes([e0, e1, e2, e3]),
            mss: u16::from_le_bytes([s0, s1]),
            rcv_wscale,
            snd_wscale,
            ecn_ok,
            wscale_ok,
            sack_ok,
            tstamp_ok,
            seq: u32::from_le_bytes([q0, q1, q2, q3]),
            ack: u32::from_le_bytes([a0, a1, a2, a3]),
            src_port: u16::from_le_bytes([p0, p1]),
            dst_port: u16::from_le_bytes([d0, d1]),
        }
    }
}

#[inline(always)]
fn clamp_wscale(ws: u8) -> u8 {
    if ws > MAX_WSCALE { MAX_WSCALE } else { ws }
}

/// The kernel's `struct bpf_tcp_req_attrs` (include/net/tcp.h, Linux >= 6.9), which
/// `bpf_sk_assign_tcp_reqsk` takes with its size. synguard-ebpf/kfuncs.c declares the C
/// side and asserts the same size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpReqAttrs {
    pub rcv_tsval: u32,
    pub rcv_tsecr: u32,
    pub mss: u16,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub ecn_ok: u8,
    pub wscale_ok: u8,
    pub sack_ok: u8,
    pub tstamp_ok: u8,
    pub usec_ts_ok: u8,
    pub reserved: [u8; 3],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<TcpReqAttrs>() == 20);
    assert!(offset_of!(TcpReqAttrs, rcv_tsval) == 0);
    assert!(offset_of!(TcpReqAttrs, rcv_tsecr) == 4);
    assert!(offset_of!(TcpReqAttrs, mss) == 8);
    assert!(offset_of!(TcpReqAttrs, rcv_wscale) == 10);
    assert!(offset_of!(TcpReqAttrs, snd_wscale) == 11);
    assert!(offset_of!(TcpReqAttrs, ecn_ok) == 12);
    assert!(offset_of!(TcpReqAttrs, wscale_ok) == 13);
    assert!(offset_of!(TcpReqAttrs, sack_ok) == 14);
    assert!(offset_of!(TcpReqAttrs, tstamp_ok) == 15);
    assert!(offset_of!(TcpReqAttrs, usec_ts_ok) == 16);
    assert!(offset_of!(TcpReqAttrs, reserved) == 17);
};

impl From<&CookieMeta> for TcpReqAttrs {
    #[inline(always)]
    fn from(m: &CookieMeta) -> TcpReqAttrs {
        TcpReqAttrs {
            rcv_tsval: m.rcv_tsval,
            rcv_tsecr: m.rcv_tsecr,
            mss: m.mss,
            rcv_wscale: m.rcv_wscale,
            snd_wscale: m.snd_wscale,
            ecn_ok: m.ecn_ok,
            wscale_ok: m.wscale_ok,
            sack_ok: m.sack_ok,
            tstamp_ok: m.tstamp_ok,
            // Our cookies carry millisecond timestamps, as the kernel's own do.
            usec_ts_ok: 0,
            reserved: [0; 3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_meta() -> impl Strategy<Value = CookieMeta> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<[u8; 6]>(),
            any::<(u32, u32, u16, u16)>(),
        )
            .prop_map(
                |(magic, rcv_tsval, rcv_tsecr, mss, b, (seq, ack, src_port, dst_port))| {
                    CookieMeta {
                        magic,
                        rcv_tsval,
                        rcv_tsecr,
                        mss,
                        rcv_wscale: b[0],
                        snd_wscale: b[1],
                        ecn_ok: b[2],
                        wscale_ok: b[3],
                        sack_ok: b[4],
                        tstamp_ok: b[5],
                        seq,
                        ack,
                        src_port,
                        dst_port,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn bytes_roundtrip(m in arb_meta(), b: [u8; CookieMeta::LEN]) {
            prop_assert_eq!(CookieMeta::from_bytes(m.to_bytes()), m);
            prop_assert_eq!(CookieMeta::from_bytes(b).to_bytes(), b);
        }
    }

    /// The layout table of the module doc, byte by byte.
    #[test]
    fn byte_layout() {
        let m = CookieMeta {
            magic: CookieMeta::MAGIC,
            rcv_tsval: 0x0403_0201,
            rcv_tsecr: 0x0807_0605,
            mss: 0x0a09,
            rcv_wscale: 11,
            snd_wscale: 12,
            ecn_ok: 13,
            wscale_ok: 14,
            sack_ok: 15,
            tstamp_ok: 16,
            seq: 0x1413_1211,
            ack: 0x1817_1615,
            src_port: 0x1a19,
            dst_port: 0x1c1b,
        };
        assert_eq!(
            m.to_bytes(),
            [
                0x31, 0x4b, 0x47, 0x53, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c
            ]
        );
        assert_eq!(&CookieMeta::MAGIC.to_le_bytes(), b"1KGS");
    }

    #[test]
    fn req_attrs_copy_every_field() {
        let m = CookieMeta::from_bytes(core::array::from_fn(|i| i as u8 + 1));
        let a = TcpReqAttrs::from(&m);
        assert_eq!(
            (a.rcv_tsval, a.rcv_tsecr, a.mss),
            (m.rcv_tsval, m.rcv_tsecr, m.mss)
        );
        assert_eq!(
            [
                a.rcv_wscale,
                a.snd_wscale,
                a.ecn_ok,
                a.wscale_ok,
                a.sack_ok,
                a.tstamp_ok
            ],
            [15, 16, 17, 18, 19, 20]
        );
        assert_eq!((a.usec_ts_ok, a.reserved), (0, [0; 3]));
    }

    fn ours(seq: u32, ack: u32, src_port: u16, dst_port: u16) -> CookieMeta {
        CookieMeta {
            magic: CookieMeta::MAGIC,
            seq,
            ack,
            src_port,
            dst_port,
            ..CookieMeta::default()
        }
    }

    #[test]
    fn describes_only_its_own_segment() {
        let m = ours(0x1000_0001, 0xdead_beef, 40000, 80);
        assert!(m.describes(0x1000_0001, 0xdead_beef, 40000, 80));
        // Each field alone is enough to refuse.
        assert!(!m.describes(0x1000_0002, 0xdead_beef, 40000, 80));
        assert!(!m.describes(0x1000_0001, 0xdead_bef0, 40000, 80));
        assert!(!m.describes(0x1000_0001, 0xdead_beef, 40001, 80));
        assert!(!m.describes(0x1000_0001, 0xdead_beef, 40000, 443));
        // The ports are not interchangeable.
        assert!(!m.describes(0x1000_0001, 0xdead_beef, 80, 40000));
        // The right tuple without the magic: not ours.
        let foreign = CookieMeta {
            magic: CookieMeta::MAGIC ^ 1,
            ..m
        };
        assert!(!foreign.describes(0x1000_0001, 0xdead_beef, 40000, 80));
        // Zeroed metadata (a 32-byte area of zeros) describes nothing.
        assert!(!CookieMeta::default().describes(0, 0, 0, 0));
    }

    proptest! {
        #[test]
        fn describes_is_field_equality(m in arb_meta(), seq: u32, ack: u32, sp: u16, dp: u16) {
            let want = m.magic == CookieMeta::MAGIC
                && (m.seq, m.ack, m.src_port, m.dst_port) == (seq, ack, sp, dp);
            prop_assert_eq!(m.describes(seq, ack, sp, dp), want);
            let own = CookieMeta { magic: CookieMeta::MAGIC, ..m };
            prop_assert!(own.describes(m.seq, m.ack, m.src_port, m.dst_port));
        }
    }
}
