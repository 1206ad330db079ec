//! The fixed 20-byte IPv4 header (RFC 791). Options are reported through `ihl` but never
//! parsed or emitted.

use crate::checksum;
use crate::packet::Packet;

pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFF_MASK: u16 = 0x1fff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub version: u8,
    /// Header length in 32-bit words.
    pub ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub checksum: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Header {
    /// Decodes the 20 bytes at `off`; `None` if they are not all in the packet. Nothing is
    /// validated, not even the version.
    #[inline(always)]
    pub fn parse<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Ipv4Header> {
        let b = p.load::<HEADER_LEN>(off)?;
        let frag = u16::from_be_bytes([b[6], b[7]]);
        Some(Ipv4Header {
            version: b[0] >> 4,
            ihl: b[0] & 0x0f,
            tos: b[1],
            tot_len: u16::from_be_bytes([b[2], b[3]]),
            id: u16::from_be_bytes([b[4], b[5]]),
            df: frag & FLAG_DF != 0,
            mf: frag & FLAG_MF != 0,
            frag_off: frag & FRAG_OFF_MASK,
            ttl: b[8],
            proto: b[9],
            checksum: u16::from_be_bytes([b[10], b[11]]),
            src: [b[12], b[13], b[14], b[15]],
            dst: [b[16], b[17], b[18], b[19]],
        })
    }

    /// Header length in bytes, options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl) * 4
    }

    /// Part of a fragmented datagram (first or later).
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.mf || self.frag_off != 0
    }

    /// A 20-byte header (ihl 5, whatever `self.ihl` says) with a freshly computed checksum;
    /// `self.checksum` is ignored.
    #[inline(always)]
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let frag = (if self.df { FLAG_DF } else { 0 })
            | (if self.mf { FLAG_MF } else { 0 })
            | (self.frag_off & FRAG_OFF_MASK);
        let [tl0, tl1] = self.tot_len.to_be_bytes();
        let [id0, id1] = self.id.to_be_bytes();
        let [f0, f1] = frag.to_be_bytes();
        let [s0, s1, s2, s3] = self.src;
        let [d0, d1, d2, d3] = self.dst;
        let mut b = [
            0x45, self.tos, tl0, tl1, id0, id1, f0, f1, self.ttl, self.proto, 0, 0, s0, s1, s2, s3,
            d0, d1, d2, d3,
        ];
        let [c0, c1] = checksum::finish(checksum::sum_bytes(&b)).to_be_bytes();
        b[10] = c0;
        b[11] = c1;
        b
    }

    /// Writes [`emit`](Self::emit)'s bytes at `off`.
    #[inline(always)]
    pub fn write<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.emit())
    }
}

/// True when the 20 bytes at `off` carry a correct header checksum (no options).
#[inline(always)]
pub fn checksum_ok<P: Packet + ?Sized>(p: &P, off: usize) -> Option<bool> {
    Some(checksum::fold(checksum::sum_bytes(&p.load::<HEADER_LEN>(off)?)) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ref_checksum;
    use proptest::prelude::*;

    // 10.0.0.1 -> 10.0.0.2, TCP, DF, ttl 64, id 0x1234, total length 60.
    const SAMPLE: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x14, 0x86, 10, 0, 0, 1, 10, 0,
        0, 2,
    ];

    #[test]
    fn parse_sample() {
        let h = Ipv4Header::parse(&SAMPLE[..], 0).unwrap();
        assert_eq!(
            h,
            Ipv4Header {
                version: 4,
                ihl: 5,
                tos: 0,
                tot_len: 60,
                id: 0x1234,
                df: true,
                mf: false,
                frag_off: 0,
                ttl: 64,
                proto: 6,
                checksum: 0x1486,
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            }
        );
        assert_eq!(ref_checksum(&SAMPLE), 0, "sample carries a valid checksum");
        assert_eq!(h.emit(), SAMPLE);
        assert_eq!(checksum_ok(&SAMPLE[..], 0), Some(true));
        assert!(!h.is_fragment());
        assert!(Ipv4Header::parse(&SAMPLE[..19], 0).is_none());
    }

    #[test]
    fn fragment_fields() {
        let mut b = SAMPLE;
        b[6] = 0x20 | 0x01; // MF, offset 0x100
        b[7] = 0x00;
        let h = Ipv4Header::parse(&b[..], 0).unwrap();
        assert!(h.mf && !h.df);
        assert_eq!(h.frag_off, 0x100);
        assert!(h.is_fragment());
    }

    proptest! {
        /// Emit of any parsed option-less header reproduces the input, with a checksum
        /// the reference implementation accepts.
        #[test]
        fn emit_roundtrip(mut b in prop::array::uniform20(any::<u8>())) {
            b[0] = 0x45;
            b[6] &= 0x7f; // the reserved ("evil") bit is not modelled
            let h = Ipv4Header::parse(&b[..], 0).unwrap();
            let out = h.emit();
            prop_assert_eq!(ref_checksum(&out), 0);
            prop_assert_eq!(&out[..10], &b[..10]);
            prop_assert_eq!(&out[12..], &b[12..]);
        }
    }
}
