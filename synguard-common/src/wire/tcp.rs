//! The fixed 20-byte TCP header (RFC 9293). Options live in [`super::tcp_options`].

use crate::packet::Packet;

pub const HEADER_LEN: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Data offset: header length in 32-bit words.
    pub doff: u8,
    /// Low nibble of byte 12 (reserved bits and AE); kept so parse/emit is lossless.
    pub reserved: u8,
    /// The eight flag bits, see [`crate::flags`].
    pub flags: u8,
    pub window: u16,
    pub checksum: u16,
    pub urgent: u16,
}

impl TcpHeader {
    /// Decodes the 20 bytes at `off`; `None` if they are not all in the packet.
    #[inline(always)]
    pub fn parse<P: Packet + ?Sized>(p: &P, off: usize) -> Option<TcpHeader> {
        let b = p.load::<HEADER_LEN>(off)?;
        Some(TcpHeader {
            src_port: u16::from_be_bytes([b[0], b[1]]),
            dst_port: u16::from_be_bytes([b[2], b[3]]),
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ack: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            doff: b[12] >> 4,
            reserved: b[12] & 0x0f,
            flags: b[13],
            window: u16::from_be_bytes([b[14], b[15]]),
            checksum: u16::from_be_bytes([b[16], b[17]]),
            urgent: u16::from_be_bytes([b[18], b[19]]),
        })
    }

    /// Header length in bytes, options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.doff) * 4
    }

    /// The 20 header bytes, checksum field as given (callers sum these bytes with the
    /// checksum zeroed, then set it).
    #[inline(always)]
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let [s0, s1] = self.src_port.to_be_bytes();
        let [d0, d1] = self.dst_port.to_be_bytes();
        let [q0, q1, q2, q3] = self.seq.to_be_bytes();
        let [a0, a1, a2, a3] = self.ack.to_be_bytes();
        let [w0, w1] = self.window.to_be_bytes();
        let [c0, c1] = self.checksum.to_be_bytes();
        let [u0, u1] = self.urgent.to_be_bytes();
        [
            s0,
            s1,
            d0,
            d1,
            q0,
            q1,
            q2,
            q3,
            a0,
            a1,
            a2,
            a3,
            (self.doff << 4) | (self.reserved & 0x0f),
            self.flags,
            w0,
            w1,
            c0,
            c1,
            u0,
            u1,
        ]
    }

    /// Writes [`emit`](Self::emit)'s bytes at `off`.
    #[inline(always)]
    pub fn write<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.emit())
    }
}

/// Overwrites just the checksum field of the TCP header at `off`.
#[inline(always)]
pub fn set_checksum<P: Packet + ?Sized>(p: &mut P, off: usize, check: u16) -> Option<()> {
    p.store_be16(off + 16, check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_fields() {
        let b = [
            0x30, 0x39, 0x00, 0x50, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x01, 0xa0, 0x12,
            0xff, 0xff, 0x12, 0x34, 0x00, 0x07,
        ];
        let h = TcpHeader::parse(&b[..], 0).unwrap();
        assert_eq!((h.src_port, h.dst_port), (12345, 80));
        assert_eq!((h.seq, h.ack), (0xdead_beef, 1));
        assert_eq!((h.doff, h.header_len(), h.flags), (10, 40, 0x12));
        assert_eq!((h.window, h.checksum, h.urgent), (0xffff, 0x1234, 7));
        assert!(TcpHeader::parse(&b[..], 1).is_none());
    }

    proptest! {
        #[test]
        fn emit_roundtrip(b in prop::array::uniform20(any::<u8>())) {
            let h = TcpHeader::parse(&b[..], 0).unwrap();
            prop_assert_eq!(h.emit(), b);
            let mut out = [0u8; 20];
            h.write(&mut out[..], 0).unwrap();
            set_checksum(&mut out[..], 0, 0xabcd).unwrap();
            prop_assert_eq!(&out[16..18], &[0xab, 0xcd]);
        }
    }
}
