//! IP addresses in the form the data path carries them.

use crate::packet::Packet;

/// An IP address as two little-endian words of its 16 bytes (IPv4: its 4 bytes, then
/// zeros). Words, not a byte array: the optimizer splits a `[u8; 16]` into 16 separate
/// values, and in BPF each of those ends up in its own 8-byte stack slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr(pub [u64; 2]);

impl Addr {
    #[inline(always)]
    pub fn from_v4(a: [u8; 4]) -> Addr {
        Addr([u64::from(u32::from_le_bytes(a)), 0])
    }

    #[inline(always)]
    pub fn from_v6(a: [u8; 16]) -> Addr {
        let [
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
            b8,
            b9,
            b10,
            b11,
            b12,
            b13,
            b14,
            b15,
        ] = a;
        Addr([
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
            u64::from_le_bytes([b8, b9, b10, b11, b12, b13, b14, b15]),
        ])
    }

    /// The 16 bytes in network order.
    #[inline(always)]
    pub fn octets(&self) -> [u8; 16] {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = self.0[0].to_le_bytes();
        let [b8, b9, b10, b11, b12, b13, b14, b15] = self.0[1].to_le_bytes();
        [
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15,
        ]
    }

    /// The first 4 bytes: the address of an IPv4 flow.
    #[inline(always)]
    pub fn v4_octets(&self) -> [u8; 4] {
        (self.0[0] as u32).to_le_bytes()
    }

    /// Reads an IPv4 address at `off`.
    #[inline(always)]
    pub fn load4<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Addr> {
        Some(Addr::from_v4(p.load::<4>(off)?))
    }

    /// Reads an IPv6 address at `off` as two 8-byte loads.
    #[inline(always)]
    pub fn load6<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Addr> {
        Some(Addr([
            u64::from_le_bytes(p.load::<8>(off)?),
            u64::from_le_bytes(p.load::<8>(off + 8)?),
        ]))
    }

    #[inline(always)]
    pub fn store4<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.v4_octets())
    }

    #[inline(always)]
    pub fn store6<P: Packet + ?Sized>(&self, p: &mut P, off: usize) -> Option<()> {
        p.store(off, self.0[0].to_le_bytes())?;
        p.store(off + 8, self.0[1].to_le_bytes())
    }

    /// First byte on the wire.
    #[inline(always)]
    pub fn first_octet(&self) -> u8 {
        self.0[0] as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn addr_roundtrips(a: [u8; 16], b: [u8; 4]) {
            prop_assert_eq!(Addr::from_v6(a).octets(), a);
            prop_assert_eq!(Addr::from_v4(b).v4_octets(), b);
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(&b);
            prop_assert_eq!(Addr::from_v4(b).octets(), wide);
            prop_assert_eq!(Addr::load6(&a[..], 0), Some(Addr::from_v6(a)));
            prop_assert_eq!(Addr::load4(&a[..], 3), Some(Addr::from_v4([a[3], a[4], a[5], a[6]])));
            let mut buf = [0u8; 16];
            Addr::from_v6(a).store6(&mut buf[..], 0).unwrap();
            prop_assert_eq!(buf, a);
            Addr::from_v4(b).store4(&mut buf[..], 12).unwrap();
            prop_assert_eq!(&buf[12..], &b[..]);
        }
    }
}
