//! The fixed 40-byte IPv6 header (RFC 8200). Extension headers are not walked: a packet
//! is TCP to us only when `next_header` is TCP.

use crate::flow::Addr;
use crate::packet::Packet;

pub const HEADER_LEN: usize = 40;

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

    proptest! {
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
