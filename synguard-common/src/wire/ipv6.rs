//! The fixed 40-byte IPv6 header (RFC 8200), and the walk over the extension headers
//! that may follow it ([`walk_extensions`]).

use crate::packet::Packet;
use crate::wire::Addr;

pub const HEADER_LEN: usize = 40;

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_DEST_OPTS: u8 = 60;
/// The walk's bound: at most this many extension headers...
pub const MAX_EXT_HEADERS: usize = 4;
/// ...and at most this many bytes of them. RFC 8200's recommended order has at most
/// Hop-by-Hop, Destination Options, Routing, Fragment (and a second Destination Options)
/// before the upper layer; real traffic rarely carries more than two. 128 bytes hold
/// that with room for options, and keep every offset after the walk small and bounded
/// for the verifier.
pub const MAX_EXT_LEN: usize = 128;

/// `next` is one of the extension headers [`walk_extensions`] steps over.
#[inline(always)]
pub fn is_walked_extension(next: u8) -> bool {
    next == NEXT_HOP_BY_HOP
        || next == NEXT_ROUTING
        || next == NEXT_FRAGMENT
        || next == NEXT_DEST_OPTS
}

/// Where an IPv6 extension-header chain ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// The upper-layer header `proto` starts at `off`.
    Upper {
        proto: u8,
        off: usize,
        /// A Fragment header with offset 0 and M=1: the first of several fragments. An
        /// atomic fragment (offset 0, M=0) is a whole packet and does not set this.
        first_fragment: bool,
        /// A Routing header with segments left: the packet is for a later hop.
        routing_pending: bool,
    },
    /// A Fragment header with a non-zero offset: no upper-layer header here.
    LaterFragment,
    /// Beyond [`MAX_EXT_HEADERS`] or [`MAX_EXT_LEN`], or a header running past the packet.
    Uninspectable,
}

/// Walks the extension headers after the fixed header at `l3`, whose next header is
/// `next`. Unrolled, [`MAX_EXT_HEADERS`] constant steps; each step's offset stays below
/// `l3 + HEADER_LEN + MAX_EXT_LEN`, which the verifier sees from the length check.
#[inline(always)]
pub fn walk_extensions<P: Packet + ?Sized>(p: &P, l3: usize, next: u8) -> Chain {
    let mut next = next;
    let mut ext = 0usize;
    let mut first_fragment = false;
    let mut routing_pending = false;
    for _ in 0..MAX_EXT_HEADERS {
        if !is_walked_extension(next) {
            break;
        }
        let off = l3 + HEADER_LEN + ext;
        // Next header, length, and the Routing header's segments left or the Fragment
        // header's offset and M bit.
        let Some(b) = p.load::<4>(off) else {
            return Chain::Uninspectable;
        };
        let len = if next == NEXT_FRAGMENT {
            8
        } else {
            (usize::from(b[1]) + 1) * 8
        };
        if next == NEXT_FRAGMENT {
            let frag = u16::from_be_bytes([b[2], b[3]]);
            if frag >> 3 != 0 {
                return Chain::LaterFragment;
            }
            first_fragment |= frag & 1 != 0;
        } else if next == NEXT_ROUTING && b[3] != 0 {
            routing_pending = true;
        }
        ext += len;
        if ext > MAX_EXT_LEN || p.load::<1>(l3 + HEADER_LEN + ext - 1).is_none() {
            return Chain::Uninspectable;
        }
        next = b[0];
    }
    if is_walked_extension(next) {
        return Chain::Uninspectable;
    }
    Chain::Upper {
        proto: next,
        off: l3 + HEADER_LEN + ext,
        first_fragment,
        routing_pending,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    pub version: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Addr,
    pub dst: Addr,
}

impl Ipv6Header {
    /// Decodes the 40 bytes at `off`, addresses as words (see [`Addr`]); `None` if they
    /// are not all in the packet.
    #[inline(always)]
    pub fn parse<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Ipv6Header> {
        let b = p.load::<8>(off)?;
        let src = Addr::load6(p, off + 8)?;
        let dst = Addr::load6(p, off + 24)?;
        let vtf = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Some(Ipv6Header {
            version: (vtf >> 28) as u8,
            traffic_class: (vtf >> 20) as u8,
            flow_label: vtf & 0x000f_ffff,
            payload_len: u16::from_be_bytes([b[4], b[5]]),
            next_header: b[6],
            hop_limit: b[7],
            src,
            dst,
        })
    }

    /// The first 8 bytes: everything but the addresses.
    #[inline(always)]
    pub fn emit_fixed(&self) -> [u8; 8] {
        let vtf =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        let [v0, v1, v2, v3] = vtf.to_be_bytes();
        let [l0, l1] = self.payload_len.to_be_bytes();
        [v0, v1, v2, v3, l0, l1, self.next_header, self.hop_limit]
    }

    /// Writes the whole header (version forced to 6) at `off`.
    #[inline(always)]
    pub fn write<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.emit_fixed())?;
        self.src.store6(p, off + 8)?;
        self.dst.store6(p, off + 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_fields() {
        let mut b = vec![0x6a, 0xbc, 0xde, 0xf1, 0x00, 0x28, 6, 57];
        b.extend(1..=16u8);
        b.extend(101..=116u8);
        let h = Ipv6Header::parse(&b[..], 0).unwrap();
        assert_eq!(h.version, 6);
        assert_eq!(h.traffic_class, 0xab);
        assert_eq!(h.flow_label, 0xc_def1);
        assert_eq!(h.payload_len, 40);
        assert_eq!(h.next_header, 6);
        assert_eq!(h.hop_limit, 57);
        assert_eq!(h.src.octets()[0], 1);
        assert_eq!(h.dst.octets()[15], 116);
        assert!(Ipv6Header::parse(&b[..39], 0).is_none());
    }

    /// The fixed header (next header `first`) followed by `chain`, each `(type, bytes)`
    /// with byte 0 rewritten to the following type, then `tail`.
    fn packet(chain: &[(u8, Vec<u8>)], upper: u8, tail: usize) -> Vec<u8> {
        let first = chain.first().map_or(upper, |h| h.0);
        let mut b = vec![0x60, 0, 0, 0, 0, 0, first, 64];
        b.extend([0u8; 32]);
        for (i, (_, bytes)) in chain.iter().enumerate() {
            let mut h = bytes.clone();
            h[0] = chain.get(i + 1).map_or(upper, |n| n.0);
            b.extend(h);
        }
        b.extend(vec![0u8; tail]);
        b
    }

    fn opts(words8: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(words8) + 1) * 8];
        h[1] = words8;
        h
    }

    fn frag(offset: u16, more: bool) -> Vec<u8> {
        let w = (offset << 3) | u16::from(more);
        let [a, b] = w.to_be_bytes();
        vec![0, 0, a, b, 0, 0, 0, 1]
    }

    fn routing(segments_left: u8) -> Vec<u8> {
        vec![0, 0, 4, segments_left, 0, 0, 0, 0]
    }

    #[test]
    fn chain_walk() {
        let walk = |b: &[u8]| walk_extensions(b, 0, b[6]);
        let upper = |off, first_fragment, routing_pending| Chain::Upper {
            proto: 6,
            off,
            first_fragment,
            routing_pending,
        };
        assert_eq!(walk(&packet(&[], 6, 20)), upper(40, false, false));
        assert_eq!(
            walk(&packet(&[(0, opts(0))], 6, 20)),
            upper(48, false, false)
        );
        assert_eq!(
            walk(&packet(&[(60, opts(1)), (43, routing(0))], 6, 20)),
            upper(64, false, false)
        );
        assert_eq!(
            walk(&packet(&[(43, routing(2))], 6, 20)),
            upper(48, false, true)
        );
        assert_eq!(
            walk(&packet(&[(44, frag(0, false))], 6, 20)),
            upper(48, false, false),
            "atomic fragment"
        );
        assert_eq!(
            walk(&packet(&[(44, frag(0, true))], 6, 20)),
            upper(48, true, false)
        );
        assert_eq!(
            walk(&packet(&[(44, frag(3, false))], 6, 20)),
            Chain::LaterFragment
        );
        let four = [
            (0, opts(0)),
            (60, opts(0)),
            (43, routing(0)),
            (44, frag(0, false)),
        ];
        assert_eq!(walk(&packet(&four, 6, 20)), upper(72, false, false));
        let mut five = four.to_vec();
        five.push((60, opts(0)));
        assert_eq!(walk(&packet(&five, 6, 20)), Chain::Uninspectable);
        // 16 + 120 bytes: over the byte bound.
        assert_eq!(
            walk(&packet(&[(0, opts(1)), (60, opts(14))], 6, 20)),
            Chain::Uninspectable
        );
        // Exactly 128 bytes is within.
        assert_eq!(
            walk(&packet(&[(0, opts(15))], 6, 20)),
            upper(168, false, false)
        );
        // A header longer than the packet.
        let mut short = packet(&[(60, opts(3))], 6, 0);
        short.truncate(40 + 16);
        assert_eq!(walk(&short), Chain::Uninspectable);
        // Not TCP behind the chain: the caller's to judge.
        assert_eq!(
            walk(&packet(&[(60, opts(0))], 17, 8)),
            Chain::Upper {
                proto: 17,
                off: 48,
                first_fragment: false,
                routing_pending: false
            }
        );
    }

    proptest! {
        /// Never panics, and an upper-layer offset is always inside the walk's bound.
        #[test]
        fn chain_walk_any_bytes(b in prop::collection::vec(any::<u8>(), 0..300), next in any::<u8>()) {
            if let Chain::Upper { off, .. } = walk_extensions(&b[..], 0, next) {
                prop_assert!(off <= HEADER_LEN + MAX_EXT_LEN);
            }
        }

        #[test]
        fn write_roundtrip(mut b in prop::collection::vec(any::<u8>(), 40)) {
            b[0] = (b[0] & 0x0f) | 0x60;
            let h = Ipv6Header::parse(&b[..], 0).unwrap();
            let mut out = vec![0u8; 40];
            h.write(&mut out[..], 0).unwrap();
            prop_assert_eq!(out, b);
        }
    }
}
